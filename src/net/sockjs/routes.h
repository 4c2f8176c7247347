// The SockJS 0.3 HTTP resources under kSockJsBase (DESIGN §1) other than the WebSocket
// upgrade: the greeting, /info, CORS preflights, xhr_send, and the checks in front of the
// receiving transports.
#pragma once

#include <boost/asio/ip/address.hpp>

#include <optional>
#include <string>

#include "net/http.h"
#include "sockjs/sockjs.h"

namespace chatd::net {

class Server;

// Answers the request for `path` on `r`, or returns its route when it is a receiving request
// (xhr, xhr_streaming) that the connection must answer itself with an XhrReceiver. `client`
// sent the request (ServerConfig::sockjs_bind_address).
std::optional<sockjs::Route> answer_sockjs(Server& server, const std::string& path, Responder& r,
                                           const boost::asio::ip::address& client);

}  // namespace chatd::net
