// SockJS sessions on the xhr transports (xhr_streaming, xhr polling, xhr_send): a STOMP session
// that outlives the HTTP requests carrying it. Each XhrSession is pinned to the loop it was
// created on (its StompSession's shard); requests for it may arrive on any loop and post to
// it. Receiving requests are answered by the HTTP connection that got them, on that
// connection's loop; the session posts each response piece there (one in flight at a time).
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "chat/hub.h"
#include "chat/session.h"
#include "net/server.h"
#include "sockjs/sockjs.h"

namespace chatd::net {

class Server;

// The SockJS base path of DESIGN §1.
inline constexpr std::string_view kSockJsBase = "/ws-stomp";

// The HTTP side of one receiving request (xhr or xhr_streaming).
class SockJsReceiver {
 public:
  virtual ~SockJsReceiver() = default;
  // Runs on the receiver's own loop: writes `bytes` as the next part of the response and ends
  // it when `finish`. Once bytes of an unfinished response are written, the receiver calls
  // XhrSession::receiver_wrote(this) so the session sends the next part.
  virtual void deliver_in_loop(std::string bytes, bool finish) = 0;
};

class XhrSession final : public chat::Transport, public Closable, public std::enable_shared_from_this<XhrSession> {
 public:
  // `user` (--auth jwt, from a valid access_token on the opening request): the session is
  // bound to that user rather than to the address. `url_token` goes to STOMP for CONNECT.
  XhrSession(Server& server, boost::asio::io_context& loop, std::string id, ConnectionSlot slot,
             boost::asio::ip::address owner, std::string user = {}, std::string url_token = {});
  // The user the session is bound to; empty: bound to owner() (or to nobody, --sockjs-bind none).
  const std::string& user() const { return user_; }

  // The client address that opened the session; with ServerConfig::sockjs_bind_address only
  // it may send to, read from or close the session (finding 5: the URL alone is not a key).
  const boost::asio::ip::address& owner() const { return owner_; }
  ~XhrSession() override;

  boost::asio::io_context& loop() { return loop_; }

  // True once the session is over. A closed session keeps its id for the disconnect delay,
  // serving its close frame to every receiving request; xhr_send to it is refused.
  bool ended() const { return ended_.load(std::memory_order_relaxed); }

  // Closable: a closed session still holding its id lets go of it at once.
  void close_for_shutdown() override;

  // From any thread; each posts to the session's loop.
  // A receiving request arrived on `t`; `rloop` is the receiver's loop.
  void receive(std::weak_ptr<SockJsReceiver> r, SockJsReceiver* key, boost::asio::io_context& rloop,
               sockjs::Transport t);
  void receiver_wrote(SockJsReceiver* key);
  void receiver_gone(SockJsReceiver* key);
  // Decoded xhr_send messages, each fed to STOMP in order.
  void messages(std::vector<std::string> m);

  // chat::Transport, on the session's loop.
  void send(chat::Outbound&& out) override;
  void close(std::string_view reason) override;
  std::size_t queued_bytes() const override;

  // Runs once on the session's loop right after creation.
  void start_in_loop();

 private:
  struct Receiver {
    std::weak_ptr<SockJsReceiver> handle;
    SockJsReceiver* key = nullptr;
    boost::asio::io_context* loop = nullptr;
  };
  using Clock = std::chrono::steady_clock;

  void receive_in_loop(Receiver r, sockjs::Transport t);
  void deliver_in_loop(const Receiver& r, sockjs::Session::Write w);
  void schedule_pump();
  void pump_in_loop();
  void arm_timer_in_loop();
  void on_timer_in_loop();
  // `keep_id`: the close frame went out, so the id answers with it for the disconnect delay.
  void end_in_loop(bool keep_id = false);
  void forget_in_loop();
  chat::Shard& shard_for_loop();
  // Debug builds check that a *_in_loop member runs on the session's loop (muduo's
  // assertInLoopThread): other threads post to it.
  void assert_in_loop() const;

  Server& server_;
  ConnectionSlot slot_;
  boost::asio::io_context& loop_;
  std::string id_;
  boost::asio::ip::address owner_;
  std::string user_;
  std::string url_token_;  // handed to STOMP at start
  sockjs::Session model_;
  std::shared_ptr<chat::StompSession> stomp_;
  Receiver current_;             // key null: no receiver
  bool busy_ = false;            // a part is being written to current_
  bool pump_posted_ = false;
  // xhr_send messages not yet fed to STOMP, in the order their requests were read: each
  // request's are queued here before its 204 leaves, so the next request's come after them,
  // whichever loop reads it (a post from the session's own loop would run after posts that
  // other threads make meanwhile: CONNECT after the SUBSCRIBE sent once its 204 came).
  std::mutex inbox_mu_;
  std::vector<std::string> inbox_;
  bool inbox_posted_ = false;
  bool close_requested_ = false;
  std::atomic<bool> ended_{false};  // set on the loop; read by xhr_send from any loop
  bool forgotten_ = false;          // the id is free again
  std::string close_reason_;
  Clock::time_point last_sent_;
  Clock::time_point detached_at_;
  boost::asio::steady_timer timer_;
  bool timer_armed_ = false;
  Clock::time_point timer_at_;
};

// The node's xhr sessions by id. Each session counts as a connection against
// Limits::max_connections until it is gone (a closed one: until its id is forgotten).
class SockJsRegistry {
 public:
  explicit SockJsRegistry(Server& server) : server_(server) {}

  // Returns the session `id`, creating it on `loop` when `create` (nullptr when it does not
  // exist and may not be created, or when the node is full).
  std::shared_ptr<XhrSession> find(const std::string& id);
  // A new session belongs to `client`, or with a valid access_token in `req` to its user.
  std::shared_ptr<XhrSession> find_or_create(const std::string& id, boost::asio::io_context& loop,
                                             const boost::asio::ip::address& client, const Request& req, bool& full);
  void erase(const std::string& id, const XhrSession* s);

 private:
  Server& server_;
  std::mutex mu_;
  std::unordered_map<std::string, std::shared_ptr<XhrSession>> sessions_;
};

}  // namespace chatd::net
