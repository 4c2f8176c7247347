// What runs on a WebSocket session. WsSession (net/ws_session.cpp) drives the socket: it reads
// when the socket is readable, decodes, answers pings, runs the close handshake, fails fast on
// bad UTF-8, stops reading a client that does not take what it is sent, bounds what waits for
// it, resets it past the write deadline, and writes once per loop turn. It hands each complete
// message to its WsApp and carries what the app sends through chat::Transport (Outbound::Kind
// says how). STOMP is chatd's one application (make_stomp_ws_app); tests/conformance's echo,
// which Autobahn|Testsuite drives, is another and exists only in that test binary.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace chatd::chat {
class Shard;
class Transport;
struct Limits;
}  // namespace chatd::chat

namespace chatd::net {

class WsFraming;

class WsApp {
 public:
  virtual ~WsApp() = default;

  // Returns the largest WebSocket message to accept; a larger one closes with 1009.
  virtual std::size_t max_message_bytes() const = 0;

  // The 101 answer is out. `transport` (the session) carries what the app sends until
  // on_closed_in_loop; `shard` is the session's loop; `client` the peer's address as seen.
  virtual void open_in_loop(chat::Shard& shard, chat::Transport& transport, std::string client) = 0;

  // A complete message (text or binary). Hands nothing more on once `closing` is set. Returns
  // false when the message breaks the application's framing; the session then closes.
  virtual bool on_message_in_loop(std::string_view payload, bool text, const bool& closing) = 0;

  // The connection is gone: the app must not send again.
  virtual void on_closed_in_loop() = 0;
};

// Makes a fresh application for each upgrade on a route (ServerConfig::ws_apps).
using WsAppFactory = std::function<std::unique_ptr<WsApp>()>;

// Returns STOMP over `framing` (raw on GET /ws-stomp, SockJS on its websocket transport), which
// must outlive it; `url_token` is an access_token from the URL (--auth jwt), or empty.
std::unique_ptr<WsApp> make_stomp_ws_app(const chat::Limits& limits, WsFraming& framing, std::string url_token);

}  // namespace chatd::net
