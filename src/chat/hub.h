// The node's chat core. The Hub is shared by every worker thread; each worker owns a Shard
// (its sessions and their room subscriptions), touched only on that worker's loop.
//
// The Hub wires the node together (Publisher, RoomInterest, the shards, the bus) and does the
// fan-out; net reaches it only through the Rooms and NodeView doors.
//
// One message's way: a session's SEND -> Publisher::publish (checks the room, stamps id/ts) ->
// bus -> Hub::on_delivery on the bus's delivering thread (the engine's, or the local bus's
// writer thread once the message is in its history file; adds seq, encodes the MESSAGE once) ->
// each Shard::deliver_local_in_loop -> every local subscriber's write queue.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "bus/message_bus.h"
#include "bus/presence.h"
#include "chat/control.h"
#include "chat/events.h"
#include "chat/identity.h"
#include "chat/interest.h"
#include "chat/limits.h"
#include "chat/publisher.h"
#include "chat/rate_limit.h"
#include "chat/refusals.h"
#include "chat/rooms.h"
#include "chat/roster.h"
#include "chat/rules.h"
#include "chat/server_actions.h"
#include "stomp/stomp.h"
#include "store/room_store.h"

namespace chatd::chat {

inline constexpr std::string_view kRoomPrefix = "/sub/chat/room/";
inline constexpr std::string_view kSendDestination = "/pub/chat/message";
inline constexpr std::string_view kErrorQueue = "/user/queue/errors";

// A MESSAGE frame encoded once per node and shared by every local subscriber.
struct SharedMessage {
  std::string room_id;
  std::uint64_t seq = 0;
  std::string epoch;
  stomp::SplitMessage frame;

  // The frame's head and tail re-encoded for a transport that cannot send STOMP bytes as they
  // are (SockJS over WebSocket escapes them into JSON strings). Made by the first subscriber
  // that asks, on whichever shard's thread that is, then shared by every subscriber of every
  // shard. One process has one such encoder (SockJS's): the first one given is kept.
  struct EncodedParts {
    std::string head, tail;
  };
  using PartEncoder = void (*)(std::string& out, std::string_view text);
  const EncodedParts& encoded_parts(PartEncoder encode) const {
    std::call_once(encoded_once_, [&] {
      encode(encoded_.head, frame.head);
      encode(encoded_.tail, frame.tail);
    });
    return encoded_;
  }

 private:
  mutable std::once_flag encoded_once_;
  mutable EncodedParts encoded_;
};
using SharedMessagePtr = std::shared_ptr<const SharedMessage>;

// Returns the MESSAGE frame for a room message, live or from history: the same bytes either
// way (destination, message-id <room>-<seq>, the payload with seq and epoch added).
SharedMessagePtr encode_delivery(const bus::Delivery& d);

// What a session writes: a shared MESSAGE with the subscriber's (escaped) subscription id
// spliced in, or, when `shared` is null, bytes of its own in `own`.
struct Outbound {
  // How a WebSocket carries it: STOMP frames may share one text message with other frames; a
  // WebSocket application other than STOMP (tests/conformance's echo) sends `own` as one text
  // or binary message of its own.
  enum class Kind : std::uint8_t { stomp_frame, text_message, binary_message };
  SharedMessagePtr shared;
  std::string own;
  Kind kind = Kind::stomp_frame;
  // Part of a history replay, which StompSession sends whole (at most --max-replay messages):
  // the transport lets it pass its own bound by its size, like StompSession does.
  bool replay = false;
  std::size_t size() const {
    return shared ? shared->frame.head.size() + own.size() + shared->frame.tail.size() : own.size();
  }
};

// The byte pipe under a StompSession (raw WebSocket or SockJS). Called on the session's
// worker loop only. Neither call may call back into the session synchronously.
class Transport {
 public:
  virtual ~Transport() = default;
  // Queues `out` behind what is already queued; never blocks.
  virtual void send(Outbound&& out) = 0;
  // Writes what is queued, then closes; `reason` goes into the close frame.
  virtual void close(std::string_view reason) = 0;
  // Returns the bytes waiting for the client: queued behind a write it has not taken yet, or
  // held for a client that is not connected right now. What leaves in this turn of the loop
  // does not count, so a burst to a fast reader is not mistaken for a slow one.
  virtual std::size_t queued_bytes() const = 0;
};

class StompSession;
class Hub;

struct HubConfig {
  Limits limits;
  Texts texts;
  std::string node_id = "chatd";
  std::string server_name = "chatd/0.1.0";
  // --auth jwt: proves the token every CONNECT must carry. Null: --auth none.
  std::shared_ptr<const TokenVerifier> verifier;
  std::chrono::seconds room_idle_expiry{0};  // 0: rooms never expire (--room-idle-expiry)
  // Presence (README "Presence"): how long a member whose last connection dropped without
  // goodbye stays in, so a reconnect within it is neither a leave nor a join. Page reloads and
  // network changes come back within a few seconds.
  std::chrono::milliseconds presence_grace{5000};
  // Rooms with more members than this announce no single join or leave: each announcement
  // goes to every member, so a storm of N joins would cost N^2 deliveries. Counts stay exact.
  std::size_t presence_announce_max = 500;
  // An ENTER or QUIT the engine refused (a Redis Cluster slot moving or failing over refuses
  // for a few seconds) is sent again this often, at most announce_attempts times in all.
  std::chrono::milliseconds announce_retry{1000};
  int announce_attempts = 5;
};

// A worker's share of the node. Every *_in_loop member runs on the worker's loop only.
class Shard {
 public:
  Shard(Hub& hub, boost::asio::io_context& loop, std::size_t index);

