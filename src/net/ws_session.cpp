// A STOMP session over a raw WebSocket (Beast). One read loop, one write in flight; writes
// gather every queued STOMP frame (up to kMaxBatch bytes) into one WebSocket message, which
// STOMP over WebSocket allows and which saves a syscall per frame under fan-out.
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/post.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/websocket.hpp>

#include <iterator>
#include <memory>
#include <random>

#include "chat/session.h"
#include "net/server.h"
#include "net/sessions.h"

namespace chatd::net {
namespace beast = boost::beast;
namespace websocket = beast::websocket;
namespace asio = boost::asio;

namespace {

constexpr std::size_t kMaxBatch = 64 * 1024;

class WsSession final : public chat::Transport, public std::enable_shared_from_this<WsSession> {
 public:
  WsSession(Server& server, asio::ip::tcp::socket socket)
      : server_(server), ws_(std::move(socket)) {}

  ~WsSession() override { server_.connections.fetch_sub(1, std::memory_order_relaxed); }

  void start(Request req, beast::flat_buffer buffer) {
    auto& lim = server_.hub().limits();
    // Twice the frame bound: a whole message over it is refused by Beast (close 1009), while a
    // single oversized STOMP frame inside reaches the codec and gets a readable ERROR.
    ws_.read_message_max(2 * lim.max_frame_bytes + 1024);
    ws_.auto_fragment(false);  // one WebSocket frame per batch: no split at 4 KiB
    websocket::stream_base::timeout t{};
    t.handshake_timeout = std::chrono::seconds(30);
    t.idle_timeout = websocket::stream_base::none();  // STOMP heart-beats watch idleness
    t.keep_alive_pings = false;
    ws_.set_option(t);
    std::string protocol(choose_subprotocol(req[beast::http::field::sec_websocket_protocol]));
    ws_.set_option(websocket::stream_base::decorator([protocol](websocket::response_type& res) {
      res.set(beast::http::field::server, "chatd");
      if (!protocol.empty()) res.set(beast::http::field::sec_websocket_protocol, protocol);
    }));
    buffer_ = std::move(buffer);
    req_ = std::move(req);  // kept until the handshake completes
    ws_.async_accept(req_, [self = shared_from_this()](beast::error_code ec) { self->on_accept(ec); });
  }

  // chat::Transport
  void send(chat::Outbound&& out) override {
    queued_bytes_ += out.size();
    queue_.push_back(std::move(out));
    if (!writing_) schedule_flush();
  }

  void close(std::string_view reason) override {
    if (close_requested_) return;
    close_requested_ = true;
    close_reason_.assign(reason.substr(0, 120));  // a close frame's reason fits in 123 bytes
    if (!writing_) schedule_flush();
  }

  std::size_t queued_bytes() const override { return queued_bytes_; }

 private:
  void on_accept(beast::error_code ec) {
    if (ec) return;  // handshake failed: Beast has answered with the HTTP error
    req_ = {};
    buffer_ = beast::flat_buffer();  // drop the HTTP read's capacity: idle sessions hold no buffer
    stomp_ = std::make_shared<chat::StompSession>(pick_shard(), *this, new_session_id());
    stomp_->start_in_loop();
    do_read();
  }

  chat::Shard& pick_shard() {
    auto& hub = server_.hub();
    auto* mine = &ws_.get_executor().context();
    for (std::size_t i = 0; i < hub.shard_count(); ++i)
      if (&hub.shard(i).loop() == mine) return hub.shard(i);
    return hub.shard(0);
  }

  void do_read() {
    ws_.async_read(buffer_, [self = shared_from_this()](beast::error_code ec, std::size_t) { self->on_read(ec); });
  }

  void on_read(beast::error_code ec) {
    if (ec) return on_gone();
    auto data = buffer_.cdata();
    stomp_->on_bytes_in_loop(std::string_view(static_cast<const char*>(data.data()), data.size()));
    buffer_.consume(buffer_.size());
    // Beast copies payload into this buffer only once bytes arrive, so a waiting read needs no
    // capacity: release it and an idle connection costs only Beast's own state.
    buffer_.shrink_to_fit();
    do_read();
  }

  // Writes start from the loop's flush list, after the handler that queued them, so a burst of
  // deliveries to the same socket leaves in one write instead of one syscall per frame.
  void schedule_flush() {
    if (flush_scheduled_ || gone_) return;
    flush_scheduled_ = true;
    auto& list = flush_list;
    list.dirty.push_back(shared_from_this());
    if (list.posted) return;
    list.posted = true;
    asio::post(ws_.get_executor(), [] {
      auto& l = flush_list;
      auto dirty = std::move(l.dirty);
      l.dirty.clear();
      l.posted = false;
      for (auto& s : dirty) {
        s->flush_scheduled_ = false;
        if (s->writing_) continue;
        if (!s->queue_.empty()) s->do_write();
        else if (s->close_requested_) s->do_close();
      }
    });
  }

