#include "sockjs/sockjs.h"

#include <array>

#include "utf8/utf8.h"

namespace chatd::sockjs {
namespace {

class Category final : public std::error_category {
 public:
  const char* name() const noexcept override { return "sockjs"; }
  std::string message(int ev) const override {
    switch (static_cast<Error>(ev)) {
      case Error::ok: return "ok";
      case Error::not_sockjs: return "not a SockJS path";
      case Error::not_found: return "no such SockJS resource";
      case Error::bad_session_path: return "bad SockJS server or session id";
      case Error::unknown_transport: return "unknown SockJS transport";
      // These two are the protocol's own texts: servers send them as the 500 body.
      case Error::payload_expected: return "Payload expected.";
      case Error::broken_json: return "Broken JSON encoding.";
    }
    return "unknown sockjs error";
  }
};

constexpr char hex_digits[] = "0123456789abcdef";

void append_u_escape(std::string& out, std::uint32_t unit) {
  out += "\\u";
  out += hex_digits[(unit >> 12) & 0xF];
  out += hex_digits[(unit >> 8) & 0xF];
  out += hex_digits[(unit >> 4) & 0xF];
  out += hex_digits[unit & 0xF];
}

// Code points SockJS clients need escaped: browsers mangle or drop them in raw form.
constexpr bool sockjs_escapes(std::uint32_t cp) {
  return cp <= 0x1F || (cp >= 0x200C && cp <= 0x200F) || (cp >= 0x2028 && cp <= 0x202F) ||
         (cp >= 0x2060 && cp <= 0x206F) || (cp >= 0xFFF0 && cp <= 0xFFFF);
}

void append_json_string(std::string& out, std::string_view text) {
  out += '"';
  append_escaped(out, text);
  out += '"';
}

// Reads the JSON that SockJS clients send (RFC 8259 strings, arrays of them, whitespace):
// enough to decode payloads without a JSON library.
class JsonReader {
 public:
  explicit JsonReader(std::string_view s) : s_(s) {}

  void skip_space() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r')) ++i_;
  }
  char peek() const { return i_ < s_.size() ? s_[i_] : '\0'; }
  bool at_end() const { return i_ == s_.size(); }
  bool take(char c) {
    if (peek() != c || at_end()) return false;
    ++i_;
    return true;
  }

  // Reads the string literal at the cursor into `out` (appending); returns false when it is not
  // one: unterminated, a raw control character, a bad escape, a lone surrogate, or bytes that
  // are not UTF-8.
  bool read_string(std::string& out) {
    if (!take('"')) return false;
    while (true) {
      std::size_t j = i_;
      while (j < s_.size()) {
        const auto b = static_cast<unsigned char>(s_[j]);
        if (b == '"' || b == '\\' || b < 0x20) break;
        ++j;
      }
      const std::string_view run = s_.substr(i_, j - i_);
      if (!utf8::valid(run)) return false;
      out.append(run);
      i_ = j;
      if (at_end()) return false;
      const char c = s_[i_++];
      if (c == '"') return true;
      if (c != '\\' || at_end()) return false;  // a raw control character, or a dangling '\\'
      switch (s_[i_++]) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          std::uint32_t cp = 0;
          if (!read_hex4(cp) || (cp >= 0xDC00 && cp <= 0xDFFF)) return false;
          if (cp >= 0xD800 && cp <= 0xDBFF) {  // a surrogate pair: the low half must follow
            std::uint32_t low = 0;
            if (!take('\\') || !take('u') || !read_hex4(low) || low < 0xDC00 || low > 0xDFFF) return false;
            cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
          }
          utf8::append(out, cp);
          break;
        }
        default: return false;
      }
    }
  }

 private:
  bool read_hex4(std::uint32_t& v) {
    if (s_.size() - i_ < 4) return false;
    for (std::size_t k = 0; k < 4; ++k) {
      const char c = s_[i_++];
      std::uint32_t d;
      if (c >= '0' && c <= '9') d = static_cast<std::uint32_t>(c - '0');
      else if (c >= 'a' && c <= 'f') d = static_cast<std::uint32_t>(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F') d = static_cast<std::uint32_t>(c - 'A' + 10);
      else return false;
      v = (v << 4) | d;
    }
    return true;
  }

  std::string_view s_;
  std::size_t i_ = 0;
};

bool has_dot(std::string_view s) { return s.find('.') != std::string_view::npos; }

}  // namespace

