// HTTP/1.1 with keep-alive: the REST routes of DESIGN §1, the pages, /healthz, /metrics, and
// the upgrade to WebSocket (raw or SockJS). Store answers may arrive on another thread; they
// are posted back to this connection's loop before anything is written.
#include <boost/asio/bind_allocator.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket/rfc6455.hpp>
#include <boost/json.hpp>
#include <boost/url.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <optional>
#include <random>

#include "auth/jwt.h"
#include "net/http.h"
#include "net/rest.h"
#include "net/server.h"
#include "net/sessions.h"
#include "sockjs/sockjs.h"
#include "net/sockjs/routes.h"
#include "net/sockjs/ws_framing.h"
#include "net/sockjs/xhr_receiver.h"
#include "net/sockjs/xhr_session.h"
#include "net/static_files.h"

namespace chatd::net {
namespace beast = boost::beast;
namespace http = beast::http;
namespace asio = boost::asio;

namespace {

// An allocator Asio does not recognise as the default, so it allocates exactly instead of
// recycling through its per-thread cache.
template <class T>
struct PlainAllocator {
  using value_type = T;
  PlainAllocator() = default;
  template <class U>
  PlainAllocator(const PlainAllocator<U>&) noexcept {}
  T* allocate(std::size_t n) { return std::allocator<T>().allocate(n); }
  void deallocate(T* p, std::size_t n) noexcept { std::allocator<T>().deallocate(p, n); }
  friend bool operator==(const PlainAllocator&, const PlainAllocator&) noexcept { return true; }
};

class HttpSession final : public Closable,
                          public Responder,
                          public XhrReceiver::Connection,
                          public std::enable_shared_from_this<HttpSession> {
 public:
  HttpSession(Server& server, asio::ip::tcp::socket socket, ConnectionSlot slot)
      : server_(server), slot_(std::move(slot)), stream_(std::move(socket)) {
    boost::system::error_code ec;
    auto ep = stream_.socket().remote_endpoint(ec);
    if (!ec) peer_ = ep.address();
    // Beast's header and body limits do not count a chunked body's size or extension lines,
    // nor its trailers: one line that never ends grew the read buffer to a GB. The buffer
    // holds at most a head and the largest body any route takes, with room for chunk framing.
    const auto& lim = server_.config().limits;
    buffer_.max_size(lim.max_http_header + std::max(lim.max_http_body, sockjs_send_limit(server_.hub().limits())) +
                     kChunkFramingRoom);
  }
  ~HttpSession() override {
    if (!handed_over_) server_.untrack(this);
    return_history_memory();
  }

  void start() {
    server_.track(this, weak_from_this());
    do_read();
  }

  // An idle keep-alive connection is closed at once; a request in progress gets its answer
  // with "Connection: close".
  void close_for_shutdown() override {
    // A SockJS receiver ends when its session sends the close frame.
    if (rx_.receiving()) return;
    asio::post(stream_.get_executor(), [self = shared_from_this()] { self->stream_.cancel(); });
  }

 private:
  void do_read() {
    auto& lim = server_.config().limits;
    parser_.emplace();
    parser_->header_limit(static_cast<std::uint32_t>(lim.max_http_header));
    // The largest any route takes; on_header narrows it once the target is known.
    parser_->body_limit(std::max(lim.max_http_body, sockjs_send_limit(server_.hub().limits())));
    stream_.expires_after(server_.config().limits.http_idle_timeout);
    // Asio keeps freed operation blocks per thread for the next operation of any kind. This
    // read's block is large, and the WebSocket session's wait-for-readable, which every idle
    // connection keeps pending, would inherit one each (~0.5 KiB). Plain allocation keeps it
    // out of that cache; the small blocks there then serve the hot path.
    http::async_read_header(stream_, buffer_, *parser_,
                            asio::bind_allocator(PlainAllocator<void>(), [self = shared_from_this()](beast::error_code ec, std::size_t) {
                              self->on_header(ec);
                            }));
  }

  // The head is in: a body too large for its route is refused before it is read, and a client
  // that waits for "100 Continue" (curl, .NET, Java's HttpClient on a large POST) is told to go on.
  void on_header(beast::error_code ec) {
    if (ec || parser_->is_done()) return on_read(ec);
    const auto limit = body_limit_for(parser_->get().target());
    if (auto length = parser_->content_length(); length && *length > limit) return on_read(http::error::body_limit);
    parser_->body_limit(limit);
    if (parser_->get().version() >= 11 && beast::iequals(parser_->get()[http::field::expect], "100-continue")) {
      static constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
      return asio::async_write(stream_, asio::buffer(kContinue), [self = shared_from_this()](beast::error_code write_ec, std::size_t) {
        if (write_ec) return self->close();
        self->read_body();
      });
    }
    read_body();
  }

  void read_body() {
    http::async_read(stream_, buffer_, *parser_,
                     asio::bind_allocator(PlainAllocator<void>(), [self = shared_from_this()](beast::error_code ec, std::size_t) {
                       self->on_read(ec);
                     }));
  }

  // SockJS's xhr_send carries a batch of STOMP frames; every other route takes --max-http-body.
  std::size_t body_limit_for(std::string_view target) const {
    const auto& lim = server_.config().limits;
    const auto path = target.substr(0, target.find('?'));
    if (path.starts_with(kSockJsBase) && path.ends_with("/xhr_send"))
      return std::max(lim.max_http_body, sockjs_send_limit(server_.hub().limits()));
    return lim.max_http_body;
  }

  void on_read(beast::error_code ec) {
    head_ = false;
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
      if (ec == http::error::buffer_overflow)
        return write(json_error(req, http::status::payload_too_large, "request too large (a chunk line or trailer without end)"));
      return write(json_error(req, http::status::bad_request, "malformed HTTP request: " + ec.message()));
    }
    // RFC 9112 §6.3: a request whose Transfer-Encoding does not end in chunked has no knowable
    // length, so its body would be read as the next request (a smuggling opening behind a
    // proxy). Beast frames it as body-less; refuse it and close instead.
    if (parser_->get().count(http::field::transfer_encoding) && !parser_->chunked()) {
      server_.hub().refusals.count(chat::Refusal::http_framing, peer_.to_string());
      Request req;
      req.version(11);
      req.keep_alive(false);
      return write(json_error(req, http::status::bad_request, "Transfer-Encoding must end in chunked"));
    }
    req_ = parser_->release();
    head_ = req_.method() == http::verb::head;
    if (req_.body().size() > body_limit_for(req_.target())) {
      req_.keep_alive(false);
      return write(json_error(req_, http::status::payload_too_large, "request body too large"));
    }
    // RFC 9112 §3.2: an HTTP/1.1 request names its host exactly once.
    if (const auto hosts = req_.count(http::field::host); hosts > 1 || (hosts == 0 && req_.version() >= 11)) {
      req_.keep_alive(false);
      return write(json_error(req_, http::status::bad_request, "an HTTP/1.1 request needs exactly one Host header"));
    }
    // RFC 9110 §5.3: field lines of one name are one comma-separated list. Beast reads only the
    // first line (is_upgrade, keep_alive, the WebSocket accept): "Connection: keep-alive" then
    // "Connection: Upgrade" on its own line must still upgrade (RFC 6455 §11.3.4 says the same
    // of Sec-WebSocket-Protocol).
    // X-Forwarded-For too: a proxy appends its own line after the client's, and the client's
    // address is the list's right-most untrusted entry, not the first line's (which the client
    // wrote itself).
    for (std::string_view f : {"Connection", "Upgrade", "Sec-WebSocket-Protocol", "X-Forwarded-For"}) {
      if (req_.count(f) < 2) continue;
      std::string joined;
      for (auto [it, end] = req_.equal_range(f); it != end; ++it) joined.append(joined.empty() ? "" : ", ").append(it->value());
      req_.set(f, joined);
    }
    // RFC 9112 §3.2.2: a server takes the absolute form (GET http://host/path), as a proxy sends
    // it; its authority stands for Host.
    if (!req_.target().starts_with("/") && req_.target() != "*") {
      auto abs = boost::urls::parse_absolute_uri(req_.target());
      if (!abs || (abs->scheme_id() != boost::urls::scheme::http && abs->scheme_id() != boost::urls::scheme::https)) {
        req_.keep_alive(false);
        return write(json_error(req_, http::status::bad_request, "malformed request target"));
      }
      std::string resource = abs->encoded_path().empty() ? std::string("/") : std::string(abs->encoded_path());
      if (abs->has_query()) resource.append("?").append(abs->encoded_query());
      req_.set(http::field::host, abs->encoded_authority());
      req_.target(resource);
    }
    handle();
  }

