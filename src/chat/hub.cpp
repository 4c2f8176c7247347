#include "chat/hub.h"

#include <boost/asio/post.hpp>

#include <algorithm>
#include <cassert>

#include "chat/session.h"
#include "log/log.h"

namespace chatd::chat {

// ---- Shard ----------------------------------------------------------------------------

Shard::Shard(Hub& hub, boost::asio::io_context& loop, std::size_t index)
    : hub_(hub), loop_(loop), index_(index), timer_(loop) {}

void Shard::assert_in_loop() const {
#ifndef NDEBUG
  const auto owner = loop_thread_.load(std::memory_order_relaxed);
  assert(owner == std::thread::id{} || owner == std::this_thread::get_id());
#endif
}

// Fibonacci hashing: sessions' addresses share their low bits, the product's top bits spread
// them evenly over the slices.
std::size_t Shard::slice_of(const StompSession* s) {
  const auto a = static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(s));
  return static_cast<std::size_t>((a * 0x9E3779B97F4A7C15ull) >> (64 - kSweepSliceBits));
}

void Shard::add_session_in_loop(StompSession* s) {
  assert_in_loop();
  if (sessions_[slice_of(s)].insert(s).second) ++session_total_;
  session_count_.store(session_total_, std::memory_order_relaxed);
}

void Shard::remove_session_in_loop(StompSession* s) {
  assert_in_loop();
  session_total_ -= sessions_[slice_of(s)].erase(s);
  session_count_.store(session_total_, std::memory_order_relaxed);
}

void Shard::subscribe_in_loop(const std::string& room_id, StompSession* s, const std::string& sub) {
  assert_in_loop();
  rooms_[room_id].push_back(Subscriber{s, sub});
}

void Shard::unsubscribe_in_loop(const std::string& room_id, StompSession* s, const std::string& sub) {
  assert_in_loop();
  auto it = rooms_.find(room_id);
  if (it == rooms_.end()) return;
  auto& v = it->second;
  auto hit = std::find_if(v.begin(), v.end(), [&](const Subscriber& x) { return x.session == s && x.sub == sub; });
  if (hit == v.end()) return;
  if (delivering_) {
    // A session a delivery closed (a transport that reset a reader past its bound) leaves
    // inside that delivery's walk over this vector: blank it now, remove it after the walk.
    hit->session = nullptr;
    blanked_.push_back(room_id);
    return;
  }
  // Order among subscribers does not matter; swap-and-pop keeps removal O(1).
  *hit = std::move(v.back());
  v.pop_back();
  if (v.empty()) rooms_.erase(it);
}

void Shard::enqueue(SharedMessagePtr m) {
  bool post;
  {
    std::lock_guard lock(inbox_mu_);
    inbox_.push_back(std::move(m));
    post = !drain_posted_;
    drain_posted_ = true;
  }
  if (!post) return;
  boost::asio::post(loop_, [this] {
    std::vector<SharedMessagePtr> batch;
    {
      std::lock_guard lock(inbox_mu_);
      batch.swap(inbox_);
      drain_posted_ = false;
    }
    for (auto& msg : batch) deliver_local_in_loop(msg);
  });
}

void Shard::deliver_local_in_loop(const SharedMessagePtr& m) {
  assert_in_loop();
  auto it = rooms_.find(m->room_id);
  if (it == rooms_.end()) return;
  // A session may leave inside its deliver (see unsubscribe_in_loop): the vector stays whole
  // until the walk is over, and what left is removed after it.
  auto& subs = it->second;
  ++delivering_;
  std::size_t n = 0;
  for (const auto& s : subs)
    if (s.session) {
      s.session->deliver_in_loop(m, s.sub);
      ++n;
    }
  --delivering_;
  deliveries_.fetch_add(n, std::memory_order_relaxed);
  if (!delivering_ && !blanked_.empty()) remove_blanked_in_loop();
}

void Shard::remove_blanked_in_loop() {
  for (const auto& room : blanked_) {
    auto it = rooms_.find(room);
    if (it == rooms_.end()) continue;
    std::erase_if(it->second, [](const Subscriber& x) { return x.session == nullptr; });
    if (it->second.empty()) rooms_.erase(it);
  }
  blanked_.clear();
}

void Shard::start_sweeps() {
  loop_thread_.store(std::this_thread::get_id(), std::memory_order_relaxed);  // posted to the loop
  sweeping_ = true;
  sweep();
}

