// chatd::sockjs — a pure codec for the SockJS protocol 0.3 server side: URL routing, frame
// encoding, client payload decoding, /info and the xhr_streaming prelude. No sockets, clocks,
// randomness or logging: the HTTP/WebSocket layer does the I/O and passes values in.
// Errors are values (std::error_code in the "sockjs" category), never exceptions.
//
// The wire, in short (https://sockjs.github.io/sockjs-protocol/sockjs-protocol-0.3.3.html):
//   GET  {base}/info                         -> info_json(), no-cache, CORS headers
//   GET  {base}/{server}/{session}/websocket -> WebSocket; frames below, one per text message
//   POST {base}/{server}/{session}/xhr_streaming -> xhr_streaming_prelude(), then frames + '\n'
//   POST {base}/{server}/{session}/xhr       -> one frame + '\n' per request (long polling)
//   POST {base}/{server}/{session}/xhr_send  -> body decoded by decode_messages(); 204
// A session's first frame is "o"; then "a[...]" message arrays and "h" heart-beats; it ends
// with "c[code,\"reason\"]". sockjs::Session below keeps those rules for the xhr transports.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

namespace chatd::sockjs {

enum class Error {
  ok = 0,
  not_sockjs = 1,      // the path is not under the SockJS base
  not_found,           // under the base, but no SockJS resource has that shape
  bad_session_path,    // server or session id empty, contains '.', or longer than max_id_bytes
  unknown_transport,   // a transport this server does not offer (jsonp, eventsource, htmlfile…)
  payload_expected,    // xhr_send with an empty body; message() is the wire text
  broken_json,         // not a JSON array of strings (or a single string on websocket)
};

const std::error_category& error_category() noexcept;
std::error_code make_error_code(Error e) noexcept;

// The transports chatd serves; sockjs-client falls back websocket -> xhr_streaming -> xhr.
enum class Transport : std::uint8_t { websocket, xhr, xhr_send, xhr_streaming };

// Returns the URL segment, e.g. "xhr_streaming".
std::string_view to_string(Transport t);

// True when frames on `t` are each followed by '\n' (the xhr transports); false for websocket,
// whose text messages delimit frames themselves.
constexpr bool frames_end_with_newline(Transport t) { return t != Transport::websocket; }

// Server and session ids are kept per session in a map; bound them.
inline constexpr std::size_t max_id_bytes = 128;

struct Route {
  enum class Kind : std::uint8_t {
    greeting,       // {base} or {base}/: "Welcome to SockJS!\n", or a raw WebSocket if upgraded
    info,           // {base}/info
    raw_websocket,  // {base}/websocket: plain WebSocket, no SockJS framing
    session,        // {base}/{server}/{session}/{transport}
  };
  Kind kind = Kind::greeting;
  // Set for Kind::session only; views into the path passed to parse_path().
  std::string_view server;
  std::string_view session;
  Transport transport = Transport::websocket;
};

// The body of GET {base} without an Upgrade header.
inline constexpr std::string_view greeting_body = "Welcome to SockJS!\n";

// Parses the target of a request against `base` (e.g. "/ws-stomp"); a query string is ignored.
// On success returns {} and fills `out`; otherwise returns the reason, and every reason other
// than not_sockjs should be answered with 404.
std::error_code parse_path(std::string_view target, std::string_view base, Route& out);

// The close codes of the protocol and the reasons sockjs-client expects with them.
struct Close {
  int code;
  std::string_view reason;
};
inline constexpr Close go_away{3000, "Go away!"};  // the server ends the session
inline constexpr Close another_connection_open{2010, "Another connection still open"};
inline constexpr Close connection_interrupted{1002, "Connection interrupted"};

// Frame encoders. Each appends one frame to `out` without the xhr '\n' (see
// frames_end_with_newline) and returns nothing: they cannot fail.
void append_open(std::string& out);       // "o"
void append_heartbeat(std::string& out);  // "h"
// "c[code,\"reason\"]"
void append_close(std::string& out, Close c);
// "a[\"m1\",\"m2\"]": each message is UTF-8 text, escaped by append_escaped().
void append_messages(std::string& out, std::span<const std::string_view> messages);
void append_message(std::string& out, std::string_view message);

// Appends `text` JSON-escaped without the quotes, also escaping what SockJS requires
// (U+0000–U+001F, U+200C–U+200F, U+2028–U+202F, U+2060–U+206F, U+FFF0–U+FFFF) as \uXXXX.
// Invalid UTF-8 bytes become \ufffd, one per byte. Escaping is concatenative at code point
// boundaries, so fan-out escapes a MESSAGE frame's shared head and tail once per delivery
// and only the per-subscriber part each time (net/sockjs/ws_framing.cpp):
//   frame = "a[\"" + escaped(head) + escaped(subscription) + escaped(tail) + "\"]"
void append_escaped(std::string& out, std::string_view text);

// Where a client payload came from: xhr_send bodies must be a JSON array of strings; a
// websocket message may also be a single JSON string, and an empty one is ignored (decodes
// to nothing, successfully).
enum class Source : std::uint8_t { xhr_send, websocket };

// Decodes a client payload, appending each message to `out`. Returns payload_expected for an
// empty xhr_send body and broken_json for anything but the accepted shapes (including invalid
// UTF-8); then `out` is unchanged. xhr_send errors are answered 500 with ec.message() as the
// body; a websocket session that sends broken JSON is closed.
std::error_code decode_messages(std::string_view payload, Source source,
                                std::vector<std::string>& out);

// Returns the /info body: {"websocket":W,"cookie_needed":false,"origins":["*:*"],"entropy":N}.
// `entropy` is a random number the caller draws per request.
std::string info_json(std::uint32_t entropy, bool websocket = true);

// Returns what an xhr_streaming response starts with, before "o": 2048 'h' and '\n', so
// browsers that buffer the first 2 KiB of a response start delivering it.
std::string_view xhr_streaming_prelude();

// The outbound half of one SockJS session on the xhr transports, as a pure state machine:
// what each receiving request (xhr or xhr_streaming) is sent, when its response must end, and
// what waits in between. The websocket transport needs none of this: it writes "o", then each
// frame as one text message. Not thread-safe: use it from the session's own executor. The
// caller owns the clocks and their settings (net::Limits): it calls heartbeat() after a
// period of silence on an attached receiver, and ends the session when none came for a while.
class Session {
 public:
  // The caller's settings (net::Limits holds the defaults and their reasons).
  struct Limits {
    std::size_t max_pending_bytes;      // messages waiting for a receiver
    std::size_t streaming_bytes_limit;  // an xhr_streaming response ends after this many bytes
    std::size_t max_replay_bytes = 0;   // the most that replayed messages may add to max_pending_bytes
  };