  // The socket goes to a WebSocket session: this one stops tracking and timing it.
  void hand_over() {
    handed_over_ = true;
    server_.untrack(this);
    stream_.expires_never();
  }

  void handle() {
    auto& req = req_;
    if (server_.shutting_down()) {
      req.keep_alive(false);
      return write(json_error(req, http::status::service_unavailable, "server shutting down"));
    }
    if (req.target().size() > server_.config().limits.max_http_target)
      return write(json_error(req, http::status::uri_too_long, "request target too long"));
    auto url = boost::urls::parse_origin_form(req.target());
    if (!url) return write(json_error(req, http::status::bad_request, "malformed request target"));
    std::string path = url->path();  // percent-decoded
    auto method = req.method();

    // Everything a page on another site could use to act as the user: the WebSocket and SockJS
    // endpoints, the REST API and the dev token. Pages, assets and health stay open.
    const bool api = path == "/chat/rooms" || (path == "/chat/room" && method != http::verb::get && method != http::verb::head) ||
                      (path.rfind("/chat/room/", 0) == 0 && path.rfind("/chat/room/enter/", 0) != 0) || path == "/auth/dev-token";
    if (api || path == "/ws-stomp" || path.rfind("/ws-stomp/", 0) == 0) {
      std::string_view origin = req[http::field::origin];
      if (!server_.config().allowed_origins.allows(origin, req[http::field::host])) {
        server_.hub().refusals.count_origin(chat::Refusal::foreign_origin, client().to_string(), origin.substr(0, 100));
        req.keep_alive(false);
        return write(json_error(req, http::status::forbidden, "origin not allowed (--allowed-origins)"));
      }
      if (api && !origin.empty()) cors_origin_ = origin;
    }
    if (api && method == http::verb::options) {
      auto res = make_response(req, http::status::no_content, "", "text/plain");
      res.set(http::field::access_control_allow_methods, "GET, POST, OPTIONS");
      res.set(http::field::access_control_allow_headers, "Authorization, Content-Type");
      res.set(http::field::access_control_max_age, "600");
      return write(std::move(res));
    }
    if (path == "/auth/dev-token") return dev_token(*url);
    chat::IdentityPtr caller;  // --auth jwt: who calls the REST API (null: --auth none)
    if (api && server_.hub().verifier()) {  // --auth jwt: the REST API needs the token too
      std::string why;
      caller = server_.identify(req, why);
      if (!caller) {
        server_.hub().refusals.count(chat::Refusal::auth_failed, client().to_string());
        auto res = json_error(req, http::status::unauthorized, "unauthorized: " + why);
        res.set(http::field::www_authenticate, "Bearer");
        return write(std::move(res));
      }
    }

    if ((path == "/ws-stomp" || path.rfind("/ws-stomp/", 0) == 0) && beast::websocket::is_upgrade(req)) {
      // Raw WebSocket on the base (or {base}/websocket); SockJS framing on a session's path.
      sockjs::Route route;
      auto ec = sockjs::parse_path(path, kSockJsBase, route);
      bool raw = !ec && (route.kind == sockjs::Route::Kind::greeting || route.kind == sockjs::Route::Kind::raw_websocket);
      bool framed = !ec && route.kind == sockjs::Route::Kind::session && route.transport == sockjs::Transport::websocket;
      if (raw || framed) {
        hand_over();
        return run_websocket(server_, stream_.release_socket(), std::move(req_), std::move(buffer_),
                             raw ? nullptr : make_sockjs_ws_framing(server_.config().limits.sockjs_heartbeat), std::move(slot_));
      }
    }
    if (auto app = server_.config().ws_apps.find(path); app != server_.config().ws_apps.end() && beast::websocket::is_upgrade(req)) {
      hand_over();
      return run_websocket_app(server_, stream_.release_socket(), std::move(req_), std::move(buffer_), nullptr,
                               app->second(), std::move(slot_));
    }
    if (path == kSockJsBase || path.rfind(std::string(kSockJsBase) + "/", 0) == 0) {
      if (auto route = answer_sockjs(server_, path, *this, client())) sockjs_receive(*route);
      return;
    }

    if (path == "/") {
      auto res = make_response(req, http::status::found, "", "text/plain");
      res.set(http::field::location, "/chat/room");
      return write(std::move(res));
    }
    if (path == "/chat/rooms") {
      if (!reads(req)) return not_allowed("GET, HEAD");
      return list_rooms(server_.rooms(), server_.config().limits, *url, shared_from_this(), std::move(caller));
    }
    if (path == "/chat/room") {
      if (method == http::verb::post) {
        if (!server_.admit_room_create(client())) {
          server_.hub().refusals.count(chat::Refusal::room_create_rate, client().to_string());
          return write(json_error(req, http::status::too_many_requests, "too many rooms created from your address; try again later"));
        }
        return create_room(server_.rooms(), server_.hub().limits(), *url, shared_from_this(), std::move(caller));
      }
      if (reads(req)) return page("/room.html");
      return not_allowed("GET, HEAD, POST");
    }
    static constexpr std::string_view kEnter = "/chat/room/enter/";
    if (path.rfind(kEnter, 0) == 0) {
      if (!reads(req)) return not_allowed("GET, HEAD");
      if (!chat::is_room_id(std::string_view(path).substr(kEnter.size())))
        return write(json_error(req, http::status::not_found, "no such room"));
      return page("/enter.html");
    }
    static constexpr std::string_view kRoom = "/chat/room/";
    if (path.rfind(kRoom, 0) == 0) {
      if (!reads(req)) return not_allowed("GET, HEAD");
      std::string_view rest = std::string_view(path).substr(kRoom.size());
      static constexpr std::string_view kMembers = "/members";
      if (rest.size() > kMembers.size() && rest.substr(rest.size() - kMembers.size()) == kMembers)
        return room_members(server_.rooms(), rest.substr(0, rest.size() - kMembers.size()), shared_from_this(), caller);
      static constexpr std::string_view kMessages = "/messages";
      if (rest.size() > kMessages.size() && rest.substr(rest.size() - kMessages.size()) == kMessages)
        return room_messages(server_.rooms(), server_.hub().limits(), rest.substr(0, rest.size() - kMessages.size()), *url,
                             shared_from_this(), std::move(caller));
      return find_room(server_.rooms(), rest, shared_from_this(), std::move(caller));
    }
    if (path.rfind("/api/", 0) == 0)
      return server_.api().handle(path, server_.rooms(), server_.node(), server_.hub().limits(),
                                  server_.connection_counts(), shared_from_this());
    if (path == "/healthz") {
      if (!reads(req)) return not_allowed("GET, HEAD");
      bool up = false;
      auto body = health_json(server_.node(), server_.connection_counts(), server_.shutting_down(), up);
      return write(make_response(req, up ? http::status::ok : http::status::service_unavailable, std::move(body), kJson));
    }
    if (path == "/metrics") {
      if (!reads(req)) return not_allowed("GET, HEAD");
      return write(make_response(req, http::status::ok, metrics_text(server_.node(), server_.connection_counts()) + server_.api().metrics_text(), "text/plain; version=0.0.4"));
    }
    if (path.rfind("/assets/", 0) == 0 || path == "/favicon.ico") {
      if (!reads(req)) return not_allowed("GET, HEAD");
      return page(path);
    }
    write(json_error(req, http::status::not_found, "no route for " + path));
  }

