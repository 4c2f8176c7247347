// The redis store: rooms in the hash CHAT_ROOM (field = roomId, value = the room's JSON, as
// the Spring chat tutorials keep it), so every node and every restart sees the same rooms.
// All Redis traffic runs on the engine thread over one pipelined connection; callers' threads
// only post to it.
//
// On a Redis Cluster the hash is still one key, so all room records share its slot (one shard
// holds them, with the activity set, which is hash-tagged into the same slot). That is a
// choice: the room list stays one HGETALL, atomic with the room limit, and readable by the
// Spring tutorials' clients; room records are small and read only on room create, list, lookup
// and expiry, while every message goes to its room's own slot (see the redis bus). A deployment
// with millions of rooms would index them per slot instead.
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

#include <hiredis/hiredis.h>

#include <algorithm>
#include <chrono>
#include <set>
#include <stdexcept>

#include "redis/endpoint.h"
#include "redis/loop.h"
#include "redis/shards.h"
#include "store/room_store.h"

namespace chatd::store {
namespace {

constexpr const char* kRoomsKey = "CHAT_ROOM";
// Each room's last activity (ms), a sorted set for idle expiry. The hash tag puts it in
// CHAT_ROOM's Redis Cluster slot, so one script may use both.
constexpr const char* kActiveKey = "{CHAT_ROOM}:active";
// The entries of all restricted rooms' member lists (--max-room-members-total), same slot.
constexpr const char* kMembersKey = "{CHAT_ROOM}:members";

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Creates the room unless the hash already holds max_rooms other rooms, or its members would
// take the restricted rooms' member count (KEYS[3]) past ARGV[6], in one step so two nodes
// cannot both pass a check, and marks it active now. Returns 1 when stored, 0 when full, -1
// when the members do not fit. A room already there (a create asked again) counts once.
constexpr const char* kCreateScript = R"lua(
local fresh = redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0
if fresh and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
local n = tonumber(ARGV[5])
if fresh and n > 0 then
  if tonumber(redis.call('GET', KEYS[3]) or '0') + n > tonumber(ARGV[6]) then return -1 end
  redis.call('INCRBY', KEYS[3], n)
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
return 1
)lua";

// KEYS: rooms, active, members. ARGV: id, idle_before (0: remove whatever its activity). Returns 1
// when this call removed the room (HDEL answers 1 once, so one node of many wins), 0 when it
// stays for its activity, -1 when it is not there.
constexpr const char* kRemoveScript = R"lua(
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then
  redis.call('ZREM', KEYS[2], ARGV[1])
  return -1
end
local cut = tonumber(ARGV[2])
if cut > 0 then
  local s = redis.call('ZSCORE', KEYS[2], ARGV[1])
  if s and tonumber(s) >= cut then return 0 end
end
local ok, room = pcall(cjson.decode, redis.call('HGET', KEYS[1], ARGV[1]))
if ok and type(room) == 'table' and type(room.members) == 'table' and #room.members > 0 then
  -- Rooms from before the count was kept were never added: it stops at 0.
  if redis.call('DECRBY', KEYS[3], #room.members) < 0 then redis.call('SET', KEYS[3], 0) end
end
local n = redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return n
)lua";

// KEYS: rooms, active. ARGV: now, ids... Marks existing rooms active; never moves one back.
constexpr const char* kTouchScript = R"lua(
local now = tonumber(ARGV[1])
for i = 2, #ARGV do
  if redis.call('HEXISTS', KEYS[1], ARGV[i]) == 1 then
    local s = redis.call('ZSCORE', KEYS[2], ARGV[i])
    if not s or tonumber(s) < now then redis.call('ZADD', KEYS[2], now, ARGV[i]) end
  end
end
return 1
)lua";

