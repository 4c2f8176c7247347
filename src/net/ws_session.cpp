// A WebSocket session, framed by ws/websocket.h, running one application (net/ws_app.h: STOMP
// in chatd). The socket is read only when it is readable, into the loop's one shared buffer, so
// an idle connection owns no read buffer; every complete message of a read goes to the
// application before anything is written.
//
// Writing: what the handlers of one loop turn queue for a socket leaves at the end of that
// turn (the loop's flush list) in one sendmsg(2), STOMP frames coalesced into as few WebSocket
// messages as the batch bound allows (STOMP allows several frames in one message), each
// shared MESSAGE written from its shared bytes; another application's messages leave one
// WebSocket message each, text or binary as it says. What the kernel does not take stays where it
// is until the socket is writable again; meanwhile the client is not read (backpressure), every
// byte waiting counts against max_outbound_bytes, and a client that takes nothing for
// write_timeout is reset.
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/http.hpp>

#include <algorithm>
#include <cctype>
#include <array>
#include <cassert>
#include <cerrno>
#include <climits>
#include <deque>
#include <memory>
#include <random>

#include "chat/session.h"
#include "log/log.h"
#include "net/client_address.h"
#include "net/server.h"
#include "net/sessions.h"
#include "net/socket_write.h"
#include "net/ws_app.h"
#include "net/ws_framing.h"
#include "net/ws_handshake.h"
#include "ws/websocket.h"

namespace chatd::net {
namespace asio = boost::asio;
namespace http = boost::beast::http;
using asio::ip::tcp;

namespace {

// Past max_outbound_bytes a delivery is refused with an ERROR; this much more leaves room for
// that ERROR (and a receipt or pong racing it) before the transport itself gives up.
constexpr std::size_t kErrorRoom = 4096;

// Returns the reason, trimmed to what a close frame holds.
std::string_view reason_of(std::string_view r) {
  if (r.size() <= 120) return r;
  // Cut before a character, not inside one: a close reason is UTF-8.
  std::size_t n = 120;
  while (n > 0 && (static_cast<unsigned char>(r[n]) & 0xC0) == 0x80) --n;
  return r.substr(0, n);
}

class WsSession final : public chat::Transport, public std::enable_shared_from_this<WsSession> {
 public:
  // `framing` null: raw.
  WsSession(Server& server, tcp::socket socket, std::unique_ptr<WsFraming> framing, std::unique_ptr<WsApp> app,
            ConnectionSlot slot)
      : server_(server),
        slot_(std::move(slot)),
        socket_(std::move(socket)),
        own_framing_(std::move(framing)),
        framing_(own_framing_ ? *own_framing_ : raw_ws_framing()),
        app_(std::move(app)),
        decoder_(app_->max_message_bytes()),
        shard_(pick_shard()) {
    if (framing_.keepalive_period().count() > 0) keepalive_ = std::make_unique<KeepAlive>(socket_.get_executor());
  }

  // Writes the 101 answer, then reads. `early` holds bytes the client sent past the request.
  void start(std::string handshake, std::string early, std::string client) {
    boost::system::error_code ec;
    socket_.non_blocking(true, ec);
    handshake_ = std::move(handshake);
    asio::async_write(socket_, asio::buffer(handshake_),
                      [self = shared_from_this(), early = std::move(early), client = std::move(client)](
                          boost::system::error_code wec, std::size_t) mutable {
                        std::string().swap(self->handshake_);  // `= {}` would keep its capacity
                        if (wec) return self->on_gone();
                        self->app_open_ = true;
                        self->app_->open_in_loop(self->shard_, *self, std::move(client));
                        if (self->keepalive_) self->arm_keepalive();
                        if (!early.empty() && !self->on_bytes(early)) return;
                        self->wait_readable();
                      });
  }

  // chat::Transport
  void send(chat::Outbound&& out) override {
    assert_in_loop();
    if (gone_ || close_sent_) return;
    // Sent whole, like StompSession allows, up to one replay's worth however many rooms replay.
    if (out.replay) replay_allowance_ = std::min(replay_allowance_ + out.size(), chat::max_replay_bytes(server_.hub().limits()));
    if (over_limit(out.size())) return drop_slow_consumer();
    queued_bytes_ += out.size();
    queue_.push_back(std::move(out));
    schedule_flush();
  }

