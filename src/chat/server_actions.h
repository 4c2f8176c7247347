// What the server API does to sessions and rooms on every node, through the control channel:
// close a user's or a session's connections (POST /api/disconnect), delete a room
// (DELETE /api/rooms/{id}), and delete rooms that stayed idle and empty (--room-idle-expiry)
// by the same path. The node that takes the call changes the store and the history, then
// announces it; every node, itself included, acts on its own sessions when the announcement
// arrives.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include <atomic>
#include <chrono>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <system_error>
#include <unordered_set>

#include "bus/message_bus.h"
#include "chat/control.h"
#include "store/room_store.h"

namespace chatd::chat {

class Hub;

// Whose connections /api/disconnect closes: exactly one of the two is set.
struct DisconnectTarget {
  std::string user;     // every session whose user() is this
  std::string session;  // the session whose id() is this (CONNECTED's session header)
};

class ServerActions {
 public:
  enum class DeleteReason { api, idle };
  using DoneFn = std::function<void(std::error_code)>;
  // The deleted room; or chat::Error::unknown_room, store_unavailable.
  using DeletedFn = std::function<void(std::error_code, store::Room)>;

  // Listens on `control` for "disconnect" and "room.deleted", so it must be built before the
  // hub starts. The expiry sweep runs on `sweep_loop`.
  ServerActions(Hub& hub, store::RoomStore& store, bus::MessageBus& bus, ControlChannel& control,
                boost::asio::io_context& sweep_loop, std::chrono::seconds idle_expiry);
  ~ServerActions();

  // Asks every node to close the target's sessions with an ERROR whose body is `reason`.
  // `done` (any thread): empty once the request left, else the bus's reason.
  void disconnect(DisconnectTarget target, std::string reason, DoneFn done);

  // Deletes room `id` (canonical) from the store and its history, then every node ends its
  // subscriptions with the ROOM_CLOSED notice. `done` runs on any thread.
  void delete_room(const std::string& id, DeleteReason why, DeletedFn done);

  // A message was published to `room_id` through this node, or a subscription began here:
  // the room is not idle. Cheap; does nothing while expiry is off.
  void note_active(const std::string& room_id);

  // Starts the idle-room sweep when --room-idle-expiry is set; stop() ends it.
  void start();
  void stop();

  // Prometheus text: sessions closed here, rooms deleted by this node.
  std::string metrics_text() const;

 private:
  void on_disconnect(const bus::ControlMessage& m);
  void on_room_deleted(const bus::ControlMessage& m);
  // Ends this node's subscriptions of a deleted room with the ROOM_CLOSED notice.
  void close_room_here(const std::string& room_id);
  // Once a second: when the bus says control messages may have been missed (Redis: the
  // control subscription was lost and is back), rooms deleted meanwhile are looked up again.
  void schedule_watch();
  void reconcile();
  void finish_delete(store::Room room, DeleteReason why, DeletedFn done);
  void schedule_sweep();
  void sweep();

  Hub& hub_;
  store::RoomStore& store_;
  bus::MessageBus& bus_;
  ControlChannel& control_;
  const std::chrono::seconds idle_expiry_;
  boost::asio::steady_timer timer_;  // on sweep_loop
  boost::asio::steady_timer watch_;  // on sweep_loop
  std::uint64_t control_gaps_seen_ = 0;  // watch_'s handler only
  std::atomic<std::uint64_t> reconciled_{0};  // subscribed rooms found deleted after an outage
  std::atomic<bool> stopped_{false};

  std::mutex active_mu_;
  std::unordered_set<std::string> active_;  // rooms active since the last sweep

  std::atomic<std::uint64_t> disconnected_{0};
  std::atomic<std::uint64_t> deleted_api_{0};
  std::atomic<std::uint64_t> deleted_idle_{0};
  std::atomic<std::uint64_t> sweeps_failed_{0};
};

}  // namespace chatd::chat