  // Returns who sent the current request: the peer, or X-Forwarded-For's client when the
  // peer is a trusted proxy.
  asio::ip::address client() const {
    return client_address(peer_, req_["X-Forwarded-For"], server_.config().trusted_proxies);
  }

  // xhr / xhr_streaming: this connection answers for the session until the response ends.
  void sockjs_receive(const sockjs::Route& route) {
    auto& loop = static_cast<asio::io_context&>(stream_.get_executor().context());
    const auto who = client();
    auto session = server_.sockjs().find(std::string(route.session));
    // Someone else's session is answered like one that does not exist: its id stays a secret.
    if (session && !server_.may_use(*session, who, req_)) return write(json_error(req_, http::status::not_found, "no such SockJS session"));
    if (!session) {
      if (!server_.admit_sockjs_session(who)) {
        server_.hub().refusals.count(chat::Refusal::sockjs_session_rate, who.to_string());
        return write(json_error(req_, http::status::too_many_requests, "too many new SockJS sessions from your address"));
      }
      bool full = false;
      session = server_.sockjs().find_or_create(std::string(route.session), loop, who, req_, full);
    }
    if (!session) return write(json_error(req_, http::status::service_unavailable, "too many connections"));
    stream_.expires_never();
    // The receiver's handle shares this connection's ownership.
    rx_.start(std::move(session), req_, std::shared_ptr<SockJsReceiver>(shared_from_this(), &rx_), loop, route.transport);
  }

