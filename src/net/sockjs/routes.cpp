#include "net/sockjs/routes.h"

#include <boost/beast/http/field.hpp>
#include <boost/beast/http/verb.hpp>

#include <random>
#include <vector>

#include "net/server.h"
#include "net/sockjs/xhr_session.h"

namespace chatd::net {
namespace http = boost::beast::http;

namespace {

constexpr std::string_view kText = "text/plain; charset=UTF-8";

// Answers with CORS as SockJS servers do: echo the origin (credentials are allowed).
void answer_cors(Responder& r, Response res) {
  const Request& req = r.request();
  std::string_view origin = req[http::field::origin];
  res.set(http::field::access_control_allow_origin, origin.empty() || origin == "null" ? std::string_view("*") : origin);
  res.set(http::field::access_control_allow_credentials, "true");
  if (auto h = req[http::field::access_control_request_headers]; !h.empty())
    res.set(http::field::access_control_allow_headers, h);
  r.respond(std::move(res));
}

// xhr_send: the body's messages go to the session's STOMP, in order; 204 at once.
void answer_send(Server& server, const sockjs::Route& route, Responder& r, const boost::asio::ip::address& client) {
  const Request& req = r.request();
  auto session = server.sockjs().find(std::string(route.session));
  // Someone else's session is answered like one that does not exist: its id stays a secret.
  // A closed one too: nothing it is sent can be read.
  if (!session || session->ended() || !server.may_use(*session, client, req))
    return r.respond(json_error(req, http::status::not_found, "no such SockJS session"));
  std::vector<std::string> messages;
  if (auto ec = sockjs::decode_messages(req.body(), sockjs::Source::xhr_send, messages))
    return answer_cors(r, make_response(req, http::status::internal_server_error, ec.message(), kText));
  // Posted before the 204 leaves, so the client's next xhr_send lands behind these.
  session->messages(std::move(messages));
  auto res = make_response(req, http::status::no_content, "", kText);
  res.set(http::field::cache_control, "no-store, no-cache, no-transform, must-revalidate, max-age=0");
  answer_cors(r, std::move(res));
}

}  // namespace

std::optional<sockjs::Route> answer_sockjs(Server& server, const std::string& path, Responder& r,
                                           const boost::asio::ip::address& client) {
  using Kind = sockjs::Route::Kind;
  const Request& req = r.request();
  const auto method = req.method();
  sockjs::Route route;
  if (auto ec = sockjs::parse_path(path, kSockJsBase, route)) {
    r.respond(json_error(req, http::status::not_found, ec.message()));
    return std::nullopt;
  }
  auto preflight = [&](std::string_view methods) {
    auto res = make_response(req, http::status::no_content, "", kText);
    res.set(http::field::access_control_allow_methods, methods);
    res.set(http::field::access_control_max_age, "31536000");
    res.set(http::field::cache_control, "public, max-age=31536000");
    answer_cors(r, std::move(res));
  };
  auto no_upgrade = [&] {
    if (method != http::verb::get) return r.respond(method_not_allowed(req, "GET"));
    r.respond(make_response(req, http::status::bad_request, "Can \"Upgrade\" only to \"WebSocket\".", kText));
  };
  switch (route.kind) {
    case Kind::greeting:
      if (!reads(req)) r.respond(method_not_allowed(req, "GET, HEAD"));
      else r.respond(make_response(req, http::status::ok, std::string(sockjs::greeting_body), kText));
      return std::nullopt;
    case Kind::info: {
      if (method == http::verb::options) {
        preflight("OPTIONS, GET");
        return std::nullopt;
      }
      if (!reads(req)) {
        r.respond(method_not_allowed(req, "OPTIONS, GET, HEAD"));
        return std::nullopt;
      }
      thread_local std::mt19937 rng{std::random_device{}()};
      auto res = make_response(req, http::status::ok, sockjs::info_json(static_cast<std::uint32_t>(rng())),
                               "application/json; charset=UTF-8");
      res.set(http::field::cache_control, "no-store, no-cache, must-revalidate, max-age=0");
      answer_cors(r, std::move(res));
      return std::nullopt;
    }
    case Kind::raw_websocket:
      no_upgrade();
      return std::nullopt;
    case Kind::session: break;
  }
  if (route.transport == sockjs::Transport::websocket) no_upgrade();
  else if (method == http::verb::options) preflight("OPTIONS, POST");
  else if (method != http::verb::post) r.respond(method_not_allowed(req, "OPTIONS, POST"));
  else if (route.transport == sockjs::Transport::xhr_send) answer_send(server, route, r, client);
  else return route;
  return std::nullopt;
}

}  // namespace chatd::net
