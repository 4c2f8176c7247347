// chatd::redis — one Redis connection on the engine io_context: hiredis's async context with
// an Asio adapter, a setup step (AUTH, SELECT), a health ping, and reconnect
// with backoff (100 ms doubling to 2 s, forever). Methods named ..._in_loop must run on the
// engine thread; up() and describe() may be called from any thread.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "redis/endpoint.h"
#include "redis/timing.h"

struct redisAsyncContext;
struct redisReply;

namespace chatd::redis {

// How a command ended: answered (the reply may still be a Redis error); down: not sent (no
// connection); lost: sent, and the connection went before its answer, so it may have run (Redis
// runs what reached it even when the reply cannot come back); stopped: shutting down.
enum class Status { ok, down, stopped, lost };
// Runs once per command on the engine thread; `reply` is non-null exactly when Status::ok.
using ReplyFn = std::function<void(Status, const redisReply* reply)>;

// Returns `verb what numkeys keys... args...`: an EVAL or FCALL command line.
std::vector<std::string> script_call_argv(std::string_view verb, std::string_view what, std::vector<std::string> keys,
                                          std::vector<std::string> args);

struct ConnectionOptions {
  std::string name;                 // "publish", "subscribe", "store": for describe()
  // PING every timing.ping_every; no answer for timing.ping_timeout drops the connection. Off
  // only for the short-lived slot map connection (one CLUSTER SLOTS, then closed).
  bool health_ping = true;
  // Subscriber connections: after the setup, every reply (confirmations, messages, errors) goes
  // to Hooks::on_push in arrival order, and commands go out with send_push_in_loop. hiredis
  // 0.14 (Debian 12) routes pub/sub replies itself and knows only SUBSCRIBE and PSUBSCRIBE, so
  // sharded pub/sub (SSUBSCRIBE, smessage) needs replies read here. The health PING goes out the
  // same way; its answer (RESP2: +PONG, or ["pong", ""] once subscribed) is taken here and never
  // reaches on_push, and any reply read counts as a sign of life.
  bool push_only = false;
  Timing timing;                    // the options' reconnect and ping pace
};

class Connection : public std::enable_shared_from_this<Connection> {
 public:
  struct Hooks {
    std::function<void()> on_up;                          // setup done; commands flow
    std::function<void(const std::string& why)> on_down;  // lost; a retry is scheduled
    std::function<void(const redisReply&)> on_push;       // pub/sub: subscribe, message, ...
  };

  static std::shared_ptr<Connection> create(boost::asio::io_context& io, Endpoint ep,
                                            ConnectionOptions opts, Hooks hooks);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Registers a Lua script; returns its handle for eval_in_loop.
  // Call before start_in_loop.
  std::size_t add_script(std::string body);
  // Sets a Redis 7 function library ("#!lua name=..." and its register_function calls), loaded
  // with FUNCTION LOAD REPLACE in every connection's setup, before any command: a Redis that
  // restarted empty has it again before the first FCALL, and SCRIPT FLUSH does not touch it.
  // Call before start_in_loop.
  void set_function_library(std::string code);

  void start_in_loop();
  // Closes for good: pending commands get Status::stopped and no hook runs afterwards.
  void stop_in_loop();
  // Drops the current connection (e.g. a reply made no sense); a reconnect follows.
  void drop_in_loop(const std::string& why);

  bool up() const { return up_.load(std::memory_order_acquire); }
  std::string describe() const;

  // Sends argv; `done` runs once with its reply. While down it runs at once with
  // Status::down (fail fast); during the very first connect commands wait behind the setup.
  // argv is only read: a caller that may resend it (a cluster redirect) keeps it.
  void command_in_loop(const std::vector<std::string>& argv, ReplyFn done);
  // EVAL of a registered script: keys then args.
  void eval_in_loop(std::size_t script, std::vector<std::string> keys,
                    std::vector<std::string> args, ReplyFn done);
  // FCALL of a function of the library: keys then args. Unlike EVAL, the script's body is not
  // sent (nor hashed by Redis) on every call.
  void fcall_in_loop(std::string_view function, std::vector<std::string> keys, std::vector<std::string> args,
                     ReplyFn done);
  // push_only connections: sends argv, e.g. SSUBSCRIBE channel; its replies go to on_push.
  // Returns false while not up (nothing sent).
  bool send_push_in_loop(const std::vector<std::string>& argv);
  // push_only connections: (UN)SUBSCRIBE one channel. Returns false while not up.
  bool subscribe_in_loop(std::string_view channel);
  bool unsubscribe_in_loop(std::string_view channel);

  struct Watch;  // the Asio side of one hiredis context (public for the C callbacks)
  struct Pending;

 private:
  Connection(boost::asio::io_context& io, Endpoint ep, ConnectionOptions opts, Hooks hooks);

  void connect_in_loop();
  void send_setup_in_loop();
  void setup_done_in_loop();
  void lost_in_loop(const std::string& why);
  void schedule_ping_in_loop();
  bool accepting() const;
  void send_in_loop(const std::vector<std::string>& argv, ReplyFn done);
  void read_pushes_in_loop();
  void call_in_loop(std::string_view verb, std::string_view what, std::vector<std::string> keys,
                    std::vector<std::string> args, ReplyFn done);
  void set_describe(std::string s);

  static void on_connect(const redisAsyncContext* ac, int status);
  static void on_disconnect(const redisAsyncContext* ac, int status);
  static void on_reply(redisAsyncContext* ac, void* reply, void* privdata);

  enum class State { idle, connecting, up, waiting, stopped };

  boost::asio::io_context& io_;
  Endpoint ep_;
  ConnectionOptions opts_;
  Hooks hooks_;
  std::vector<std::string> scripts_;
  std::string function_library_;  // empty: none

  State state_ = State::idle;
  bool ever_up_ = false;
  bool announced_down_ = false;  // the outage was logged; log the recovery too
  redisAsyncContext* ac_ = nullptr;  // null while not connected
  std::shared_ptr<Watch> watch_;
  boost::asio::steady_timer retry_timer_;  // connect timeout, then backoff
  boost::asio::steady_timer ping_timer_;
  bool ping_outstanding_ = false;
  std::chrono::steady_clock::time_point ping_sent_;
  std::chrono::milliseconds backoff_;
  bool setup_failed_ = false;
  unsigned attempt_ = 0;  // bumped per connect and per loss; stale timers compare it

  std::atomic<bool> up_{false};
  mutable std::mutex describe_mu_;
  std::string describe_;
};

}  // namespace chatd::redis
