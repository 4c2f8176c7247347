// chatd::net — the node's front door: HTTP routes, WebSocket and SockJS transports, and the
// worker threads' loops. Accepted connections are spread over the workers round-robin and
// stay on their worker for life, so a session's state needs no locks.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "chat/hub.h"
#include "net/api.h"
#include "net/health.h"
#include "net/limits.h"

namespace chatd::net {

struct ServerConfig {
  std::string address = "0.0.0.0";
  std::uint16_t port = 8080;
  std::string web_root;  // folder of the browser pages; empty: pages answer 404
  Limits limits;
  ApiConfig api;         // the server API under /api/; off without a key
};

class StaticFiles;
class SockJsRegistry;

// A connection that is not a STOMP session (an idle HTTP keep-alive, a SockJS stream) and
// must be told to close at shutdown. close_for_shutdown() may be called from any thread.
class Closable {
 public:
  virtual ~Closable() = default;
  virtual void close_for_shutdown() = 0;
};

// One connection's place under Limits::max_connections, from accept until its last owner
// (HttpSession, then WsSession or XhrSession) lets go: the count changes only here.
class ConnectionSlot {
 public:
  ConnectionSlot() = default;
  explicit ConnectionSlot(std::atomic<std::size_t>& count) : count_(&count) {}
  ConnectionSlot(ConnectionSlot&& o) noexcept : count_(std::exchange(o.count_, nullptr)) {}
  ConnectionSlot& operator=(ConnectionSlot&& o) noexcept {
    if (this != &o) {
      release();
      count_ = std::exchange(o.count_, nullptr);
    }
    return *this;
  }
  ~ConnectionSlot() { release(); }
  // True while the slot is held.
  explicit operator bool() const { return count_ != nullptr; }

 private:
  void release() {
    if (count_) count_->fetch_sub(1, std::memory_order_relaxed);
    count_ = nullptr;
  }
  std::atomic<std::size_t>* count_ = nullptr;
};

class Server {
 public:
  // `workers` are the loops sessions run on (one thread each); the acceptor runs on the first.
  Server(ServerConfig cfg, chat::Hub& hub, std::vector<boost::asio::io_context*> workers);
  ~Server();

  // Binds and listens. Throws std::runtime_error when the port cannot be had.
  void start();
  // Stops accepting and asks every session to close; `done` runs (on a worker) once every
  // connection has gone or `limits().drain_timeout` passed.
  void shutdown(std::function<void()> done);

  std::uint16_t port() const { return bound_port_; }
  chat::Hub& hub() { return hub_; }
  const ServerConfig& config() const { return cfg_; }
  const StaticFiles& files() const { return *files_; }
  // The node's SockJS sessions on the xhr transports.
  SockJsRegistry& sockjs() { return *sockjs_; }

  // Live TCP connections (HTTP, WebSocket and SockJS alike), bounded by Limits::max_connections.
  std::atomic<std::size_t> connections{0};
  // Returns a held slot, or an empty one when the node already has max_connections.
  ConnectionSlot take_connection();
  std::atomic<std::uint64_t> accepted{0};
  std::atomic<std::uint64_t> refused{0};
  // sendmsg/write calls on client sockets, and sockets reset past Limits::write_timeout.
  std::atomic<std::uint64_t> socket_writes{0};
  std::atomic<std::uint64_t> write_timeouts{0};
  bool shutting_down() const { return shutting_down_.load(std::memory_order_relaxed); }

  // Returns the loop the next accepted connection goes to.
  boost::asio::io_context& next_worker();

  // Closables register while they live so shutdown can reach them.
  void track(Closable* c, std::weak_ptr<Closable> handle);
  void untrack(Closable* c);

  // The chat core through its narrow doors: room operations and the health/metrics view.
  chat::Rooms& rooms() { return hub_; }
  ServerApi& api() { return api_; }
  const chat::NodeView& node() const { return hub_; }
  ConnectionCounts connection_counts() const;

 private:
  void do_accept();

  ServerConfig cfg_;
  ServerApi api_{cfg_.api};
  chat::Hub& hub_;
  std::vector<boost::asio::io_context*> workers_;
  std::unique_ptr<StaticFiles> files_;
  std::unique_ptr<SockJsRegistry> sockjs_;
  boost::asio::ip::tcp::acceptor acceptor_;
  std::uint16_t bound_port_ = 0;
  std::size_t next_ = 0;
  std::atomic<bool> shutting_down_{false};
  std::mutex closables_mu_;
  std::unordered_map<Closable*, std::weak_ptr<Closable>> closables_;
};

}  // namespace chatd::net
