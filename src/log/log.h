// One line per event an operator must see (a refused client, a slow consumer, a rate limit,
// an engine failure), on stderr, as text or JSON (--log-format). Each event kind is limited to
// kLinesPerSecond lines a second, so a flood of refusals cannot flood the log; the next line
// of that kind says how many were left out. From any thread. Standard library only.
#pragma once

#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>

namespace chatd::log {

enum class Format { text, json };
inline constexpr int kLinesPerSecond = 10;

// Sets the format of every later line (start-up, before other threads log).
void set_format(Format f);

using Field = std::pair<std::string_view, std::string_view>;

// Writes `event` (a short snake_case kind, e.g. "refused") with its fields, unless this kind
// has had kLinesPerSecond lines in the current second. Returns whether it wrote.
bool event(std::string_view event, std::initializer_list<Field> fields);

// Writes a line in prose (start, stop, an engine's state; not rate-limited: these are rare):
// "chatd: <text>" as text, {"ts","event","message"} as JSON, so a JSON log holds no other line.
void message(std::string_view event, std::string_view text);

// Returns the line message() would write at unix time `ms`: for tests.
std::string format_message(Format f, long long ms, std::string_view event, std::string_view text);

// Returns the line event() would write at unix time `ms` (no rate limit): for tests.
std::string format_line(Format f, long long ms, std::string_view event, std::initializer_list<Field> fields,
                        unsigned long long suppressed);

}  // namespace chatd::log