  void close(std::string_view reason) override {
    assert_in_loop();
    if (close_requested_) return;
    close_requested_ = true;
    app_close_ = true;
    close_code_ = 1000;
    close_text_.assign(reason_of(reason));
    schedule_flush();
  }

  // Everything waiting counts: frames, pongs, keep-alives and what the kernel left of the last
  // write. With no write pending, all of it leaves at the end of this loop turn.
  std::size_t queued_bytes() const override {
    return blocked_ ? blocked_->left + queued_bytes_ + control_.size() : 0;
  }

 private:
  // Returns the shard of the loop the socket belongs to: the session and its application
  // live on that one loop.
  chat::Shard& pick_shard() {
    auto& hub = server_.hub();
    auto* mine = &socket_.get_executor().context();
    for (std::size_t i = 0; i < hub.shard_count(); ++i)
      if (&hub.shard(i).loop() == mine) return hub.shard(i);
    assert(!"a WebSocket on a loop that is no worker's");
    return hub.shard(0);
  }

  // Debug builds check that the session is touched on its own loop only (muduo's
  // assertInLoopThread): its application calls in there, and other threads post.
  void assert_in_loop() const { assert(shard_.loop().get_executor().running_in_this_thread()); }

  // ---- reading ----

  void wait_readable() {
    socket_.async_wait(tcp::socket::wait_read, [self = shared_from_this()](boost::system::error_code ec) {
      if (ec) return self->on_gone();
      self->on_readable();
    });
  }

  void on_readable() {
    assert_in_loop();
    // The loop's shared read buffer (net::Limits::ws_read_chunk_bytes).
    static thread_local std::vector<char> chunk;
    const auto& lim = server_.config().limits;
    if (chunk.empty()) chunk.resize(lim.ws_read_chunk_bytes);
    for (std::size_t i = 0; i < lim.ws_reads_per_wakeup && !gone_; ++i) {
      boost::system::error_code ec;
      auto n = socket_.read_some(asio::buffer(chunk), ec);
      if (ec == asio::error::would_block) break;
      if (ec) return on_gone();  // EOF or reset: the client is gone
      if (!on_bytes(std::string_view(chunk.data(), n))) return;
      if (n < chunk.size()) break;  // drained
    }
    decoder_.shrink_if_idle();
    if (gone_) return;
    // A client that does not take what it asked for is not read until it does.
    if (blocked_) read_paused_ = true;
    else wait_readable();
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
          if (!app_open_ || close_requested_) break;
          if (!app_->on_message_in_loop(decoder_.payload(), decoder_.text(), close_requested_)) close("Broken framing.");
          break;
        case ws::Decoder::Status::ping: {
          auto pong = ws::pong_frame(decoder_.payload());
          if (over_limit(pong.size())) {
            drop_slow_consumer();
            return false;
          }
          control_ += pong;
          schedule_flush();
          break;
        }
        case ws::Decoder::Status::pong: break;
        case ws::Decoder::Status::close:
          // Answer the close handshake with the client's code; the application is over.
          close_received_ = true;
          if (!close_requested_) {
            close_requested_ = true;
            close_code_ = decoder_.close_code() == 1005 ? 1000 : decoder_.close_code();
            close_text_.clear();
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
          if (!close_sent_) close_text_.assign(reason_of(ec.message()));  // else it is the frame being written
          schedule_flush();
          return false;
        }
      }
    }
    return true;
  }

  // ---- writing ----

  void schedule_flush() {
    if (flush_scheduled_ || gone_ || blocked_) return;
    flush_scheduled_ = true;
    auto& list = flush_list;
    list.dirty.push_back(shared_from_this());
    if (list.posted) return;
    list.posted = true;
    // Posted once per turn: it runs after the handlers that are ready now, so a burst of
    // deliveries to one socket leaves together.
    asio::post(socket_.get_executor(), [] { flush_dirty_in_loop(); });
  }