  boost::asio::io_context& loop() { return loop_; }
  Hub& hub() { return hub_; }
  std::size_t index() const { return index_; }

  void add_session_in_loop(StompSession* s);
  void remove_session_in_loop(StompSession* s);
  void subscribe_in_loop(const std::string& room_id, StompSession* s, const std::string& sub);
  void unsubscribe_in_loop(const std::string& room_id, StompSession* s, const std::string& sub);
  // From any thread: hands `m` to this shard. Messages are delivered in the order they were
  // enqueued, whichever threads enqueued them. (Posting each one would not do: Asio runs a
  // loop's posts to itself after foreign posts that arrive while its handler runs.)
  void enqueue(SharedMessagePtr m);
  // Queues `m` to every local subscriber of its room.
  void deliver_local_in_loop(const SharedMessagePtr& m);

  // Starts the sweep that sends and checks heart-beats (and connect timeouts, token expiry):
  // every session once a second, a slice of them at a time.
  void start_sweeps();
  void stop_sweeps();
  // Closes the sessions whose user() is `user` or whose id() is `session` (one of them
  // empty) with ERROR "disconnected by the server" and `reason`; returns how many.
  std::size_t disconnect_in_loop(const std::string& user, const std::string& session, const std::string& reason);
  // Sends `notice` (a deleted room's ROOM_CLOSED) on every local subscription of its room,
  // then ends those subscriptions.
  void end_room_in_loop(const SharedMessagePtr& notice);
  // Asks every session to close; used at shutdown.
  void close_all_in_loop(std::string_view reason);
  // Closes, with an ERROR frame saying `reason`, every session of this shard whose identity's
  // user is `user`. Returns how many.
  std::size_t close_user_in_loop(const std::string& user, std::string_view reason);

  // Debug builds check that a *_in_loop member runs on this shard's loop thread (muduo's
  // assertInLoopThread); the thread is learnt when the loop first runs the shard's sweeps.
  void assert_in_loop() const;

  std::size_t sessions() const { return session_count_.load(std::memory_order_relaxed); }
  std::uint64_t deliveries() const { return deliveries_.load(std::memory_order_relaxed); }

 private:
  struct Subscriber {
    StompSession* session;
    std::string sub;  // escaped for the session's version
  };
  // The sweep visits one slice every 1 s / kSweepSlices, so each session once a second, and
  // one visit holds the loop for a slice of the sessions only: a visit of all 5,000 of a
  // worker's sessions at once held it for 1.5-3 ms, and every delivery due meanwhile waited.
  static constexpr int kSweepSliceBits = 4;
  static constexpr std::size_t kSweepSlices = std::size_t{1} << kSweepSliceBits;
  static std::size_t slice_of(const StompSession* s);
  void sweep();
  template <class F>
  void for_each_session(F&& f) const {
    for (const auto& slice : sessions_)
      for (auto* s : slice) f(s);
  }

