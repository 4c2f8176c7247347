#include "chat/rules.h"

#include <boost/json.hpp>

#include <array>
#include <random>
#include <vector>

#include "utf8/utf8.h"

namespace chatd::chat {
namespace {

class Category final : public std::error_category {
 public:
  const char* name() const noexcept override { return "chatd.chat"; }
  std::string message(int ev) const override {
    switch (static_cast<Error>(ev)) {
      case Error::ok: return "ok";
      case Error::bad_json:
        return "the message body must be one JSON object of valid JSON (UTF-8, no unpaired surrogate)";
      case Error::bad_field: return "type, roomId, sender and message must be strings";
      case Error::unknown_type: return "type must be ENTER, TALK or QUIT";
      case Error::bad_room_id: return "roomId must be a room's UUID";
      case Error::unknown_room: return "no such room";
      case Error::bad_sender:
        return "sender must be a visible nickname no longer than --max-sender-bytes, without control, line-break or "
               "bidirectional formatting characters";
      case Error::empty_message: return "a TALK message needs text";
      case Error::message_too_long: return "the message text is too long";
      case Error::bad_utf8: return "text must be valid UTF-8";
      case Error::unknown_destination: return "messages are sent to /pub/chat/message";
      case Error::publish_failed: return "the message could not be delivered; try again";
      case Error::store_unavailable: return "the room store is unavailable; try again";
      case Error::bad_client_id: return "x-client-id must be 1 to --max-client-id-bytes printable characters";
      case Error::rate_limited: return "too many messages: slow down (--send-rate)";
      case Error::room_busy: return "this room gets too many messages right now: try again shortly (--room-send-rate)";
      case Error::history_unavailable: return "the room's history could not be read; try again";
      case Error::not_yourself: return "sender must be your own name (the token's name, else its sub)";
      case Error::room_forbidden: return "you may not enter this room";
      case Error::presence_off: return "presence is off on this node (--presence off)";
      case Error::presence_unavailable: return "who is in the room could not be read; try again";
      case Error::publish_unconfirmed:
        return "the message engine did not confirm the message, which may have been published: send it again with the "
               "same x-client-id to have it published once";
    }
    return "unknown chat error";
  }
};

// Returns the string member `key` of `o`, nullptr when absent, and sets `wrong` when present
// but not a string (null counts as absent).
const boost::json::string* string_member(const boost::json::object& o, std::string_view key, bool& wrong) {
  auto v = o.if_contains(key);
  if (!v || v->is_null()) return nullptr;
  if (!v->is_string()) {
    wrong = true;
    return nullptr;
  }
  return &v->get_string();
}

std::string replace_all(std::string_view text, std::string_view what, std::string_view with) {
  std::string out;
  out.reserve(text.size() + with.size());
  for (std::size_t pos = 0;;) {
    auto hit = text.find(what, pos);
    if (hit == std::string_view::npos) {
      out.append(text.substr(pos));
      return out;
    }
    out.append(text.substr(pos, hit - pos)).append(with);
    pos = hit + what.size();
  }
}

}  // namespace

const std::error_category& error_category() noexcept {
  static const Category category;
  return category;
}

std::error_code make_error_code(Error e) noexcept { return {static_cast<int>(e), error_category()}; }

std::string_view to_string(MessageType t) {
  switch (t) {
    case MessageType::enter: return "ENTER";
    case MessageType::talk: return "TALK";
    case MessageType::quit: return "QUIT";
    case MessageType::system: return "SYSTEM";
  }
  return "TALK";
}

namespace {

// Code points a name may not hold anywhere: C0 and C1 controls and DEL (NUL, newline, escape),
// line and paragraph separators, and the bidirectional formatting characters, which reorder
// what follows them on screen (U+202E shows "gnp.exe" as "exe.png").
bool forbidden_in_name(std::uint32_t c) {
  return c < 0x20 || (c >= 0x7F && c <= 0x9F) || c == 0x061C || c == 0x200E || c == 0x200F || c == 0x2028 ||
         c == 0x2029 || (c >= 0x202A && c <= 0x202E) || (c >= 0x2066 && c <= 0x2069);
}

// Code points that show nothing: spaces of every width, zero-width characters, the Hangul
// fillers Korean apps see as "blank names", the braille blank.
bool invisible(std::uint32_t c) {
  return c == 0x20 || c == 0x09 || c == 0xA0 || c == 0xAD || c == 0x115F || c == 0x1160 || c == 0x1680 ||
         c == 0x180E || (c >= 0x2000 && c <= 0x200D) || c == 0x202F || c == 0x205F || c == 0x2060 ||
         c == 0x2800 || c == 0x3000 || c == 0x3164 || c == 0xFEFF || c == 0xFFA0;
}

}  // namespace

std::optional<std::string> check_name(std::string_view raw, std::size_t max_bytes, std::string& why) {
  if (!utf8::valid(raw)) {
    why = "must be valid UTF-8";
    return std::nullopt;
  }
  // Split into code points: (value, offset, length).
  struct Cp {
    std::uint32_t c;
    std::size_t at, len;
  };
  std::vector<Cp> cps;
  cps.reserve(raw.size());
  for (std::size_t i = 0; i < raw.size();) {
    std::uint32_t c = static_cast<unsigned char>(raw[i]);
    std::size_t n = c < 0x80 ? 1 : utf8::decode_multibyte(raw.substr(i), c);
    cps.push_back({c, i, n});
    i += n;
  }
  std::size_t first = 0, last = cps.size();
  while (first < last && invisible(cps[first].c)) ++first;
  while (last > first && invisible(cps[last - 1].c)) --last;
  if (first == last) {
    why = "is required and must show something, not only blanks or invisible characters";
    return std::nullopt;
  }
  for (std::size_t i = first; i < last; ++i) {
    if (forbidden_in_name(cps[i].c)) {
      why = "must not contain control characters, line breaks or bidirectional formatting characters";
      return std::nullopt;
    }
  }
  auto trimmed = raw.substr(cps[first].at, cps[last - 1].at + cps[last - 1].len - cps[first].at);
  if (trimmed.size() > max_bytes) {
    why = "is longer than " + std::to_string(max_bytes) + " bytes";
    return std::nullopt;
  }
  return std::string(trimmed);
}

std::optional<std::string> check_room_name(std::string_view raw, std::size_t max_bytes, std::string& why) {
  auto name = check_name(raw, max_bytes, why);
  if (!name) why = "name " + why;
  return name;
}

std::string canonical_room_id(std::string_view id) {
  std::string out(id);
  for (auto& c : out) c = static_cast<char>(c >= 'A' && c <= 'F' ? c - 'A' + 'a' : c);
  return out;
}

bool is_room_id(std::string_view id) {
  if (id.size() != 36) return false;
  for (std::size_t i = 0; i < id.size(); ++i) {
    char c = id[i];
    bool dash = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash ? c != '-' : !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')))
      return false;
  }
  return true;
}

std::string new_room_id() {
  // Seeded with 256 bits, not one 32-bit value: with 2^32 seeds, two threads or runs repeat
  // a whole stream of ids once about 2^16 of them have started, and an id must name one room
  // for good (a deleted room's history keeps nothing that would tell two apart).
  thread_local std::mt19937_64 rng = [] {
    std::random_device rd;
    std::seed_seq seed{rd(), rd(), rd(), rd(), rd(), rd(), rd(), rd()};
    return std::mt19937_64(seed);
  }();
  std::array<unsigned char, 16> b;
  for (std::size_t i = 0; i < 16; i += 8) {
    auto r = rng();
    for (std::size_t k = 0; k < 8; ++k) b[i + k] = static_cast<unsigned char>(r >> (8 * k));
  }
  b[6] = static_cast<unsigned char>((b[6] & 0x0F) | 0x40);  // version 4
  b[8] = static_cast<unsigned char>((b[8] & 0x3F) | 0x80);  // RFC 4122 variant
  static constexpr char hex[] = "0123456789abcdef";
  std::string out;
  out.reserve(36);
  for (std::size_t i = 0; i < 16; ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) out.push_back('-');
    out.push_back(hex[b[i] >> 4]);
    out.push_back(hex[b[i] & 0x0F]);
  }
  return out;
}

