// A STOMP session over a raw WebSocket, framed by ws/websocket.h. The socket is read only
// when it is readable, into the loop's one shared buffer, so an idle connection owns no read
// buffer; every complete message of a read goes to STOMP before anything is written. Writes
// start from the loop's flush list after the handler that queued them: one write in flight,
// and everything queued behind it leaves as one WebSocket message (STOMP allows several
// frames in one message), which under fan-out saves a syscall per frame.
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/http.hpp>

#include <array>
#include <iterator>
#include <memory>
#include <random>

#include "chat/session.h"
#include "net/server.h"
#include "net/sessions.h"
#include "net/ws_framing.h"
#include "ws/websocket.h"

namespace chatd::net {
namespace asio = boost::asio;
namespace http = boost::beast::http;
using asio::ip::tcp;

namespace {

constexpr std::size_t kMaxBatch = 64 * 1024;        // bytes of STOMP frames in one message
constexpr std::size_t kReadChunk = 64 * 1024;       // the loop's shared read buffer
constexpr std::size_t kReadsPerWakeup = 4;          // then let other sockets have the loop
constexpr auto kCloseLinger = std::chrono::seconds(5);  // wait for the client's close, then drop

// Returns the reason, trimmed to what a close frame holds.
std::string_view reason_of(std::string_view r) { return r.substr(0, 120); }

class WsSession final : public chat::Transport, public std::enable_shared_from_this<WsSession> {
 public:
  // `framing` null: raw.
  WsSession(Server& server, tcp::socket socket, std::unique_ptr<WsFraming> framing, ConnectionSlot slot)
      : server_(server),
        slot_(std::move(slot)),
        socket_(std::move(socket)),
        own_framing_(std::move(framing)),
        framing_(own_framing_ ? *own_framing_ : raw_ws_framing()),
        decoder_(framing_.max_message_bytes(server.hub().limits().max_frame_bytes)) {
    if (framing_.keepalive_period().count() > 0) keepalive_ = std::make_unique<KeepAlive>(socket_.get_executor());
  }

  // Writes the 101 answer, then reads. `early` holds bytes the client sent past the request.
  void start(std::string handshake, std::string early) {
    boost::system::error_code ec;
    socket_.non_blocking(true, ec);
    handshake_ = std::move(handshake);
    asio::async_write(socket_, asio::buffer(handshake_),
                      [self = shared_from_this(), early = std::move(early)](boost::system::error_code wec, std::size_t) {
                        std::string().swap(self->handshake_);  // `= {}` would keep its capacity
                        if (wec) return self->on_gone();
                        self->stomp_ = std::make_shared<chat::StompSession>(self->pick_shard(), *self, new_session_id());
                        self->stomp_->start_in_loop();
                        if (self->keepalive_) self->arm_keepalive();
                        if (!early.empty() && !self->on_bytes(early)) return;
                        self->wait_readable();
                      });
  }

  // chat::Transport
  void send(chat::Outbound&& out) override {
    if (gone_ || close_sent_) return;
    queued_bytes_ += out.size();
    queue_.push_back(std::move(out));
    if (!writing_) schedule_flush();
  }

  void close(std::string_view reason) override {
    if (close_requested_) return;
    close_requested_ = true;
    app_close_ = true;
    close_code_ = 1000;
    close_reason_.assign(reason_of(reason));
    if (!writing_) schedule_flush();
  }

  std::size_t queued_bytes() const override { return writing_ ? queued_bytes_ - inflight_bytes_ : 0; }

 private:
  chat::Shard& pick_shard() {
    auto& hub = server_.hub();
    auto* mine = &socket_.get_executor().context();
    for (std::size_t i = 0; i < hub.shard_count(); ++i)
      if (&hub.shard(i).loop() == mine) return hub.shard(i);
    return hub.shard(0);
  }

  // ---- reading ----

  void wait_readable() {
    socket_.async_wait(tcp::socket::wait_read, [self = shared_from_this()](boost::system::error_code ec) {
      if (ec) return self->on_gone();
      self->on_readable();
    });
  }

  void on_readable() {
    static thread_local std::unique_ptr<std::array<char, kReadChunk>> chunk;
    if (!chunk) chunk = std::make_unique<std::array<char, kReadChunk>>();
    for (std::size_t i = 0; i < kReadsPerWakeup && !gone_; ++i) {
      boost::system::error_code ec;
      auto n = socket_.read_some(asio::buffer(*chunk), ec);
      if (ec == asio::error::would_block) break;
      if (ec) return on_gone();  // EOF or reset: the client is gone
      if (!on_bytes(std::string_view(chunk->data(), n))) return;
      if (n < chunk->size()) break;  // drained
    }
    decoder_.shrink_if_idle();
    if (!gone_) wait_readable();
  }

