#include "net/sockjs/xhr_session.h"

#include <boost/asio/post.hpp>

#include <cassert>

#include "log/log.h"
#include "net/server.h"
#include "net/sessions.h"

namespace chatd::net {
namespace asio = boost::asio;

namespace {

sockjs::Session::Limits model_limits(const chat::Limits& lim, const Limits& net) {
  // StompSession refuses deliveries past max_outbound_bytes (slow consumer); leave room
  // above it for the ERROR frame that says so.
  return {.max_pending_bytes = lim.max_outbound_bytes + 2 * lim.max_frame_bytes + 64 * 1024,
          .streaming_bytes_limit = net.sockjs_streaming_bytes,
          .max_replay_bytes = chat::max_replay_bytes(lim)};
}


}  // namespace

XhrSession::XhrSession(Server& server, asio::io_context& loop, std::string id, ConnectionSlot slot,
                       asio::ip::address owner, std::string user, std::string url_token)
    : server_(server),
      slot_(std::move(slot)),
      loop_(loop),
      id_(std::move(id)),
      owner_(std::move(owner)),
      user_(std::move(user)),
      url_token_(std::move(url_token)),
      model_(model_limits(server.hub().limits(), server.config().limits)),
      timer_(loop) {}

XhrSession::~XhrSession() = default;

chat::Shard& XhrSession::shard_for_loop() {
  auto& hub = server_.hub();
  for (std::size_t i = 0; i < hub.shard_count(); ++i)
    if (&hub.shard(i).loop() == &loop_) return hub.shard(i);
  assert(!"an xhr session on a loop that is no worker's");
  return hub.shard(0);
}

void XhrSession::assert_in_loop() const { assert(loop_.get_executor().running_in_this_thread()); }

void XhrSession::start_in_loop() {
  assert_in_loop();
  stomp_ = std::make_shared<chat::StompSession>(shard_for_loop(), *this, new_session_id());
  stomp_->set_url_token(std::move(url_token_));
  stomp_->set_client(owner_.to_string());
  std::string().swap(url_token_);
  stomp_->start_in_loop();
  detached_at_ = last_sent_ = Clock::now();
  arm_timer_in_loop();
}

void XhrSession::receive(std::weak_ptr<SockJsReceiver> r, SockJsReceiver* key, asio::io_context& rloop,
                         sockjs::Transport t) {
  asio::post(loop_, [self = shared_from_this(), rec = Receiver{std::move(r), key, &rloop}, t]() mutable {
    self->receive_in_loop(std::move(rec), t);
  });
}

void XhrSession::receiver_wrote(SockJsReceiver* key) {
  asio::post(loop_, [self = shared_from_this(), key] {
    if (self->current_.key != key) return;
    self->busy_ = false;
    self->pump_in_loop();
  });
}

void XhrSession::receiver_gone(SockJsReceiver* key) {
  // Called from a receiver's destructor, perhaps as the stopped server's loops drop their
  // handlers: a session nobody else holds any more has nothing to detach.
  asio::post(loop_, [weak = weak_from_this(), key] {
    auto self = weak.lock();
    if (!self || self->current_.key != key) return;
    self->model_.detach();
    self->current_ = {};
    self->busy_ = false;
    self->detached_at_ = Clock::now();
    self->arm_timer_in_loop();
  });
}

void XhrSession::messages(std::vector<std::string> m) {
  {
    std::lock_guard lock(inbox_mu_);
    for (auto& s : m) inbox_.push_back(std::move(s));
    if (std::exchange(inbox_posted_, true)) return;
  }
  asio::post(loop_, [self = shared_from_this()] {
    std::vector<std::string> in;
    {
      std::lock_guard lock(self->inbox_mu_);
      in.swap(self->inbox_);
      self->inbox_posted_ = false;
    }
    for (auto& s : in) {
      if (self->ended_ || self->close_requested_ || !self->stomp_) return;
      self->stomp_->on_bytes_in_loop(s);
    }
  });
}

void XhrSession::receive_in_loop(Receiver r, sockjs::Transport t) {
  assert_in_loop();
  if (ended_ && model_.closed()) {
    // Closed: until the id is forgotten every receiver gets the close frame again (SockJS
    // 0.3: "until the timeout occurs, the server must constantly serve the close message"),
    // never a new session's "o".
    return deliver_in_loop(r, model_.attach(t));
  }
  if (ended_) {
    // Gone meanwhile: tell this receiver the session is over.
    std::string c;
    sockjs::append_close(c, sockjs::go_away);
    c += '\n';
    return deliver_in_loop(r, {std::move(c), true});
  }
  const bool newcomer_only = model_.has_receiver();
  auto w = model_.attach(t);
  if (newcomer_only) return deliver_in_loop(r, std::move(w));  // c[2010]; the first one stays
  current_ = std::move(r);
  busy_ = false;
  if (!w.bytes.empty() || w.finish) {
    deliver_in_loop(current_, std::move(w));
  } else {
    last_sent_ = Clock::now();  // a poll waits up to a heart-beat period
    arm_timer_in_loop();
  }
}

// Hands `w` to receiver `r`; a finished response detaches it from the session.
void XhrSession::deliver_in_loop(const Receiver& r, sockjs::Session::Write w) {
  assert_in_loop();
  const bool is_current = r.key == current_.key && r.key != nullptr;
  asio::post(*r.loop, [h = r.handle, bytes = std::move(w.bytes), finish = w.finish]() mutable {
    if (auto rec = h.lock()) rec->deliver_in_loop(std::move(bytes), finish);
  });
  if (!is_current) return;
  last_sent_ = Clock::now();
  if (w.finish) {
    current_ = {};
    busy_ = false;
    detached_at_ = last_sent_;
    if (model_.closed()) return end_in_loop(true);  // the close frame is on its way
  } else {
    busy_ = true;
  }
  arm_timer_in_loop();
}

void XhrSession::send(chat::Outbound&& out) {
  assert_in_loop();
  if (ended_ || model_.closed()) return;
  const bool replay = out.replay;
  std::string frame;
  if (out.shared) {
    frame.reserve(out.size());
    frame += out.shared->frame.head;
    frame += out.own;
    frame += out.shared->frame.tail;
  } else {
    frame = std::move(out.own);
  }
  if (!model_.push(std::move(frame), replay)) {
    // StompSession stops at max_outbound_bytes (plus a replay's own size) first; this is the
    // hard stop behind it.
    server_.hub().slow_consumers.fetch_add(1, std::memory_order_relaxed);
    log::event("slow_consumer", {{"sockjs_session", id_}, {"pending_bytes", std::to_string(model_.pending_bytes())}});
    return close("slow consumer");
  }
  schedule_pump();
}

void XhrSession::close(std::string_view reason) {
  assert_in_loop();
  if (close_requested_ || ended_) return;
  close_requested_ = true;
  close_reason_.assign(reason.substr(0, 120));
  schedule_pump();
}

// With an idle receiver attached, what is pending goes out in this turn of the loop.
std::size_t XhrSession::queued_bytes() const { return current_.key && !busy_ ? 0 : model_.pending_bytes(); }

// Everything one handler queued leaves as one a[...] frame.
void XhrSession::schedule_pump() {
  if (pump_posted_) return;
  pump_posted_ = true;
  asio::post(loop_, [self = shared_from_this()] {
    self->pump_posted_ = false;
    self->pump_in_loop();
  });
}

void XhrSession::pump_in_loop() {
  assert_in_loop();
  if (ended_ || busy_) return;
  if (close_requested_) {
    sockjs::Close c{sockjs::go_away.code, close_reason_.empty() ? sockjs::go_away.reason : std::string_view(close_reason_)};
    auto w = model_.close(c);
    if (current_.key) return deliver_in_loop(current_, std::move(w));
    // No receiver: the next one gets the close frame; at shutdown nobody is coming.
    if (server_.shutting_down()) return end_in_loop();
    return;
  }
  if (!current_.key) return;
  auto w = model_.flush();
  if (!w.bytes.empty()) deliver_in_loop(current_, std::move(w));
}

// One timer per session, due at the next heart-beat (with a receiver) or at the disconnect
// delay (without). It only moves earlier by re-arming; a late wake-up re-checks and re-arms.
void XhrSession::arm_timer_in_loop() {
  assert_in_loop();
  if (ended_) return;
  const auto& lim = server_.config().limits;
  auto due = current_.key ? last_sent_ + lim.sockjs_heartbeat : detached_at_ + lim.sockjs_disconnect_delay;
  if (timer_armed_ && timer_at_ <= due) return;
  timer_armed_ = true;
  timer_at_ = due;
  timer_.expires_at(due);
  timer_.async_wait([self = shared_from_this()](boost::system::error_code ec) {
    if (ec == asio::error::operation_aborted) return;  // re-armed earlier, or ended
    self->timer_armed_ = false;
    self->on_timer_in_loop();
  });
}

void XhrSession::on_timer_in_loop() {
  assert_in_loop();
  if (ended_) return;
  const auto& lim = server_.config().limits;
  auto now = Clock::now();
  if (!current_.key) {
    if (now - detached_at_ >= lim.sockjs_disconnect_delay) return end_in_loop();
  } else if (!busy_ && now - last_sent_ >= lim.sockjs_heartbeat) {
    deliver_in_loop(current_, model_.heartbeat());
  }
  arm_timer_in_loop();
}

// The session is over: STOMP leaves its rooms. A session whose close frame went out keeps
// its id (and its connection slot) for the disconnect delay, so a client polling again is
// told it is closed rather than handed a new session; one that timed out or stops with the
// server frees it at once.
void XhrSession::end_in_loop(bool keep_id) {
  assert_in_loop();
  if (ended_) return;
  ended_ = true;
  timer_.cancel();
  if (stomp_) stomp_->on_closed_in_loop();
  stomp_.reset();  // what a closed id keeps is this object and its close frame
  if (current_.key) {
    std::string c;
    sockjs::append_close(c, sockjs::go_away);
    c += '\n';
    auto r = current_;
    current_ = {};
    deliver_in_loop(r, {std::move(c), true});
  }
  if (!keep_id || server_.shutting_down()) return forget_in_loop();
  server_.track(this, weak_from_this());
  if (server_.shutting_down()) return forget_in_loop();  // shutdown began before track: it missed us
  timer_.expires_after(server_.config().limits.sockjs_disconnect_delay);
  timer_.async_wait([self = shared_from_this()](boost::system::error_code ec) {
    if (ec == asio::error::operation_aborted) return;  // forgotten already
    self->forget_in_loop();
  });
}

// The id is free again: the registry lets go of the session, and with it its slot.
void XhrSession::forget_in_loop() {
  assert_in_loop();
  if (forgotten_) return;
  forgotten_ = true;
  timer_.cancel();
  server_.untrack(this);
  server_.sockjs().erase(id_, this);
}

void XhrSession::close_for_shutdown() {
  asio::post(loop_, [self = shared_from_this()] { self->forget_in_loop(); });
}

std::shared_ptr<XhrSession> SockJsRegistry::find(const std::string& id) {
  std::lock_guard lock(mu_);
  auto it = sessions_.find(id);
  return it == sessions_.end() ? nullptr : it->second;
}

std::shared_ptr<XhrSession> SockJsRegistry::find_or_create(const std::string& id, asio::io_context& loop,
                                                           const asio::ip::address& client, const Request& req, bool& full) {
  full = false;
  std::shared_ptr<XhrSession> s;
  {
    std::lock_guard lock(mu_);
    if (auto it = sessions_.find(id); it != sessions_.end()) return it->second;
    bool per_address = false;
    auto slot = server_.shutting_down() ? ConnectionSlot() : server_.take_connection(client, per_address);
    if (per_address) server_.hub().refusals.count(chat::Refusal::connections_per_address, client.to_string());
    if (!slot) {
      full = true;
      return nullptr;
    }
    std::string user, token;
    if (server_.hub().verifier()) {
      token = access_token(req);
      std::string why;
      if (auto who = server_.identify(req, why)) user = who->user;  // else CONNECT says why
    }
    s = std::make_shared<XhrSession>(server_, loop, id, std::move(slot), client, std::move(user), std::move(token));
    sessions_.emplace(id, s);
  }
  // Created on the caller's loop, which is `loop`: start before any post can reach it.
  s->start_in_loop();
  return s;
}

void SockJsRegistry::erase(const std::string& id, const XhrSession* s) {
  std::lock_guard lock(mu_);
  if (auto it = sessions_.find(id); it != sessions_.end() && it->second.get() == s) sessions_.erase(it);
}

}  // namespace chatd::net
