// chatd::bus — how chat messages travel between nodes. One implementation per engine
// (local, redis, kafka), chosen at start-up. The bus also stamps each message with its
// per-room sequence number, because only the engine sees every node's messages in order, and
// keeps each room's recent history (bounded by count and age) so clients can join with the
// last messages and resume after a drop without a gap.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "redis/timing.h"

namespace boost::asio { class io_context; }

namespace chatd::bus {

enum class Error {
  ok = 0,
  engine_down = 1,   // the engine is unreachable; the node keeps trying to reconnect
  timed_out,         // the engine did not confirm in time
  rejected,          // the engine refused the message (size, auth, ...)
  stopped,           // the bus is shutting down
};
const std::error_category& error_category() noexcept;
std::error_code make_error_code(Error e) noexcept;

struct Delivery {
  std::string room_id;
  std::uint64_t seq = 0;  // strictly increasing per room, identical on every node
  std::string epoch;      // the room's history epoch: a short opaque token of [A-Za-z0-9_.-],
                          // the same on every node; it changes only when the room's history was
                          // lost (engine wiped, topic recreated), so seqs of two epochs never compare
  std::string payload;    // exactly the bytes given to publish()
};

// Called with every message of every room this node subscribed to, in per-room order, from the
// bus's own thread: the engine's (redis, kafka) or, on the local bus, its writer thread once the
// message is in the history file (never the publisher's). It must not block.
using DeliverFn = std::function<void(Delivery&&)>;
// Called once, from any thread.
using DoneFn = std::function<void(std::error_code)>;

struct PublishOptions {
  // SEND header x-client-id; empty: no de-duplication. A publish whose client_id was already
  // used in this room within BusConfig::dedupe_window is not published again; its `done` gets
  // the first publish's seq.
  std::string client_id;
};
// Called once, from any thread: an empty code once the engine accepted the message, with the
// seq it was given (or had, for a de-duplicated retry) and the epoch that seq counts in (valid
// for the call only: copy it to keep it); else the reason it never will be, seq 0, epoch empty.
using PublishedFn = std::function<void(std::error_code, std::uint64_t seq, std::string_view epoch)>;

struct HistoryRequest {
  std::string room_id;
  std::uint64_t after_seq = 0;   // exclusive lower bound (resume: x-since-seq); 0: none
  std::uint64_t before_seq = 0;  // exclusive upper bound (REST paging); 0: none
  std::size_t limit = 0;         // at most this many: the OLDEST `limit` above after_seq when
                                 // after_seq != 0, else the NEWEST `limit` below before_seq
};
struct History {
  std::string epoch;              // the room's current epoch (assigned on first use if new)
  std::uint64_t first_seq = 0;    // the seq from which the room's history is whole: nothing of
                                  // the room with seq >= first_seq was dropped (0: nothing is
                                  // retained). Not always a seq the room has: on Kafka it is a
                                  // place in the partition (its oldest retained offset + 1).
  std::uint64_t last_seq = 0;     // newest seq assigned so far (0: none yet)
  std::vector<Delivery> messages; // ascending seq, each with the room's epoch
};
// Called once, from any thread.
using HistoryFn = std::function<void(std::error_code, History)>;

// The control channel: small typed messages from node to node (not room traffic), such as
// "close this user's sessions" or "this room was deleted". Every node connected to the engine
// when one is published receives it, the publishing node included (through the engine, like
// a room message), once. Nothing is kept: a node that is down or not yet started misses it
// (Redis pub/sub, and Kafka nodes start at the end of the log). No order across messages from
// different nodes; one node's control messages arrive in the order it published them.
struct ControlMessage {
  std::string type;    // what it is: 1..kMaxControlType of [a-z0-9_.-], e.g. "disconnect"
  std::string origin;  // the publishing node's BusConfig::node_id (set by the bus)
  std::string body;    // opaque bytes, JSON by convention; at most kMaxControlBody
};
inline constexpr std::size_t kMaxControlType = 64;
// A control message names something (a user, a room); it never carries chat traffic.
inline constexpr std::size_t kMaxControlBody = 16 * 1024;
// Returns whether `type` is a valid control message type.
bool valid_control_type(std::string_view type) noexcept;
// Called with every control message, from the engine's thread (redis, kafka) or, on the local
// bus, from the publisher's. It must not block.
using ControlFn = std::function<void(ControlMessage&&)>;

class MessageBus {
 public:
  virtual ~MessageBus() = default;

  // Connects to the engine and begins delivering to `on_deliver`. Throws std::runtime_error
  // for configuration that can never work (bad URL, auth refused). An engine lost later is
  // never fatal: the bus reports down and keeps retrying. (Redis is also checked once at
  // start-up and refuses to start unreachable; Kafka starts and retries.)
  virtual void start(DeliverFn on_deliver) = 0;

  // Sends `payload` to every node's subscribers of `room_id` and keeps it in the room's
  // history. `done` gets an empty code and the message's seq once the engine has accepted it,
  // or the reason it never will. Never blocks (no fsync, no round trip waited for).
  virtual void publish(std::string room_id, std::string payload, PublishOptions opts, PublishedFn done) = 0;

  // Reads retained history. Everything delivered on this node before the call is in the
  // answer (if still retained). Never blocks the caller; `done` runs on any thread.
  virtual void history(HistoryRequest req, HistoryFn done) = 0;

  // Declares that this node has local subscribers of `room_id`. `ready` is called once every
  // message published afterwards is sure to be delivered here. Called on 0 -> 1 local
  // subscribers; unsubscribe() on 1 -> 0. Engines that deliver everything may ignore both.
  virtual void subscribe(const std::string& room_id, DoneFn ready) = 0;
  virtual void unsubscribe(const std::string& room_id) = 0;

