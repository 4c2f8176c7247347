#include "net/server.h"

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <stdexcept>

#include "log/log.h"
#include "net/sessions.h"
#include "net/sockjs/xhr_session.h"
#include "net/static_files.h"

namespace chatd::net {
namespace asio = boost::asio;
using asio::ip::tcp;

namespace {

// Finding 6: a peer that declined heart-beats (heart-beat:0,0, STOMP 1.0) and then vanished
// without a FIN is found by the kernel: keepalive probes after `idle`, every `interval`,
// dropped after `probes` unanswered ones. TCP_USER_TIMEOUT gives the same bound to data the
// peer never acknowledges, which keepalive does not probe. Errors are ignored: a socket that
// cannot have them still works, it is only found later.
void set_keepalive(tcp::socket& s, const Limits& lim) {
  using namespace std::chrono;
  if (lim.tcp_keepalive_idle.count() == 0) return;
  auto secs = [](milliseconds d) { return static_cast<int>(std::max<milliseconds::rep>(1, (d.count() + 999) / 1000)); };
  int on = 1, idle = secs(lim.tcp_keepalive_idle), interval = secs(lim.tcp_keepalive_interval);
  int probes = static_cast<int>(lim.tcp_keepalive_probes);
  auto user_timeout = static_cast<unsigned>(std::min<std::int64_t>(
      std::numeric_limits<unsigned>::max(), 1000 * (std::int64_t{idle} + std::int64_t{interval} * probes)));
  int fd = s.native_handle();
  ::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof interval);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &probes, sizeof probes);
  ::setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout, sizeof user_timeout);
}

}  // namespace

Server::Server(ServerConfig cfg, chat::Hub& hub, std::vector<asio::io_context*> workers)
    : cfg_(std::move(cfg)),
      hub_(hub),
      workers_(std::move(workers)),
      files_(std::make_unique<StaticFiles>(cfg_.web_root)),
      sockjs_(std::make_unique<SockJsRegistry>(*this)),
      acceptor_(*workers_.at(0)),
      accept_pause_(*workers_.at(0)) {}

Server::~Server() = default;

void Server::start() {
  boost::system::error_code ec;
  auto addr = asio::ip::make_address(cfg_.address, ec);
  if (ec) throw std::runtime_error("bad listen address '" + cfg_.address + "': " + ec.message());
  tcp::endpoint ep(addr, cfg_.port);
  acceptor_.open(ep.protocol(), ec);
  if (!ec) acceptor_.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor_.bind(ep, ec);
  if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
  if (ec)
    throw std::runtime_error("cannot listen on " + cfg_.address + ":" + std::to_string(cfg_.port) + ": " + ec.message());
  bound_port_ = acceptor_.local_endpoint().port();
  asio::post(acceptor_.get_executor(), [this] { do_accept(); });
}

asio::io_context& Server::next_worker() {
  auto& w = *workers_[next_];
  next_ = (next_ + 1) % workers_.size();
  return w;
}

namespace {

bool out_of_files(const boost::system::error_code& ec) {
  return ec == asio::error::no_descriptors || ec == boost::system::errc::too_many_files_open_in_system ||
         ec == asio::error::no_buffer_space || ec == asio::error::no_memory;
}

}  // namespace

void Server::do_accept() {
  acceptor_.async_accept(next_worker(), [this](boost::system::error_code ec, tcp::socket socket) {
    if (ec == asio::error::operation_aborted || !acceptor_.is_open()) return;
    if (!ec) {
      accept_failures_in_a_row_ = 0;
      accepted.fetch_add(1, std::memory_order_relaxed);
      socket.set_option(tcp::no_delay(true), ec);
      set_keepalive(socket, cfg_.limits);
      auto peer = socket.remote_endpoint(ec);
      bool per_address = false;
      auto slot = ec ? ConnectionSlot() : take_connection(peer.address(), per_address);
      if (!slot) {
        // Over the bound: answer plainly and hang up, without starting a session.
        if (per_address) hub_.refusals.count(chat::Refusal::connections_per_address, peer.address().to_string());
        else refused.fetch_add(1, std::memory_order_relaxed);
        auto s = std::make_shared<tcp::socket>(std::move(socket));
        static const std::string busy = [] {
          std::string body = R"({"status":503,"error":"too many connections"})";
          return "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\n"
                 "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
        }();
        asio::async_write(*s, asio::buffer(busy), [s](boost::system::error_code, std::size_t) {
          boost::system::error_code ignored;
          s->shutdown(tcp::socket::shutdown_both, ignored);
        });
      } else {
        auto* loop = &static_cast<asio::io_context&>(socket.get_executor().context());
        asio::post(*loop, [this, s = std::make_shared<tcp::socket>(std::move(socket)), slot = std::move(slot)]() mutable {
          run_http(*this, std::move(*s), std::move(slot));
        });
      }
    }
    if (ec && out_of_files(ec)) {
      // Out of files: the connection stays in the backlog, and retrying at once would spin
      // this loop at full CPU against its own sessions. Try again shortly.
      accept_failures.fetch_add(1, std::memory_order_relaxed);
      // One line when it starts, then one every 5 s while it lasts.
      if (accept_failures_in_a_row_++ % 50 == 0)
        log::event("accept_paused", {{"why", ec.message()}, {"retry_ms", "100"},
                                     {"in_a_row", std::to_string(accept_failures_in_a_row_)}});
      accept_pause_.expires_after(std::chrono::milliseconds(100));
      accept_pause_.async_wait([this](boost::system::error_code wait_ec) {
        if (!wait_ec && acceptor_.is_open()) do_accept();
      });
      return;
    }
    do_accept();
  });
}