  // Writes every session of this loop that has something to write: each in one sendmsg, or
  // (--ws-write-backend io_uring) all of them in one io_uring_enter per UringWrites::capacity.
  static void flush_dirty_in_loop() {
    auto& l = flush_list;
    auto dirty = std::move(l.dirty);
    l.dirty.clear();
    l.posted = false;
    if (dirty.empty()) return;
    auto& server = dirty.front()->server_;
    std::uint64_t calls = 0;
    UringWrites* ring = uring_in_loop(server);
    if (!ring) {
      for (auto& s : dirty) {
        s->flush_scheduled_ = false;
        calls += s->do_write();
      }
    } else {
      // Each write of a round has its own Pieces until its result is known.
      static thread_local std::vector<Pieces> round(UringWrites::capacity);
      static thread_local std::vector<WsSession*> who;
      static thread_local std::vector<int> results;
      bool ring_ok = true;
      std::size_t first = 0;
      for (; first < dirty.size() && ring_ok; first += UringWrites::capacity) {
        const std::size_t end = std::min(dirty.size(), first + UringWrites::capacity);
        who.clear();
        for (std::size_t i = first; i < end; ++i) {
          auto* s = dirty[i].get();
          s->flush_scheduled_ = false;
          auto& p = round[who.size()];
          if (!s->prepare_write(p)) continue;
          ring->add(s->socket_.native_handle(), p.iov, p.pos, p.msg);
          who.push_back(s);
        }
        ring_ok = ring->submit(results);
        for (std::size_t k = 0; k < who.size(); ++k) {
          calls += who[k]->finish_write(round[k], results[k]);
          // A slot keeps its capacity for the next round, except what a big burst grew.
          if (round[k].iov.capacity() > 1024) round[k] = Pieces{};
        }
      }
      if (!ring_ok) {
        // What was not submitted was written with sendmsg above; from now on every write is,
        // starting with the rounds that did not run.
        log::event("io_uring_failed", {{"then", "socket writes use sendmsg"}});
        drop_uring_in_loop();
        for (std::size_t i = first; i < dirty.size(); ++i) {
          dirty[i]->flush_scheduled_ = false;
          dirty[i]->schedule_flush();
        }
      }
    }
    server.socket_writes.fetch_add(calls, std::memory_order_relaxed);
  }

  // Returns this loop's io_uring for writes, or null when writes go by sendmsg (the option,
  // or io_uring refused here: then once a log line says why).
  static UringWrites* uring_in_loop(Server& server) {
    auto& u = loop_uring;
    if (!server.config().limits.ws_write_uring || u.refused) return nullptr;
    if (!u.ring) {
      std::string why;
      u.ring = UringWrites::open(why);
      if (!u.ring) {
        u.refused = true;
        log::event("io_uring_unavailable", {{"why", why}, {"then", "socket writes use sendmsg"}});
      }
    }
    return u.ring.get();
  }
  static void drop_uring_in_loop() {
    loop_uring.ring.reset();
    loop_uring.refused = true;
  }

  // What one write is built from. Per thread, because a write the kernel takes at once (the
  // common case) needs none of it afterwards; a write it leaves unfinished takes it over.
  // Everything the iov points into stays put when a Pieces is swapped or moved.
  struct Pieces {
    std::vector<std::vector<chat::Outbound>> batches;  // one per WebSocket message; `used` in use
    std::size_t used = 0;
    std::deque<std::string> headers;  // one per batch
    std::vector<asio::const_buffer> buffers;
    std::vector<iovec> iov;
    std::size_t pos = 0;  // iov[pos..] is left to write
    // Per batch, the iov index it ends before (buffers count while batches are built); the
    // batches before `freed` were written and let go: a client that takes a long replay slowly
    // holds only what it has not taken.
    std::vector<std::size_t> batch_ends;
    std::size_t freed = 0;
    msghdr msg{};         // an io_uring sendmsg's, while it is submitted
    void clear() {
      for (std::size_t i = 0; i < used; ++i) batches[i].clear();  // drops the shared frames
      used = 0;
      batch_ends.clear();
      freed = 0;
      headers.clear();
      buffers.clear();
      iov.clear();
      pos = 0;
    }
  };
  static thread_local Pieces scratch;