const std::error_category& error_category() noexcept {
  static const Category category;
  return category;
}

std::error_code make_error_code(Error e) noexcept {
  return {static_cast<int>(e), error_category()};
}

std::string_view to_string(Transport t) {
  switch (t) {
    case Transport::websocket: return "websocket";
    case Transport::xhr: return "xhr";
    case Transport::xhr_send: return "xhr_send";
    case Transport::xhr_streaming: return "xhr_streaming";
  }
  return "?";
}

std::error_code parse_path(std::string_view target, std::string_view base, Route& out) {
  std::string_view path = target.substr(0, target.find('?'));
  if (!base.empty() && base.back() == '/') base.remove_suffix(1);
  if (path.substr(0, base.size()) != base) return Error::not_sockjs;
  path.remove_prefix(base.size());
  if (path.empty() || path == "/") {
    out = Route{};
    return {};
  }
  // "/ws-stompx" shares the prefix but is another resource.
  if (path.front() != '/') return Error::not_sockjs;
  path.remove_prefix(1);

  std::array<std::string_view, 3> parts;
  std::size_t n = 0;
  while (n < parts.size()) {
    const auto slash = path.find('/');
    parts[n++] = path.substr(0, slash);
    if (slash == std::string_view::npos) {
      path = {};
      break;
    }
    path.remove_prefix(slash + 1);
    if (n == parts.size()) return Error::not_found;  // a fourth segment (even an empty one)
  }

  if (n == 1) {
    if (parts[0] == "info") {
      out = Route{};
      out.kind = Route::Kind::info;
      return {};
    }
    if (parts[0] == "websocket") {
      out = Route{};
      out.kind = Route::Kind::raw_websocket;
      return {};
    }
    return Error::not_found;
  }
  if (n != 3) return Error::not_found;

  const auto server = parts[0], session = parts[1], transport = parts[2];
  if (server.empty() || session.empty() || has_dot(server) || has_dot(session) ||
      server.size() > max_id_bytes || session.size() > max_id_bytes) {
    return Error::bad_session_path;
  }
  Route r{.kind = Route::Kind::session, .server = server, .session = session};
  if (transport == "websocket") r.transport = Transport::websocket;
  else if (transport == "xhr") r.transport = Transport::xhr;
  else if (transport == "xhr_send") r.transport = Transport::xhr_send;
  else if (transport == "xhr_streaming") r.transport = Transport::xhr_streaming;
  else return Error::unknown_transport;
  out = r;
  return {};
}

void append_open(std::string& out) { out += 'o'; }

void append_heartbeat(std::string& out) { out += 'h'; }

void append_close(std::string& out, Close c) {
  out += "c[";
  out += std::to_string(c.code);
  out += ',';
  append_json_string(out, c.reason);
  out += ']';
}

void append_messages(std::string& out, std::span<const std::string_view> messages) {
  out += "a[";
  bool first = true;
  for (const auto m : messages) {
    if (!first) out += ',';
    first = false;
    append_json_string(out, m);
  }
  out += ']';
}

void append_message(std::string& out, std::string_view message) {
  append_messages(out, std::span<const std::string_view>(&message, 1));
}

void append_escaped(std::string& out, std::string_view text) {
  out.reserve(out.size() + text.size() + 8);
  std::size_t i = 0;
  while (i < text.size()) {
    // Copy the longest run that needs no escaping in one append.
    std::size_t j = i;
    while (j < text.size()) {
      const auto b = static_cast<unsigned char>(text[j]);
      if (b < 0x20 || b == '"' || b == '\\' || b >= 0x80) break;
      ++j;
    }
    out.append(text.data() + i, j - i);
    i = j;
    if (i == text.size()) break;

    const auto b = static_cast<unsigned char>(text[i]);
    if (b < 0x80) {
      switch (b) {
        case '"': out += "\\\""; break;
        case '\\': out += "\\\\"; break;
        case '\n': out += "\\n"; break;
        case '\r': out += "\\r"; break;
        case '\t': out += "\\t"; break;
        default: append_u_escape(out, b); break;
      }
      ++i;
      continue;
    }
    std::uint32_t cp = 0;
    const std::size_t len = utf8::decode_multibyte(text.substr(i), cp);
    if (len == 0) {
      append_u_escape(out, 0xFFFD);
      ++i;
    } else if (sockjs_escapes(cp)) {
      append_u_escape(out, cp);  // every escaped range lies in the BMP
      i += len;
    } else {
      out.append(text.data() + i, len);
      i += len;
    }
  }
}