  void do_write() {
    if (queue_.empty() || gone_) return;
    writing_ = true;
    buffers_.clear();
    std::size_t batch = 0, take = 0;
    while (take < queue_.size() && (take == 0 || batch + queue_[take].size() <= kMaxBatch)) batch += queue_[take++].size();
    if (take == queue_.size()) {
      inflight_.swap(queue_);
    } else {
      std::move(queue_.begin(), queue_.begin() + static_cast<std::ptrdiff_t>(take), std::back_inserter(inflight_));
      queue_.erase(queue_.begin(), queue_.begin() + static_cast<std::ptrdiff_t>(take));
    }
    for (auto& o : inflight_) {
      if (o.shared) {
        buffers_.emplace_back(o.shared->frame.head.data(), o.shared->frame.head.size());
        buffers_.emplace_back(o.own.data(), o.own.size());
        buffers_.emplace_back(o.shared->frame.tail.data(), o.shared->frame.tail.size());
      } else {
        buffers_.emplace_back(o.own.data(), o.own.size());
      }
    }
    inflight_bytes_ = batch;
    ws_.text(true);
    ws_.async_write(buffers_, [self = shared_from_this()](beast::error_code ec, std::size_t) { self->on_write(ec); });
  }

  void on_write(beast::error_code ec) {
    writing_ = false;
    queued_bytes_ -= inflight_bytes_;
    inflight_bytes_ = 0;
    inflight_.clear();
    if (ec) return on_gone();
    if (!queue_.empty()) return do_write();
    if (close_requested_) do_close();
  }

  void do_close() {
    if (closing_ || gone_) return;
    closing_ = true;
    ws_.async_close(websocket::close_reason(websocket::close_code::normal, close_reason_),
                    [self = shared_from_this()](beast::error_code) {
                      // The pending read ends with `closed`, which finishes the session.
                      beast::error_code ignored;
                      self->ws_.next_layer().shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
                    });
  }

  // Runs once, when the connection can no longer be used.
  void on_gone() {
    if (gone_) return;
    gone_ = true;
    if (stomp_) stomp_->on_closed_in_loop();
    queue_.clear();
    queued_bytes_ = 0;
    beast::error_code ignored;
    ws_.next_layer().close(ignored);
  }

  Server& server_;
  websocket::stream<asio::ip::tcp::socket> ws_;  // no tcp_stream: heart-beats, not timers, watch idleness
  beast::flat_buffer buffer_;
  Request req_;
  std::shared_ptr<chat::StompSession> stomp_;
  std::vector<chat::Outbound> queue_;  // vectors, not a deque: an idle session allocates nothing
  std::vector<chat::Outbound> inflight_;
  std::vector<asio::const_buffer> buffers_;
  std::size_t queued_bytes_ = 0;
  std::size_t inflight_bytes_ = 0;
  bool writing_ = false;
  bool close_requested_ = false;
  bool closing_ = false;
  bool gone_ = false;
  bool flush_scheduled_ = false;
  std::string close_reason_;

  // Sessions of this loop with queued bytes and no write in flight. Each worker thread runs
  // exactly one loop, so thread_local is per loop.
  struct FlushList {
    std::vector<std::shared_ptr<WsSession>> dirty;
    bool posted = false;
  };
  static thread_local FlushList flush_list;
};

thread_local WsSession::FlushList WsSession::flush_list;

}  // namespace

std::string_view choose_subprotocol(std::string_view offered) {
  // Answer the best STOMP version the client offers.
  for (std::string_view p : {"v12.stomp", "v11.stomp", "v10.stomp"}) {
    for (std::string_view rest = offered; !rest.empty();) {
      auto comma = rest.find(',');
      auto item = rest.substr(0, comma);
      while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
      while (!item.empty() && item.back() == ' ') item.remove_suffix(1);
      if (item == p) return p;
      if (comma == std::string_view::npos) break;
      rest.remove_prefix(comma + 1);
    }
  }
  return {};
}

std::string new_session_id() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  static constexpr char hex[] = "0123456789abcdef";
  std::string id(16, '0');
  auto r = rng();
  for (auto& c : id) {
    c = hex[r & 0xF];
    r >>= 4;
  }
  return id;
}

void run_websocket(Server& server, asio::ip::tcp::socket socket, Request req, beast::flat_buffer buffer) {
  std::make_shared<WsSession>(server, std::move(socket))->start(std::move(req), std::move(buffer));
}

}  // namespace chatd::net