  // What to do to the attached (or just-arrived) receiving response.
  struct Write {
    std::string bytes;    // write these (frames, each ending in '\n'); may be empty
    bool finish = false;  // then end the response; the receiver is detached
  };

  explicit Session(Limits limits) : limits_(limits) {}

  // A receiving request arrived on `t` (xhr or xhr_streaming). A second receiver while one is
  // attached is sent c[2010] and finished; the first stays. After close() every receiver is
  // sent the close frame and finished.
  Write attach(Transport t);

  // The attached receiver went away (its connection closed). Returns nothing to write.
  void detach() { receiver_ = Receiver::none; }
  bool has_receiver() const { return receiver_ != Receiver::none; }

  // Queues one message (a whole STOMP frame). Returns false, queueing nothing, when that would
  // pass Limits::max_pending_bytes: the reader cannot keep up and the session should close.
  // A `replay` message (history, which the STOMP session sends whole) is always queued and
  // raises the bound by its size until a receiver has taken what waits, so neither it nor
  // the messages right behind it are refused for the replay's own size.
  bool push(std::string message, bool replay = false);

  // Returns what the attached receiver should be sent now: the queued messages as one
  // "a[...]" frame. Nothing when no receiver is attached or nothing waits.
  Write flush();

  // Returns "h" for the attached receiver (nothing without one).
  Write heartbeat();

  // Ends the session: what waits is flushed, then the close frame; an attached receiver gets
  // both now, otherwise the next one does.
  Write close(Close c);

  bool opened() const { return opened_; }
  bool closed() const { return closed_; }
  std::size_t pending_bytes() const { return pending_bytes_; }

 private:
  enum class Receiver : std::uint8_t { none, polling, streaming };
  Write emit(std::string bytes);  // counts streamed bytes, decides finish
  void append_pending(std::string& out);

  Limits limits_;
  Receiver receiver_ = Receiver::none;
  bool opened_ = false;
  bool closed_ = false;
  Close close_{go_away};
  std::vector<std::string> pending_;
  std::size_t pending_bytes_ = 0;
  std::size_t replay_allowance_ = 0;  // replayed bytes in pending_: past max_pending_bytes by right
  std::size_t streamed_ = 0;  // bytes sent on the current streaming response
};

}  // namespace chatd::sockjs

namespace std {
template <>
struct is_error_code_enum<chatd::sockjs::Error> : true_type {};
}  // namespace std