void Shard::stop_sweeps() {
  boost::asio::post(loop_, [this] {
    sweeping_ = false;
    timer_.cancel();
  });
}

void Shard::sweep() {
  if (!sweeping_) return;
  timer_.expires_after(std::chrono::microseconds(1'000'000 / kSweepSlices));
  timer_.async_wait([this](boost::system::error_code ec) {
    if (ec || !sweeping_) return;
    auto now = StompSession::Clock::now();
    const std::size_t slice = next_slice_;
    next_slice_ = (next_slice_ + 1) % kSweepSlices;
    // A tick may close a session; closing is asynchronous, but copy to be safe.
    std::vector<StompSession*> due(sessions_[slice].begin(), sessions_[slice].end());
    for (auto* s : due) s->tick_in_loop(now);
    // Once a second, on one shard: the roster is the node's.
    if (index_ == 0 && slice == 0) hub_.expire_presence();
    sweep();
  });
}

std::size_t Shard::disconnect_in_loop(const std::string& user, const std::string& session, const std::string& reason) {
  assert_in_loop();
  std::vector<StompSession*> hit;
  for_each_session([&](StompSession* s) {
    if ((!session.empty() && s->id() == session) || (!user.empty() && s->user() == user)) hit.push_back(s);
  });
  for (auto* s : hit) s->fail_in_loop("disconnected by the server", reason.empty() ? "The application closed this session." : reason);
  return hit.size();
}

void Shard::end_room_in_loop(const SharedMessagePtr& notice) {
  assert_in_loop();
  auto it = rooms_.find(notice->room_id);
  if (it == rooms_.end()) return;
  const auto subs = it->second;  // each ending subscription leaves rooms_
  for (const auto& s : subs)
    if (s.session) s.session->end_room_subscription_in_loop(notice, s.sub);
}

void Shard::close_all_in_loop(std::string_view reason) {
  assert_in_loop();
  std::vector<StompSession*> all;
  for_each_session([&](StompSession* s) { all.push_back(s); });
  for (auto* s : all) s->fail_in_loop("server shutting down", reason);
}

std::size_t Shard::close_user_in_loop(const std::string& user, std::string_view reason) {
  assert_in_loop();
  std::vector<StompSession*> theirs;
  for_each_session([&](StompSession* s) {
    if (auto* who = s->identity(); who && who->user == user) theirs.push_back(s);
  });
  for (auto* s : theirs) s->fail_in_loop("disconnected", reason);
  return theirs.size();
}

// ---- Hub ------------------------------------------------------------------------------

Hub::Hub(HubConfig cfg, store::RoomStore& store, bus::MessageBus& bus,
         const std::vector<boost::asio::io_context*>& workers, bus::Presence* presence)
    : cfg_(std::move(cfg)),
      // Node id plus a per-process nonce: ids stay unique across restarts and even when two
      // nodes are given the same --node-id.
      id_prefix_(cfg_.node_id + "-" + new_room_id().substr(0, 8) + "-"),
      store_(store),
      bus_(bus),
      control_(bus),
      interest_(bus, *workers.at(0), workers.size()),
      publisher_(cfg_.limits, cfg_.texts, id_prefix_, store, bus, refusals),
      presence_(presence),
      actions_(*this, store, bus, control_, *workers.at(0), cfg_.room_idle_expiry) {
  // A publish keeps its room from idle expiry.
  publisher_.set_activity_hook([this](const std::string& room_id) { actions_.note_active(room_id); });
  for (std::size_t i = 0; i < workers.size(); ++i)
    shards_.push_back(std::make_unique<Shard>(*this, *workers[i], i));
}

void Hub::close_user(const std::string& user, std::string reason) {
  for (auto& s : shards_)
    boost::asio::post(s->loop(), [sh = s.get(), user, reason] { sh->close_user_in_loop(user, reason); });
}

void Hub::start() {
  bus_.start([this](bus::Delivery&& d) { on_delivery(std::move(d)); });
  if (presence_)
    presence_->start([this](const std::string& room, const std::string& member, std::size_t count) {
      announce(MessageType::quit, room, member, count, nullptr);
    });
  for (auto& s : shards_) boost::asio::post(s->loop(), [sh = s.get()] { sh->start_sweeps(); });
  actions_.start();
}

void Hub::forget_room(const std::string& id) { publisher_.forget_room(id); }

void Hub::delete_room(std::string_view id, CreateFn done) {
  actions_.delete_room(canonical_room_id(id), ServerActions::DeleteReason::api, std::move(done));
}

