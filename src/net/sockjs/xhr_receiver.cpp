#include "net/sockjs/xhr_receiver.h"

#include <boost/beast/http/field.hpp>

#include <cstdio>

#include "net/server.h"
#include "net/socket_write.h"

namespace chatd::net {
namespace asio = boost::asio;
namespace http = boost::beast::http;

XhrReceiver::~XhrReceiver() {
  if (xhr_) xhr_->receiver_gone(this);
}

void XhrReceiver::start(std::shared_ptr<XhrSession> session, const Request& req, std::weak_ptr<SockJsReceiver> self,
                        asio::io_context& loop, sockjs::Transport t) {
  xhr_ = session;
  receiving_ = true;
  chunked_ = req.version() >= 11;
  keep_alive_ = req.keep_alive();
  head_sent_ = rx_writing_ = rx_finish_queued_ = rx_finished_ = false;
  rx_out_.clear();
  std::string_view origin = req[http::field::origin];
  rx_head_ = "HTTP/1.1 200 OK\r\nServer: chatd\r\nContent-Type: application/javascript; charset=UTF-8\r\n"
             "Cache-Control: no-store, no-cache, no-transform, must-revalidate, max-age=0\r\n"
             "Access-Control-Allow-Origin: ";
  rx_head_ += origin.empty() || origin == "null" ? std::string_view("*") : origin;
  rx_head_ += "\r\nAccess-Control-Allow-Credentials: true\r\n";
  if (chunked_) rx_head_ += "Transfer-Encoding: chunked\r\n";
  if (!chunked_ || !keep_alive_) rx_head_ += "Connection: close\r\n";
  rx_head_ += "\r\n";
  session->receive(std::move(self), this, loop, t);
  watch_receiver();
}

void XhrReceiver::deliver_in_loop(std::string bytes, bool finish) {
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

// Writes what is waiting in one system call; what the kernel does not take is finished when
// the socket is writable, and a client that takes nothing for write_timeout is reset.
void XhrReceiver::write_receiver() {
  if (rx_out_.empty() || rx_writing_) return;
  rx_inflight_.swap(rx_out_);
  rx_out_.clear();
  rx_pos_ = 0;
  rx_fin_inflight_ = rx_finish_queued_;
  rx_writing_ = true;
  continue_write();
}

void XhrReceiver::continue_write() {
  std::vector<iovec> iov{iovec{rx_inflight_.data() + rx_pos_, rx_inflight_.size() - rx_pos_}};
  std::size_t pos = 0, taken = 0;
  std::uint64_t calls = 0;
  auto r = write_pieces(conn_.socket().native_handle(), iov, pos, calls, taken);
  server_.socket_writes.fetch_add(calls, std::memory_order_relaxed);
  rx_pos_ += taken;
  if (taken || !rx_deadline_) rx_progress_ = std::chrono::steady_clock::now();
  if (r == WriteResult::failed) return receiver_lost();
  if (r == WriteResult::blocked) {
    if (!rx_deadline_) {
      rx_deadline_ = std::make_unique<asio::steady_timer>(conn_.socket().get_executor());
      arm_deadline();
    }
    conn_.socket().async_wait(asio::ip::tcp::socket::wait_write, [this, hold = conn_.hold()](boost::system::error_code ec) {
      if (rx_dead_) return;
      if (ec) return receiver_lost();
      continue_write();
    });
    return;
  }
  if (rx_deadline_) {
    rx_deadline_->cancel();
    rx_deadline_.reset();
  }
  rx_writing_ = false;
  rx_inflight_.clear();
  if (!rx_fin_inflight_ && xhr_) xhr_->receiver_wrote(this);
  if (!rx_out_.empty()) return write_receiver();
  if (rx_fin_inflight_) end_receiving();
}

// Wakes write_timeout after the client last took bytes; a client that took nothing since is
// reset, which also frees what the kernel held for it (issue 13, finding 2).
void XhrReceiver::arm_deadline() {
  auto timeout = server_.config().limits.write_timeout;
  rx_deadline_->expires_at(rx_progress_ + timeout);
  rx_deadline_->async_wait([this, hold = conn_.hold(), timeout](boost::system::error_code ec) {
    if (ec || rx_dead_ || !rx_deadline_) return;
    if (std::chrono::steady_clock::now() - rx_progress_ < timeout) return arm_deadline();
    server_.write_timeouts.fetch_add(1, std::memory_order_relaxed);
    close_hard(conn_.socket());
    receiver_lost();
  });
}

// The response is complete: back to reading requests (keep-alive) or close.
void XhrReceiver::end_receiving() {
  rx_finished_ = true;
  receiving_ = false;
  xhr_.reset();
  auto keep = std::move(pinned_);
  if (!chunked_ || !keep_alive_ || server_.shutting_down()) {
    rx_dead_ = true;
    conn_.close_send();
    return;
  }
  if (watching_) {
    boost::system::error_code ignored;
    conn_.socket().cancel(ignored);  // the watch's handler resumes reading
    return;
  }
  conn_.resume_reading();
}

// While a response is open nothing should arrive; readable then means the client went away
// (or pipelined its next request, which waits in the socket).
void XhrReceiver::watch_receiver() {
  watching_ = true;
  conn_.socket().async_wait(asio::ip::tcp::socket::wait_read, [this, hold = conn_.hold()](boost::system::error_code ec) {
    watching_ = false;
    if (rx_dead_) return;
    if (!receiving_) return conn_.resume_reading();  // the response ended meanwhile
    if (ec) return receiver_lost();
    boost::system::error_code aec;
    auto& socket = conn_.socket();
    auto n = socket.available(aec);
    if (aec || n == 0) return receiver_lost();
    // A pipelined request: take it into the buffer the next read parses, then go on
    // watching. Past a request's worth, stop reading and stay alive without the watch (this
    // handler was the last owner; dropping it would close the socket with unread input,
    // which the kernel answers with a reset).
    auto& buffer = conn_.read_buffer();
    const std::size_t cap = server_.config().limits.max_http_header + sockjs_send_limit(server_.hub().limits());
    if (buffer.size() >= cap) {
      pinned_ = hold;
      return;
    }
    auto got = socket.read_some(buffer.prepare(std::min(n, cap - buffer.size())), aec);
    if (aec) return receiver_lost();
    buffer.commit(got);
    watch_receiver();
  });
}

void XhrReceiver::receiver_lost() {
  if (rx_dead_) return;
  rx_dead_ = true;
  receiving_ = false;
  if (rx_deadline_) rx_deadline_->cancel();
  if (xhr_) xhr_->receiver_gone(this);
  xhr_.reset();
  auto keep = std::move(pinned_);
  boost::system::error_code ignored;
  conn_.socket().shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
  conn_.socket().close(ignored);
}

}  // namespace chatd::net