std::error_code decode_messages(std::string_view payload, Source source,
                                std::vector<std::string>& out) {
  if (payload.empty()) {
    if (source == Source::websocket) return {};
    return Error::payload_expected;
  }
  const std::size_t kept = out.size();
  JsonReader in{payload};
  bool ok = false;
  in.skip_space();
  if (in.peek() == '"') {
    ok = source == Source::websocket && in.read_string(out.emplace_back());
  } else if (in.take('[')) {
    in.skip_space();
    ok = in.take(']');
    while (!ok) {
      if (in.peek() != '"' || !in.read_string(out.emplace_back())) break;
      in.skip_space();
      if (in.take(']')) {
        ok = true;
      } else if (!in.take(',')) {
        break;
      }
      in.skip_space();
    }
  }
  in.skip_space();
  if (!ok || !in.at_end()) {
    out.resize(kept);
    return Error::broken_json;
  }
  return {};
}

std::string info_json(std::uint32_t entropy, bool websocket) {
  std::string out = "{\"websocket\":";
  out += websocket ? "true" : "false";
  out += ",\"cookie_needed\":false,\"origins\":[\"*:*\"],\"entropy\":";
  out += std::to_string(entropy);
  out += '}';
  return out;
}

std::string_view xhr_streaming_prelude() {
  static const std::string prelude = std::string(2048, 'h') + '\n';
  return prelude;
}

Session::Write Session::attach(Transport t) {
  if (receiver_ != Receiver::none) {
    std::string out;
    append_close(out, another_connection_open);
    out += '\n';
    return {std::move(out), true};  // answers the newcomer only
  }
  receiver_ = t == Transport::xhr_streaming ? Receiver::streaming : Receiver::polling;
  streamed_ = 0;
  std::string out;
  if (receiver_ == Receiver::streaming) out += xhr_streaming_prelude();
  if (!opened_) {
    opened_ = true;
    append_open(out);
    out += '\n';
    // A polling receiver takes one frame per request.
    if (receiver_ == Receiver::polling) return emit(std::move(out));
  }
  append_pending(out);
  if (closed_) {
    append_close(out, close_);
    out += '\n';
    receiver_ = Receiver::none;
    return {std::move(out), true};
  }
  // A polling receiver with nothing to send waits for a message or a heart-beat.
  if (receiver_ == Receiver::polling && pending_.empty() && out.empty()) return {};
  return emit(std::move(out));
}

bool Session::push(std::string message, bool replay) {
  if (closed_) return false;
  if (replay) replay_allowance_ = std::min(replay_allowance_ + message.size(), limits_.max_replay_bytes);
  if (pending_bytes_ + message.size() > limits_.max_pending_bytes + replay_allowance_) return false;
  pending_bytes_ += message.size();
  pending_.push_back(std::move(message));
  return true;
}

Session::Write Session::flush() {
  if (receiver_ == Receiver::none || pending_.empty()) return {};
  std::string out;
  append_pending(out);
  return emit(std::move(out));
}

Session::Write Session::heartbeat() {
  if (receiver_ == Receiver::none) return {};
  std::string out;
  append_heartbeat(out);
  out += '\n';
  return emit(std::move(out));
}

Session::Write Session::close(Close c) {
  if (!closed_) {
    closed_ = true;
    close_ = c;
  }
  if (receiver_ == Receiver::none) return {};
  std::string out;
  append_pending(out);
  append_close(out, close_);
  out += '\n';
  receiver_ = Receiver::none;
  return {std::move(out), true};
}

Session::Write Session::emit(std::string bytes) {
  bool finish = receiver_ == Receiver::polling && !bytes.empty();
  if (receiver_ == Receiver::streaming) {
    streamed_ += bytes.size();
    finish = streamed_ >= limits_.streaming_bytes_limit;
  }
  if (finish) receiver_ = Receiver::none;
  return {std::move(bytes), finish};
}

void Session::append_pending(std::string& out) {
  if (pending_.empty()) return;
  std::vector<std::string_view> views(pending_.begin(), pending_.end());
  append_messages(out, views);
  out += '\n';
  pending_.clear();
  pending_bytes_ = 0;
  replay_allowance_ = 0;  // the replay has been taken: the bound is the plain one again
}

}  // namespace chatd::sockjs