  // A write the kernel left unfinished, until the socket takes the rest.
  struct Blocked {
    explicit Blocked(const tcp::socket::executor_type& ex) : deadline(ex) {}
    Pieces pieces;
    std::size_t left = 0;                            // bytes of pieces not yet taken
    std::chrono::steady_clock::time_point progress;  // the client last took bytes
    asio::steady_timer deadline;
  };

  // Writes everything queued: control frames, the queued STOMP frames as WebSocket messages
  // of at most net::Limits::ws_max_batch_bytes each (another application's messages one each),
  // then the close frame when one is due. Returns the sendmsg calls made.
  std::uint64_t do_write() {
    auto& p = scratch;
    if (!prepare_write(p)) return 0;
    std::uint64_t calls = 0;
    std::size_t taken = 0;
    auto r = write_pieces(socket_.native_handle(), p.iov, p.pos, calls, taken);
    end_write(p, r);
    return calls;
  }

  // Finishes a write submitted on the loop's io_uring whose sendmsg returned `res`. Returns
  // the sendmsg calls made (the submitted one, and any that wrote what it left).
  std::uint64_t finish_write(Pieces& p, int res) {
    std::uint64_t calls = res == -ECANCELED ? 0 : 1;
    if (gone_) {  // closed by another session's write in the same round
      p.clear();
      return calls;
    }
    std::size_t taken = 0;
    WriteResult r;
    if (res >= 0) {
      std::size_t want = 0;
      for (std::size_t i = p.pos; i < std::min(p.iov.size(), p.pos + IOV_MAX); ++i) want += p.iov[i].iov_len;
      advance_pieces(p.iov, p.pos, static_cast<std::size_t>(res));
      if (p.pos == p.iov.size()) r = WriteResult::done;
      else if (static_cast<std::size_t>(res) < want) r = WriteResult::blocked;
      else r = write_pieces(socket_.native_handle(), p.iov, p.pos, calls, taken);  // past IOV_MAX pieces
    } else if (res == -EAGAIN || res == -EWOULDBLOCK) {
      r = WriteResult::blocked;
    } else if (res == -EINTR || res == -ECANCELED) {
      r = write_pieces(socket_.native_handle(), p.iov, p.pos, calls, taken);
    } else {
      r = WriteResult::failed;
    }
    end_write(p, r);
    return calls;
  }

  // Builds in `p` everything queued: control frames, the queued STOMP frames as WebSocket
  // messages, the close frame when one is due. Returns false when there is nothing to write.
  bool prepare_write(Pieces& p) {
    if (gone_ || close_sent_ || blocked_) return false;
    p.clear();
    if (!control_.empty()) {
      control_inflight_.swap(control_);
      control_.clear();
      p.buffers.emplace_back(control_inflight_.data(), control_inflight_.size());
    }
    if (!queue_.empty()) framing_.begin_write();
    const std::size_t max_batch = server_.config().limits.ws_max_batch_bytes;
    for (std::size_t i = 0; i < queue_.size();) {
      if (p.used == p.batches.size()) p.batches.emplace_back();
      auto& batch = p.batches[p.used++];
      if (queue_[i].kind != chat::Outbound::Kind::stomp_frame) {
        batch.push_back(std::move(queue_[i++]));
        append_own_message(batch.front(), p.headers.emplace_back(), p.buffers);
        p.batch_ends.push_back(p.buffers.size());
        continue;
      }
      std::size_t bytes = 0;
      for (; i < queue_.size() && queue_[i].kind == chat::Outbound::Kind::stomp_frame &&
             (batch.empty() || bytes + queue_[i].size() <= max_batch);
           ++i) {
        bytes += queue_[i].size();
        batch.push_back(std::move(queue_[i]));
      }
      framing_.append_batch(batch, bytes, p.headers.emplace_back(), p.buffers);
      p.batch_ends.push_back(p.buffers.size());
    }
    queue_.clear();
    if (queue_.capacity() > 64) std::vector<chat::Outbound>().swap(queue_);  // after a burst
    queued_bytes_ = 0;
    if (close_requested_) {
      // The reason becomes the frames that carry it.
      const std::string reason = std::move(close_text_);
      close_text_.clear();
      if (app_close_) framing_.append_close_notice(close_text_, reason);
      close_text_ += ws::close_frame(close_code_, reason);
      p.buffers.emplace_back(close_text_.data(), close_text_.size());
      close_sent_ = true;
    }
    std::size_t ended = 0;  // batch_ends from buffer counts to iov indexes
    for (std::size_t k = 0; k < p.buffers.size(); ++k) {
      if (p.buffers[k].size()) p.iov.push_back(iovec{const_cast<void*>(p.buffers[k].data()), p.buffers[k].size()});
      for (; ended < p.batch_ends.size() && p.batch_ends[ended] == k + 1; ++ended) p.batch_ends[ended] = p.iov.size();
    }
    if (p.iov.empty()) {
      p.clear();
      return false;
    }
    if (keepalive_) keepalive_->last_write = std::chrono::steady_clock::now();
    return true;
  }

