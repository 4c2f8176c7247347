// HTTP/1.1 with keep-alive: the REST routes of DESIGN §1, the pages, /healthz, /metrics, and
// the upgrade to WebSocket (raw or SockJS). Store answers may arrive on another thread; they
// are posted back to this connection's loop before anything is written.
#include <boost/asio/post.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket/rfc6455.hpp>
#include <boost/json.hpp>
#include <boost/url.hpp>

#include <optional>

#include "net/server.h"
#include "net/sessions.h"
#include "net/static_files.h"

namespace chatd::net {
namespace beast = boost::beast;
namespace http = beast::http;
namespace asio = boost::asio;

namespace {

using Response = http::response<http::string_body>;
constexpr std::string_view kJson = "application/json;charset=UTF-8";

Response make_response(const Request& req, http::status status, std::string body, std::string_view type) {
  Response res{status, req.version()};
  res.set(http::field::server, "chatd");
  res.set(http::field::content_type, type);
  res.keep_alive(req.keep_alive());
  res.body() = std::move(body);
  res.prepare_payload();
  return res;
}

Response json_error(const Request& req, http::status status, std::string_view message) {
  return make_response(req, status, chat::error_json(static_cast<int>(status), message), kJson);
}

// Returns whether a room name is acceptable: non-empty after trimming, bounded, UTF-8, no
// control characters.
std::optional<std::string> check_room_name(std::string_view raw, std::size_t max_bytes, std::string& why) {
  while (!raw.empty() && (raw.front() == ' ' || raw.front() == '\t')) raw.remove_prefix(1);
  while (!raw.empty() && (raw.back() == ' ' || raw.back() == '\t')) raw.remove_suffix(1);
  if (raw.empty()) {
    why = "name is required";
    return std::nullopt;
  }
  if (raw.size() > max_bytes) {
    why = "name is longer than " + std::to_string(max_bytes) + " bytes";
    return std::nullopt;
  }
  if (!chat::is_utf8(raw)) {
    why = "name must be valid UTF-8";
    return std::nullopt;
  }
  for (unsigned char c : raw) {
    if (c < 0x20 || c == 0x7F) {
      why = "name must not contain control characters";
      return std::nullopt;
    }
  }
  return std::string(raw);
}

class HttpSession final : public Closable, public std::enable_shared_from_this<HttpSession> {
 public:
  HttpSession(Server& server, asio::ip::tcp::socket socket) : server_(server), stream_(std::move(socket)) {}
  ~HttpSession() override {
    if (!handed_over_) {
      server_.untrack(this);
      server_.connections.fetch_sub(1, std::memory_order_relaxed);
    }
  }

  void start() {
    server_.track(this, weak_from_this());
    do_read();
  }

  // An idle keep-alive connection is closed at once; a request in progress gets its answer
  // with "Connection: close".
  void close_for_shutdown() override {
    asio::post(stream_.get_executor(), [self = shared_from_this()] { self->stream_.cancel(); });
  }

 private:
  void do_read() {
    auto& lim = server_.hub().limits();
    parser_.emplace();
    parser_->header_limit(static_cast<std::uint32_t>(lim.max_http_header));
    parser_->body_limit(lim.max_http_body);
    stream_.expires_after(std::chrono::seconds(30));
    http::async_read(stream_, buffer_, *parser_,
                     [self = shared_from_this()](beast::error_code ec, std::size_t) { self->on_read(ec); });
  }

  void on_read(beast::error_code ec) {
    if (ec == http::error::end_of_stream || ec == beast::error::timeout || ec == asio::error::connection_reset ||
        ec == asio::error::operation_aborted)
      return close();
    if (ec) {
      Request req;
      req.version(11);
      req.keep_alive(false);
      if (ec == http::error::body_limit) return write(json_error(req, http::status::payload_too_large, "request body too large"));
      if (ec == http::error::header_limit)
        return write(json_error(req, http::status::request_header_fields_too_large, "request header too large"));
      return write(json_error(req, http::status::bad_request, "malformed HTTP request: " + ec.message()));
    }
    req_ = parser_->release();
    handle();
  }

