// The STOMP codec. The parser is a byte-stream state machine: every input byte is looked at
// once, lines are found with memchr, and only a line split across two consume() calls is
// copied aside. Headers and body are written straight into frame_, whose buffers are reused.
#include "stomp/stomp.h"

#include "utf8/utf8.h"

#include <algorithm>
#include <array>
#include <charconv>
#include <cstring>
#include <limits>
#include <utility>

namespace chatd::stomp {

namespace {

constexpr std::array<std::string_view, 15> kCommandNames = {
    "CONNECT", "STOMP",  "CONNECTED", "SEND",       "SUBSCRIBE", "UNSUBSCRIBE", "ACK",   "NACK",
    "BEGIN",   "COMMIT", "ABORT",     "DISCONNECT", "MESSAGE",   "RECEIPT",     "ERROR",
};

// The longest command ("UNSUBSCRIBE", "DISCONNECT"...) plus a CR: a longer first line is not a
// command, and saying so early keeps a garbage stream from filling the line buffer.
constexpr std::size_t kMaxCommandLine = 12;

// Buffers kept between frames: chat headers are short and chat bodies a few hundred bytes.
constexpr std::size_t kKeepCapacity = 256;
constexpr std::size_t kKeepBodyCapacity = 8 * 1024;

// CONNECT, STOMP and CONNECTED headers are never escaped (STOMP 1.2 §Value Encoding), so that
// a 1.0 peer can negotiate before anyone knows the version.
bool is_handshake(Command c) {
  return c == Command::connect || c == Command::stomp || c == Command::connected;
}

// Appends `in` decoded per `v` to `out`. Returns false on an undefined escape.
bool unescape_into(std::string_view in, Version v, std::string& out) {
  out.clear();
  std::size_t from = 0;
  while (true) {
    const std::size_t bs = in.find('\\', from);
    if (bs == std::string_view::npos) {
      out.append(in.data() + from, in.size() - from);
      return true;
    }
    out.append(in.data() + from, bs - from);
    if (bs + 1 == in.size()) return false;  // a trailing '\'
    switch (in[bs + 1]) {
      case 'n': out.push_back('\n'); break;
      case 'c': out.push_back(':'); break;
      case '\\': out.push_back('\\'); break;
      case 'r':
        if (v != Version::v1_2) return false;  // \r is new in 1.2
        out.push_back('\r');
        break;
      default: return false;
    }
    from = bs + 2;
  }
}

// Appends `in` escaped per `v` to `out`; `escape` false appends it raw.
void escape_into(std::string_view in, Version v, bool escape, std::string& out) {
  if (!escape || v == Version::v1_0) {
    // Nothing can be escaped here, and a raw LF would end the header: it becomes a space. (A CR
    // is only a line end right before the LF, which no value then holds.)
    const auto from = out.size();
    out.append(in);
    std::replace(out.begin() + static_cast<std::ptrdiff_t>(from), out.end(), '\n', ' ');
    return;
  }
  for (const char c : in) {
    switch (c) {
      case '\n': out.append("\\n"); break;
      case ':': out.append("\\c"); break;
      case '\\': out.append("\\\\"); break;
      case '\r':
        // 1.1 has no escape for CR: it goes raw, as the 1.1 spec leaves it.
        if (v == Version::v1_2) out.append("\\r");
        else out.push_back(c);
        break;
      default: out.push_back(c);
    }
  }
}

// Returns the decimal value of `s`, or false when `s` is not all digits or exceeds `max`.
bool parse_length(std::string_view s, std::size_t max, std::size_t& out) {
  if (s.empty()) return false;
  std::size_t n = 0;
  for (const char c : s) {
    if (c < '0' || c > '9') return false;
    const auto digit = static_cast<std::size_t>(c - '0');
    if (n > (max - digit) / 10) return false;  // n * 10 + digit > max, without overflowing
    n = n * 10 + digit;
  }
  out = n;
  return true;
}

class StompCategory final : public std::error_category {
 public:
  const char* name() const noexcept override { return "chatd.stomp"; }
  std::string message(int ev) const override {
    // These sentences end up in ERROR frames sent to clients.
    switch (static_cast<Error>(ev)) {
      case Error::ok: return "No error.";
      case Error::unknown_command: return "The frame does not start with a known STOMP command.";
      case Error::malformed_header:
        return "A header line is not of the form name:value.";
      case Error::bad_escape:
        return "A header contains an escape sequence that this STOMP version does not define.";
      case Error::frame_too_large: return "The frame is larger than this server accepts.";
      case Error::too_many_headers: return "The frame has more headers than this server accepts.";
      case Error::header_too_long: return "A header line is longer than this server accepts.";
      case Error::bad_content_length:
        return "The content-length header is not a decimal number within the frame size limit.";
      case Error::missing_nul:
        return "The body is not followed by a NUL byte where content-length says it ends.";
      case Error::header_not_utf8: return "A header line is not UTF-8.";
    }
    return "Unknown STOMP codec error.";
  }
};

}  // namespace

std::string_view to_string(Command c) {
  const auto i = static_cast<std::size_t>(c);
  return i < kCommandNames.size() ? kCommandNames[i] : std::string_view("?");
}

std::string_view to_string(Version v) {
  switch (v) {
    case Version::v1_0: return "1.0";
    case Version::v1_1: return "1.1";
    case Version::v1_2: return "1.2";
  }
  return "?";
}

const std::string* Frame::header(std::string_view name) const {
  for (const Header& h : headers) {
    if (h.name == name) return &h.value;
  }
  return nullptr;
}

const std::error_category& error_category() noexcept {
  static const StompCategory category;
  return category;
}

std::error_code make_error_code(Error e) noexcept {
  return {static_cast<int>(e), error_category()};
}

// ---- Parser ---------------------------------------------------------------------------------

Parser::Result Parser::fail(std::size_t used, Error e) {
  state_ = State::failed;
  error_ = make_error_code(e);
  line_.clear();
  return {used, Status::error};
}

void Parser::begin_frame() {
  // Keep the buffers of ordinary-sized headers and bodies for the next frame, so a steady
  // stream of chat frames allocates nothing; free big ones, so that one large frame does not
  // pin its memory on an idle connection for its whole life.
  while (!frame_.headers.empty()) {
    Header& h = frame_.headers.back();
    if (h.name.capacity() <= kKeepCapacity && h.value.capacity() <= kKeepCapacity) {
      spare_.push_back(std::move(h));
    }
    frame_.headers.pop_back();
  }
  if (frame_.body.capacity() > kKeepBodyCapacity) std::string().swap(frame_.body);
  if (line_.capacity() > kKeepCapacity) std::string().swap(line_);
  frame_.body.clear();
  frame_bytes_ = 0;
  body_left_ = 0;
  line_.clear();
}

void Parser::release_buffers() {
  std::vector<Header>().swap(frame_.headers);
  std::vector<Header>().swap(spare_);
  std::string().swap(frame_.body);
  if (state_ == State::idle) std::string().swap(line_);
}

Error Parser::on_command_line(std::string_view line) {
  for (std::size_t i = 0; i < kCommandNames.size(); ++i) {
    if (line == kCommandNames[i]) {
      frame_.command = static_cast<Command>(i);
      unescape_ = version_ != Version::v1_0 && !is_handshake(frame_.command);
      return Error::ok;
    }
  }
  return Error::unknown_command;
}

Error Parser::on_header_line(std::string_view line) {
  if (line.empty()) return on_head_end();
  if (line.size() > limits_.max_header_line) return Error::header_too_long;
  if (frame_.headers.size() >= limits_.max_headers) return Error::too_many_headers;
  const std::size_t colon = line.find(':');
  if (colon == std::string_view::npos || colon == 0) return Error::malformed_header;
  // Header values go back out in text frames (receipt-id, subscription, error texts).
  if (std::any_of(line.begin(), line.end(), [](char c) { return static_cast<unsigned char>(c) >= 0x80; }) &&
      !utf8::valid(line))
    return Error::header_not_utf8;

  Header h;
  if (!spare_.empty()) {
    h = std::move(spare_.back());
    spare_.pop_back();
  }
  const std::string_view name = line.substr(0, colon);
  const std::string_view value = line.substr(colon + 1);
  if (unescape_) {
    if (!unescape_into(name, version_, h.name) || !unescape_into(value, version_, h.value)) {
      return Error::bad_escape;
    }
  } else {
    h.name.assign(name);
    h.value.assign(value);
  }
  frame_.headers.push_back(std::move(h));
  return Error::ok;
}

Error Parser::on_head_end() {
  const std::string* length = frame_.header("content-length");
  if (length == nullptr) {
    state_ = State::body_nul;
    return Error::ok;
  }
  std::size_t n = 0;
  if (!parse_length(*length, limits_.max_frame_bytes, n)) return Error::bad_content_length;
  // The whole frame is now known; refuse it before reading a byte of its body.
  if (n >= limits_.max_frame_bytes - frame_bytes_) return Error::frame_too_large;  // n + NUL
  frame_.body.reserve(n);
  body_left_ = n;
  state_ = n == 0 ? State::trailing_nul : State::body_length;
  return Error::ok;
}

Parser::Result Parser::consume(std::string_view bytes) {
  if (state_ == State::failed) return {0, Status::error};
  const char* const data = bytes.data();
  const std::size_t size = bytes.size();
  std::size_t pos = 0;

  while (pos < size) {
    switch (state_) {
      case State::idle:
        if (data[pos] == '\n') {
          ++heartbeats_;
          ++pos;
        } else if (data[pos] == '\r') {
          state_ = State::idle_cr;
          ++pos;
        } else {
          begin_frame();
          state_ = State::command;
        }
        break;

      case State::idle_cr:
        if (data[pos] != '\n') return fail(pos, Error::unknown_command);
        ++heartbeats_;
        ++pos;
        state_ = State::idle;
        break;

      case State::command:
      case State::headers: {
        const bool command = state_ == State::command;
        const char* start = data + pos;
        const auto* lf = static_cast<const char*>(std::memchr(start, '\n', size - pos));
        const std::size_t text = lf ? static_cast<std::size_t>(lf - start) : size - pos;
        // +1: the line may still end in a CR that is not part of it (saturating, for "no limit").
        const std::size_t max_header = std::max(limits_.max_header_line, limits_.max_header_line + 1);
        const std::size_t max_line = command ? kMaxCommandLine : max_header;
        const std::size_t taken = text + (lf ? 1 : 0);
        // The error is the limit crossed first in byte order, so it is the same however the
        // input was split. Both rooms are >= 0: earlier chunks stayed within them.
        const std::size_t line_room = max_line - line_.size();
        const std::size_t frame_room = limits_.max_frame_bytes - frame_bytes_;
        if (text > line_room && line_room <= frame_room) {
          return fail(pos + line_room, command ? Error::unknown_command : Error::header_too_long);
        }
        if (taken > frame_room) return fail(pos + frame_room, Error::frame_too_large);
        frame_bytes_ += taken;
        pos += taken;
        if (lf == nullptr) {
          line_.append(start, text);
          break;
        }
        std::string_view line(start, text);
        if (!line_.empty()) {
          line_.append(start, text);
          line = line_;
        }
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        const Error e = command ? on_command_line(line) : on_header_line(line);
        line_.clear();
        if (e != Error::ok) return fail(pos, e);
        if (command) state_ = State::headers;
        break;
      }

      case State::body_length: {
        const std::size_t n = std::min(body_left_, size - pos);
        frame_.body.append(data + pos, n);
        frame_bytes_ += n;
        body_left_ -= n;
        pos += n;
        if (body_left_ == 0) state_ = State::trailing_nul;
        break;
      }

      case State::trailing_nul:
        if (data[pos] != '\0') return fail(pos, Error::missing_nul);
        ++frame_bytes_;
        state_ = State::idle;
        return {pos + 1, Status::frame};

      case State::body_nul: {
        const char* start = data + pos;
        const auto* nul = static_cast<const char*>(std::memchr(start, '\0', size - pos));
        const std::size_t n = nul ? static_cast<std::size_t>(nul - start) : size - pos;
        const std::size_t frame_room = limits_.max_frame_bytes - frame_bytes_;
        if (n + (nul ? 1 : 0) > frame_room) return fail(pos + frame_room, Error::frame_too_large);
        frame_bytes_ += n + (nul ? 1 : 0);
        frame_.body.append(start, n);
        pos += n;
        if (nul != nullptr) {
          state_ = State::idle;
          return {pos + 1, Status::frame};
        }
        break;
      }

      case State::failed:
        return {pos, Status::error};
    }
  }
  return {size, Status::need_more};
}

// ---- Negotiation ----------------------------------------------------------------------------

std::optional<Version> negotiate_version(std::optional<std::string_view> accept) {
  if (!accept) return Version::v1_0;
  std::string_view accept_version = *accept;
  std::optional<Version> best;
  while (true) {
    const std::size_t comma = accept_version.find(',');
    std::string_view item = accept_version.substr(0, comma);
    while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
    while (!item.empty() && item.back() == ' ') item.remove_suffix(1);
    for (const Version v : {Version::v1_0, Version::v1_1, Version::v1_2}) {
      if (item == to_string(v) && (!best || *best < v)) best = v;
    }
    if (comma == std::string_view::npos) return best;
    accept_version.remove_prefix(comma + 1);
  }
}

std::optional<HeartBeat> parse_heart_beat(std::string_view value) {
  const std::size_t comma = value.find(',');
  if (comma == std::string_view::npos) return std::nullopt;
  HeartBeat hb;
  // The spec sets no upper bound: a longer period than 32 bits of milliseconds (49 days) is
  // as good as none, so it is taken as the longest.
  const auto number = [](std::string_view s, std::uint32_t& out) {
    if (s.empty()) return false;
    const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
    if (end != s.data() + s.size()) return false;
    if (ec == std::errc::result_out_of_range) out = std::numeric_limits<std::uint32_t>::max();
    return ec == std::errc() || ec == std::errc::result_out_of_range;
  };
  if (!number(value.substr(0, comma), hb.send_ms) ||
      !number(value.substr(comma + 1), hb.receive_ms)) {
    return std::nullopt;
  }
  return hb;
}

HeartBeat negotiate_heart_beat(HeartBeat client, HeartBeat server) {
  HeartBeat out;
  if (server.send_ms != 0 && client.receive_ms != 0) {
    out.send_ms = std::max(server.send_ms, client.receive_ms);
  }
  if (client.send_ms != 0 && server.receive_ms != 0) {
    out.receive_ms = std::max(client.send_ms, server.receive_ms);
  }
  return out;
}

// ---- Encoding -------------------------------------------------------------------------------

std::string escape_header(std::string_view value, Version v, Command command) {
  std::string out;
  out.reserve(value.size());
  escape_into(value, v, !is_handshake(command), out);
  return out;
}

std::string encode(const Frame& f, Version v) {
  const bool escape = !is_handshake(f.command);
  std::size_t estimate = 16 + 32 + f.body.size();
  for (const Header& h : f.headers) estimate += h.name.size() + h.value.size() + 2;
  std::string out;
  out.reserve(estimate);

  out.append(to_string(f.command));
  out.push_back('\n');
  for (const Header& h : f.headers) {
    escape_into(h.name, v, escape, out);
    out.push_back(':');
    escape_into(h.value, v, escape, out);
    out.push_back('\n');
  }
  if (!f.body.empty() && f.header("content-length") == nullptr) {
    // Lets a body carry NUL bytes, and spares the reader a scan for the end.
    out.append("content-length:");
    out.append(std::to_string(f.body.size()));
    out.push_back('\n');
  }
  out.push_back('\n');
  out.append(f.body);
  out.push_back('\0');
  return out;
}

std::string_view SplitMessage::message_id() const {
  constexpr std::string_view key = "\nmessage-id:";
  const auto at = head.find(key);
  if (at == std::string::npos) return {};
  const auto from = at + key.size();
  return std::string_view(head).substr(from, head.find('\n', from) - from);
}

SplitMessage encode_message(std::string_view destination, std::string_view message_id,
                            std::string_view content_type, std::string_view body) {
  std::array<char, 24> length{};
  const auto [end, ec] = std::to_chars(length.data(), length.data() + length.size(), body.size());
  (void)ec;  // 24 digits hold any size_t
  const std::string_view length_text(length.data(), static_cast<std::size_t>(end - length.data()));

  SplitMessage m;
  m.head.reserve(96 + destination.size() + message_id.size() + content_type.size());
  m.head.append("MESSAGE\ndestination:").append(destination);
  m.head.append("\nmessage-id:").append(message_id);
  m.head.append("\ncontent-type:").append(content_type);
  m.head.append("\ncontent-length:").append(length_text);
  m.head.append("\nsubscription:");
  m.tail.reserve(body.size() + 3);
  m.tail.append("\n\n").append(body).push_back('\0');
  return m;
}

}  // namespace chatd::stomp
