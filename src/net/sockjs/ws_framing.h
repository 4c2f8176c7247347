// SockJS's framing over its websocket transport (/ws-stomp/{server}/{session}/websocket).
#pragma once

#include <memory>

#include "net/ws_framing.h"

namespace chatd::net {

// Returns a fresh SockJS framing for one session (it keeps that session's decode and encode
// buffers).
std::unique_ptr<WsFraming> make_sockjs_ws_framing();

}  // namespace chatd::net
