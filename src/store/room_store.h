// chatd::store — where rooms live. One implementation per engine: embedded (SQLite file in
// the data dir) or redis (hash CHAT_ROOM, field = roomId, value = room JSON).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <system_error>
#include <vector>

#include "redis/timing.h"

namespace boost::asio { class io_context; }

namespace chatd::store {

enum class Error {
  ok = 0,
  engine_down = 1,  // the store is unreachable now
  corrupt,          // a stored value could not be read back
  full,             // the room limit is reached
  members_full,     // the restricted rooms' member lists together are at their bound
  stopped,          // the store is shutting down
  unsettled,        // the store went away before it answered a change, which may have been made
};
const std::error_category& error_category() noexcept;
std::error_code make_error_code(Error e) noexcept;

struct Room {
  // A constructor rather than an aggregate: Room{id, name} stays the way to write a public room.
  Room(std::string room_id = {}, std::string room_name = {}, bool is_restricted = false, std::vector<std::string> member_subs = {})
      : id(std::move(room_id)), name(std::move(room_name)), restricted(is_restricted), members(std::move(member_subs)) {}
  std::string id;    // a UUID, lower case
  std::string name;
  // --auth jwt: a restricted room admits only its `members` (token subs) and tokens whose
  // `rooms` claim names it; a public room admits everyone.
  bool restricted = false;
  std::vector<std::string> members;
};

// Returns the room's JSON, {"roomId":"…","name":"…"}: the value kept in CHAT_ROOM and the
// REST answer, as in the Spring chat tutorials; a restricted room adds "restricted":true and
// "members":[…].
std::string to_json(const Room& r);
// Returns the room read from its JSON, or nullopt when it is not a room.
std::optional<Room> room_from_json(std::string_view json);

using CreateFn = std::function<void(std::error_code)>;
using ListFn = std::function<void(std::error_code, std::vector<Room>)>;
using FindFn = std::function<void(std::error_code, std::optional<Room>)>;
// `removed`: whether this call removed the room (false: it did not exist, or stayed; see remove).
using RemoveFn = std::function<void(std::error_code, bool removed)>;

// Callbacks run once each, on any thread (possibly inside the call itself); they must not block.
class RoomStore {
 public:
  virtual ~RoomStore() = default;
  virtual void create(Room room, CreateFn done) = 0;
  virtual void list(ListFn done) = 0;
  virtual void find(const std::string& room_id, FindFn done) = 0;
  // Removes the room, atomically: of two nodes removing one room, one gets removed = true.
  // With idle_before_ms != 0 it is removed only if its last activity (touch, or creation) is
  // older than that (idle expiry: a room touched since the sweep looked stays).
  virtual void remove(const std::string& room_id, std::int64_t idle_before_ms, RemoveFn done) = 0;
  // Records that these rooms were active at `now_ms` (ids of rooms that do not exist are
  // ignored). A room's activity never goes back.
  virtual void touch(std::vector<std::string> room_ids, std::int64_t now_ms, CreateFn done) = 0;
  // Returns up to `limit` rooms last active before `before_ms` (rooms from before activity
  // was recorded count as active when first asked).
  virtual void idle(std::int64_t before_ms, std::size_t limit, ListFn done) = 0;
  virtual bool up() const = 0;
  virtual std::string describe() const = 0;
  virtual void stop() = 0;
};

struct StoreConfig {
  std::string kind = "embedded";  // embedded | redis
  std::string data_dir = "./data";
  std::string redis_url = "redis://127.0.0.1:6379";
  std::size_t max_rooms = 100000;
  // Entries of all restricted rooms' member lists together: every node holds them all, and
  // each room list reads them whole.
  std::size_t max_members_total = 200000;
  redis::Timing redis_timing;  // --redis-*-ms, shared with the bus
};

// Returns the store named by cfg.kind. Throws std::runtime_error when it cannot start
// (unwritable data dir, bad Redis URL or password) and std::invalid_argument for an unknown kind.
std::unique_ptr<RoomStore> make_store(const StoreConfig& cfg, boost::asio::io_context& engine);
std::unique_ptr<RoomStore> make_embedded_store(const StoreConfig& cfg);
std::unique_ptr<RoomStore> make_redis_store(const StoreConfig& cfg, boost::asio::io_context& engine);

}  // namespace chatd::store

namespace std {
template <>
struct is_error_code_enum<chatd::store::Error> : true_type {};
}  // namespace std