// KEYS: rooms, active. ARGV: before, limit, now. Returns ids of rooms last active before
// `before`. Rooms created before activity was kept are marked active now; marks of rooms that
// are gone are dropped.
constexpr const char* kIdleScript = R"lua(
if redis.call('ZCARD', KEYS[2]) < redis.call('HLEN', KEYS[1]) then
  for _, id in ipairs(redis.call('HKEYS', KEYS[1])) do redis.call('ZADD', KEYS[2], 'NX', ARGV[3], id) end
end
local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[1], 'LIMIT', 0, ARGV[2])) do
  if redis.call('HEXISTS', KEYS[1], id) == 1 then out[#out + 1] = id else redis.call('ZREM', KEYS[2], id) end
end
return out
)lua";

std::error_code to_error(redis::Status st) {
  return st == redis::Status::stopped ? Error::stopped : Error::engine_down;
}

class Core : public std::enable_shared_from_this<Core> {
 public:
  Core(boost::asio::io_context& io, redis::Target target, std::size_t max_rooms, std::size_t max_members,
       const redis::Timing& timing)
      : io_(io), display_(target.display()), max_rooms_(max_rooms), max_members_(max_members),
        settle_for_(timing.connect_timeout + timing.backoff_max) {
    conn_ = redis::Shards::create(io, std::move(target), {.name = "store", .timing = timing}, {});
  }

  void start() {
    boost::asio::post(io_, [self = shared_from_this()] { self->conn_->start_in_loop(); });
  }

  void create_in_loop(Room room, CreateFn done) {
    settle_in_loop(kCreateScript, {kRoomsKey, kActiveKey, kMembersKey},
                   {room.id, to_json(room), std::to_string(max_rooms_), std::to_string(now_ms()),
                    std::to_string(room.members.size()), std::to_string(max_members_)},
                   [done = std::move(done)](std::error_code ec, const redisReply* r, bool) {
                     if (ec) return done(ec);
                     if (r->type != REDIS_REPLY_INTEGER) return done(Error::engine_down);
                     done(r->integer == 1 ? std::error_code{} : r->integer == -1 ? Error::members_full : Error::full);
                   });
  }

  // Rooms come back sorted by name, then id: the hash keeps no order and every node must
  // list the same rooms the same way.
  void list_in_loop(ListFn done) {
    conn_->command_in_loop(kRoomsKey, {"HGETALL", kRoomsKey}, [done = std::move(done)](redis::Status st, const redisReply* r) {
      if (st != redis::Status::ok) return done(to_error(st), {});
      if (r->type != REDIS_REPLY_ARRAY) return done(Error::engine_down, {});
      std::vector<Room> rooms;
      rooms.reserve(r->elements / 2);
      for (std::size_t i = 1; i < r->elements; i += 2) {
        const redisReply* v = r->element[i];
        if (v->type != REDIS_REPLY_STRING) continue;
        // One unreadable value (written by someone else) must not hide every other room.
        if (auto room = room_from_json(std::string_view(v->str, v->len))) rooms.push_back(std::move(*room));
      }
      std::sort(rooms.begin(), rooms.end(), [](const Room& a, const Room& b) {
        return a.name != b.name ? a.name < b.name : a.id < b.id;
      });
      done({}, std::move(rooms));
    });
  }

  void find_in_loop(std::string room_id, FindFn done) {
    conn_->command_in_loop(kRoomsKey, {"HGET", kRoomsKey, std::move(room_id)},
                           [done = std::move(done)](redis::Status st, const redisReply* r) {
                             if (st != redis::Status::ok) return done(to_error(st), std::nullopt);
                             if (r->type == REDIS_REPLY_NIL) return done({}, std::nullopt);
                             if (r->type != REDIS_REPLY_STRING) return done(Error::engine_down, std::nullopt);
                             auto room = room_from_json(std::string_view(r->str, r->len));
                             if (!room) return done(Error::corrupt, std::nullopt);
                             done({}, std::move(room));
                           });
  }

