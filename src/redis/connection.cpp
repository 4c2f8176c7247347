#include "redis/connection.h"

#include "log/log.h"

#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include <boost/asio/posix/stream_descriptor.hpp>

#include <algorithm>
#include <iostream>

namespace chatd::redis {

// The Asio side of one hiredis context. hiredis asks for level-triggered read/write interest
// through the ev hooks; Asio waits are one-shot, so each completed wait re-arms itself while
// hiredis still wants it. hiredis owns the fd: cleanup releases it, never closes it.
struct Connection::Watch {
  Watch(boost::asio::io_context& io, int fd) : sd(io, fd) {}
  boost::asio::posix::stream_descriptor sd;
  redisAsyncContext* ac = nullptr;  // null once hiredis cleaned up
  bool want_read = false, want_write = false;
  bool reading = false, writing = false;  // a wait is in flight
  std::weak_ptr<Watch> self;
  Connection* pushes = nullptr;  // set: replies are read by its read_pushes_in_loop, not hiredis

  void arm_read() {
    if (!ac || !want_read || reading) return;
    reading = true;
    sd.async_wait(boost::asio::posix::descriptor_base::wait_read,
                  [w = self.lock()](const boost::system::error_code& ec) {
                    w->reading = false;
                    if (ec == boost::asio::error::operation_aborted || !w->ac || !w->want_read) return;
                    // Either may free the context: w->ac then is null.
                    if (w->pushes) w->pushes->read_pushes_in_loop();
                    else redisAsyncHandleRead(w->ac);
                    w->arm_read();
                  });
  }
  void arm_write() {
    if (!ac || !want_write || writing) return;
    writing = true;
    sd.async_wait(boost::asio::posix::descriptor_base::wait_write,
                  [w = self.lock()](const boost::system::error_code& ec) {
                    w->writing = false;
                    if (ec == boost::asio::error::operation_aborted || !w->ac || !w->want_write) return;
                    redisAsyncHandleWrite(w->ac);
                    w->arm_write();
                  });
  }