  // A write of `p` ended with `r`: keeps what the kernel left (blocked), or lets `p` go.
  void end_write(Pieces& p, WriteResult r) {
    if (r == WriteResult::blocked) {
      // Keep what is left, with the frames it points into, and wait for the client.
      blocked_ = std::make_unique<Blocked>(socket_.get_executor());
      std::swap(blocked_->pieces, p);
      blocked_->left = pieces_left(blocked_->pieces.iov, blocked_->pieces.pos);
      free_written(blocked_->pieces);
      blocked_->progress = std::chrono::steady_clock::now();
      end_replay_allowance_if_drained();
      arm_write_deadline();
      wait_writable();
    } else {
      p.clear();
      framing_.end_write();
      replay_allowance_ = 0;  // everything was taken
      after_write(r);
    }
  }

  // Lets go of the frames of every batch the kernel has taken whole.
  static void free_written(Pieces& p) {
    for (; p.freed < p.used && p.batch_ends[p.freed] <= p.pos; ++p.freed) std::vector<chat::Outbound>().swap(p.batches[p.freed]);
  }

  // Appends an application's own message (not a STOMP frame) as one WebSocket message with
  // the opcode it asked for; the buffers point into `o` and `header`.
  static void append_own_message(const chat::Outbound& o, std::string& header, std::vector<asio::const_buffer>& buffers) {
    auto op = o.kind == chat::Outbound::Kind::binary_message ? ws::Opcode::binary : ws::Opcode::text;
    ws::append_header(header, op, o.own.size());
    buffers.emplace_back(header.data(), header.size());
    buffers.emplace_back(o.own.data(), o.own.size());
  }

  // A write finished (done) or broke (failed).
  void after_write(WriteResult r) {
    control_inflight_.clear();
    if (r == WriteResult::failed) return on_gone();
    if (close_sent_) return after_close_sent();
    if (!queue_.empty() || !control_.empty() || close_requested_) schedule_flush();
  }

  void wait_writable() {
    socket_.async_wait(tcp::socket::wait_write, [self = shared_from_this()](boost::system::error_code ec) {
      if (ec || self->gone_ || !self->blocked_) return;
      self->on_writable();
    });
  }

  void on_writable() {
    assert_in_loop();
    auto& b = *blocked_;
    std::uint64_t calls = 0;
    std::size_t taken = 0;
    auto r = write_pieces(socket_.native_handle(), b.pieces.iov, b.pieces.pos, calls, taken);
    server_.socket_writes.fetch_add(calls, std::memory_order_relaxed);
    b.left -= taken;
    if (taken) b.progress = std::chrono::steady_clock::now();
    free_written(b.pieces);
    end_replay_allowance_if_drained();
    if (r == WriteResult::blocked) return wait_writable();
    blocked_->deadline.cancel();
    blocked_.reset();
    framing_.end_write();
    if (read_paused_ && r == WriteResult::done) {
      read_paused_ = false;
      wait_readable();
    }
    after_write(r);
  }

