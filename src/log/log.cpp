#include "log/log.h"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <unordered_map>

namespace chatd::log {
namespace {

std::atomic<Format> g_format{Format::text};

struct Kind {
  long long second = 0;
  int lines = 0;
  unsigned long long suppressed = 0;
};
std::mutex g_mu;
std::unordered_map<std::string, Kind> g_kinds;

void append_json_string(std::string& out, std::string_view s) {
  out += '"';
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20 || c == 0x7F) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += ch;
        }
    }
  }
  out += '"';
}

// Text values are quoted when they hold blanks, quotes or control characters, so one event
// is one line whatever a client put in it.
void append_text_value(std::string& out, std::string_view s) {
  bool plain = !s.empty();
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (c <= 0x20 || c == '"' || c == '\\' || c == 0x7F || c == '=') plain = false;
  }
  if (plain) out += s;
  else append_json_string(out, s);
}

}  // namespace

void set_format(Format f) { g_format = f; }

std::string format_line(Format f, long long ms, std::string_view event, std::initializer_list<Field> fields,
                        unsigned long long suppressed) {
  std::string out;
  if (f == Format::json) {
    out = "{\"ts\":" + std::to_string(ms) + ",\"event\":";
    append_json_string(out, event);
    for (auto& [k, v] : fields) {
      out += ',';
      append_json_string(out, k);
      out += ':';
      append_json_string(out, v);
    }
    if (suppressed) out += ",\"suppressed\":" + std::to_string(suppressed);
    out += "}\n";
  } else {
    out = "chatd: ";
    out += event;
    for (auto& [k, v] : fields) {
      out += ' ';
      out += k;
      out += '=';
      append_text_value(out, v);
    }
    if (suppressed) out += " suppressed=" + std::to_string(suppressed);
    out += '\n';
  }
  return out;
}

std::string format_message(Format f, long long ms, std::string_view event, std::string_view text) {
  std::string out;
  if (f == Format::json) {
    out = "{\"ts\":" + std::to_string(ms) + ",\"event\":";
    append_json_string(out, event);
    out += ",\"message\":";
    append_json_string(out, text);
    out += "}\n";
  } else {
    out = "chatd: ";
    out += text;
    out += '\n';
  }
  return out;
}

void message(std::string_view event, std::string_view text) {
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
  auto line = format_message(g_format.load(), ms, event, text);
  std::fwrite(line.data(), 1, line.size(), stderr);
}

bool event(std::string_view event, std::initializer_list<Field> fields) {
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
  unsigned long long suppressed = 0;
  {
    std::lock_guard lock(g_mu);
    auto& k = g_kinds[std::string(event)];
    if (k.second != ms / 1000) {
      k.second = ms / 1000;
      k.lines = 0;
    }
    if (k.lines >= kLinesPerSecond) {
      ++k.suppressed;
      return false;
    }
    ++k.lines;
    suppressed = std::exchange(k.suppressed, 0);
  }
  auto line = format_line(g_format.load(), ms, event, fields, suppressed);
  std::fwrite(line.data(), 1, line.size(), stderr);
  return true;
}

}  // namespace chatd::log
