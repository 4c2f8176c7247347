// chatd::net — the node's front door: HTTP routes, WebSocket and SockJS transports, and the
// worker threads' loops. Accepted connections are spread over the workers round-robin and
// stay on their worker for life, so a session's state needs no locks.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>

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
#include "chat/rate_limit.h"
#include "net/client_address.h"
#include "net/health.h"
#include "net/limits.h"
#include "net/origins.h"
#include "net/ws_app.h"

namespace chatd::net {

struct ServerConfig {
  std::string address = "0.0.0.0";
  std::uint16_t port = 8080;
  std::string web_root;  // folder of the browser pages; empty: pages answer 404
  Limits limits;
  ApiConfig api;         // the server API under /api/; off without a key
  ProxyList trusted_proxies;       // whose X-Forwarded-For is believed (--trusted-proxies)
  bool sockjs_bind_address = true;  // a SockJS session answers only the address that opened it
  AllowedOrigins allowed_origins;   // --allowed-origins: WebSocket, SockJS and REST
  std::string dev_mint_secret;      // --auth-dev-mint: the HS256 secret POST /auth/dev-token signs with
  // WebSocket applications other than STOMP, by exact path. chatd's main adds none, so chatd
  // serves none; tests/conformance's ws_echo serves its echo on "/" for Autobahn|Testsuite.
  std::unordered_map<std::string, WsAppFactory> ws_apps;
};

class StaticFiles;
class SockJsRegistry;
class XhrSession;

// A connection that is not a STOMP session (an idle HTTP keep-alive, a SockJS stream) and
// must be told to close at shutdown. close_for_shutdown() may be called from any thread.
class Closable {
 public:
  virtual ~Closable() = default;
  virtual void close_for_shutdown() = 0;
};

// Open connections per client address, under Limits::max_connections_per_address.
class AddressCounts {
 public:
  // Adds one for `address` and returns true, or returns false when it already holds `max`.
  bool try_add(const std::string& address, std::size_t max);
  void remove(const std::string& address);

 private:
  std::mutex mu_;
  std::unordered_map<std::string, std::size_t> counts_;
};

// One connection's place under Limits::max_connections (and its address's place under
// max_connections_per_address), from accept until its last owner (HttpSession, then WsSession
// or XhrSession) lets go: the counts change only here.
class ConnectionSlot {
 public:
  ConnectionSlot() = default;
  explicit ConnectionSlot(std::atomic<std::size_t>& count, AddressCounts* per_address = nullptr, std::string address = {})
      : count_(&count), per_address_(per_address), address_(std::move(address)) {}
  ConnectionSlot(ConnectionSlot&& o) noexcept
      : count_(std::exchange(o.count_, nullptr)),
        per_address_(std::exchange(o.per_address_, nullptr)),
        address_(std::move(o.address_)) {}
  ConnectionSlot& operator=(ConnectionSlot&& o) noexcept {
    if (this != &o) {
      release();
      count_ = std::exchange(o.count_, nullptr);
      per_address_ = std::exchange(o.per_address_, nullptr);
      address_ = std::move(o.address_);
    }
    return *this;
  }
  ~ConnectionSlot() { release(); }
  // True while the slot is held.
  explicit operator bool() const { return count_ != nullptr; }

 private:
  void release() {
    if (count_) count_->fetch_sub(1, std::memory_order_relaxed);
    if (per_address_) per_address_->remove(address_);
    count_ = nullptr;
    per_address_ = nullptr;
  }
  std::atomic<std::size_t>* count_ = nullptr;
  AddressCounts* per_address_ = nullptr;
  std::string address_;
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
  // Returns a held slot for a connection from `client`, or an empty one when the node already
  // has max_connections or `client` has max_connections_per_address (then `per_address` is
  // set). A trusted proxy has no per-address bound: its clients are counted by their own
  // addresses where a request names them (WebSocket upgrades, SockJS sessions).
  ConnectionSlot take_connection(const boost::asio::ip::address& client, bool& per_address);
  // Returns whether `client` may open one more SockJS session / create one more room now.
  bool admit_sockjs_session(const boost::asio::ip::address& client);
  bool admit_room_create(const boost::asio::ip::address& client);
  // Returns whether `client` may use `session`: with sockjs_bind_address only the address that
  // opened it may (finding 5). Counts a refusal otherwise.
  // A session opened with a valid access_token (--auth jwt) is bound to that token's user
  // instead: `req` must carry an access_token of the same user.
  bool may_use(const XhrSession& session, const boost::asio::ip::address& client, const Request& req);
  // --auth jwt: returns the identity `req` proves (Authorization: Bearer, else access_token),
  // or null with the reason in `why`. --auth none: null with `why` empty.
  chat::IdentityPtr identify(const Request& req, std::string& why) const;
  std::atomic<std::uint64_t> accepted{0};
  std::atomic<std::uint64_t> refused{0};
  // sendmsg/write calls on client sockets, and sockets reset past Limits::write_timeout.
  std::atomic<std::uint64_t> socket_writes{0};
  std::atomic<std::uint64_t> write_timeouts{0};
  // accept() failures for want of files or memory; each pauses accepting for 100 ms.
  std::atomic<std::uint64_t> accept_failures{0};
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
  boost::asio::steady_timer accept_pause_;  // accepts wait on it while the process is out of files
  std::uint64_t accept_failures_in_a_row_ = 0;
  std::uint16_t bound_port_ = 0;
  std::size_t next_ = 0;
  std::atomic<bool> shutting_down_{false};
  AddressCounts per_address_;
  chat::KeyedBuckets sockjs_rate_;
  chat::KeyedBuckets room_create_rate_;
  std::mutex closables_mu_;
  std::unordered_map<Closable*, std::weak_ptr<Closable>> closables_;
};

}  // namespace chatd::net