bool AddressCounts::try_add(const std::string& address, std::size_t max) {
  std::lock_guard lock(mu_);
  auto& n = counts_[address];
  if (n >= max) return false;
  ++n;
  return true;
}

void AddressCounts::remove(const std::string& address) {
  std::lock_guard lock(mu_);
  if (auto it = counts_.find(address); it != counts_.end() && --it->second == 0) counts_.erase(it);
}

ConnectionSlot Server::take_connection(const asio::ip::address& client, bool& per_address) {
  per_address = false;
  const auto& lim = cfg_.limits;
  if (connections.load(std::memory_order_relaxed) >= lim.max_connections) return {};
  AddressCounts* counts = nullptr;
  std::string key;
  if (lim.max_connections_per_address && !cfg_.trusted_proxies.contains(client)) {
    key = client.to_string();
    if (!per_address_.try_add(key, lim.max_connections_per_address)) {
      per_address = true;
      return {};
    }
    counts = &per_address_;
  }
  connections.fetch_add(1, std::memory_order_relaxed);
  return ConnectionSlot(connections, counts, std::move(key));
}

bool Server::admit_sockjs_session(const asio::ip::address& client) {
  const auto& lim = cfg_.limits;
  return sockjs_rate_.take(client.to_string(), static_cast<double>(lim.sockjs_session_rate),
                           static_cast<double>(lim.sockjs_session_burst));
}

bool Server::may_use(const XhrSession& session, const asio::ip::address& client, const Request& req) {
  if (!session.user().empty()) {
    // Bound to a user: any address (a phone changing networks), but only that user's token.
    std::string why;
    auto who = identify(req, why);
    if (who && who->user == session.user()) return true;
  } else if (!cfg_.sockjs_bind_address || session.owner() == client) {
    return true;
  }
  hub_.refusals.count(chat::Refusal::sockjs_foreign_address, client.to_string());
  return false;
}

chat::IdentityPtr Server::identify(const Request& req, std::string& why) const {
  why.clear();
  auto* verifier = hub_.verifier();
  if (!verifier) return nullptr;
  std::string token(bearer_token(req));
  if (token.empty()) token = access_token(req);
  if (token.empty()) {
    why = "no token: send Authorization: Bearer <token>";
    return nullptr;
  }
  return verifier->verify(token, why);
}

bool Server::admit_room_create(const asio::ip::address& client) {
  const auto& lim = cfg_.limits;
  return room_create_rate_.take(client.to_string(), static_cast<double>(lim.room_create_per_minute) / 60.0,
                                static_cast<double>(lim.room_create_burst));
}

void Server::track(Closable* c, std::weak_ptr<Closable> handle) {
  std::lock_guard lock(closables_mu_);
  closables_.emplace(c, std::move(handle));
}

void Server::untrack(Closable* c) {
  std::lock_guard lock(closables_mu_);
  closables_.erase(c);
}

void Server::shutdown(std::function<void()> done) {
  shutting_down_ = true;
  std::vector<std::shared_ptr<Closable>> open;
  {
    std::lock_guard lock(closables_mu_);
    for (auto& [c, weak] : closables_)
      if (auto strong = weak.lock()) open.push_back(std::move(strong));
  }
  for (auto& c : open) c->close_for_shutdown();
  asio::post(acceptor_.get_executor(), [this] {
    boost::system::error_code ignored;
    acceptor_.close(ignored);
    accept_pause_.cancel();
  });
  for (std::size_t i = 0; i < hub_.shard_count(); ++i) {
    auto& shard = hub_.shard(i);
    asio::post(shard.loop(), [&shard] { shard.close_all_in_loop("the server is shutting down; reconnect to another node"); });
  }
  // Poll until every connection is gone or the drain bound passes.
  auto deadline = std::chrono::steady_clock::now() + cfg_.limits.drain_timeout;
  auto timer = std::make_shared<asio::steady_timer>(*workers_[0]);
  auto poll = std::make_shared<std::function<void()>>();
  *poll = [this, timer, deadline, done = std::move(done), poll]() {
    if (connections.load() == 0 || std::chrono::steady_clock::now() >= deadline) {
      done();
      *poll = nullptr;  // break the self-reference
      return;
    }
    timer->expires_after(std::chrono::milliseconds(50));
    timer->async_wait([poll](boost::system::error_code) {
      if (*poll) (*poll)();
    });
  };
  asio::post(*workers_[0], [poll] { (*poll)(); });
}

ConnectionCounts Server::connection_counts() const {
  return {connections.load(std::memory_order_relaxed), accepted.load(std::memory_order_relaxed),
          refused.load(std::memory_order_relaxed), socket_writes.load(std::memory_order_relaxed),
          write_timeouts.load(std::memory_order_relaxed), accept_failures.load(std::memory_order_relaxed)};
}

}  // namespace chatd::net
