// Test support: a real redis-server (Debian's /usr/bin/redis-server) on a free loopback port
// in a temp dir, without persistence, that a test can kill -9 and restart on the same port;
// and an engine thread running an io_context, as chatd runs one.
#pragma once

#include <hiredis/hiredis.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace chatd::test {

// Returns whether `pred` became true within `limit`, polling every 5 ms.
inline bool eventually(const std::function<bool()>& pred,
                       std::chrono::milliseconds limit = std::chrono::milliseconds(5000)) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return pred();
}

// Returns a loopback port nobody listens on right now.
inline int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    ::close(fd);
    throw std::runtime_error("no free port");
  }
  ::close(fd);
  return ntohs(a.sin_port);
}

class RedisServer {
 public:
  // `aof`: append-only file, fsync on every write, so kill9() + start() keeps every key.
  explicit RedisServer(std::string password = {}, bool aof = false)
      : port_(free_port()), password_(std::move(password)), aof_(aof) {
    char tmpl[] = "/tmp/chatd-redis-XXXXXX";
    if (!::mkdtemp(tmpl)) throw std::runtime_error("mkdtemp failed");
    dir_ = tmpl;
    start();
  }
  ~RedisServer() {
    kill9();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  RedisServer(const RedisServer&) = delete;
  RedisServer& operator=(const RedisServer&) = delete;

  int port() const { return port_; }
  // Returns redis://[:password@]127.0.0.1:port.
  std::string url(const std::string& password_override = "\x01") const {
    const std::string& pw = password_override == "\x01" ? password_ : password_override;
    return "redis://" + (pw.empty() ? "" : ":" + pw + "@") + "127.0.0.1:" + std::to_string(port_);
  }

  // Starts redis-server and waits (at most 5 s) until it answers PING.
  void start() {
    std::vector<std::string> args = {"/usr/bin/redis-server", "--port", std::to_string(port_),
                                     "--bind", "127.0.0.1", "--save", "", "--appendonly", aof_ ? "yes" : "no",
                                     "--appendfsync", "always",
                                     "--dir", dir_, "--logfile", dir_ + "/redis.log", "--daemonize", "no"};
    if (!password_.empty()) {
      args.push_back("--requirepass");
      args.push_back(password_);
    }
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    if (::posix_spawn(&pid_, argv[0], nullptr, nullptr, argv.data(), environ) != 0)
      throw std::runtime_error("cannot spawn redis-server");
    if (!eventually([&] { return ping(); }, std::chrono::milliseconds(5000)))
      throw std::runtime_error("redis-server did not come up on port " + std::to_string(port_));
  }

  // kill -9: connections drop with no goodbye, and everything in memory is gone.
  void kill9() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }

  // Runs one command on a fresh blocking connection; returns the reply as text ("" for nil,
  // "(error) ..." for errors, the integer in decimal).
  std::string command(const std::vector<std::string>& argv) const {
    timeval tv{1, 0};
    redisContext* c = redisConnectWithTimeout("127.0.0.1", port_, tv);
    if (!c || c->err) {
      if (c) redisFree(c);
      return "(unreachable)";
    }
    redisSetTimeout(c, tv);
    std::string out;
    auto run = [&](const std::vector<std::string>& a) {
      std::vector<const char*> p;
      std::vector<size_t> l;
      for (auto& s : a) {
        p.push_back(s.data());
        l.push_back(s.size());
      }
      auto* r = static_cast<redisReply*>(redisCommandArgv(c, static_cast<int>(a.size()), p.data(), l.data()));
      if (!r) return std::string("(no reply)");
      std::string s;
      if (r->type == REDIS_REPLY_ERROR) s = "(error) " + std::string(r->str, r->len);
      else if (r->type == REDIS_REPLY_INTEGER) s = std::to_string(r->integer);
      else if (r->str) s.assign(r->str, r->len);
      freeReplyObject(r);
      return s;
    };
    if (!password_.empty()) run({"AUTH", password_});
    out = run(argv);
    redisFree(c);
    return out;
  }

  bool ping() const { return command({"PING"}) == "PONG"; }

  // SIGSTOP freezes the server with its sockets open: no reply, no EOF. SIGCONT thaws it.
  void signal(int sig) {
    if (pid_ > 0) ::kill(pid_, sig);
  }
  // What command() logs in with, after the test changed the server's password.
  void use_password(std::string pw) { password_ = std::move(pw); }

 private:
  int port_;
  std::string password_;
  bool aof_ = false;
  std::string dir_;
  pid_t pid_ = -1;
};

// An io_context run by its own thread, as chatd's engine thread.
class Engine {
 public:
  Engine() : guard_(io_.get_executor()), thread_([this] { io_.run(); }) {}
  ~Engine() {
    guard_.reset();
    io_.stop();
    thread_.join();
  }
  boost::asio::io_context& io() { return io_; }

 private:
  boost::asio::io_context io_{1};  // the concurrency hint chatd's engine uses
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> guard_;
  std::thread thread_;
};

}  // namespace chatd::test