  // Wakes write_timeout after the client last took bytes; a client that took nothing since
  // is reset (issue 13, finding 2: an ERROR queued behind a write that never completes would
  // otherwise hold the socket, and the kernel's send queue, for good).
  void arm_write_deadline() {
    auto timeout = server_.config().limits.write_timeout;
    blocked_->deadline.expires_at(blocked_->progress + timeout);
    blocked_->deadline.async_wait([self = shared_from_this(), timeout](boost::system::error_code ec) {
      if (ec || self->gone_ || !self->blocked_) return;
      if (std::chrono::steady_clock::now() - self->blocked_->progress < timeout) return self->arm_write_deadline();
      self->server_.write_timeouts.fetch_add(1, std::memory_order_relaxed);
      self->reset_connection();
    });
  }

  // Returns whether queuing `more` bytes would pass what one client may have waiting: the
  // bound, plus a history replay not yet written down to it.
  bool over_limit(std::size_t more) const {
    return blocked_ &&
           queued_bytes() + more > server_.hub().limits().max_outbound_bytes + kErrorRoom + replay_allowance_;
  }

  // A replay's allowance lasts until what waits is back under the plain bound (as in
  // StompSession); from there a client that stops reading is cut off at the bound again.
  void end_replay_allowance_if_drained() {
    if (replay_allowance_ && queued_bytes() <= server_.hub().limits().max_outbound_bytes) replay_allowance_ = 0;
  }

  // The client does not read and its queue is full even past the room for an ERROR: no frame
  // could reach it, so reset the connection.
  void drop_slow_consumer() {
    server_.hub().slow_consumers.fetch_add(1, std::memory_order_relaxed);
    reset_connection();
  }

  void reset_connection() {
    if (gone_) return;
    close_hard(socket_);
    on_gone();
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
    linger_ = std::make_unique<asio::steady_timer>(socket_.get_executor(), server_.config().limits.ws_close_linger);
    linger_->async_wait([self = shared_from_this()](boost::system::error_code ec) {
      if (!ec) self->on_gone();
    });
  }

  // Runs once, when the connection can no longer be used.
  void on_gone() {
    assert_in_loop();
    if (gone_) return;
    gone_ = true;
    if (app_open_) app_->on_closed_in_loop();
    queue_.clear();
    queued_bytes_ = 0;
    if (blocked_) blocked_->deadline.cancel();
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
  std::unique_ptr<WsApp> app_;
  ws::Decoder decoder_;
  chat::Shard& shard_;
  std::string handshake_;
  std::vector<chat::Outbound> queue_;  // a vector, not a deque: an idle session allocates nothing
  std::unique_ptr<Blocked> blocked_;   // null unless the kernel left part of a write
  std::string control_;           // pongs and keep-alives waiting for the next write
  std::string control_inflight_;
  // The close reason until the close is written, then the close frames (and the framing's
  // notice) being written: one string, not two, in every session.
  std::string close_text_;
  std::unique_ptr<asio::steady_timer> linger_;
  bool app_close_ = false;  // the server ends the session: the framing's close notice goes first
  // Only for a framing with a keep-alive; otherwise one null pointer.
  struct KeepAlive {
    explicit KeepAlive(const tcp::socket::executor_type& ex) : timer(ex) {}
    asio::steady_timer timer;
    std::chrono::steady_clock::time_point last_write = std::chrono::steady_clock::now();
  };
  std::unique_ptr<KeepAlive> keepalive_;
  std::size_t queued_bytes_ = 0;  // of queue_
  std::size_t replay_allowance_ = 0;  // replayed bytes that may pass the bound (over_limit)
  std::uint16_t close_code_ = 1000;
  bool flush_scheduled_ = false;
  bool read_paused_ = false;  // backpressure: not reading until blocked_ clears
  bool close_requested_ = false;
  bool close_sent_ = false;
  bool close_received_ = false;
  bool gone_ = false;
  bool app_open_ = false;  // the 101 answer is out and app_ was opened

  // Sessions of this loop with something to write and no write in flight. Each worker thread
  // runs exactly one loop, so thread_local is per loop.
  struct FlushList {
    std::vector<std::shared_ptr<WsSession>> dirty;
    bool posted = false;
  };
  static thread_local FlushList flush_list;
  // The loop's io_uring for writes (--ws-write-backend io_uring), opened at its first flush.
  struct LoopUring {
    std::unique_ptr<UringWrites> ring;
    bool refused = false;  // io_uring could not be used here: sendmsg it is
  };
  static thread_local LoopUring loop_uring;
};

thread_local WsSession::FlushList WsSession::flush_list;
thread_local WsSession::Pieces WsSession::scratch;
thread_local WsSession::LoopUring WsSession::loop_uring;

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
  // --auth jwt: a browser cannot set headers on the handshake, so the token may ride in the URL.
  std::string url_token = server.hub().verifier() ? access_token(req) : std::string();
  auto app = make_stomp_ws_app(server.hub().limits(), framing ? *framing : raw_ws_framing(), std::move(url_token));
  run_websocket_app(server, std::move(socket), std::move(req), std::move(buffer), std::move(framing), std::move(app),
                    std::move(slot));
}

