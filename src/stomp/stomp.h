// chatd::stomp — a pure STOMP 1.0/1.1/1.2 codec: bytes in, frames out.
// No sockets, clocks, threads or logging: it can be unit-tested, fuzzed and benchmarked alone.
// Errors are values (std::error_code in the "chatd.stomp" category), never exceptions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

namespace chatd::stomp {

enum class Command : std::uint8_t {
  connect, stomp, connected, send, subscribe, unsubscribe, ack, nack,
  begin, commit, abort, disconnect, message, receipt, error,
};

// Returns the wire name, e.g. "SEND".
std::string_view to_string(Command c);

enum class Version : std::uint8_t { v1_0, v1_1, v1_2 };

// Returns "1.0", "1.1" or "1.2".
std::string_view to_string(Version v);

struct Header {
  std::string name;
  std::string value;
};

struct Frame {
  Command command = Command::send;
  std::vector<Header> headers;  // unescaped, in wire order, repeats kept
  std::string body;

  // Returns the value of the first header called `name` (STOMP 1.2: the first repeat wins),
  // or nullptr when there is none.
  const std::string* header(std::string_view name) const;
};

// Bounds on what the parser accepts; each default is the reason it is there.
struct Limits {
  std::size_t max_frame_bytes = 64 * 1024;  // whole frame, command to NUL: Spring's default
  std::size_t max_headers = 32;             // CONNECT and SEND need fewer than ten
  std::size_t max_header_line = 8 * 1024;   // one "name:value" line, before unescaping
};

enum class Error {
  ok = 0,
  unknown_command = 1,          // the first line is not a STOMP command
  malformed_header,             // a header line without ':' or with an empty name
  bad_escape,                   // an undefined escape sequence (\t, trailing '\') in 1.1/1.2
  frame_too_large,              // more bytes than Limits::max_frame_bytes
  too_many_headers,             // more headers than Limits::max_headers
  header_too_long,              // a header line longer than Limits::max_header_line
  bad_content_length,           // content-length is not a decimal number within bounds
  missing_nul,                  // the byte after a content-length body is not NUL
  header_not_utf8,              // a header line that is not UTF-8 (a binary WebSocket message can carry any byte)
};

const std::error_category& error_category() noexcept;
std::error_code make_error_code(Error e) noexcept;

// An incremental parser. Feed it whatever bytes arrived; it consumes at most one frame per
// call. EOLs between frames (heart-beats) are skipped and counted in heartbeats().
//
//   for (auto rest = bytes; !rest.empty();) {
//     auto r = parser.consume(rest);
//     rest.remove_prefix(r.used);
//     if (r.status == Status::frame) on_frame(parser.frame());
//     else if (r.status == Status::error) { fail(parser.error()); break; }
//     else break;  // need_more: every byte was used and kept
//   }
class Parser {
 public:
  enum class Status { need_more, frame, error };
  struct Result {
    std::size_t used;  // bytes of the input taken, whatever the status
    Status status;
  };

  explicit Parser(Limits limits = {}) : limits_(limits) {}

  // Header escaping follows the negotiated version; CONNECT, STOMP and CONNECTED frames are
  // never unescaped (STOMP 1.2 §Value Encoding). Until set, frames are read as 1.2 would.
  void set_version(Version v) { version_ = v; }

  // Returns how much of `bytes` was used and whether a frame is ready. After Status::error
  // the parser stays failed; the connection should be closed.
  Result consume(std::string_view bytes);

  // The frame completed by the last consume() that returned Status::frame.
  Frame& frame() { return frame_; }
  // Frees the buffers kept for the next frame, once frame() is no longer needed. For a
  // connection expected to go quiet (after CONNECT or SUBSCRIBE): an idle one then holds none.
  void release_buffers();
  std::error_code error() const { return error_; }
  std::uint64_t heartbeats() const { return heartbeats_; }

 private:
  // Where the parser is inside the byte stream.
  enum class State : std::uint8_t {
    idle,          // between frames: EOLs here are heart-beats
    idle_cr,       // saw a CR between frames, expecting its LF
    command,       // inside the command line
    headers,       // inside the header lines, up to the blank line
    body_length,   // reading a body of known content-length
    trailing_nul,  // a content-length body is done; the next byte must be NUL
    body_nul,      // reading a body that ends at the first NUL
    failed,        // an error was reported; nothing more is parsed
  };

  Result fail(std::size_t used, Error e);
  void begin_frame();
  Error on_command_line(std::string_view line);
  Error on_header_line(std::string_view line);
  Error on_head_end();

  Limits limits_;
  Version version_ = Version::v1_2;
  State state_ = State::idle;
  bool unescape_ = true;        // this frame's headers are decoded (not CONNECT & co., not 1.0)
  Frame frame_;
  std::error_code error_;
  std::uint64_t heartbeats_ = 0;
  std::string line_;            // a command or header line split across consume() calls
  std::size_t frame_bytes_ = 0; // bytes of the current frame so far, command to NUL
  std::size_t body_left_ = 0;   // content-length bytes still to come
  std::vector<Header> spare_;   // header strings kept from earlier frames to reuse their buffers
};

// ---- Negotiation (STOMP 1.2 §Protocol Negotiation, §Heart-beating) ----

// Returns the highest version in a CONNECT's accept-version value (e.g. "1.0,1.1,1.2"; blanks
// around an item are ignored), 1.0 when the header is absent (nullopt: a 1.0 client), or
// nullopt when it names no supported version (an empty value included).
std::optional<Version> negotiate_version(std::optional<std::string_view> accept_version);

// A heart-beat header "cx,cy" in milliseconds; 0 means "cannot send" / "do not want any".
struct HeartBeat {
  std::uint32_t send_ms = 0;     // the smallest interval at which the sender can send beats
  std::uint32_t receive_ms = 0;  // the interval at which the sender wants to receive them
};

// Returns the parsed "cx,cy" value, or nullopt unless it is two decimals joined by a comma.
std::optional<HeartBeat> parse_heart_beat(std::string_view value);

// Returns, from the server's side, how often it must send beats and how often it should
// expect them (0 = not at all), given the client's CONNECT value and the server's CONNECTED
// value: each direction beats at the larger of the two wishes, or not at all if either is 0.
HeartBeat negotiate_heart_beat(HeartBeat client, HeartBeat server);

// Returns `value` escaped for a header of a frame of `command` under `v`.
std::string escape_header(std::string_view value, Version v, Command command = Command::message);

// Returns the complete wire form of `f` (headers escaped for `v`, then body, then NUL).
// A content-length header is added when the body is not empty and the frame has none.
std::string encode(const Frame& f, Version v);

// A MESSAGE frame split around its subscription value so fan-out can share one encoding
// across every subscriber: wire bytes = head + escaped subscription id + tail.
struct SplitMessage {
  std::string head;  // "MESSAGE\n...content-length:N\nsubscription:"
  std::string tail;  // "\n\n" body "\0"

  // The message-id header's value, as it is in head.
  std::string_view message_id() const;
};

// Returns the split encoding. Header values must be plain (no ':', CR, LF or '\'); the
// caller guarantees it (room ids are UUIDs, message ids are generated).
SplitMessage encode_message(std::string_view destination, std::string_view message_id,
                            std::string_view content_type, std::string_view body);

}  // namespace chatd::stomp

namespace std {
template <>
struct is_error_code_enum<chatd::stomp::Error> : true_type {};
}  // namespace std
