// The narrow doors net uses into the chat core: room operations for REST, and a read-only
// view of the node's health and counters for /healthz and /metrics. net never calls the store
// or the bus itself; the Hub implements both doors.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "bus/presence.h"
#include "chat/identity.h"
#include "chat/refusals.h"
#include "chat/rules.h"
#include "store/room_store.h"

namespace chatd::chat {

class Rooms {
 public:
  using ListFn = std::function<void(std::error_code, std::vector<store::Room>)>;
  using FindFn = std::function<void(std::error_code, std::optional<store::Room>)>;
  using CreateFn = std::function<void(std::error_code, store::Room)>;
  // A page of a room's history: the message bodies as subscribers get them, ascending seq.
  struct Page {
    std::vector<std::string> bodies;
    std::string epoch;
    std::uint64_t first_seq = 0;  // history is whole from this seq on (0: nothing retained)
    std::uint64_t last_seq = 0;   // newest assigned
  };
  using PageFn = std::function<void(std::error_code, Page)>;

  virtual ~Rooms() = default;
  // Every room. `done` runs on any thread.
  virtual void list_rooms(ListFn done) = 0;
  // The room whose id is `id` (a UUID in any case), or nullopt. `done` runs on any thread.
  virtual void find_room(std::string_view id, FindFn done) = 0;
  // Creates a room named `name` (as check_room_name returned it); store::Error::full when the
  // store holds Limits::max_rooms. `done` runs on any thread.
  virtual void create_room(std::string name, CreateFn done) = 0;
  // Creates a restricted room (--auth jwt) that admits `members` (token subs, the creator among
  // them) and tokens whose `rooms` claim names it. `done` runs on any thread.
  virtual void create_restricted_room(std::string name, std::vector<std::string> members, CreateFn done) = 0;
  // Publishes `m` for the server API (POST /api/publish): the room must exist, as for a SEND.
  // `done` gets the message as subscribers receive it, with its seq, as a JSON object; or
  // chat::Error::unknown_room, store_unavailable or publish_failed. Runs on any thread.
  using PublishedFn = std::function<void(std::error_code, std::string message_json)>;
  virtual void publish_from_api(ChatMessage m, PublishedFn done) = 0;
  // The newest `limit` retained messages of room `id` with seq < `before` (0: no bound);
  // Error::unknown_room when there is no such room. `done` runs on any thread.
  virtual void room_messages(std::string_view id, std::uint64_t before, std::size_t limit, PageFn done) = 0;
  // Deletes room `id` on every node, from the store and its history (DELETE /api/rooms/{id}).
  // `done` gets the deleted room, or Error::unknown_room, store_unavailable. Any thread.
  virtual void delete_room(std::string_view id, CreateFn done) = 0;
  // Closes, on every node, the sessions of `user` or the session `session` (exactly one is
  // non-empty), with an ERROR whose body is `reason` (POST /api/disconnect). `done` gets an
  // empty code once the request left for every node, else the bus's reason. Any thread.
  virtual void disconnect(std::string user, std::string session, std::string reason,
                          std::function<void(std::error_code)> done) = 0;
  // Who is in room `id` now, on every node: the count and at most Limits::max_member_list
  // names; Error::unknown_room, Error::presence_off, or Error::presence_unavailable.
  using MembersFn = std::function<void(std::error_code, bus::MemberList)>;
  virtual void room_members(std::string_view id, MembersFn done) = 0;
  // The member counts of rooms `ids` (canonical ids), in their order; an error when presence
  // is off or its engine did not answer. `done` runs on any thread.
  using CountsFn = std::function<void(std::error_code, std::vector<std::size_t>)>;
  virtual void member_counts(std::vector<std::string> ids, CountsFn done) = 0;
};

// Returns whether `who` may see and enter `room`: a public room, or a restricted one that lists
// `who->user` as a member or is named by `who->rooms`. A null `who` means --auth none, where
// every room is open.
bool may_enter(const Identity* who, const store::Room& room);

// One engine's health as /healthz reports it.
struct EngineHealth {
  bool up = false;
  std::string detail;
};

// The node's counters, summed over its shards, as /metrics reports them.
struct NodeCounters {
  std::size_t sessions = 0;
  std::uint64_t deliveries = 0;
  std::uint64_t published = 0;
  std::uint64_t delivered_from_bus = 0;
  std::uint64_t slow_consumers = 0;
  std::uint64_t protocol_errors = 0;
  std::uint64_t chat_rejections = 0;
  std::size_t history_memory = 0;  // bytes held of --max-history-memory
  std::array<std::uint64_t, static_cast<std::size_t>(Refusal::count_)> refusals{};
};

class NodeView {
 public:
  virtual ~NodeView() = default;
  virtual const std::string& node_id() const = 0;
  virtual EngineHealth bus_health() const = 0;
  virtual EngineHealth store_health() const = 0;
  // A snapshot; each counter is read on its own (relaxed), so they may be a moment apart.
  virtual NodeCounters counters() const = 0;
  // Prometheus text of the node's integrations (webhooks); empty when there are none.
  virtual std::string integration_metrics() const = 0;
};

}  // namespace chatd::chat
