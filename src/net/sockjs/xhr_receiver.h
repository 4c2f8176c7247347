// The HTTP side of a SockJS receiving request (xhr polling or xhr_streaming): the response
// head, chunked framing, one write in flight, and a watch on the socket that notices a client
// going away while the response is open. It lives inside the HTTP connection that got the
// request and runs on that connection's loop.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/flat_buffer.hpp>

#include <atomic>
#include <chrono>
#include <memory>
#include <string>

#include "chat/limits.h"
#include "net/http.h"
#include "net/sockjs/xhr_session.h"

namespace chatd::net {

// Returns the body limit of an xhr_send: JSON-escaped STOMP frames, possibly several, so a few
// frames' worth.
inline std::size_t sockjs_send_limit(const chat::Limits& lim) { return 2 * lim.max_frame_bytes + 1024; }

class XhrReceiver final : public SockJsReceiver {
 public:
  // The HTTP connection the response is written on.
  class Connection {
   public:
    virtual ~Connection() = default;
    virtual boost::asio::ip::tcp::socket& socket() = 0;
    // Where pipelined requests wait, unread by HTTP, while the response is open.
    virtual boost::beast::flat_buffer& read_buffer() = 0;
    // Returns an owner of the connection: pending operations hold one.
    virtual std::shared_ptr<void> hold() = 0;
    // The response ended and the connection is kept: read the next request.
    virtual void resume_reading() = 0;
    // The response ended and the connection is not kept: half-close it.
    virtual void close_send() = 0;
  };

  XhrReceiver(Connection& conn, Server& server) : conn_(conn), server_(server) {}
  ~XhrReceiver() override;

  // True while a response is open; from any thread (shutdown asks).
  bool receiving() const { return receiving_.load(std::memory_order_relaxed); }

  // Answers `req` for `session` on `t` (xhr or xhr_streaming). `self` is this receiver's
  // handle, sharing ownership with the connection; `loop` is the connection's loop.
  void start(std::shared_ptr<XhrSession> session, const Request& req, std::weak_ptr<SockJsReceiver> self,
             boost::asio::io_context& loop, sockjs::Transport t);

  void deliver_in_loop(std::string bytes, bool finish) override;

 private:
  void write_receiver();
  void continue_write();
  void arm_deadline();
  void end_receiving();
  void watch_receiver();
  void receiver_lost();

  Connection& conn_;
  Server& server_;
  std::atomic<bool> receiving_{false};
  std::shared_ptr<XhrSession> xhr_;
  bool keep_alive_ = false;        // the request asked to keep the connection
  bool chunked_ = false;           // HTTP/1.1: chunked; 1.0: close-delimited
  bool head_sent_ = false;
  bool rx_writing_ = false;
  bool rx_finish_queued_ = false;  // the last part is queued or written
  bool rx_finished_ = false;       // ... and written
  bool rx_dead_ = false;
  bool watching_ = false;
  std::string rx_out_;             // waiting to be written
  std::string rx_inflight_;        // being written, from rx_pos_ on
  std::size_t rx_pos_ = 0;
  bool rx_fin_inflight_ = false;   // rx_inflight_ ends the response
  // Armed while the client leaves part of a write untaken; see net::Limits::write_timeout.
  std::unique_ptr<boost::asio::steady_timer> rx_deadline_;
  std::chrono::steady_clock::time_point rx_progress_;
  std::string rx_head_;
  // Holds the connection while a pipelined request waits unread behind an open response (no
  // watch is pending then to own it); released when the response ends.
  std::shared_ptr<void> pinned_;
};

}  // namespace chatd::net
