#include "net/http.h"

#include <boost/url/parse.hpp>

#include "chat/identity.h"
#include "chat/rules.h"

namespace chatd::net {
namespace http = boost::beast::http;

Response make_response(const Request& req, http::status status, std::string body, std::string_view type) {
  Response res{status, req.version()};
  res.set(http::field::server, "chatd");
  res.set(http::field::content_type, type);
  // A browser must take every answer as the type it says (an error echoing a path, an upload).
  res.set("X-Content-Type-Options", "nosniff");
  res.keep_alive(req.keep_alive());
  res.body() = std::move(body);
  res.prepare_payload();
  return res;
}

Response json_error(const Request& req, http::status status, std::string_view message) {
  return make_response(req, status, chat::error_json(static_cast<int>(status), message), kJson);
}

Response method_not_allowed(const Request& req, std::string_view allow) {
  auto res = json_error(req, http::status::method_not_allowed, "method not allowed");
  res.set(http::field::allow, allow);
  return res;
}

std::string_view bearer_token(const Request& req) {
  return chat::bearer_token_of(req[http::field::authorization]);
}

std::string access_token(const Request& req) {
  auto url = boost::urls::parse_origin_form(req.target());
  if (!url) return {};
  auto it = url->params().find("access_token");
  if (it == url->params().end() || !(*it).has_value) return {};
  return std::string((*it).value);
}

}  // namespace chatd::net
