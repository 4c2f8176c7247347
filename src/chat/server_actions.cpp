#include "chat/server_actions.h"

#include <boost/asio/post.hpp>
#include <boost/json.hpp>

#include <algorithm>
#include <sstream>

#include "chat/hub.h"
#include "log/log.h"

namespace chatd::chat {
namespace {

constexpr std::string_view kDisconnect = "disconnect";
constexpr std::string_view kRoomDeleted = "room.deleted";
// Rooms one sweep deletes at most, so a node that was off for long catches up in steps.
constexpr std::size_t kSweepBatch = 1000;

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// How often a node records its rooms' activity and sweeps: a quarter of the expiry (so an
// active room's mark is never older than that), between 1 s and 1 min.
std::chrono::milliseconds sweep_period(std::chrono::seconds expiry) {
  auto quarter = std::chrono::duration_cast<std::chrono::milliseconds>(expiry) / 4;
  return std::clamp<std::chrono::milliseconds>(quarter, std::chrono::seconds(1), std::chrono::minutes(1));
}

const char* to_string(ServerActions::DeleteReason why) {
  return why == ServerActions::DeleteReason::api ? "api" : "idle";
}

}  // namespace

ServerActions::ServerActions(Hub& hub, store::RoomStore& store, bus::MessageBus& bus, ControlChannel& control,
                             boost::asio::io_context& sweep_loop, std::chrono::seconds idle_expiry)
    : hub_(hub), store_(store), bus_(bus), control_(control), idle_expiry_(idle_expiry), timer_(sweep_loop), watch_(sweep_loop) {
  control_.listen(std::string(kDisconnect), [this](const bus::ControlMessage& m) { on_disconnect(m); });
  control_.listen(std::string(kRoomDeleted), [this](const bus::ControlMessage& m) { on_room_deleted(m); });
}

// No post from here: a handler posted now would run after this object is gone. The timer's own
// destructor cancels a pending wait, whose handler then touches nothing of ours.
ServerActions::~ServerActions() { stopped_.store(true); }

void ServerActions::disconnect(DisconnectTarget target, std::string reason, DoneFn done) {
  boost::json::object o{{"reason", reason}};
  if (!target.user.empty()) o["user"] = target.user;
  else o["session"] = target.session;
  control_.send(std::string(kDisconnect), boost::json::serialize(o), std::move(done));
}

void ServerActions::on_disconnect(const bus::ControlMessage& m) {
  boost::system::error_code ec;
  auto v = boost::json::parse(m.body, ec);
  if (ec || !v.is_object()) return;
  auto text = [&](const char* k) {
    auto* f = v.as_object().if_contains(k);
    return f && f->is_string() ? std::string(f->as_string()) : std::string();
  };
  DisconnectTarget target{text("user"), text("session")};
  if (target.user.empty() == target.session.empty()) return;
  // A session id names its node (<node id>-<random>): other nodes need not look.
  if (!target.session.empty() && !target.session.starts_with(hub_.node_id() + "-")) return;
  auto reason = text("reason");
  for (std::size_t i = 0; i < hub_.shard_count(); ++i) {
    Shard& shard = hub_.shard(i);
    boost::asio::post(shard.loop(), [this, &shard, target, reason] {
      disconnected_.fetch_add(shard.disconnect_in_loop(target.user, target.session, reason), std::memory_order_relaxed);
    });
  }
}

void ServerActions::delete_room(const std::string& id, DeleteReason why, DeletedFn done) {
  store_.find(id, [this, id, why, done = std::move(done)](std::error_code ec, std::optional<store::Room> room) mutable {
    if (ec) return done(Error::store_unavailable, {});
    if (!room) return done(Error::unknown_room, {});
    // An idle sweep removes the room only if no node marked it active since the sweep looked.
    const std::int64_t idle_before = why == DeleteReason::idle ? now_ms() - idle_expiry_.count() * 1000 : 0;
    store_.remove(id, idle_before, [this, room = std::move(*room), why, done = std::move(done)](std::error_code rec,
                                                                                              bool removed) mutable {
      if (rec) return done(Error::store_unavailable, {});
      // Another node (or call) removed it first, or it came back to life: theirs to announce.
      if (!removed) return done(Error::unknown_room, {});
      finish_delete(std::move(room), why, std::move(done));
    });
  });
}

void ServerActions::finish_delete(store::Room room, DeleteReason why, DeletedFn done) {
  (why == DeleteReason::api ? deleted_api_ : deleted_idle_).fetch_add(1, std::memory_order_relaxed);
  hub_.forget_room(room.id);
  log::event("room_deleted", {{"room", room.id}, {"why", to_string(why)}});
  if (auto* events = hub_.event_sink(); events && events->wants(ChatEvent::Kind::room)) {
    boost::json::object data{{"roomId", room.id}, {"name", room.name}, {"deleted", true}, {"why", to_string(why)}};
    events->on_event({ChatEvent::Kind::room, room.id, "r-" + room.id + "-deleted", 0, boost::json::serialize(data)});
  }
  control_.send(std::string(kRoomDeleted), boost::json::serialize(boost::json::object{{"roomId", room.id}}),
                [id = room.id](std::error_code ec) {
                  // The room is gone from the store either way: nodes that missed this refuse
                  // its SENDs and SUBSCRIBEs once their cache of known rooms asks the store.
                  if (ec) log::event("room_delete_unannounced", {{"room", id}, {"why", ec.message()}});
                });
  bus_.delete_history(room.id, [id = room.id](std::error_code ec) {
    if (ec) log::event("room_history_kept", {{"room", id}, {"why", ec.message()}});
  });
  done({}, std::move(room));
}

void ServerActions::on_room_deleted(const bus::ControlMessage& m) {
  boost::system::error_code ec;
  auto v = boost::json::parse(m.body, ec);
  if (ec || !v.is_object()) return;
  auto* f = v.as_object().if_contains("roomId");
  if (!f || !f->is_string() || !is_room_id(f->as_string())) return;
  close_room_here(std::string(f->as_string()));
}

void ServerActions::close_room_here(const std::string& room_id) {
  hub_.forget_room(room_id);
  boost::json::object notice{{"type", "SYSTEM"},   {"event", "ROOM_CLOSED"},
                             {"roomId", room_id},  {"sender", ""},
                             {"message", hub_.config().texts.room_closed}, {"ts", now_ms()}};
  auto shared = std::make_shared<SharedMessage>();
  shared->room_id = room_id;
  shared->frame = stomp::encode_message(std::string(kRoomPrefix) + room_id, room_id + "-closed", "application/json",
                                        boost::json::serialize(notice));
  SharedMessagePtr msg = std::move(shared);
  for (std::size_t i = 0; i < hub_.shard_count(); ++i) {
    Shard& shard = hub_.shard(i);
    boost::asio::post(shard.loop(), [&shard, msg] { shard.end_room_in_loop(msg); });
  }
}

void ServerActions::note_active(const std::string& room_id) {
  if (idle_expiry_.count() == 0) return;
  bool first;
  {
    std::lock_guard lock(active_mu_);
    first = active_.insert(room_id).second;
  }
  // The room's first activity here since the last sweep is written at once, not at the next
  // sweep: a room someone just joined or wrote to must not be expired by another node's sweep
  // in between. Later activity in the same period changes nothing the sweeps could see.
  if (first) store_.touch({room_id}, now_ms(), [](std::error_code) {});
}

void ServerActions::start() {
  if (idle_expiry_.count() > 0) boost::asio::post(timer_.get_executor(), [this] { schedule_sweep(); });
  boost::asio::post(watch_.get_executor(), [this] { schedule_watch(); });
}

void ServerActions::stop() {
  if (stopped_.exchange(true)) return;
  boost::asio::post(timer_.get_executor(), [this] {
    timer_.cancel();
    watch_.cancel();
  });
}

void ServerActions::schedule_watch() {
  if (stopped_.load()) return;
  watch_.expires_after(std::chrono::seconds(1));
  watch_.async_wait([this](boost::system::error_code ec) {
    if (ec || stopped_.load()) return;
    // Once the engines answer again (a lookup now would fail and settle nothing).
    if (const auto gaps = bus_.control_gaps(); gaps != control_gaps_seen_ && bus_.up() && store_.up()) {
      control_gaps_seen_ = gaps;
      reconcile();
    }
    schedule_watch();
  });
}

// A room deleted while this node was cut off from the bus was announced to the others only:
// this node still has it cached, and its subscribers were never told (finding of s17: their
// SENDs were published to the deleted room, bringing its keys back). After an outage every
// cached room is asked for again on its next use, and the subscribed ones at once.
void ServerActions::reconcile() {
  hub_.forget_known_rooms();
  for (auto& id : hub_.rooms_with_subscribers()) {
    store_.find(id, [this, id](std::error_code ec, std::optional<store::Room> room) {
      if (ec || room) return;
      reconciled_.fetch_add(1, std::memory_order_relaxed);
      log::event("room_deleted", {{"room", id}, {"why", "found deleted after an outage"}});
      close_room_here(id);
      // What SENDs of the moment before put back of its seq, epoch and history goes too.
      bus_.delete_history(id, [id](std::error_code dec) {
        if (dec) log::event("room_history_kept", {{"room", id}, {"why", dec.message()}});
      });
    });
  }
}

void ServerActions::schedule_sweep() {
  if (stopped_.load()) return;
  timer_.expires_after(sweep_period(idle_expiry_));
  timer_.async_wait([this](boost::system::error_code ec) {
    if (!ec && !stopped_.load()) sweep();
  });
}

// Marks the rooms active here (subscribed now, or published to since the last sweep), then
// deletes rooms idle past the expiry. The next sweep is scheduled once this one is answered,
// so a slow store never has two sweeps of one node in flight.
void ServerActions::sweep() {
  std::vector<std::string> rooms = hub_.rooms_with_subscribers();
  {
    std::lock_guard lock(active_mu_);
    rooms.insert(rooms.end(), active_.begin(), active_.end());
    active_.clear();
  }
  const std::int64_t now = now_ms();
  store_.touch(std::move(rooms), now, [this, now](std::error_code ec) {
    if (ec) {
      sweeps_failed_.fetch_add(1, std::memory_order_relaxed);
      return boost::asio::post(timer_.get_executor(), [this] { schedule_sweep(); });
    }
    store_.idle(now - idle_expiry_.count() * 1000, kSweepBatch, [this](std::error_code lec, std::vector<store::Room> idle) {
      if (lec) sweeps_failed_.fetch_add(1, std::memory_order_relaxed);
      auto left = std::make_shared<std::atomic<std::size_t>>(idle.size() + 1);
      auto one_done = [this, left] {
        if (left->fetch_sub(1) == 1) boost::asio::post(timer_.get_executor(), [this] { schedule_sweep(); });
      };
      for (auto& room : idle) delete_room(room.id, DeleteReason::idle, [one_done](std::error_code, store::Room) { one_done(); });
      one_done();
    });
  });
}

std::string ServerActions::metrics_text() const {
  std::ostringstream out;
  out << "# HELP chatd_disconnected_sessions_total Sessions this node closed for POST /api/disconnect.\n"
         "# TYPE chatd_disconnected_sessions_total counter\n"
      << "chatd_disconnected_sessions_total " << disconnected_.load() << '\n'
      << "# HELP chatd_rooms_deleted_total Rooms this node deleted, by DELETE /api/rooms or idle expiry.\n"
         "# TYPE chatd_rooms_deleted_total counter\n"
      << "chatd_rooms_deleted_total{why=\"api\"} " << deleted_api_.load() << '\n'
      << "chatd_rooms_deleted_total{why=\"idle\"} " << deleted_idle_.load() << '\n'
      << "# HELP chatd_rooms_found_deleted_total Subscribed rooms this node found deleted after an outage (their announcement was missed).\n"
         "# TYPE chatd_rooms_found_deleted_total counter\n"
      << "chatd_rooms_found_deleted_total " << reconciled_.load() << '\n'
      << "# HELP chatd_rooms_expired_total Rooms this node deleted for --room-idle-expiry.\n"
         "# TYPE chatd_rooms_expired_total counter\n"
      << "chatd_rooms_expired_total " << deleted_idle_.load() << '\n'
      << "# HELP chatd_room_sweeps_failed_total Idle-room sweeps the store could not answer.\n"
         "# TYPE chatd_room_sweeps_failed_total counter\n"
      << "chatd_room_sweeps_failed_total " << sweeps_failed_.load() << '\n';
  return out.str();
}

}  // namespace chatd::chat
