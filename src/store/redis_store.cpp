// The redis store: rooms in the hash CHAT_ROOM (field = roomId, value = the room's JSON, as
// the Spring chat tutorials keep it), so every node and every restart sees the same rooms.
// All Redis traffic runs on the engine thread over one pipelined connection; callers' threads
// only post to it.
#include <boost/asio/post.hpp>

#include <hiredis/hiredis.h>

#include <algorithm>
#include <stdexcept>

#include "redis/connection.h"
#include "redis/endpoint.h"
#include "redis/loop.h"
#include "store/room_store.h"

namespace chatd::store {
namespace {

constexpr const char* kRoomsKey = "CHAT_ROOM";

// Creates the room unless the hash already holds max_rooms other rooms, in one step so two
// nodes cannot both pass the check. Returns 1 when stored, 0 when full.
constexpr const char* kCreateScript = R"lua(
if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) and redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
)lua";

std::error_code to_error(redis::Status st) {
  return st == redis::Status::stopped ? Error::stopped : Error::engine_down;
}

class Core : public std::enable_shared_from_this<Core> {
 public:
  Core(boost::asio::io_context& io, redis::Endpoint ep, std::size_t max_rooms)
      : io_(io), display_(ep.display()), max_rooms_(max_rooms) {
    conn_ = redis::Connection::create(io, std::move(ep), {.name = "store"}, {});
    create_script_ = conn_->add_script(kCreateScript);
  }

  void start() {
    boost::asio::post(io_, [self = shared_from_this()] { self->conn_->start_in_loop(); });
  }

  void create_in_loop(Room room, CreateFn done) {
    conn_->eval_in_loop(create_script_, {kRoomsKey}, {room.id, to_json(room), std::to_string(max_rooms_)},
                        [done = std::move(done)](redis::Status st, const redisReply* r) {
                          if (st != redis::Status::ok) return done(to_error(st));
                          if (r->type != REDIS_REPLY_INTEGER) return done(Error::engine_down);
                          done(r->integer == 1 ? std::error_code{} : Error::full);
                        });
  }

  // Rooms come back sorted by name, then id: the hash keeps no order and every node must
  // list the same rooms the same way.
  void list_in_loop(ListFn done) {
    conn_->command_in_loop({"HGETALL", kRoomsKey}, [done = std::move(done)](redis::Status st, const redisReply* r) {
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
    conn_->command_in_loop({"HGET", kRoomsKey, std::move(room_id)},
                           [done = std::move(done)](redis::Status st, const redisReply* r) {
                             if (st != redis::Status::ok) return done(to_error(st), std::nullopt);
                             if (r->type == REDIS_REPLY_NIL) return done({}, std::nullopt);
                             if (r->type != REDIS_REPLY_STRING) return done(Error::engine_down, std::nullopt);
                             auto room = room_from_json(std::string_view(r->str, r->len));
                             if (!room) return done(Error::corrupt, std::nullopt);
                             done({}, std::move(room));
                           });
  }

  void stop_in_loop() { conn_->stop_in_loop(); }

  boost::asio::io_context& io_;
  std::string display_;
  std::size_t max_rooms_;
  std::shared_ptr<redis::Connection> conn_;
  std::size_t create_script_ = 0;
  std::atomic<bool> stopped_{false};
};

class RedisStore final : public RoomStore {
 public:
  RedisStore(boost::asio::io_context& io, redis::Endpoint ep, std::size_t max_rooms)
      : core_(std::make_shared<Core>(io, std::move(ep), max_rooms)) {
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
  return std::make_unique<RedisStore>(engine, redis::verified_endpoint(cfg.redis_url), cfg.max_rooms);
}

}  // namespace chatd::store