  // Removes the subscribers that left during a delivery (see unsubscribe_in_loop).
  void remove_blanked_in_loop();

  Hub& hub_;
  boost::asio::io_context& loop_;
  std::size_t index_;
  boost::asio::steady_timer timer_;
  bool sweeping_ = false;
  std::array<std::unordered_set<StompSession*>, kSweepSlices> sessions_;  // by slice_of
  std::size_t session_total_ = 0;
  std::size_t next_slice_ = 0;  // the sweep's next slice
  std::unordered_map<std::string, std::vector<Subscriber>> rooms_;
  int delivering_ = 0;                // walks over a rooms_ vector under way
  std::vector<std::string> blanked_;  // rooms whose vector holds subscribers that left during one
  std::mutex inbox_mu_;
  std::vector<SharedMessagePtr> inbox_;  // enqueued, not yet delivered
  bool drain_posted_ = false;
  std::atomic<std::size_t> session_count_{0};
  std::atomic<std::thread::id> loop_thread_{};  // unknown until the sweeps start
  std::atomic<std::uint64_t> deliveries_{0};
};

class Hub final : public Rooms, public NodeView {
 public:
  // `presence` null: presence is off (ENTER and QUIT are published as they come, as the seed did).
  Hub(HubConfig cfg, store::RoomStore& store, bus::MessageBus& bus,
      const std::vector<boost::asio::io_context*>& workers, bus::Presence* presence = nullptr);
  Hub(const Hub&) = delete;
  Hub& operator=(const Hub&) = delete;

  // Starts bus delivery and the shards' sweeps.
  void start();

  // Where events for the application backend go (webhooks); null: nowhere. Set before start().
  void set_event_sink(EventSink* sink);
  EventSink* event_sink() const { return events_; }
  // Reports that session `session_id` began (join) or ended (leave) a subscription of a room.
  void report_subscription(ChatEvent::Kind kind, const std::string& room_id, const std::string& session_id);
  void publish_from_api(ChatMessage m, Rooms::PublishedFn done) override {
    publisher_.publish_from_api(std::move(m), std::move(done));
  }

  const HubConfig& config() const { return cfg_; }
  // The token verifier (--auth jwt), or null (--auth none).
  const TokenVerifier* verifier() const { return cfg_.verifier.get(); }
  // From any thread: closes every session of `user` on every shard of this node (each shard
  // on its own loop). Other nodes are not reached.
  void close_user(const std::string& user, std::string reason);
  const Limits& limits() const { return cfg_.limits; }
  Shard& shard(std::size_t i) { return *shards_[i]; }
  std::size_t shard_count() const { return shards_.size(); }

  // Interest in a room of a subscription on shard `shard`, from any thread (RoomInterest).
  // `ready` gets an empty code once messages published afterwards are sure to reach this node.
  void join(const std::string& room_id, std::size_t shard, bus::DoneFn ready) {
    actions_.note_active(room_id);
    interest_.join(room_id, shard, std::move(ready));
  }
  void leave(const std::string& room_id, std::size_t shard) { interest_.leave(room_id, shard); }
  // Returns the rooms with a subscriber on this node.
  std::vector<std::string> rooms_with_subscribers() { return interest_.rooms(); }
  // Room `id` was deleted: it is no longer known to exist here.
  void forget_room(const std::string& id);
  // Forgets which rooms exist: each is asked of the store again on its next use.
  void forget_known_rooms() { publisher_.forget_known_rooms(); }

  // Room-checked publish (Publisher::publish): `done` runs on any thread with the seq. With
  // `who` (--auth jwt) a restricted room `who` may not enter is refused (room_forbidden).
  void publish(const ChatMessage& m, std::string client_id, bus::PublishedFn done, IdentityPtr who = {}) {
    publisher_.publish(m, std::move(client_id), std::move(done), std::move(who));
  }

  // Reads the room's retained history (x-history, resume, REST paging). `done` runs on any thread.
  void history(bus::HistoryRequest req, bus::HistoryFn done) { bus_.history(std::move(req), std::move(done)); }