  // Sets where control messages go (see ControlMessage). Call once, before start().
  virtual void on_control(ControlFn fn) = 0;
  // Sends m.type and m.body to every node (m.origin is ignored). `done` gets an empty code once
  // the engine accepted it, Error::rejected for a type or body out of bounds, else the reason
  // it never will be sent. Never blocks.
  virtual void publish_control(ControlMessage m, DoneFn done) = 0;

  // Forgets the history of a deleted room (DELETE /api/rooms, idle expiry). `done` (any
  // thread): empty once it is gone. Kafka cannot delete single records: it answers at once and
  // the records stay until the topic's retention removes them (nothing serves them: history
  // is read only for rooms that exist).
  virtual void delete_history(const std::string& room_id, DoneFn done) = 0;

  // How many times control messages may have been missed: the engine lost its control
  // subscription and has it again (Redis pub/sub keeps nothing for a subscriber that is away),
  // or was unreachable and is back (Kafka: what this node sent meanwhile may have expired unsent).
  // The chat core then looks again at what they could have changed. From any thread.
  virtual std::uint64_t control_gaps() const { return 0; }

  // Whether the engine is reachable now, and a short human-readable state for /healthz.
  virtual bool up() const = 0;
  virtual std::string describe() const = 0;

  // Stops delivering and releases the engine; pending publishes get Error::stopped.
  virtual void stop() = 0;
};

// How the Kafka bus paces its talks with the broker. Every field is an option (--kafka-*-ms);
// each default says why.
struct KafkaTiming {
  // Each set-up request (create the topic, read its partitions and id) waits this long; start()
  // makes one attempt before returning, so a broker that is away delays start-up by this much.
  int request_timeout_ms = 3000;
  // While the broker is down, the producer asks it for metadata this often: the node says it
  // is back within about a second of the broker.
  int probe_ms = 1000;
  // Partitions added to the topic after start are found within this: rare, so seldom.
  int partition_check_ms = 30000;
  // The topic's id is read this often, to notice a topic deleted and recreated (a new epoch).
  int topic_check_ms = 5000;
  // At stop, accepted messages get this long to reach the broker before they are failed.
  int flush_on_stop_ms = 5000;
};

struct BusConfig {
  std::string kind = "local";            // local | redis | kafka
  std::string redis_url = "redis://127.0.0.1:6379";
  std::string kafka_brokers = "127.0.0.1:9092";
  std::string kafka_topic = "chatroom";
  int kafka_partitions = 3;
  int kafka_replication = 1;
  std::string node_id;                   // unique per node; names its Kafka consumer group
  std::string data_dir = "./data";       // the embedded history file (local bus)
  std::size_t history_size = 10000;      // messages kept per room
  std::chrono::seconds history_ttl{7 * 24 * 3600};  // and for at most this long
  // Local bus: messages written to the journal but not yet folded into their room's chunk rows
  // are also kept in memory for readers; past this many, the oldest rooms' are folded, a slice
  // per writer turn, however young.
  std::size_t history_memory_messages = 50000;
  // Local bus: when a quiet room's messages are folded, and when the history file's WAL is
  // checkpointed (local_bus.cpp says why these values; not options: tests change them).
  struct LocalHistoryTiming {
    std::chrono::milliseconds fold_age{3000};  // a room's unfolded messages wait at most this long
    int checkpoint_pages = 4096;         // the checkpointer thread is asked at 16 MiB of 4 KiB pages
    int writer_checkpoint_pages = 16384; // the writer copies the rest itself at 64 MiB
    std::chrono::milliseconds checkpoint_every{10000};  // and at least this often while anything was written
  } local_history;
  std::chrono::seconds dedupe_window{300};          // how long an x-client-id is remembered
  std::size_t dedupe_max_ids = 262144;   // per node (local, kafka): past it the oldest go early
  // Kafka: each node's cache of recent messages (all rooms' payloads together), and the bounds
  // of one history read from the topic for what the cache does not hold.
  std::size_t kafka_history_cache_bytes = 256u << 20;
  std::size_t kafka_history_scan = 200000;  // records read per request
  int kafka_history_read_ms = 5000;         // time per request
  redis::Timing redis_timing;               // --redis-*-ms, shared with the store
  KafkaTiming kafka_timing;                 // --kafka-*-ms
};

// Returns the bus named by cfg.kind. Engines that need an event loop use `engine`, which the
// caller runs on its own thread. Throws std::invalid_argument for an unknown kind.
std::unique_ptr<MessageBus> make_bus(const BusConfig& cfg, boost::asio::io_context& engine);

// Throws std::runtime_error when the history file in cfg.data_dir cannot be opened.
std::unique_ptr<MessageBus> make_local_bus(const BusConfig& cfg, boost::asio::io_context& engine);
std::unique_ptr<MessageBus> make_redis_bus(const BusConfig& cfg, boost::asio::io_context& engine);
std::unique_ptr<MessageBus> make_kafka_bus(const BusConfig& cfg, boost::asio::io_context& engine);

// Testing only: gives a started Kafka bus's producer a fabricated fatal error (librdkafka's
// rd_kafka_test_fatal_error, as an idempotence failure would), which the bus must survive.
// Returns false if `bus` is not a Kafka bus, is stopped, or already had one pending.
bool inject_kafka_fatal_error(MessageBus& bus, const std::string& reason);

}  // namespace chatd::bus

namespace std {
template <>
struct is_error_code_enum<chatd::bus::Error> : true_type {};
}  // namespace std