std::optional<ChatMessage> parse_chat_message(std::string_view body, const Limits& limits,
                                              std::error_code& ec, const std::string* speaker) {
  ec = {};
  boost::system::error_code jec;
  auto v = boost::json::parse(body, jec);
  if (jec || !v.is_object()) {
    ec = Error::bad_json;
    return std::nullopt;
  }
  const auto& o = v.get_object();
  bool wrong = false;
  auto type = string_member(o, "type", wrong);
  auto room = string_member(o, "roomId", wrong);
  auto sender = string_member(o, "sender", wrong);
  auto text = string_member(o, "message", wrong);
  if (wrong) {
    ec = Error::bad_field;
    return std::nullopt;
  }

  ChatMessage m;
  if (!type) ec = Error::unknown_type;
  else if (*type == "ENTER") m.type = MessageType::enter;
  else if (*type == "TALK") m.type = MessageType::talk;
  else if (*type == "QUIT") m.type = MessageType::quit;
  else ec = Error::unknown_type;
  if (ec) return std::nullopt;

  std::optional<std::string> nick;
  std::string why;
  if (sender) nick = check_name(*sender, limits.max_sender_bytes, why);
  else if (speaker) nick = *speaker;
  if (!room || !is_room_id(*room)) ec = Error::bad_room_id;
  else if (speaker && (!nick || *nick != *speaker)) ec = Error::not_yourself;
  else if (!nick) ec = Error::bad_sender;
  else if (m.type == MessageType::talk && (!text || text->empty())) ec = Error::empty_message;
  else if (text && text->size() > limits.max_message_bytes) ec = Error::message_too_long;
  if (ec) return std::nullopt;

  // Boost.JSON already rejects invalid UTF-8 in strings, so the fields are valid here.
  m.room_id = canonical_room_id(*room);
  m.sender = std::move(*nick);
  if (text) m.message.assign(text->data(), text->size());
  return m;
}