void Hub::disconnect(std::string user, std::string session, std::string reason, std::function<void(std::error_code)> done) {
  actions_.disconnect({std::move(user), std::move(session)}, std::move(reason), std::move(done));
}

void Hub::set_event_sink(EventSink* sink) {
  events_ = sink;
  publisher_.set_event_sink(sink);
}

void Hub::list_rooms(ListFn done) { store_.list(std::move(done)); }

void Hub::presence_attach(const std::string& room, const std::string& member, std::function<void()> settled) {
  {
    std::lock_guard lock(presence_mu_);
    // Engine calls are made under the lock so they reach the engine in the roster's order.
    if (roster_.attach(room, member) == Roster::Step::join) {
      presence_->join(room, member, [this, room, member, settled](std::error_code ec, bool first, std::size_t count) {
        if (ec) log::event("presence_failed", {{"room", room}, {"member", member}, {"error", ec.message()}});
        if (!ec && first) return announce(MessageType::enter, room, member, count, settled);
        if (settled) settled();
      });
      return;
    }
  }
  if (settled) settled();
}

void Hub::presence_detach(const std::string& room, const std::string& member, bool goodbye) {
  const auto now = Roster::Clock::now();
  std::lock_guard lock(presence_mu_);
  if (roster_.detach(room, member, now, goodbye ? now : now + cfg_.presence_grace) == Roster::Step::leave)
    engine_leave_locked(room, member);
}

void Hub::expire_presence() {
  if (!presence_) return;
  std::lock_guard lock(presence_mu_);
  for (auto& [room, member] : roster_.expire(Roster::Clock::now())) engine_leave_locked(room, member);
}

void Hub::engine_leave_locked(const std::string& room, const std::string& member) {
  presence_->leave(room, member, [this, room, member](std::error_code ec, bool last, std::size_t count) {
    if (ec) log::event("presence_failed", {{"room", room}, {"member", member}, {"error", ec.message()}});
    if (!ec && last) announce(MessageType::quit, room, member, count, nullptr);
  });
}

void Hub::announce(MessageType type, const std::string& room, const std::string& member, std::size_t count,
                   std::function<void()> done, int attempt) {
  // A leave that empties the room has count 0 after it; a join counts itself.
  const std::size_t size = type == MessageType::quit ? count + 1 : count;
  if (size > cfg_.presence_announce_max) {
    if (done) done();
    return;
  }
  ChatMessage m{type, room, std::string(member_shown(member)), {}};
  auto answered = [this, type, room, member, count, attempt, done = std::move(done)](std::error_code ec, std::uint64_t, std::string_view) mutable {
    // Refused, so surely not published: sent again after a pause rather than lost (the count
    // and the member lists are right either way; only the room's line would be missing).
    if (ec == Error::publish_failed && attempt < cfg_.announce_attempts) {
      auto t = std::make_shared<boost::asio::steady_timer>(shards_.front()->loop(), cfg_.announce_retry);
      t->async_wait([this, t, type, room, member, count, attempt, done = std::move(done)](boost::system::error_code e) mutable {
        if (e) {
          if (done) done();
          return;
        }
        announce(type, room, member, count, std::move(done), attempt + 1);
      });
      return;
    }
    if (ec) log::event("announce_failed", {{"room", room}, {"member", member}, {"error", ec.message()}});
    if (done) done();
  };
  // Rated like a SEND into the room: a client cycling SUBSCRIBE, ENTER, UNSUBSCRIBE made two
  // announcements a cycle past --room-send-rate (an outside probe: 10,800 lines in 3 s, the
  // room's history pushed out). Past it the line is left out (logged); counts stay exact.
  if (known_room(room)) return publisher_.publish_known(m, {}, std::move(answered), true);
  publish(m, {}, std::move(answered));  // a dead node's member, in a room this node never saw
}

void Hub::room_members(std::string_view id, MembersFn done) {
  if (!presence_) return done(Error::presence_off, {});
  auto room_id = canonical_room_id(id);
  check_room(room_id, [this, room_id, done = std::move(done)](std::error_code ec) mutable {
    if (ec) return done(ec, {});
    presence_->members(room_id, cfg_.limits.max_member_list, [done = std::move(done)](std::error_code pec, bus::MemberList l) {
      if (pec) return done(Error::presence_unavailable, {});
      for (auto& name : l.names) name = std::string(member_shown(name));
      done({}, std::move(l));
    });
  });
}