namespace {

// RFC 6455 §4.2.1: the key is 16 bytes in base64, 24 characters ending in "==".
bool valid_ws_key(std::string_view key) {
  auto b64 = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '+' || c == '/'; };
  return key.size() == 24 && key.ends_with("==") && std::all_of(key.begin(), key.end() - 2, b64);
}

}  // namespace

void run_websocket_app(Server& server, tcp::socket socket, Request req, boost::beast::flat_buffer buffer,
                       std::unique_ptr<WsFraming> framing, std::unique_ptr<WsApp> app, ConnectionSlot slot) {
  // A refused upgrade gives the slot back as it returns; a session keeps it for life.
  if (req.method() != http::verb::get) {
    return refuse(std::move(socket), req.version(), http::status::method_not_allowed, "WebSocket upgrades use GET", false);
  }
  // RFC 6455 §11.3.1, §11.3.5: the key and the version appear once.
  if (req.count(http::field::sec_websocket_key) > 1 || req.count(http::field::sec_websocket_version) > 1) {
    return refuse(std::move(socket), req.version(), http::status::bad_request, "Sec-WebSocket-Key and -Version appear once", false);
  }
  if (req[http::field::sec_websocket_version] != "13") {
    return refuse(std::move(socket), req.version(), http::status::upgrade_required, "only WebSocket version 13 is spoken here", true);
  }
  auto key = req[http::field::sec_websocket_key];
  if (!valid_ws_key(key)) {
    return refuse(std::move(socket), req.version(), http::status::bad_request, "missing or malformed Sec-WebSocket-Key", false);
  }
  boost::system::error_code ec;
  auto peer = socket.remote_endpoint(ec);
  const auto who = ec ? asio::ip::address() : client_address(peer.address(), req["X-Forwarded-For"], server.config().trusted_proxies);
  // Through a trusted proxy the connection was counted without an address (it carries many
  // clients): the WebSocket is one client's for its life, so it counts as that client's, under
  // --max-connections-per-address like a direct one.
  if (!ec && who != peer.address() && !server.config().trusted_proxies.contains(who)) {
    slot = ConnectionSlot();
    bool per_address = false;
    slot = server.take_connection(who, per_address);
    if (!slot) {
      if (per_address) server.hub().refusals.count(chat::Refusal::connections_per_address, who.to_string());
      return refuse(std::move(socket), req.version(), http::status::service_unavailable,
                    per_address ? "too many connections from your address" : "too many connections", false);
    }
  }
  std::string handshake =
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nServer: chatd\r\n"
      "Sec-WebSocket-Accept: " + ws_accept_key(key) + "\r\n";
  if (auto p = choose_subprotocol(req[http::field::sec_websocket_protocol]); !p.empty())
    handshake.append("Sec-WebSocket-Protocol: ").append(p).append("\r\n");
  handshake.append("\r\n");
  (framing ? *framing : raw_ws_framing()).append_open(handshake);
  auto data = buffer.cdata();
  std::string early(static_cast<const char*>(data.data()), data.size());
  std::string client = ec ? std::string() : who.to_string();
  std::make_shared<WsSession>(server, std::move(socket), std::move(framing), std::move(app), std::move(slot))
      ->start(std::move(handshake), std::move(early), std::move(client));
}

}  // namespace chatd::net