  void remove_in_loop(std::string room_id, std::int64_t idle_before_ms, RemoveFn done) {
    settle_in_loop(kRemoveScript, {kRoomsKey, kActiveKey, kMembersKey}, {std::move(room_id), std::to_string(idle_before_ms)},
                   [done = std::move(done)](std::error_code ec, const redisReply* r, bool asked_again) {
                     if (ec) return done(ec, false);
                     if (r->type != REDIS_REPLY_INTEGER) return done(Error::engine_down, false);
                     // Gone when asked again: the lost first run most likely removed it, and
                     // announcing a removal twice does no harm where missing one would.
                     done({}, r->integer == 1 || (asked_again && r->integer == -1));
                   });
  }

  void touch_in_loop(std::vector<std::string> ids, std::int64_t now, CreateFn done) {
    if (ids.empty()) return done({});
    ids.insert(ids.begin(), std::to_string(now));
    conn_->eval_in_loop(kTouchScript, {kRoomsKey, kActiveKey}, std::move(ids),
                        [done = std::move(done)](redis::Status st, const redisReply* r) {
                          if (st != redis::Status::ok) return done(to_error(st));
                          done(r->type == REDIS_REPLY_INTEGER ? std::error_code{} : Error::engine_down);
                        });
  }

  void idle_in_loop(std::int64_t before_ms, std::size_t limit, ListFn done) {
    conn_->eval_in_loop(kIdleScript, {kRoomsKey, kActiveKey},
                        {std::to_string(before_ms), std::to_string(limit), std::to_string(now_ms())},
                        [done = std::move(done)](redis::Status st, const redisReply* r) {
                          if (st != redis::Status::ok) return done(to_error(st), {});
                          if (r->type != REDIS_REPLY_ARRAY) return done(Error::engine_down, {});
                          std::vector<Room> rooms;  // ids only: the caller looks each one up
                          for (std::size_t i = 0; i < r->elements; ++i)
                            if (r->element[i]->type == REDIS_REPLY_STRING)
                              rooms.push_back(Room{std::string(r->element[i]->str, r->element[i]->len), {}});
                          done({}, std::move(rooms));
                        });
  }

  void stop_in_loop() {
    conn_->stop_in_loop();
    for (const auto& t : waits_) t->cancel();
  }

  // Runs a script that may safely run twice (create and remove). Redis runs what reached it
  // even when its answer is lost with the connection, so a lost answer does not say whether
  // the room changed: the script is asked again once the connection is back, and that answer
  // settles it (`asked_again` says it came from a repeat). Past settle_for, Error::unsettled.
  using SettledFn = std::function<void(std::error_code, const redisReply*, bool asked_again)>;
  void settle_in_loop(const char* script, std::vector<std::string> keys, std::vector<std::string> args, SettledFn done) {
    struct Attempt {
      std::vector<std::string> keys, args;
      SettledFn done;
      std::chrono::steady_clock::time_point deadline{};  // set by the first lost answer
      std::chrono::milliseconds pause = redis::kBackoffMin;
    };
    auto a = std::make_shared<Attempt>(Attempt{std::move(keys), std::move(args), std::move(done)});
    run_attempt_in_loop(script, std::move(a));
  }

  template <class AttemptPtr>
  void run_attempt_in_loop(const char* script, AttemptPtr a) {
    conn_->eval_in_loop(script, a->keys, a->args, [self = shared_from_this(), script, a](redis::Status st, const redisReply* r) {
      const bool again = a->deadline != std::chrono::steady_clock::time_point{};
      if (st == redis::Status::ok) return a->done({}, r, again);
      if (st == redis::Status::stopped) return a->done(Error::stopped, nullptr, again);
      // Never sent, and nothing sent before: nothing changed.
      if (st == redis::Status::down && !again) return a->done(Error::engine_down, nullptr, false);
      const auto now = std::chrono::steady_clock::now();
      if (!again) a->deadline = now + self->settle_for_;
      if (self->stopped_) return a->done(Error::stopped, nullptr, true);
      if (now >= a->deadline) return a->done(Error::unsettled, nullptr, true);
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(a->deadline - now);
      auto timer = std::make_shared<boost::asio::steady_timer>(self->io_, std::min(a->pause, left));
      a->pause = std::min(a->pause * 2, std::chrono::milliseconds(1000));
      self->waits_.insert(timer);
      timer->async_wait([self, script, a, timer](const boost::system::error_code&) {
        self->waits_.erase(timer);
        self->run_attempt_in_loop(script, a);  // after stop: answered `stopped` by the connection
      });
    });
  }