  void handle() {
    auto& req = req_;
    if (server_.shutting_down()) {
      req.keep_alive(false);
      return write(json_error(req, http::status::service_unavailable, "server shutting down"));
    }
    if (req.target().size() > server_.hub().limits().max_http_target)
      return write(json_error(req, http::status::uri_too_long, "request target too long"));
    auto url = boost::urls::parse_origin_form(req.target());
    if (!url) return write(json_error(req, http::status::bad_request, "malformed request target"));
    std::string path = url->path();  // percent-decoded
    auto method = req.method();

    if (path == "/ws-stomp" && beast::websocket::is_upgrade(req)) {
      handed_over_ = true;
      server_.untrack(this);
      stream_.expires_never();
      return run_websocket(server_, stream_.release_socket(), std::move(req_), std::move(buffer_));
    }
    if (path == "/ws-stomp" || path.rfind("/ws-stomp/", 0) == 0) return handle_sockjs(path);

    if (path == "/") {
      auto res = make_response(req, http::status::found, "", "text/plain");
      res.set(http::field::location, "/chat/room");
      return write(std::move(res));
    }
    if (path == "/chat/rooms") {
      if (method != http::verb::get) return not_allowed("GET");
      return list_rooms();
    }
    if (path == "/chat/room") {
      if (method == http::verb::post) return create_room(*url);
      if (method == http::verb::get) return page("/room.html");
      return not_allowed("GET, POST");
    }
    static constexpr std::string_view kEnter = "/chat/room/enter/";
    if (path.rfind(kEnter, 0) == 0) {
      if (method != http::verb::get) return not_allowed("GET");
      if (!chat::is_room_id(std::string_view(path).substr(kEnter.size())))
        return write(json_error(req, http::status::not_found, "no such room"));
      return page("/enter.html");
    }
    static constexpr std::string_view kRoom = "/chat/room/";
    if (path.rfind(kRoom, 0) == 0) {
      if (method != http::verb::get) return not_allowed("GET");
      return find_room(path.substr(kRoom.size()));
    }
    if (path == "/healthz") {
      if (method != http::verb::get) return not_allowed("GET");
      bool up = false;
      auto body = server_.health_json(up);
      return write(make_response(req, up ? http::status::ok : http::status::service_unavailable, std::move(body), kJson));
    }
    if (path == "/metrics") {
      if (method != http::verb::get) return not_allowed("GET");
      return write(make_response(req, http::status::ok, server_.metrics_text(), "text/plain; version=0.0.4"));
    }
    if (path.rfind("/assets/", 0) == 0 || path == "/favicon.ico") {
      if (method != http::verb::get && method != http::verb::head) return not_allowed("GET");
      return page(path);
    }
    write(json_error(req, http::status::not_found, "no route for " + path));
  }

  void handle_sockjs(const std::string& path);

  void page(std::string_view file) {
    auto* f = server_.files().find(file);
    if (!f) return write(json_error(req_, http::status::not_found, "no such page: " + std::string(file)));
    auto res = make_response(req_, http::status::ok, f->body, f->content_type);
    res.set(http::field::cache_control, "no-cache");
    if (req_.method() == http::verb::head) res.body().clear();
    write(std::move(res));
  }

  void not_allowed(std::string_view allow) {
    auto res = json_error(req_, http::status::method_not_allowed, "method not allowed");
    res.set(http::field::allow, allow);
    write(std::move(res));
  }

  void list_rooms() {
    server_.hub().store().list([self = shared_from_this()](std::error_code ec, std::vector<store::Room> rooms) {
      std::string body;
      if (!ec) {
        boost::json::array a;
        a.reserve(rooms.size());
        for (auto& r : rooms) a.push_back(boost::json::object{{"roomId", r.id}, {"name", r.name}});
        body = boost::json::serialize(a);
      }
      self->post_reply([self, ec, body = std::move(body)]() mutable {
        if (ec) return self->write(json_error(self->req_, http::status::service_unavailable, ec.message()));
        self->write(make_response(self->req_, http::status::ok, std::move(body), kJson));
      });
    });
  }