  // Presence, from any thread. A connection of `member` is in `room`: when that is news for
  // the cluster, an ENTER is published. `settled` runs (any thread) once that ENTER was
  // accepted by the bus, or at once when nothing is announced.
  bool presence_on() const { return presence_ != nullptr; }
  void presence_attach(const std::string& room, const std::string& member, std::function<void()> settled);
  // A connection of `member` left `room`: at once with a `goodbye` (QUIT, UNSUBSCRIBE,
  // DISCONNECT), else after the grace period. A QUIT is published when it is news.
  void presence_detach(const std::string& room, const std::string& member, bool goodbye);
  // Leaves the members whose grace period is over; the sweep calls it about once a second.
  void expire_presence();

  // Rooms (REST)
  void list_rooms(ListFn done) override;
  void room_members(std::string_view id, MembersFn done) override;
  void member_counts(std::vector<std::string> ids, CountsFn done) override;
  void find_room(std::string_view id, FindFn done) override;
  void create_room(std::string name, CreateFn done) override;
  void create_restricted_room(std::string name, std::vector<std::string> members, CreateFn done) override;
  void room_messages(std::string_view id, std::uint64_t before, std::size_t limit, PageFn done) override;
  void delete_room(std::string_view id, CreateFn done) override;
  void disconnect(std::string user, std::string session, std::string reason,
                  std::function<void(std::error_code)> done) override;

  // Whether room `id` exists and `who` may enter it, as Publisher::known_room, check_room and
  // may_enter answer it.
  bool known_room(const std::string& id) { return publisher_.known_room(id); }
  void check_room(const std::string& id, std::function<void(std::error_code)> done) {
    publisher_.check_room(id, std::move(done));
  }
  bool may_enter(const Identity* who, const std::string& id) { return publisher_.may_enter(who, id); }

  // NodeView (/healthz, /metrics)
  const std::string& node_id() const override { return cfg_.node_id; }
  EngineHealth bus_health() const override;
  EngineHealth store_health() const override;
  NodeCounters counters() const override;
  std::string integration_metrics() const override {
    return control_.metrics_text() + actions_.metrics_text() + (events_ ? events_->metrics_text() : std::string());
  }

  // The node-to-node control channel (CONTROL-CHANNEL.md). Register handlers before start().
  ControlChannel& control() { return control_; }

  // Counters, also for /healthz and /metrics through counters().
  std::uint64_t published() const { return publisher_.published(); }
  std::uint64_t delivered_from_bus() const { return from_bus_.load(std::memory_order_relaxed); }
  std::atomic<std::uint64_t> slow_consumers{0};
  std::atomic<std::uint64_t> protocol_errors{0};
  std::atomic<std::uint64_t> chat_rejections{0};
  Refusals refusals;
  HistoryMemory& history_memory() { return history_memory_; }

 private:
  void on_delivery(bus::Delivery&& d);  // the bus's delivering thread
  // Publishes the server's ENTER or QUIT for `member` unless the room is past
  // presence_announce_max; then runs `done` (may be empty).
  void announce(MessageType type, const std::string& room, const std::string& member, std::size_t count,
                std::function<void()> done, int attempt = 1);
  void engine_leave_locked(const std::string& room, const std::string& member);
  void create_stored(store::Room room, CreateFn done);

  HubConfig cfg_;
  HistoryMemory history_memory_{cfg_.limits.max_history_memory};
  std::string id_prefix_;  // "<node>-<nonce>-": message ids are this plus a counter
  store::RoomStore& store_;
  bus::MessageBus& bus_;
  ControlChannel control_;
  std::vector<std::unique_ptr<Shard>> shards_;

  RoomInterest interest_;
  Publisher publisher_;

  bus::Presence* presence_;
  std::mutex presence_mu_;  // roster_ and the order of engine calls
  Roster roster_;

  EventSink* events_ = nullptr;
  std::atomic<std::uint64_t> next_event_{0};
  std::atomic<std::uint64_t> from_bus_{0};
  // Last: it listens on control_ and reads the shards.
  ServerActions actions_;
};

}  // namespace chatd::chat