  // Returns false once the connection is finished with.
  bool on_bytes(std::string_view bytes) {
    while (!bytes.empty()) {
      if (close_received_) return true;  // ignore anything after the client's close
      auto r = decoder_.consume(bytes);
      bytes.remove_prefix(r.used);
      switch (r.status) {
        case ws::Decoder::Status::need_more: return true;
        case ws::Decoder::Status::message:
          if (!stomp_ || close_requested_) break;
          if (!framing_.on_message(decoder_.payload(), *stomp_, close_requested_)) close("Broken framing.");
          break;
        case ws::Decoder::Status::ping:
          control_ += ws::pong_frame(decoder_.payload());
          schedule_flush();
          break;
        case ws::Decoder::Status::pong: break;
        case ws::Decoder::Status::close:
          // Answer the close handshake with the client's code; STOMP is over.
          close_received_ = true;
          if (!close_requested_) {
            close_requested_ = true;
            close_code_ = decoder_.close_code() == 1005 ? 1000 : decoder_.close_code();
            close_reason_.clear();
          }
          schedule_flush();
          return true;
        case ws::Decoder::Status::error: {
          auto ec = decoder_.error();
          // Protocol errors close only this connection, with RFC 6455's code and a reason.
          queue_.clear();
          queued_bytes_ = 0;
          close_requested_ = true;
          close_code_ = ws::close_code_for(ec);
          close_reason_.assign(reason_of(ec.message()));
          schedule_flush();
          return false;
        }
      }
    }
    return true;
  }

  // ---- writing ----

  void schedule_flush() {
    if (flush_scheduled_ || gone_) return;
    flush_scheduled_ = true;
    auto& list = flush_list;
    list.dirty.push_back(shared_from_this());
    if (list.posted) return;
    list.posted = true;
    asio::post(socket_.get_executor(), [] {
      auto& l = flush_list;
      auto dirty = std::move(l.dirty);
      l.dirty.clear();
      l.posted = false;
      for (auto& s : dirty) {
        s->flush_scheduled_ = false;
        if (!s->writing_) s->do_write();
      }
    });
  }

  void do_write() {
    if (gone_ || close_sent_) return;
    buffers_.clear();
    frame_header_.clear();
    std::size_t batch = 0, take = 0;
    while (take < queue_.size() && (take == 0 || batch + queue_[take].size() <= kMaxBatch)) batch += queue_[take++].size();
    if (take == queue_.size()) {
      inflight_.swap(queue_);
    } else {
      std::move(queue_.begin(), queue_.begin() + static_cast<std::ptrdiff_t>(take), std::back_inserter(inflight_));
      queue_.erase(queue_.begin(), queue_.begin() + static_cast<std::ptrdiff_t>(take));
    }
    inflight_bytes_ = batch;
    if (!control_.empty()) {
      control_inflight_.swap(control_);
      buffers_.emplace_back(control_inflight_.data(), control_inflight_.size());
    }
    if (!inflight_.empty()) framing_.append_batch(inflight_, batch, frame_header_, buffers_);
    bool closing_now = close_requested_ && queue_.empty();
    if (closing_now) {
      close_frame_.clear();
      if (app_close_) framing_.append_close_notice(close_frame_, close_reason_);
      close_frame_ += ws::close_frame(close_code_, close_reason_);
      buffers_.emplace_back(close_frame_.data(), close_frame_.size());
      close_sent_ = true;
    }
    if (buffers_.empty()) return;
    writing_ = true;
    if (keepalive_) keepalive_->last_write = std::chrono::steady_clock::now();
    asio::async_write(socket_, buffers_, [self = shared_from_this()](boost::system::error_code ec, std::size_t) {
      self->on_write(ec);
    });
  }

  void on_write(boost::system::error_code ec) {
    writing_ = false;
    queued_bytes_ -= inflight_bytes_;
    inflight_bytes_ = 0;
    inflight_.clear();
    control_inflight_.clear();
    if (ec) return on_gone();
    if (close_sent_) return after_close_sent();
    if (!queue_.empty() || !control_.empty() || close_requested_) do_write();
  }

  // Sends the framing's keep-alive once its period passed without any write; wakes when that
  // period since the last write ends.
  void arm_keepalive() {
    const auto period = framing_.keepalive_period();
    keepalive_->timer.expires_at(keepalive_->last_write + period);
    keepalive_->timer.async_wait([self = shared_from_this(), period](boost::system::error_code ec) {
      if (ec || self->gone_ || self->close_sent_) return;
      auto now = std::chrono::steady_clock::now();
      if (now - self->keepalive_->last_write >= period) {
        self->control_ += self->framing_.keepalive_message();
        self->keepalive_->last_write = now;  // the flush below writes it
        self->schedule_flush();
      }
      self->arm_keepalive();
    });
  }

  // Our close frame is out: half-close, and give the client a bounded time to finish.
  void after_close_sent() {
    boost::system::error_code ignored;
    socket_.shutdown(tcp::socket::shutdown_send, ignored);
    if (close_received_) return on_gone();
    linger_ = std::make_unique<asio::steady_timer>(socket_.get_executor(), kCloseLinger);
    linger_->async_wait([self = shared_from_this()](boost::system::error_code ec) {
      if (!ec) self->on_gone();
    });
  }