  void find_room(std::string id) {
    if (!chat::is_room_id(id)) return write(json_error(req_, http::status::not_found, "no such room"));
    for (auto& c : id) c = static_cast<char>(c >= 'A' && c <= 'F' ? c - 'A' + 'a' : c);
    server_.hub().store().find(id, [self = shared_from_this()](std::error_code ec, std::optional<store::Room> room) {
      self->post_reply([self, ec, room = std::move(room)] {
        if (ec) return self->write(json_error(self->req_, http::status::service_unavailable, ec.message()));
        if (!room) return self->write(json_error(self->req_, http::status::not_found, "no such room"));
        self->write(make_response(self->req_, http::status::ok, store::to_json(*room), kJson));
      });
    });
  }

  void create_room(const boost::urls::url_view& url) {
    std::optional<std::string> name;
    if (auto it = url.params().find("name"); it != url.params().end()) name = (*it).value;
    auto type = req_[http::field::content_type];
    if (!name && type.rfind("application/x-www-form-urlencoded", 0) == 0) {
      // Forms encode spaces as '+'; make them %20 so the URL parser decodes them.
      std::string form = "/?";
      for (char c : req_.body()) form += c == '+' ? std::string("%20") : std::string(1, c);
      if (auto u = boost::urls::parse_origin_form(form))
        if (auto it = u->params().find("name"); it != u->params().end()) name = (*it).value;
    }
    if (!name && type.rfind("application/json", 0) == 0) {
      boost::system::error_code jec;
      auto v = boost::json::parse(req_.body(), jec);
      if (!jec && v.is_object())
        if (auto n = v.get_object().if_contains("name"); n && n->is_string()) name = std::string(n->get_string());
    }
    if (!name) return write(json_error(req_, http::status::bad_request, "name is required (query parameter or form field)"));
    std::string why;
    auto ok = check_room_name(*name, server_.hub().limits().max_room_name_bytes, why);
    if (!ok) return write(json_error(req_, http::status::bad_request, why));
    server_.hub().create_room(std::move(*ok), [self = shared_from_this()](std::error_code ec, store::Room room) {
      self->post_reply([self, ec, room = std::move(room)] {
        if (ec == store::Error::full) return self->write(json_error(self->req_, http::status::insufficient_storage, ec.message()));
        if (ec) return self->write(json_error(self->req_, http::status::service_unavailable, ec.message()));
        self->write(make_response(self->req_, http::status::ok, store::to_json(room), kJson));
      });
    });
  }

  template <class Fn>
  void post_reply(Fn fn) {
    asio::post(stream_.get_executor(), std::move(fn));
  }

  void write(Response res) {
    res_ = std::move(res);
    if (server_.shutting_down()) res_.keep_alive(false);
    http::async_write(stream_, res_, [self = shared_from_this()](beast::error_code ec, std::size_t) {
      if (ec || !self->res_.keep_alive()) return self->close();
      self->do_read();
    });
  }

  void close() {
    beast::error_code ignored;
    stream_.socket().shutdown(asio::ip::tcp::socket::shutdown_send, ignored);
  }

  Server& server_;
  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  Request req_;
  Response res_;
  bool handed_over_ = false;
};

void HttpSession::handle_sockjs(const std::string& path) {
  // SockJS lands with its own codec; until then say so plainly.
  (void)path;
  write(json_error(req_, http::status::not_found, "SockJS is not available on this server yet; use ws://…/ws-stomp"));
}

}  // namespace

void run_http(Server& server, asio::ip::tcp::socket socket) {
  std::make_shared<HttpSession>(server, std::move(socket))->start();
}

}  // namespace chatd::net