  // XhrReceiver::Connection
  asio::ip::tcp::socket& socket() override { return stream_.socket(); }
  beast::flat_buffer& read_buffer() override { return buffer_; }
  std::shared_ptr<void> hold() override { return shared_from_this(); }
  void resume_reading() override { do_read(); }
  void close_send() override { close(); }

  void page(std::string_view file) {
    auto* f = server_.files().find(file);
    if (!f) return write(json_error(req_, http::status::not_found, "no such page: " + std::string(file)));
    // no-cache: revalidated on each visit, which costs a 304 and no body once the browser has it.
    const bool fresh = StaticFiles::matches(req_[http::field::if_none_match], f->etag);
    auto res = make_response(req_, fresh ? http::status::not_modified : http::status::ok, fresh ? std::string() : f->body,
                             f->content_type);
    res.set(http::field::cache_control, "no-cache");
    res.set(http::field::etag, f->etag);
    if (fresh) res.erase(http::field::content_length);  // a 304's would have to be the 200's
    if (f->content_type.starts_with("text/html")) {
      // The pages load only their own scripts and styles and talk only to this server, so a
      // name or message that slipped past the escaping still could not run or send anything
      // elsewhere; and no other site may frame them (clickjacking).
      res.set("Content-Security-Policy",
              "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
              "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'self'");
      res.set("X-Frame-Options", "SAMEORIGIN");
    }
    write(std::move(res));
  }

