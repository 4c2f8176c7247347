// Room-checked publish: a SEND (or a server API publish) reaches the bus only for a room the
// store knows and the sender may enter, within the room's send rate on this node, stamped with a node-unique id and the
// server time. Shared by every worker thread; every member may be called from any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <system_error>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "bus/message_bus.h"
#include "chat/events.h"
#include "chat/identity.h"
#include "chat/limits.h"
#include "chat/rate_limit.h"
#include "chat/refusals.h"
#include "chat/rooms.h"
#include "chat/rules.h"
#include "store/room_store.h"

namespace chatd::chat {

class Publisher {
 public:
  // Message ids are `id_prefix` plus a counter. Refused SENDs are counted in `refusals`.
  Publisher(const Limits& limits, const Texts& texts, std::string id_prefix, store::RoomStore& store,
            bus::MessageBus& bus, Refusals& refusals);
  Publisher(const Publisher&) = delete;
  Publisher& operator=(const Publisher&) = delete;

  // Where published messages are reported (webhooks); null: nowhere. Set before the first publish.
  void set_event_sink(EventSink* sink) { events_ = sink; }

  // Checks that the room exists, stamps id and ts, publishes. `done` runs on any thread with
  // the message's seq, or Error::unknown_room, store_unavailable, room_forbidden, room_busy or
  // publish_failed. A non-empty `client_id` (x-client-id) already used in the room within the
  // bus's window is not published again: `done` gets the first one's seq. One sender's
  // messages leave in the order they came, also while the room's first lookup is in flight.
  // With `who` (--auth jwt) a restricted room `who` may not enter is refused (room_forbidden).
  void publish(const ChatMessage& m, std::string client_id, bus::PublishedFn done, IdentityPtr who = {});

  // Publishes `m` to a room known_room() said exists. `rated`: counts against
  // Limits::room_send_rate (the server's own ENTER/QUIT announcements do not). With `who`
  // (--auth jwt) a restricted room it may not enter is refused (room_forbidden).
  void publish_known(const ChatMessage& m, std::string client_id, bus::PublishedFn done, bool rated = true,
                     const Identity* who = nullptr);

  // The server API's publish (Rooms::publish_from_api): the room must exist; no room rate.
  void publish_from_api(ChatMessage m, Rooms::PublishedFn done);

  // Returns whether room `id` is known to exist (a cache of what the store said; false means
  // "ask the store", e.g. with check_room).
  bool known_room(const std::string& id);
  // Answers whether room `id` exists: an empty code, Error::unknown_room or
  // Error::store_unavailable. Runs `done` at once for a known room, else on any thread.
  void check_room(const std::string& id, std::function<void(std::error_code)> done);
  // Returns whether `who` may enter room `id`, a room known_room() knows (chat::may_enter;
  // null `who`: --auth none, yes).
  bool may_enter(const Identity* who, const std::string& id);
  // Records that `room` exists (this node just created it), and who may enter it.
  void remember_room(const store::Room& room);
  // Room `id` was deleted: it is no longer known to exist here.
  void forget_room(const std::string& id);
  // Forgets every known room (not what restricts them: a check in flight must not find a
  // restricted room open).
  void forget_known_rooms();

  // Called with the room of every message handed to the bus (idle expiry); set before start.
  void set_activity_hook(std::function<void(const std::string& room_id)> hook) { on_publish_ = std::move(hook); }

  // Messages handed to the bus by this node.
  std::uint64_t published() const { return published_.load(std::memory_order_relaxed); }

 private:
  // Returns `m` as it travels: stamped with a new id (also put in `id`, if given) and the time.
  std::string stamp_new(const ChatMessage& m, std::string* id = nullptr);
  // Tells the event sink, if it wants messages, that `payload` was published with `seq`.
  // `dedupe_key` is what the engine de-duplicates the message by: its x-client-id key, else its id.
  void report_message(const std::string& room_id, std::uint64_t seq, std::string_view epoch, std::string_view dedupe_key,
                      std::string payload);
  void remember_known(const std::string& id);
  // Caches who may enter `room` if it is restricted; before the room is remembered as known.
  void remember_access(const store::Room& room);

  const Limits& limits_;
  const Texts& texts_;
  const std::string id_prefix_;
  store::RoomStore& store_;
  bus::MessageBus& bus_;
  Refusals& refusals_;
  EventSink* events_ = nullptr;
  std::function<void(const std::string&)> on_publish_;

  struct PendingPublish {
    ChatMessage message;
    std::string client_id;
    bus::PublishedFn done;
    IdentityPtr who;
  };
  std::mutex lookups_mu_;
  std::unordered_map<std::string, std::vector<PendingPublish>> lookups_;  // rooms being looked up

  std::shared_mutex rooms_mu_;
  std::unordered_set<std::string> known_rooms_;  // a deleted room leaves it (forget_room) on every node
  std::unordered_map<std::string, store::Room> restricted_rooms_;  // of the known ones, by id

  // Per-room SEND buckets (Limits::room_send_rate), for rooms known to exist only.
  KeyedBuckets room_rate_;

  std::atomic<std::uint64_t> next_id_{0};
  std::atomic<std::uint64_t> published_{0};
};

}  // namespace chatd::chat