  boost::asio::io_context& io_;
  std::string display_;
  std::size_t max_rooms_;
  std::size_t max_members_;
  // How long a lost answer is asked again: a reconnect after a dropped connection (a ping
  // timeout, a failover) takes up to connect_timeout plus a backoff pause.
  std::chrono::milliseconds settle_for_;
  std::shared_ptr<redis::Shards> conn_;
  std::set<std::shared_ptr<boost::asio::steady_timer>> waits_;  // settle_in_loop's pauses
  std::atomic<bool> stopped_{false};
};

class RedisStore final : public RoomStore {
 public:
  RedisStore(boost::asio::io_context& io, redis::Target target, std::size_t max_rooms, std::size_t max_members,
             const redis::Timing& timing)
      : core_(std::make_shared<Core>(io, std::move(target), max_rooms, max_members, timing)) {
    core_->start();
  }
  ~RedisStore() override { stop(); }

  void create(Room room, CreateFn done) override {
    if (core_->stopped_) return done(Error::stopped);
    boost::asio::post(core_->io_, [c = core_, room = std::move(room), done = std::move(done)]() mutable {
      c->create_in_loop(std::move(room), std::move(done));
    });
  }
  void list(ListFn done) override {
    if (core_->stopped_) return done(Error::stopped, {});
    boost::asio::post(core_->io_, [c = core_, done = std::move(done)]() mutable { c->list_in_loop(std::move(done)); });
  }
  void find(const std::string& room_id, FindFn done) override {
    if (core_->stopped_) return done(Error::stopped, std::nullopt);
    boost::asio::post(core_->io_, [c = core_, id = room_id, done = std::move(done)]() mutable {
      c->find_in_loop(std::move(id), std::move(done));
    });
  }

  void remove(const std::string& room_id, std::int64_t idle_before_ms, RemoveFn done) override {
    if (core_->stopped_) return done(Error::stopped, false);
    boost::asio::post(core_->io_, [c = core_, id = room_id, idle_before_ms, done = std::move(done)]() mutable {
      c->remove_in_loop(std::move(id), idle_before_ms, std::move(done));
    });
  }
  void touch(std::vector<std::string> room_ids, std::int64_t now_ms, CreateFn done) override {
    if (core_->stopped_) return done(Error::stopped);
    boost::asio::post(core_->io_, [c = core_, ids = std::move(room_ids), now_ms, done = std::move(done)]() mutable {
      c->touch_in_loop(std::move(ids), now_ms, std::move(done));
    });
  }
  void idle(std::int64_t before_ms, std::size_t limit, ListFn done) override {
    if (core_->stopped_) return done(Error::stopped, {});
    boost::asio::post(core_->io_, [c = core_, before_ms, limit, done = std::move(done)]() mutable {
      c->idle_in_loop(before_ms, limit, std::move(done));
    });
  }

  bool up() const override { return core_->conn_->up(); }
  std::string describe() const override { return "redis " + core_->display_ + ": " + core_->conn_->describe(); }

  void stop() override {
    if (core_->stopped_.exchange(true)) return;
    redis::run_in_loop_and_wait(core_->io_, [c = core_] { c->stop_in_loop(); });
  }

 private:
  std::shared_ptr<Core> core_;
};

}  // namespace

std::unique_ptr<RoomStore> make_redis_store(const StoreConfig& cfg, boost::asio::io_context& engine) {
  return std::make_unique<RedisStore>(engine, redis::verified_target(cfg.redis_url, cfg.redis_timing.start_timeout),
                                      cfg.max_rooms, cfg.max_members_total, cfg.redis_timing);
}

}  // namespace chatd::store