  // Runs once, when the connection can no longer be used.
  void on_gone() {
    if (gone_) return;
    gone_ = true;
    if (stomp_) stomp_->on_closed_in_loop();
    queue_.clear();
    queued_bytes_ = 0;
    if (linger_) linger_->cancel();
    if (keepalive_) keepalive_->timer.cancel();
    boost::system::error_code ignored;
    socket_.close(ignored);
  }

  Server& server_;
  ConnectionSlot slot_;
  tcp::socket socket_;
  std::unique_ptr<WsFraming> own_framing_;  // null for raw, which every raw session shares
  WsFraming& framing_;
  ws::Decoder decoder_;
  std::shared_ptr<chat::StompSession> stomp_;
  std::string handshake_;
  std::vector<chat::Outbound> queue_;  // vectors, not a deque: an idle session allocates nothing
  std::vector<chat::Outbound> inflight_;
  std::vector<asio::const_buffer> buffers_;
  std::string frame_header_;
  std::string control_;           // pongs waiting for the next write
  std::string control_inflight_;
  std::string close_frame_;
  std::unique_ptr<asio::steady_timer> linger_;
  bool app_close_ = false;  // the server ends the session: the framing's close notice goes first
  // Only for a framing with a keep-alive; otherwise one null pointer.
  struct KeepAlive {
    explicit KeepAlive(const tcp::socket::executor_type& ex) : timer(ex) {}
    asio::steady_timer timer;
    std::chrono::steady_clock::time_point last_write = std::chrono::steady_clock::now();
  };
  std::unique_ptr<KeepAlive> keepalive_;
  std::size_t queued_bytes_ = 0;
  std::size_t inflight_bytes_ = 0;
  std::uint16_t close_code_ = 1000;
  bool writing_ = false;
  bool flush_scheduled_ = false;
  bool close_requested_ = false;
  bool close_sent_ = false;
  bool close_received_ = false;
  bool gone_ = false;
  std::string close_reason_;

  // Sessions of this loop with something to write and no write in flight. Each worker thread
  // runs exactly one loop, so thread_local is per loop.
  struct FlushList {
    std::vector<std::shared_ptr<WsSession>> dirty;
    bool posted = false;
  };
  static thread_local FlushList flush_list;
};

thread_local WsSession::FlushList WsSession::flush_list;

// Writes a plain HTTP refusal of an upgrade, then closes.
void refuse(tcp::socket socket, unsigned version, http::status status, std::string_view why, bool tell_version) {
  auto res = std::make_shared<http::response<http::string_body>>(status, version);
  res->set(http::field::server, "chatd");
  res->set(http::field::content_type, "application/json;charset=UTF-8");
  if (tell_version) res->set(http::field::sec_websocket_version, "13");
  res->keep_alive(false);
  res->body() = chat::error_json(static_cast<int>(status), why);
  res->prepare_payload();
  auto s = std::make_shared<tcp::socket>(std::move(socket));
  http::async_write(*s, *res, [s, res](boost::system::error_code, std::size_t) {
    boost::system::error_code ignored;
    s->shutdown(tcp::socket::shutdown_both, ignored);
  });
}

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

void run_websocket(Server& server, tcp::socket socket, Request req, boost::beast::flat_buffer buffer,
                   std::unique_ptr<WsFraming> framing, ConnectionSlot slot) {
  // A refused upgrade gives the slot back as it returns; a session keeps it for life.
  if (req.method() != http::verb::get) {
    return refuse(std::move(socket), req.version(), http::status::method_not_allowed, "WebSocket upgrades use GET", false);
  }
  if (req[http::field::sec_websocket_version] != "13") {
    return refuse(std::move(socket), req.version(), http::status::upgrade_required, "only WebSocket version 13 is spoken here", true);
  }
  auto key = req[http::field::sec_websocket_key];
  if (key.size() != 24) {
    return refuse(std::move(socket), req.version(), http::status::bad_request, "missing or malformed Sec-WebSocket-Key", false);
  }
  std::string handshake =
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nServer: chatd\r\n"
      "Sec-WebSocket-Accept: " + ws::accept_key(key) + "\r\n";
  if (auto p = choose_subprotocol(req[http::field::sec_websocket_protocol]); !p.empty())
    handshake.append("Sec-WebSocket-Protocol: ").append(p).append("\r\n");
  handshake.append("\r\n");
  (framing ? *framing : raw_ws_framing()).append_open(handshake);
  auto data = buffer.cdata();
  std::string early(static_cast<const char*>(data.data()), data.size());
  std::make_shared<WsSession>(server, std::move(socket), std::move(framing), std::move(slot))->start(std::move(handshake), std::move(early));
}

}  // namespace chatd::net