std::string stamp(const ChatMessage& m, std::string_view id, std::int64_t ts_ms, const Texts& texts) {
  std::string text;
  switch (m.type) {
    case MessageType::enter: text = replace_all(texts.enter, "{sender}", m.sender); break;
    case MessageType::quit: text = replace_all(texts.quit, "{sender}", m.sender); break;
    case MessageType::talk:
    case MessageType::system: text = m.message; break;
  }
  boost::json::object o;
  o.reserve(6);
  o.emplace("type", to_string(m.type));
  o.emplace("roomId", m.room_id);
  o.emplace("sender", m.sender);
  o.emplace("message", text);
  o.emplace("id", id);
  o.emplace("ts", ts_ms);
  return boost::json::serialize(o);
}

std::string with_seq(std::string_view payload, std::uint64_t seq, std::string_view epoch) {
  std::string out;
  out.reserve(payload.size() + 40 + epoch.size());
  auto end = payload.rfind('}');
  if (end == std::string_view::npos) end = payload.size();
  out.append(payload.substr(0, end));
  out.append(end > 1 ? ",\"seq\":" : "\"seq\":");
  out.append(std::to_string(seq));
  out.append(",\"epoch\":\"");
  out.append(epoch);
  out.append("\"}");
  return out;
}

std::string with_field(std::string_view object_json, std::string_view name, std::string_view value) {
  boost::system::error_code ec;
  auto v = boost::json::parse(object_json, ec);
  if (ec || !v.is_object()) return std::string(object_json);
  v.get_object()[name] = value;
  return boost::json::serialize(v);
}

std::string error_json(int status, std::string_view error) {
  return boost::json::serialize(boost::json::object{{"status", status}, {"error", error}});
}

}  // namespace chatd::chat
