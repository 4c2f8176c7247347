// SockJS's framing over its websocket transport (/ws-stomp/{server}/{session}/websocket).
#pragma once

#include <memory>

#include "net/ws_framing.h"

namespace chatd::net {

// Returns a fresh SockJS framing for one session (it keeps that session's decode and encode
// buffers) that sends "h" after `heartbeat` of silence.
std::unique_ptr<WsFraming> make_sockjs_ws_framing(std::chrono::milliseconds heartbeat);

}  // namespace chatd::net
