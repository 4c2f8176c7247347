// The HTTP vocabulary the router and its handlers share: requests, responses, the JSON error
// body, and Responder, the connection a handler answers on.
#pragma once

#include <boost/beast/http/message.hpp>
#include <boost/beast/http/status.hpp>
#include <boost/beast/http/string_body.hpp>

#include <memory>
#include <string>
#include <string_view>

namespace chatd::net {

using Request = boost::beast::http::request<boost::beast::http::string_body>;
using Response = boost::beast::http::response<boost::beast::http::string_body>;

inline constexpr std::string_view kJson = "application/json;charset=UTF-8";

// Returns a response to `req` (its version and keep-alive) with `body` of content type `type`.
Response make_response(const Request& req, boost::beast::http::status status, std::string body,
                       std::string_view type);

// Returns the JSON error {"status":..., "error": message} with that status.
Response json_error(const Request& req, boost::beast::http::status status, std::string_view message);

// Whether `req` asks for a resource: GET, or HEAD (the same answer without its body, which the
// connection drops as it writes).
inline bool reads(const Request& req) {
  return req.method() == boost::beast::http::verb::get || req.method() == boost::beast::http::verb::head;
}

// Returns 405 with the Allow header set to `allow`.
Response method_not_allowed(const Request& req, std::string_view allow);

// Returns the token of an `Authorization: Bearer <token>` header, or "".
std::string_view bearer_token(const Request& req);
// Returns the request target's `access_token` query parameter (percent-decoded), or "".
// Browsers cannot set headers on a WebSocket handshake, so --auth jwt reads it there too.
std::string access_token(const Request& req);

// The connection a request arrived on, as a handler sees it. The request stays valid and
// unchanged until the handler responds; respond() may be called from any thread, once.
class Responder {
 public:
  virtual ~Responder() = default;
  virtual const Request& request() const = 0;
  virtual void respond(Response res) = 0;
};
using ResponderPtr = std::shared_ptr<Responder>;

}  // namespace chatd::net
