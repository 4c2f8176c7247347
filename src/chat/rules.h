// The chat rules, with no sockets and no engines: what a SEND to /pub/chat/message must hold,
// and what the server adds before the message travels.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>

#include "chat/limits.h"

namespace chatd::chat {

// Chat-level rejections. They reach the sender on /user/queue/errors and never close the
// connection; protocol violations are stomp:: errors and do.
enum class Error {
  ok = 0,
  bad_json = 1,        // the body is not a JSON object
  unknown_type,        // type is not ENTER, TALK or QUIT
  bad_room_id,         // roomId missing or not a UUID
  unknown_room,        // roomId names no room
  bad_sender,          // sender missing, empty or longer than Limits::max_sender_bytes
  empty_message,       // a TALK without text
  message_too_long,    // message longer than Limits::max_message_bytes
  bad_utf8,            // a text field is not valid UTF-8
  unknown_destination, // SEND to something other than /pub/chat/message
  publish_failed,      // the message engine did not take the message
  store_unavailable,   // the room store could not be asked
  bad_client_id,       // x-client-id empty or longer than Limits::max_client_id_bytes
  rate_limited,        // this connection sent faster than Limits::send_rate / send_burst
  room_busy,           // the room took more than Limits::room_send_rate / room_send_burst
  history_unavailable, // the message engine could not read the room's history
  not_yourself,        // --auth jwt: the body's sender is not the token's name (403)
  room_forbidden,      // --auth jwt: a restricted room this identity may not enter (403)
  presence_off,        // presence is off on this node (--presence off)
  presence_unavailable,// the presence engine did not answer
  publish_unconfirmed, // the message engine took the message but did not confirm it: it may be published
  bad_field,           // type, roomId, sender or message is there but not a string
};
const std::error_category& error_category() noexcept;
std::error_code make_error_code(Error e) noexcept;

// system: from the server API only (never accepted in a SEND); its text is kept as given.
enum class MessageType { enter, talk, quit, system };
std::string_view to_string(MessageType t);

struct ChatMessage {
  MessageType type = MessageType::talk;
  std::string room_id;
  std::string sender;
  std::string message;
};

// Returns the message read from a SEND body, or the rule it breaks in `ec`. With `speaker`
// (--auth jwt: the token's name) the message speaks for it: a body without `sender` gets it,
// one whose `sender` differs is refused (Error::not_yourself), so nobody can ENTER, TALK or QUIT
// as someone else.
std::optional<ChatMessage> parse_chat_message(std::string_view body, const Limits& limits,
                                              std::error_code& ec, const std::string* speaker = nullptr);

// Returns whether `id` is a UUID in its canonical 8-4-4-4-12 hex form.
bool is_room_id(std::string_view id);

// Returns room id `id` (a UUID, see is_room_id) in the lower case rooms are stored under.
std::string canonical_room_id(std::string_view id);

// Returns a new random (v4) UUID in lower case.
std::string new_room_id();

// Returns the JSON that travels on the bus: the message with ENTER/QUIT text replaced by the
// announcement, plus the server's `id` and `ts` (ms since the epoch). The bus adds `seq`.
std::string stamp(const ChatMessage& m, std::string_view id, std::int64_t ts_ms, const Texts& texts);

// Returns `payload` (a JSON object) with "seq":seq and "epoch":"epoch" appended: the body
// subscribers receive. `epoch` is a bus token ([A-Za-z0-9_.-]) and needs no escaping.
std::string with_seq(std::string_view payload, std::uint64_t seq, std::string_view epoch);

// Returns `object_json` (a JSON object) with the string field `name` appended.
std::string with_field(std::string_view object_json, std::string_view name, std::string_view value);

// Returns the JSON error body {"status":status,"error":"…"} used by REST and /user/queue/errors.
std::string error_json(int status, std::string_view error);

// Returns the name (a sender's nickname or a room's name) `raw` with invisible characters
// (spaces of any width, zero-width characters, Hangul fillers) trimmed from both ends, when it
// is acceptable: valid UTF-8, something visible left, at most `max_bytes` after trimming, and
// no C0/C1 control character (NUL, newline), line separator or bidirectional formatting
// character (U+202A-E, U+2066-9, U+200E/F, U+061C) anywhere. Otherwise returns nothing and puts
// the reason, worded to follow "name ", in `why`.
std::optional<std::string> check_name(std::string_view raw, std::size_t max_bytes, std::string& why);

// check_name for a room name; `why` then starts with "name".
std::optional<std::string> check_room_name(std::string_view raw, std::size_t max_bytes, std::string& why);

}  // namespace chatd::chat

namespace std {
template <>
struct is_error_code_enum<chatd::chat::Error> : true_type {};
}  // namespace std