  void not_allowed(std::string_view allow) { write(method_not_allowed(req_, allow)); }

  // Responder: on this connection's loop the answer is written at once, from elsewhere it is
  // posted there first.
  const Request& request() const override { return req_; }
  void respond(Response res) override {
    asio::dispatch(stream_.get_executor(), [self = shared_from_this(), res = std::move(res)]() mutable {
      self->write(std::move(res));
    });
  }

  // POST /auth/dev-token?name=N (or a form body name=N): a token for nickname N, signed with
  // --jwt-secret-file. Only with --auth-dev-mint, a development aid: anyone may be anyone.
  void dev_token(const boost::urls::url_view& url) {
    const auto& secret = server_.config().dev_mint_secret;
    if (secret.empty()) return write(json_error(req_, http::status::not_found, "no route for /auth/dev-token (--auth-dev-mint is off)"));
    if (req_.method() != http::verb::post) return not_allowed("POST");
    std::string raw;
    if (auto it = url.params().find("name"); it != url.params().end()) raw = (*it).value;
    else if (auto form = boost::urls::parse_query(req_.body()); form)
      if (auto f = form->find("name"); f != form->end()) raw = (*f).value;
    std::string why;
    auto name = chat::check_name(raw, server_.hub().limits().max_sender_bytes, why);
    if (!name) return write(json_error(req_, http::status::bad_request, "name " + why));
    const auto now = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
    const std::int64_t ttl = 3600;  // an hour: long enough for a demo, short enough to see expiry
    boost::json::object claims{{"sub", "dev:" + *name}, {"name", *name}, {"iat", now}, {"exp", now + ttl}, {"dev", true}};
    auto token = auth::mint_hs256(secret, boost::json::serialize(claims));
    write(make_response(req_, http::status::ok,
                        boost::json::serialize(boost::json::object{{"token", token}, {"name", *name}, {"expiresIn", ttl}}), kJson));
  }