  static void add_read(void* d) {
    auto* w = static_cast<Watch*>(d);
    w->want_read = true;
    w->arm_read();
  }
  static void del_read(void* d) { static_cast<Watch*>(d)->want_read = false; }
  static void add_write(void* d) {
    auto* w = static_cast<Watch*>(d);
    w->want_write = true;
    w->arm_write();
  }
  static void del_write(void* d) { static_cast<Watch*>(d)->want_write = false; }
  // hiredis may call this more than once per context.
  static void cleanup(void* d) {
    auto* w = static_cast<Watch*>(d);
    w->ac = nullptr;
    w->want_read = w->want_write = false;
    if (w->sd.is_open()) w->sd.release();  // cancels our waits; hiredis closes the fd
  }
};

// One command in flight; owned by hiredis until its callback runs (always exactly once).
struct Connection::Pending {
  Connection* conn;
  ReplyFn done;
};

std::shared_ptr<Connection> Connection::create(boost::asio::io_context& io, Endpoint ep,
                                               ConnectionOptions opts, Hooks hooks) {
  return std::shared_ptr<Connection>(new Connection(io, std::move(ep), std::move(opts), std::move(hooks)));
}

Connection::Connection(boost::asio::io_context& io, Endpoint ep, ConnectionOptions opts, Hooks hooks)
    : io_(io),
      ep_(std::move(ep)),
      opts_(std::move(opts)),
      hooks_(std::move(hooks)),
      retry_timer_(io),
      ping_timer_(io),
      backoff_(kBackoffMin) {
  if (ep_.address.empty()) ep_.address = ep_.host;
  set_describe(opts_.name + " connecting");
}

Connection::~Connection() {
  state_ = State::stopped;
  if (auto ac = std::exchange(ac_, nullptr)) redisAsyncFree(ac);
}

std::size_t Connection::add_script(std::string body) {
  scripts_.push_back(std::move(body));
  return scripts_.size() - 1;
}

void Connection::set_function_library(std::string code) { function_library_ = std::move(code); }

std::string Connection::describe() const {
  std::lock_guard lock(describe_mu_);
  return describe_;
}

void Connection::set_describe(std::string s) {
  std::lock_guard lock(describe_mu_);
  describe_ = std::move(s);
}

void Connection::start_in_loop() {
  if (state_ != State::idle) return;
  connect_in_loop();
}

void Connection::stop_in_loop() {
  if (state_ == State::stopped) return;
  state_ = State::stopped;
  up_.store(false, std::memory_order_release);
  retry_timer_.cancel();
  ping_timer_.cancel();
  if (auto ac = std::exchange(ac_, nullptr)) redisAsyncFree(ac);  // pending get Status::stopped
  hooks_ = {};
  set_describe(opts_.name + " stopped");
}

void Connection::drop_in_loop(const std::string& why) {
  auto ac = std::exchange(ac_, nullptr);
  if (!ac) return;
  lost_in_loop(why);
  redisAsyncFree(ac);  // pending commands get Status::down
}

void Connection::connect_in_loop() {
  if (state_ == State::stopped) return;
  state_ = State::connecting;
  setup_failed_ = false;
  const unsigned attempt = ++attempt_;
  redisAsyncContext* ac = redisAsyncConnect(ep_.address.c_str(), ep_.port);
  if (!ac || ac->err) {
    std::string why = ac ? ac->errstr : "out of memory";
    if (ac) redisAsyncFree(ac);
    lost_in_loop("cannot connect: " + why);
    return;
  }
  ac->data = this;
  try {
    watch_ = std::make_shared<Watch>(io_, ac->c.fd);
  } catch (const std::exception& e) {  // the reactor refused the fd (e.g. out of memory)
    redisAsyncFree(ac);
    lost_in_loop(std::string("cannot watch the socket: ") + e.what());
    return;
  }
  watch_->self = watch_;
  watch_->ac = ac;
  ac->ev.data = watch_.get();
  ac->ev.addRead = &Watch::add_read;
  ac->ev.delRead = &Watch::del_read;
  ac->ev.addWrite = &Watch::add_write;
  ac->ev.delWrite = &Watch::del_write;
  ac->ev.cleanup = &Watch::cleanup;
  ac_ = ac;
  redisAsyncSetConnectCallback(ac, &Connection::on_connect);  // arms the first write wait
  redisAsyncSetDisconnectCallback(ac, &Connection::on_disconnect);
  send_setup_in_loop();

  retry_timer_.expires_after(opts_.timing.connect_timeout);
  retry_timer_.async_wait([weak = weak_from_this(), attempt](const boost::system::error_code& ec) {
    auto self = weak.lock();
    if (ec || !self || self->attempt_ != attempt || self->state_ != State::connecting) return;
    self->drop_in_loop("no answer within " + std::to_string(self->opts_.timing.connect_timeout.count()) + " ms");
  });
}

// AUTH and SELECT go out before the connect completes; hiredis buffers them.
// The PING behind them marks the connection usable.
void Connection::send_setup_in_loop() {
  auto check = [this](const char* step) {
    return [this, step](Status st, const redisReply* r) {
      if (st != Status::ok || setup_failed_) return;
      if (r->type == REDIS_REPLY_ERROR) {
        setup_failed_ = true;
        drop_in_loop(std::string("Redis refused ") + step + ": " + std::string(r->str, r->len));
      }
    };
  };
  if (!ep_.password.empty()) {
    if (ep_.user.empty()) send_in_loop({"AUTH", ep_.password}, check("AUTH"));
    else send_in_loop({"AUTH", ep_.user, ep_.password}, check("AUTH"));
  }
  if (ep_.db != 0) send_in_loop({"SELECT", std::to_string(ep_.db)}, check("SELECT"));
  if (!function_library_.empty())
    send_in_loop({"FUNCTION", "LOAD", "REPLACE", function_library_}, check("FUNCTION LOAD (Redis 7 or later needed)"));
  send_in_loop({"PING"}, [this, check = check("PING")](Status st, const redisReply* r) {
    check(st, r);
    if (st == Status::ok && !setup_failed_ && state_ == State::connecting) setup_done_in_loop();
  });
}

void Connection::setup_done_in_loop() {
  state_ = State::up;
  ever_up_ = true;
  backoff_ = kBackoffMin;
  retry_timer_.cancel();
  if (ac_) redisEnableKeepAlive(&ac_->c);  // notices a vanished host even when idle
  up_.store(true, std::memory_order_release);
  set_describe(opts_.name + " up");
  if (std::exchange(announced_down_, false))
    log::event("engine_up", {{"engine", "redis"}, {"connection", opts_.name}, {"address", ep_.display()}});
  ping_outstanding_ = false;
  if (opts_.health_ping) schedule_ping_in_loop();
  // From here on, this connection reads its replies itself. The PING reply being handled now
  // is the last one hiredis dispatches; nothing else was asked for yet.
  if (opts_.push_only && watch_) watch_->pushes = this;
  if (hooks_.on_up) hooks_.on_up();
}

void Connection::lost_in_loop(const std::string& why) {
  up_.store(false, std::memory_order_release);
  ping_timer_.cancel();
  ping_outstanding_ = false;
  if (state_ == State::stopped) return;
  state_ = State::waiting;
  const auto delay = backoff_;
  backoff_ = std::min(backoff_ * 2, opts_.timing.backoff_max);
  set_describe(opts_.name + " down: " + why + "; retrying in " + std::to_string(delay.count()) + " ms");
  // One line per outage, not per retry.
  if (ever_up_ && !std::exchange(announced_down_, true))
    log::event("engine_down", {{"engine", "redis"}, {"connection", opts_.name}, {"address", ep_.display()}, {"why", why},
                               {"retry_max_ms", std::to_string(opts_.timing.backoff_max.count())}});
  const unsigned attempt = ++attempt_;
  retry_timer_.expires_after(delay);
  retry_timer_.async_wait([weak = weak_from_this(), attempt](const boost::system::error_code& ec) {
    auto self = weak.lock();
    if (ec || !self || self->attempt_ != attempt || self->state_ != State::waiting) return;
    self->connect_in_loop();
  });
  if (hooks_.on_down) hooks_.on_down(why);
}

// A server that stops answering (frozen, or a dead host with no RST) is dropped after
// ping_timeout, so callers learn engine_down instead of waiting forever.
void Connection::schedule_ping_in_loop() {
  ping_timer_.expires_after(opts_.timing.ping_every);
  ping_timer_.async_wait([weak = weak_from_this()](const boost::system::error_code& ec) {
    auto self = weak.lock();
    if (ec || !self || self->state_ != State::up) return;
    if (self->ping_outstanding_) {
      if (std::chrono::steady_clock::now() - self->ping_sent_ > self->opts_.timing.ping_timeout) {
        self->drop_in_loop("no reply to PING for " + std::to_string(self->opts_.timing.ping_timeout.count()) + " ms");
        return;
      }
    } else {
      self->ping_outstanding_ = true;
      self->ping_sent_ = std::chrono::steady_clock::now();
      // A subscriber connection has no reply callbacks: read_pushes_in_loop takes the answer.
      // A PING that cannot even be queued stays outstanding and ends in the drop above.
      if (self->opts_.push_only) self->send_push_in_loop({"PING"});
      else
        self->send_in_loop({"PING"}, [raw = self.get()](Status st, const redisReply*) {
          if (st == Status::ok) raw->ping_outstanding_ = false;
        });
    }
    self->schedule_ping_in_loop();
  });
}

bool Connection::accepting() const {
  return state_ == State::up || (state_ == State::connecting && !ever_up_);
}

void Connection::command_in_loop(const std::vector<std::string>& argv, ReplyFn done) {
  if (!accepting()) {
    done(state_ == State::stopped ? Status::stopped : Status::down, nullptr);
    return;
  }
  send_in_loop(argv, std::move(done));
}

void Connection::eval_in_loop(std::size_t script, std::vector<std::string> keys,
                              std::vector<std::string> args, ReplyFn done) {
  // EVAL, not EVALSHA: a NOSCRIPT answer (SCRIPT FLUSH, failover) would force a resend that
  // lands behind commands sent since, reordering a room. Redis caches the body by its SHA.
  call_in_loop("EVAL", scripts_.at(script), std::move(keys), std::move(args), std::move(done));
}

void Connection::fcall_in_loop(std::string_view function, std::vector<std::string> keys,
                               std::vector<std::string> args, ReplyFn done) {
  call_in_loop("FCALL", function, std::move(keys), std::move(args), std::move(done));
}

// Sends `verb what numkeys keys... args...` (EVAL and FCALL).
void Connection::call_in_loop(std::string_view verb, std::string_view what, std::vector<std::string> keys,
                              std::vector<std::string> args, ReplyFn done) {
  if (!accepting()) {
    done(state_ == State::stopped ? Status::stopped : Status::down, nullptr);
    return;
  }
  send_in_loop(script_call_argv(verb, what, std::move(keys), std::move(args)), std::move(done));
}

std::vector<std::string> script_call_argv(std::string_view verb, std::string_view what, std::vector<std::string> keys,
                                          std::vector<std::string> args) {
  std::vector<std::string> argv;
  argv.reserve(3 + keys.size() + args.size());
  argv.emplace_back(verb);
  argv.emplace_back(what);
  argv.push_back(std::to_string(keys.size()));
  for (auto& k : keys) argv.push_back(std::move(k));
  for (auto& a : args) argv.push_back(std::move(a));
  return argv;
}

void Connection::send_in_loop(const std::vector<std::string>& argv, ReplyFn done) {
  if (!ac_) {
    done(state_ == State::stopped ? Status::stopped : Status::down, nullptr);
    return;
  }
  std::vector<const char*> ptrs(argv.size());
  std::vector<std::size_t> lens(argv.size());
  for (std::size_t i = 0; i < argv.size(); ++i) {
    ptrs[i] = argv[i].data();
    lens[i] = argv[i].size();
  }
  auto* p = new Pending{this, std::move(done)};
  const int rc = redisAsyncCommandArgv(ac_, &Connection::on_reply, p, static_cast<int>(argv.size()),
                                       ptrs.data(), lens.data());
  if (rc != REDIS_OK) {  // the context is being torn down
    std::unique_ptr<Pending> own(p);
    own->done(state_ == State::stopped ? Status::stopped : Status::down, nullptr);
    return;
  }
}

bool Connection::send_push_in_loop(const std::vector<std::string>& argv) {
  if (state_ != State::up || !ac_ || !watch_ || !watch_->pushes) return false;
  std::vector<const char*> ptrs(argv.size());
  std::vector<std::size_t> lens(argv.size());
  for (std::size_t i = 0; i < argv.size(); ++i) {
    ptrs[i] = argv[i].data();
    lens[i] = argv[i].size();
  }
  // Straight into the output buffer, with no callback queued: replies come to on_push.
  if (redisAppendCommandArgv(&ac_->c, static_cast<int>(argv.size()), ptrs.data(), lens.data()) != REDIS_OK)
    return false;
  Watch::add_write(watch_.get());
  return true;
}

bool Connection::subscribe_in_loop(std::string_view channel) {
  return send_push_in_loop({"SUBSCRIBE", std::string(channel)});
}

bool Connection::unsubscribe_in_loop(std::string_view channel) {
  return send_push_in_loop({"UNSUBSCRIBE", std::string(channel)});
}

namespace {

// Returns whether `r` answers a PING: +PONG, or in RESP2 subscribed mode ["pong", ""].
bool is_pong(const redisReply& r) {
  auto is = [](const redisReply& x, int type, std::string_view text) {
    return x.type == type && std::string_view(x.str, x.len) == text;
  };
  if (is(r, REDIS_REPLY_STATUS, "PONG")) return true;
  return r.type == REDIS_REPLY_ARRAY && r.elements == 2 && is(*r.element[0], REDIS_REPLY_STRING, "pong");
}

}  // namespace

// Reads what arrived and hands every complete reply to on_push, except the health PING's
// answers; a closed socket or a protocol error drops the connection (a reconnect follows).
void Connection::read_pushes_in_loop() {
  redisAsyncContext* ac = ac_;
  if (!ac) return;
  if (redisBufferRead(&ac->c) != REDIS_OK) {
    drop_in_loop(ac->c.errstr[0] ? ac->c.errstr : "connection closed");
    return;
  }
  while (ac_ == ac) {  // on_push may drop or stop this connection
    void* reply = nullptr;
    if (redisGetReplyFromReader(&ac->c, &reply) != REDIS_OK) {
      drop_in_loop(ac->c.errstr[0] ? ac->c.errstr : "unreadable reply");
      return;
    }
    if (!reply) return;
    std::unique_ptr<redisReply, void (*)(void*)> own(static_cast<redisReply*>(reply), &freeReplyObject);
    // Bytes got through, so the path is alive: a subscriber busy with messages whose PONG
    // waits behind them in Redis's output buffer is not dropped for it.
    ping_outstanding_ = false;
    if (is_pong(*own)) continue;
    if (state_ != State::stopped && hooks_.on_push) hooks_.on_push(*own);
  }
}

void Connection::on_connect(const redisAsyncContext* ac, int status) {
  auto* self = static_cast<Connection*>(ac->data);
  if (self->ac_ != ac || status == REDIS_OK) return;
  // hiredis frees the context right after this returns.
  std::string why = ac->errstr[0] ? ac->errstr : "connect failed";
  self->ac_ = nullptr;
  self->lost_in_loop("cannot connect: " + why);
}

void Connection::on_disconnect(const redisAsyncContext* ac, int) {
  auto* self = static_cast<Connection*>(ac->data);
  if (self->ac_ != ac) return;  // we dropped it ourselves and already know
  std::string why = ac->err && ac->errstr[0] ? ac->errstr : "connection closed";
  self->ac_ = nullptr;
  self->lost_in_loop(why);
}

void Connection::on_reply(redisAsyncContext*, void* reply, void* privdata) {
  std::unique_ptr<Pending> p(static_cast<Pending*>(privdata));
  Connection* self = p->conn;
  auto* r = static_cast<const redisReply*>(reply);
  if (!r) {
    // Freed with the context: it may have been written before the connection went.
    p->done(self->state_ == State::stopped ? Status::stopped : Status::lost, nullptr);
    return;
  }
  p->done(Status::ok, r);
}

}  // namespace chatd::redis
