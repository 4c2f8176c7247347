// HTTP/1.1 with keep-alive: the REST routes of DESIGN §1, the pages, /healthz, /metrics, and
// the upgrade to WebSocket (raw or SockJS). Store answers may arrive on another thread; they
// are posted back to this connection's loop before anything is written.
#include <boost/asio/bind_allocator.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket/rfc6455.hpp>
#include <boost/json.hpp>
#include <boost/url.hpp>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <optional>
#include <random>

#include "net/http.h"
#include "net/rest.h"
#include "net/server.h"
#include "net/sessions.h"
#include "sockjs/sockjs.h"
#include "net/sockjs_session.h"
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

// xhr_send bodies carry JSON-escaped STOMP frames, possibly several: allow a few frames.
std::size_t sockjs_send_limit(const chat::Limits& lim) { return 2 * lim.max_frame_bytes + 1024; }

class HttpSession final : public Closable,
                          public Responder,
                          public SockJsReceiver,
                          public std::enable_shared_from_this<HttpSession> {
 public:
  HttpSession(Server& server, asio::ip::tcp::socket socket, ConnectionSlot slot)
      : server_(server), slot_(std::move(slot)), stream_(std::move(socket)) {}
  ~HttpSession() override {
    if (xhr_) xhr_->receiver_gone(this);
    if (!handed_over_) server_.untrack(this);
  }

  void start() {
    server_.track(this, weak_from_this());
    do_read();
  }

  // An idle keep-alive connection is closed at once; a request in progress gets its answer
  // with "Connection: close".
  void close_for_shutdown() override {
    // A SockJS receiver ends when its session sends the close frame.
    if (receiving_.load(std::memory_order_relaxed)) return;
    asio::post(stream_.get_executor(), [self = shared_from_this()] { self->stream_.cancel(); });
  }

 private:
  void do_read() {
    auto& lim = server_.hub().limits();
    parser_.emplace();
    parser_->header_limit(static_cast<std::uint32_t>(lim.max_http_header));
    parser_->body_limit(std::max(lim.max_http_body, sockjs_send_limit(lim)));
    stream_.expires_after(std::chrono::seconds(30));
    // Asio keeps freed operation blocks per thread for the next operation of any kind. This
    // read's block is large, and the WebSocket session's wait-for-readable, which every idle
    // connection keeps pending, would inherit one each (~0.5 KiB). Plain allocation keeps it
    // out of that cache; the small blocks there then serve the hot path.
    http::async_read(stream_, buffer_, *parser_,
                     asio::bind_allocator(PlainAllocator<void>(), [self = shared_from_this()](beast::error_code ec, std::size_t) {
                       self->on_read(ec);
                     }));
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
    // RFC 9112 §6.3: a request whose Transfer-Encoding does not end in chunked has no knowable
    // length, so its body would be read as the next request (a smuggling opening behind a
    // proxy). Beast frames it as body-less; refuse it and close instead.
    if (parser_->get().count(http::field::transfer_encoding) && !parser_->chunked()) {
      server_.hub().refusals.count(chat::Refusal::http_framing);
      Request req;
      req.version(11);
      req.keep_alive(false);
      return write(json_error(req, http::status::bad_request, "Transfer-Encoding must end in chunked"));
    }
    req_ = parser_->release();
    if (req_.body().size() > server_.hub().limits().max_http_body && !req_.target().ends_with("/xhr_send")) {
      req_.keep_alive(false);
      return write(json_error(req_, http::status::payload_too_large, "request body too large"));
    }
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

    if ((path == "/ws-stomp" || path.rfind("/ws-stomp/", 0) == 0) && beast::websocket::is_upgrade(req)) {
      // Raw WebSocket on the base (or {base}/websocket); SockJS framing on a session's path.
      sockjs::Route route;
      auto ec = sockjs::parse_path(path, kSockJsBase, route);
      bool raw = !ec && (route.kind == sockjs::Route::Kind::greeting || route.kind == sockjs::Route::Kind::raw_websocket);
      bool framed = !ec && route.kind == sockjs::Route::Kind::session && route.transport == sockjs::Transport::websocket;
      if (raw || framed) {
        handed_over_ = true;
        server_.untrack(this);
        stream_.expires_never();
        return run_websocket(server_, stream_.release_socket(), std::move(req_), std::move(buffer_),
                             raw ? WsFraming::raw : WsFraming::sockjs, std::move(slot_));
      }
    }
    if (path == "/ws-stomp" || path.rfind("/ws-stomp/", 0) == 0) return handle_sockjs(path);

    if (path == "/") {
      auto res = make_response(req, http::status::found, "", "text/plain");
      res.set(http::field::location, "/chat/room");
      return write(std::move(res));
    }
    if (path == "/chat/rooms") {
      if (method != http::verb::get) return not_allowed("GET");
      return list_rooms(server_.rooms(), shared_from_this());
    }
    if (path == "/chat/room") {
      if (method == http::verb::post) return create_room(server_.rooms(), server_.hub().limits(), *url, shared_from_this());
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
      return find_room(server_.rooms(), std::string_view(path).substr(kRoom.size()), shared_from_this());
    }
    if (path == "/healthz") {
      if (method != http::verb::get) return not_allowed("GET");
      bool up = false;
      auto body = health_json(server_.node(), server_.connection_counts(), server_.shutting_down(), up);
      return write(make_response(req, up ? http::status::ok : http::status::service_unavailable, std::move(body), kJson));
    }
    if (path == "/metrics") {
      if (method != http::verb::get) return not_allowed("GET");
      return write(make_response(req, http::status::ok, metrics_text(server_.node(), server_.connection_counts()), "text/plain; version=0.0.4"));
    }
    if (path.rfind("/assets/", 0) == 0 || path == "/favicon.ico") {
      if (method != http::verb::get && method != http::verb::head) return not_allowed("GET");
      return page(path);
    }
    write(json_error(req, http::status::not_found, "no route for " + path));
  }

  void handle_sockjs(const std::string& path);
  void sockjs_answer(Response res);
  void sockjs_receive(const sockjs::Route& route);
  void sockjs_send(const sockjs::Route& route);
  void watch_receiver();
  void write_receiver();
  void end_receiving();
  void receiver_lost();

 public:
  void deliver_in_loop(std::string bytes, bool finish) override;

 private:

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

  // Responder
  const Request& request() const override { return req_; }
  void respond(Response res) override {
    asio::post(stream_.get_executor(), [self = shared_from_this(), res = std::move(res)]() mutable {
      self->write(std::move(res));
    });
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
  ConnectionSlot slot_;
  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  Request req_;
  Response res_;
  bool handed_over_ = false;

  // While answering a SockJS xhr/xhr_streaming request.
  std::atomic<bool> receiving_{false};
  std::shared_ptr<XhrSession> xhr_;
  bool chunked_ = false;           // HTTP/1.1: chunked; 1.0: close-delimited
  bool head_sent_ = false;
  bool rx_writing_ = false;
  bool rx_finish_queued_ = false;  // the last part is queued or written
  bool rx_finished_ = false;       // ... and written
  bool rx_dead_ = false;
  bool watching_ = false;
  std::string rx_out_;             // waiting to be written
  std::string rx_inflight_;
  std::string rx_head_;
  // Holds this session while a pipelined request waits unread behind an open response (no
  // watch is pending then to own it); released when the response ends.
  std::shared_ptr<HttpSession> pinned_;
};

// ---- SockJS (protocol 0.3) on /ws-stomp: DESIGN §1 ----

void HttpSession::sockjs_answer(Response res) {
  // CORS as SockJS servers answer it: echo the origin (credentials are allowed).
  std::string_view origin = req_[http::field::origin];
  res.set(http::field::access_control_allow_origin, origin.empty() || origin == "null" ? std::string_view("*") : origin);
  res.set(http::field::access_control_allow_credentials, "true");
  if (auto h = req_[http::field::access_control_request_headers]; !h.empty())
    res.set(http::field::access_control_allow_headers, h);
  write(std::move(res));
}

void HttpSession::handle_sockjs(const std::string& path) {
  using Kind = sockjs::Route::Kind;
  const auto method = req_.method();
  sockjs::Route route;
  if (auto ec = sockjs::parse_path(path, kSockJsBase, route))
    return write(json_error(req_, http::status::not_found, ec.message()));
  auto preflight = [&](std::string_view methods) {
    auto res = make_response(req_, http::status::no_content, "", "text/plain; charset=UTF-8");
    res.set(http::field::access_control_allow_methods, methods);
    res.set(http::field::access_control_max_age, "31536000");
    res.set(http::field::cache_control, "public, max-age=31536000");
    sockjs_answer(std::move(res));
  };
  auto no_upgrade = [&] {
    if (method != http::verb::get) return not_allowed("GET");
    write(make_response(req_, http::status::bad_request, "Can \"Upgrade\" only to \"WebSocket\".", "text/plain; charset=UTF-8"));
  };
  switch (route.kind) {
    case Kind::greeting:
      if (method != http::verb::get) return not_allowed("GET");
      return write(make_response(req_, http::status::ok, std::string(sockjs::greeting_body), "text/plain; charset=UTF-8"));
    case Kind::info: {
      if (method == http::verb::options) return preflight("OPTIONS, GET");
      if (method != http::verb::get) return not_allowed("OPTIONS, GET");
      thread_local std::mt19937 rng{std::random_device{}()};
      auto res = make_response(req_, http::status::ok, sockjs::info_json(static_cast<std::uint32_t>(rng())),
                               "application/json; charset=UTF-8");
      res.set(http::field::cache_control, "no-store, no-cache, must-revalidate, max-age=0");
      return sockjs_answer(std::move(res));
    }
    case Kind::raw_websocket: return no_upgrade();
    case Kind::session: break;
  }
  if (route.transport == sockjs::Transport::websocket) return no_upgrade();
  if (method == http::verb::options) return preflight("OPTIONS, POST");
  if (method != http::verb::post) return not_allowed("OPTIONS, POST");
  if (route.transport == sockjs::Transport::xhr_send) return sockjs_send(route);
  sockjs_receive(route);
}

// xhr_send: the body's messages go to the session's STOMP, in order; 204 at once.
void HttpSession::sockjs_send(const sockjs::Route& route) {
  auto session = server_.sockjs().find(std::string(route.session));
  if (!session) return write(json_error(req_, http::status::not_found, "no such SockJS session"));
  std::vector<std::string> messages;
  if (auto ec = sockjs::decode_messages(req_.body(), sockjs::Source::xhr_send, messages))
    return sockjs_answer(make_response(req_, http::status::internal_server_error, ec.message(), "text/plain; charset=UTF-8"));
  // Posted before the 204 leaves, so the client's next xhr_send lands behind these.
  session->messages(std::move(messages));
  auto res = make_response(req_, http::status::no_content, "", "text/plain; charset=UTF-8");
  res.set(http::field::cache_control, "no-store, no-cache, no-transform, must-revalidate, max-age=0");
  sockjs_answer(std::move(res));
}

// xhr / xhr_streaming: this connection answers for the session until the response ends.
void HttpSession::sockjs_receive(const sockjs::Route& route) {
  auto& loop = static_cast<asio::io_context&>(stream_.get_executor().context());
  bool full = false;
  auto session = server_.sockjs().find_or_create(std::string(route.session), loop, full);
  if (!session) return write(json_error(req_, http::status::service_unavailable, "too many connections"));
  xhr_ = session;
  receiving_ = true;
  chunked_ = req_.version() >= 11;
  head_sent_ = rx_writing_ = rx_finish_queued_ = rx_finished_ = false;
  rx_out_.clear();
  std::string_view origin = req_[http::field::origin];
  rx_head_ = "HTTP/1.1 200 OK\r\nServer: chatd\r\nContent-Type: application/javascript; charset=UTF-8\r\n"
             "Cache-Control: no-store, no-cache, no-transform, must-revalidate, max-age=0\r\n"
             "Access-Control-Allow-Origin: ";
  rx_head_ += origin.empty() || origin == "null" ? std::string_view("*") : origin;
  rx_head_ += "\r\nAccess-Control-Allow-Credentials: true\r\n";
  if (chunked_) rx_head_ += "Transfer-Encoding: chunked\r\n";
  if (!chunked_ || !req_.keep_alive()) rx_head_ += "Connection: close\r\n";
  rx_head_ += "\r\n";
  stream_.expires_never();
  session->receive(weak_from_this(), this, loop, route.transport);
  watch_receiver();
}

void HttpSession::deliver_in_loop(std::string bytes, bool finish) {
  if (rx_dead_ || !receiving_ || rx_finish_queued_) return;
  if (!head_sent_) {
    rx_out_ += rx_head_;
    head_sent_ = true;
  }
  if (chunked_ && !bytes.empty()) {
    char size[20];
    int n = std::snprintf(size, sizeof size, "%zx\r\n", bytes.size());
    rx_out_.append(size, static_cast<std::size_t>(n));
    rx_out_ += bytes;
    rx_out_ += "\r\n";
  } else {
    rx_out_ += bytes;
  }
  if (finish) {
    rx_finish_queued_ = true;
    if (chunked_) rx_out_ += "0\r\n\r\n";
  }
  if (!rx_writing_) write_receiver();
}

void HttpSession::write_receiver() {
  if (rx_out_.empty()) return;
  rx_inflight_.swap(rx_out_);
  rx_out_.clear();
  rx_writing_ = true;
  const bool fin = rx_finish_queued_;
  asio::async_write(stream_.socket(), asio::buffer(rx_inflight_), [self = shared_from_this(), fin](beast::error_code ec, std::size_t) {
    self->rx_writing_ = false;
    if (ec || self->rx_dead_) return self->receiver_lost();
    if (!fin && self->xhr_) self->xhr_->receiver_wrote(self.get());
    if (!self->rx_out_.empty()) return self->write_receiver();
    if (fin) self->end_receiving();
  });
}

// The response is complete: back to reading requests (keep-alive) or close.
void HttpSession::end_receiving() {
  rx_finished_ = true;
  receiving_ = false;
  xhr_.reset();
  auto keep = std::move(pinned_);
  if (!chunked_ || !req_.keep_alive() || server_.shutting_down()) {
    rx_dead_ = true;
    close();
    return;
  }
  if (watching_) {
    boost::system::error_code ignored;
    stream_.socket().cancel(ignored);  // the watch's handler resumes reading
    return;
  }
  do_read();
}

// While a response is open nothing should arrive; readable then means the client went away
// (or pipelined its next request, which waits in the socket).
void HttpSession::watch_receiver() {
  watching_ = true;
  stream_.socket().async_wait(asio::ip::tcp::socket::wait_read, [self = shared_from_this()](boost::system::error_code ec) {
    self->watching_ = false;
    if (self->rx_dead_) return;
    if (!self->receiving_) return self->do_read();  // the response ended meanwhile
    if (ec) return self->receiver_lost();
    boost::system::error_code aec;
    auto n = self->stream_.socket().available(aec);
    if (aec || n == 0) return self->receiver_lost();
    // A pipelined request: take it into the buffer the next do_read parses, then go on
    // watching. Past a request's worth, stop reading and stay alive without the watch (this
    // handler was the last owner; dropping it would close the socket with unread input,
    // which the kernel answers with a reset).
    const std::size_t cap = self->server_.hub().limits().max_http_header + sockjs_send_limit(self->server_.hub().limits());
    if (self->buffer_.size() >= cap) {
      self->pinned_ = self;
      return;
    }
    auto got = self->stream_.socket().read_some(self->buffer_.prepare(std::min(n, cap - self->buffer_.size())), aec);
    if (aec) return self->receiver_lost();
    self->buffer_.commit(got);
    self->watch_receiver();
  });
}

void HttpSession::receiver_lost() {
  if (rx_dead_) return;
  rx_dead_ = true;
  receiving_ = false;
  if (xhr_) xhr_->receiver_gone(this);
  xhr_.reset();
  auto keep = std::move(pinned_);
  boost::system::error_code ignored;
  stream_.socket().shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
  stream_.socket().close(ignored);
}

}  // namespace

void run_http(Server& server, asio::ip::tcp::socket socket, ConnectionSlot slot) {
  std::make_shared<HttpSession>(server, std::move(socket), std::move(slot))->start();
}

}  // namespace chatd::net