  void write(Response res) {
    // A large answer (a page of history) waits for its client in memory: it takes from the
    // node's history memory, as replays do, so clients that ask and never read cannot hold
    // more than that. When others hold it, the client is asked to come back.
    if (!head_ && res.body().size() > kHistoryMemoryFrom) {
      history_memory_ = server_.hub().history_memory().take(res.body().size());
      if (history_memory_ < res.body().size()) {
        return_history_memory();
        server_.hub().refusals.count(chat::Refusal::history_memory, peer_.to_string());
        res = json_error(req_, http::status::service_unavailable,
                         "the node holds all the history memory it may (--max-history-memory): retry shortly");
        res.set(http::field::retry_after, "1");
      }
    }
    if (!cors_origin_.empty()) {
      res.set(http::field::access_control_allow_origin, cors_origin_);
      res.set(http::field::vary, "Origin");
      cors_origin_.clear();
    }
    // HEAD: the GET answer's head alone, Content-Length included (RFC 9110 §9.3.2).
    if (head_) res.body().clear();
    res_ = std::move(res);
    if (server_.shutting_down()) res_.keep_alive(false);
    http::async_write(stream_, res_, [self = shared_from_this()](beast::error_code ec, std::size_t) {
      self->return_history_memory();
      const bool keep = self->res_.keep_alive();
      self->res_ = {};  // an idle keep-alive connection must not keep a large page
      if (ec || !keep) return self->close();
      self->do_read();
    });
  }

  void return_history_memory() {
    if (history_memory_) server_.hub().history_memory().give_back(std::exchange(history_memory_, 0));
  }

  void close() {
    beast::error_code ignored;
    stream_.socket().shutdown(asio::ip::tcp::socket::shutdown_send, ignored);
  }

  static constexpr std::size_t kChunkFramingRoom = 16 * 1024;
  // Answers bigger than this take from the node's history memory while they are written.
  static constexpr std::size_t kHistoryMemoryFrom = 64 * 1024;

  Server& server_;
  ConnectionSlot slot_;
  std::size_t history_memory_ = 0;  // taken for the answer being written
  asio::ip::address peer_;
  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  Request req_;
  Response res_;
  bool handed_over_ = false;
  bool head_ = false;  // the request being answered is a HEAD
  std::string cors_origin_;  // an allowed cross-site Origin of the REST request being answered

  XhrReceiver rx_{*this, server_};  // answers SockJS receiving requests on this connection
};

}  // namespace

void run_http(Server& server, asio::ip::tcp::socket socket, ConnectionSlot slot) {
  std::make_shared<HttpSession>(server, std::move(socket), std::move(slot))->start();
}

}  // namespace chatd::net
