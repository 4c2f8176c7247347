// Test support: a real Redis Cluster (3 primaries + 3 replicas of Debian's redis-server) on
// loopback, started and stopped with scripts/redis-cluster.sh, that a test can kill a primary
// of or fail over by hand.
#pragma once

#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <stdexcept>
#include <string>

#include "redis/redis_server.h"

namespace chatd::test {

class RedisCluster {
 public:
  RedisCluster() {
    char tmpl[] = "/tmp/chatd-redis-cluster-XXXXXX";
    if (!::mkdtemp(tmpl)) throw std::runtime_error("mkdtemp failed");
    dir_ = tmpl;
    base_ = free_base();
    url_ = run("start --dir " + dir_ + " --port " + std::to_string(base_) + " --replicas 1");
    if (url_.rfind("redis+cluster://", 0) != 0) throw std::runtime_error("redis-cluster.sh start failed: " + url_);
  }
  ~RedisCluster() {
    run("stop --dir " + dir_);
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  RedisCluster(const RedisCluster&) = delete;
  RedisCluster& operator=(const RedisCluster&) = delete;

  const std::string& url() const { return url_; }
  // Ports base..base+5: the first three start as primaries.
  int port(int i) const { return base_ + i; }

  // Returns the reply text of `redis-cli -p port args` (its first line for arrays).
  std::string cli(int port, const std::string& args) const {
    return run_cmd("redis-cli -p " + std::to_string(port) + " " + args + " 2>&1");
  }
  // kill -9 of the node on `port`.
  void kill9(int port) const {
    std::ifstream in(dir_ + "/" + std::to_string(port) + "/redis.pid");
    pid_t pid = 0;
    if (in >> pid && pid > 0) ::kill(pid, SIGKILL);
  }

 private:
  static std::string run_cmd(const std::string& cmd) {
    std::string out;
    if (FILE* p = ::popen(cmd.c_str(), "r")) {
      char buf[4096];
      std::size_t n;
      while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
      ::pclose(p);
    }
    while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
    return out;
  }
  static std::string run(const std::string& args) {
    return run_cmd(std::string(CHATD_SOURCE_DIR) + "/scripts/redis-cluster.sh " + args);
  }
  // Returns a base port with its 6 ports and their bus ports (+10000) free.
  static int free_base() {
    std::mt19937 rng(std::random_device{}());
    for (int attempt = 0; attempt < 100; ++attempt) {
      // Below the kernel's ephemeral range (32768+) and the test Kafka broker (29092), bus ports included.
      const int base = 10000 + static_cast<int>(rng() % 8000);
      bool ok = true;
      for (int k = 0; k < 6 && ok; ++k) ok = port_free(base + k) && port_free(base + 10000 + k);
      if (ok) return base;
    }
    throw std::runtime_error("no free port range for a Redis Cluster");
  }
  static bool port_free(int port) {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    int on = 1;  // as redis-server binds: a port in TIME_WAIT is free for it
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(static_cast<std::uint16_t>(port));
    const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
    ::close(fd);
    return ok;
  }

  std::string dir_, url_;
  int base_ = 0;
};

}  // namespace chatd::test