void Hub::member_counts(std::vector<std::string> ids, CountsFn done) {
  if (!presence_) return done(Error::presence_off, {});
  presence_->counts(std::move(ids), [done = std::move(done)](std::error_code ec, std::vector<std::size_t> c) {
    if (ec) return done(Error::presence_unavailable, {});
    done({}, std::move(c));
  });
}

void Hub::find_room(std::string_view id, FindFn done) { store_.find(canonical_room_id(id), std::move(done)); }

void Hub::room_messages(std::string_view id, std::uint64_t before, std::size_t limit, PageFn done) {
  auto room_id = canonical_room_id(id);
  store_.find(room_id, [this, room_id, before, limit, done = std::move(done)](std::error_code ec, std::optional<store::Room> room) mutable {
    if (ec) return done(Error::store_unavailable, {});
    if (!room) return done(Error::unknown_room, {});
    bus_.history({room_id, 0, before, limit}, [done = std::move(done)](std::error_code hec, bus::History h) {
      if (hec) return done(Error::history_unavailable, {});
      Page p{{}, std::move(h.epoch), h.first_seq, h.last_seq};
      p.bodies.reserve(h.messages.size());
      for (auto& m : h.messages) p.bodies.push_back(with_seq(m.payload, m.seq, m.epoch));
      done({}, std::move(p));
    });
  });
}

EngineHealth Hub::bus_health() const { return {bus_.up(), bus_.describe()}; }

EngineHealth Hub::store_health() const { return {store_.up(), store_.describe()}; }

NodeCounters Hub::counters() const {
  NodeCounters c;
  for (const auto& s : shards_) {
    c.sessions += s->sessions();
    c.deliveries += s->deliveries();
  }
  c.published = published();
  c.delivered_from_bus = delivered_from_bus();
  c.slow_consumers = slow_consumers.load(std::memory_order_relaxed);
  c.protocol_errors = protocol_errors.load(std::memory_order_relaxed);
  c.chat_rejections = chat_rejections.load(std::memory_order_relaxed);
  c.history_memory = history_memory_.used();
  for (std::size_t i = 0; i < c.refusals.size(); ++i) c.refusals[i] = refusals.get(static_cast<Refusal>(i));
  return c;
}

void Hub::report_subscription(ChatEvent::Kind kind, const std::string& room_id, const std::string& session_id) {
  if (!events_ || !events_->wants(kind)) return;
  auto n = next_event_.fetch_add(1, std::memory_order_relaxed);
  events_->on_event({kind, room_id, id_prefix_ + "e" + std::to_string(n), 0,
                     "{\"session\":\"" + session_id + "\",\"node\":\"" + cfg_.node_id + "\"}"});
}

void Hub::create_room(std::string name, CreateFn done) {
  store::Room room;
  room.id = new_room_id();
  room.name = std::move(name);
  create_stored(std::move(room), std::move(done));
}

void Hub::create_restricted_room(std::string name, std::vector<std::string> members, CreateFn done) {
  store::Room room;
  room.id = new_room_id();
  room.name = std::move(name);
  room.restricted = true;
  room.members = std::move(members);
  create_stored(std::move(room), std::move(done));
}

void Hub::create_stored(store::Room room, CreateFn done) {
  store_.create(room, [this, room, done = std::move(done)](std::error_code ec) {
    if (!ec) publisher_.remember_room(room);
    if (!ec && events_ && events_->wants(ChatEvent::Kind::room))
      events_->on_event({ChatEvent::Kind::room, room.id, "r-" + room.id, 0, store::to_json(room)});
    done(ec, room);
  });
}

void Hub::on_delivery(bus::Delivery&& d) {
  from_bus_.fetch_add(1, std::memory_order_relaxed);
  // Only the shards with a subscriber of the room get it; none: nothing to encode.
  thread_local std::vector<std::size_t> targets;
  if (!interest_.shards_with(d.room_id, targets)) return;
  auto shared = encode_delivery(d);
  for (auto i : targets) shards_[i]->enqueue(shared);
}

SharedMessagePtr encode_delivery(const bus::Delivery& d) {
  auto body = with_seq(d.payload, d.seq, d.epoch);
  auto destination = std::string(kRoomPrefix) + d.room_id;
  auto message_id = d.room_id + "-" + std::to_string(d.seq);
  auto m = std::make_shared<SharedMessage>();
  m->frame = stomp::encode_message(destination, message_id, "application/json", body);
  m->room_id = d.room_id;
  m->seq = d.seq;
  m->epoch = d.epoch;
  return m;
}

}  // namespace chatd::chat
