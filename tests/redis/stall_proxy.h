// Test support: a loopback TCP proxy to a server that can stall the flows it carries without
// closing them, as a wedged L4 proxy, load balancer or NAT does: bytes in either direction
// vanish, the sockets stay open, no FIN or RST. Connections made after stall() are carried
// normally. One thread, poll(2); small test traffic only (writes block).
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <stdexcept>
#include <thread>
#include <vector>

namespace chatd::test {

class StallProxy {
 public:
  explicit StallProxy(int target_port) : target_port_(target_port) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    const int one = 1;
    ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a = loopback(0);
    socklen_t len = sizeof a;
    if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(listen_fd_, 64) != 0 ||
        ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
      ::close(listen_fd_);
      throw std::runtime_error("proxy: cannot listen");
    }
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] { run(); });
  }
  ~StallProxy() {
    stop_ = true;
    thread_.join();
    for (auto& f : flows_) close_flow(f);
    ::close(listen_fd_);
  }
  StallProxy(const StallProxy&) = delete;
  StallProxy& operator=(const StallProxy&) = delete;

  int port() const { return port_; }
  // Every flow open now swallows what it reads from then on, in both directions, and stays open.
  void stall() { ++generation_; }
  // How many flows were accepted so far.
  int accepted() const { return accepted_; }

 private:
  struct Flow {
    int client = -1, server = -1;
    int generation = 0;  // stalled once the proxy's generation has moved past it
  };

  static sockaddr_in loopback(int port) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(static_cast<std::uint16_t>(port));
    return a;
  }
  static void close_flow(Flow& f) {
    if (f.client >= 0) ::close(f.client);
    if (f.server >= 0) ::close(f.server);
    f.client = f.server = -1;
  }
  // Returns false when `to` cannot take the bytes (the flow is then closed).
  static bool write_all(int to, const char* p, std::size_t n) {
    while (n > 0) {
      const ssize_t w = ::send(to, p, n, MSG_NOSIGNAL);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) return false;
      p += w;
      n -= static_cast<std::size_t>(w);
    }
    return true;
  }

  void accept_one() {
    const int c = ::accept(listen_fd_, nullptr, nullptr);
    if (c < 0) return;
    const int s = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in t = loopback(target_port_);
    if (::connect(s, reinterpret_cast<sockaddr*>(&t), sizeof t) != 0) {
      ::close(s);
      ::close(c);
      return;
    }
    flows_.push_back({c, s, generation_.load()});
    ++accepted_;
  }

  void run() {
    char buf[64 * 1024];
    while (!stop_) {
      std::vector<pollfd> fds{{listen_fd_, POLLIN, 0}};
      for (auto& f : flows_) {
        fds.push_back({f.client, POLLIN, 0});
        fds.push_back({f.server, POLLIN, 0});
      }
      if (::poll(fds.data(), fds.size(), 20) <= 0) continue;
      // The flows polled; a new one is accepted after them (it has no entry in fds, and adding
      // it would move flows_ under the reference below).
      const std::size_t polled = flows_.size();
      for (std::size_t i = 0; i < polled; ++i) {
        Flow& f = flows_[i];
        for (int side = 0; side < 2 && f.client >= 0; ++side) {
          if (!(fds[1 + 2 * i + static_cast<std::size_t>(side)].revents & (POLLIN | POLLHUP | POLLERR))) continue;
          const int from = side == 0 ? f.client : f.server, to = side == 0 ? f.server : f.client;
          const ssize_t n = ::recv(from, buf, sizeof buf, 0);
          if (n <= 0) {
            close_flow(f);
            continue;
          }
          if (f.generation != generation_.load()) continue;  // stalled: the bytes vanish
          if (!write_all(to, buf, static_cast<std::size_t>(n))) close_flow(f);
        }
      }
      std::erase_if(flows_, [](const Flow& f) { return f.client < 0; });
      if (fds[0].revents & POLLIN) accept_one();
    }
  }

  int target_port_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> generation_{0};
  std::atomic<int> accepted_{0};
  std::vector<Flow> flows_;  // proxy thread only
  std::thread thread_;
};

}  // namespace chatd::test
