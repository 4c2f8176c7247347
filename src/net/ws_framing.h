// How STOMP frames ride in WebSocket text messages. Raw (GET /ws-stomp): a message carries
// STOMP bytes as they are. SockJS (net/sockjs/ws_framing.h): "o" first, a["frame",...] arrays,
// "h" when idle, c[code,"reason"] before the close. WsSession holds one and never asks which.
#pragma once

#include <boost/asio/buffer.hpp>

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "chat/hub.h"

namespace chatd::chat {
class StompSession;
}

namespace chatd::net {

class WsFraming {
 public:
  virtual ~WsFraming() = default;

  // Returns the largest WebSocket message to accept when a STOMP frame may be `max_frame_bytes`.
  virtual std::size_t max_message_bytes(std::size_t max_frame_bytes) const = 0;

  // Appends what leaves together with the 101 answer (SockJS's open frame).
  virtual void append_open(std::string& handshake) const = 0;

  // Hands the STOMP bytes a received message carries to `stomp`, stopping once `closing` is
  // set. Returns false when the message breaks the framing; the session then closes.
  virtual bool on_message(std::string_view payload, chat::StompSession& stomp, const bool& closing) = 0;

  // A write starts: what earlier append_batch calls produced is no longer being written.
  virtual void begin_write() {}
  // A write is over (the kernel took it all, or the connection failed): the same, and the
  // connection may now sit idle for hours.
  virtual void end_write() {}

  // Appends to `buffers` one text message carrying `batch` (`bytes` of STOMP frames in all).
  // The buffers point into `batch`, `header` or the framing itself; all stay untouched until
  // the write completes. One write may carry several batches, each with its own `header`.
  virtual void append_batch(const std::vector<chat::Outbound>& batch, std::size_t bytes, std::string& header,
                            std::vector<boost::asio::const_buffer>& buffers) = 0;

  // Appends, as whole WebSocket messages, what goes before the close frame when the server
  // ends the session (SockJS: c[3000,"reason"]).
  virtual void append_close_notice(std::string& out, std::string_view reason) const = 0;

  // The idle keep-alive: a whole WebSocket message to send after `keepalive_period()` without
  // any write; a zero period means none.
  virtual std::chrono::milliseconds keepalive_period() const { return {}; }
  virtual std::string_view keepalive_message() const { return {}; }
};

// Returns the raw framing; it keeps no state, so every raw session shares it.
WsFraming& raw_ws_framing();

}  // namespace chatd::net
