// Entry points of the connection types; each runs on the loop its socket belongs to.
#pragma once

#include <cstdint>
#include <memory>

#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>

#include "net/http.h"

namespace chatd::net {

class Server;
class ConnectionSlot;
class WsFraming;
class WsApp;

// Serves HTTP requests on `socket` until it closes or upgrades; `slot` is its place under
// max-connections, handed on with an upgrade.
void run_http(Server& server, boost::asio::ip::tcp::socket socket, ConnectionSlot slot);

// Completes the WebSocket handshake of `req` and runs a STOMP session over it, framed by
// `framing` (null: raw, as on GET /ws-stomp). `buffer` holds any bytes read past the request.
void run_websocket(Server& server, boost::asio::ip::tcp::socket socket, Request req,
                   boost::beast::flat_buffer buffer, std::unique_ptr<WsFraming> framing, ConnectionSlot slot);

// Completes the WebSocket handshake of `req` and runs `app` over it; run_websocket is this with
// STOMP as the app. What `framing` adds (SockJS's open frame, close notice) is sent around it.
void run_websocket_app(Server& server, boost::asio::ip::tcp::socket socket, Request req,
                       boost::beast::flat_buffer buffer, std::unique_ptr<WsFraming> framing,
                       std::unique_ptr<WsApp> app, ConnectionSlot slot);

// Returns the STOMP subprotocol to answer for a Sec-WebSocket-Protocol offer, or "".
std::string_view choose_subprotocol(std::string_view offered);

// Returns a session id that is unique enough for logs and CONNECTED frames.
std::string new_session_id();

}  // namespace chatd::net
