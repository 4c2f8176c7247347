// chatd::bus — the Kafka bus's per-node memory of the stream: the recent messages of every room
// (so history and resume are answered without reading the topic again) and the recent
// x-client-ids (so a retried SEND is not published twice). Both are filled by the consumer
// every node already runs, from records in offset order; neither touches Kafka itself.
// Thread-safe: the consumer thread adds, any thread reads.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "bus/message_bus.h"

namespace chatd::bus {

struct KafkaCacheLimits {
  std::size_t per_room = 5000;               // messages per room (history_size)
  std::chrono::milliseconds ttl{0};          // age by record timestamp; 0 = none (history_ttl)
  std::size_t max_bytes = 256u << 20;        // payload bytes of all rooms together
};

class KafkaHistoryCache {
 public:
  explicit KafkaHistoryCache(KafkaCacheLimits limits) : limits_(limits) {}

  // Partition `p` is consumed without a hole from seq `first_seq` on (offset + 1). Forgets
  // what was known of it before (a new assignment, a recreated topic).
  void start_partition(int p, std::uint64_t first_seq);
  // Forgets everything: the topic behind the cache changed.
  void clear();

  // Appends a consumed record of `room` (its partition's records come in offset order).
  void add(int p, const std::string& room, std::uint64_t seq, std::int64_t ts_ms, std::string payload);
  // Records that partition `p` has been consumed up to and including `seq` (any room's record).
  void advance(int p, std::uint64_t seq);

  struct Answer {
    bool known = false;               // the partition is being consumed here
    std::uint64_t complete_from = 0;  // every message of the room with seq >= this is below
    std::uint64_t position = 0;       // the partition is consumed up to this seq
    std::vector<Delivery> messages;   // the room's cached messages for the request, ascending
  };
  // Returns what the cache holds for `req` (room on partition `p`): for after_seq, the oldest
  // `limit` with seq > after_seq; else the newest `limit` below before_seq (0: none).
  Answer read(int p, const HistoryRequest& req, std::int64_t now_ms);

  // Returns the seq partition `p` is consumed up to, which is also the offset of its next
  // record; nullopt if the partition is not being consumed.
  std::optional<std::uint64_t> position(int p) const;

  std::size_t bytes() const;

 private:
  struct Entry {
    std::uint64_t seq;
    std::int64_t ts_ms;
    std::string payload;
  };
  struct Room {
    int partition = 0;
    std::uint64_t complete_from = 0;
    std::deque<Entry> entries;
  };
  struct Partition {
    std::uint64_t start = 0;     // consumed without a hole from this seq
    std::uint64_t position = 0;  // up to this seq
    std::uint64_t floor = 0;     // rooms forgotten here were complete only from this seq
  };
  struct Order {  // every cached entry in the order it came, for eviction by age and bytes
    std::string room;  // key_of(partition, room)
    std::uint64_t seq;
    std::int64_t ts_ms;
  };

  static std::string key_of(int p, const std::string& room);
  void evict_front_locked(Room& r, const std::string& name);
  void expire_locked(std::int64_t now_ms);
  std::uint64_t room_floor_locked(int p) const;

  const KafkaCacheLimits limits_;
  mutable std::mutex mu_;
  std::unordered_map<int, Partition> partitions_;
  std::unordered_map<std::string, Room> rooms_;  // by key_of(partition, room)
  std::deque<Order> order_;
  std::size_t bytes_ = 0;
  std::size_t entries_ = 0;
};

// The x-client-ids seen in the stream within the dedupe window, by room. Decisions use the
// records' own timestamps, so every node that consumed the same records decides the same.
class KafkaDedupeWindow {
 public:
  KafkaDedupeWindow(std::chrono::milliseconds window, std::size_t max_ids) : window_(window), max_ids_(max_ids) {}

  // Returns the seq an earlier record with this id got, if it is within the window before
  // `ts_ms`; otherwise remembers (room, id) -> seq and returns nullopt.
  std::optional<std::uint64_t> first_or_remember(const std::string& room, std::string_view client_id,
                                                 std::uint64_t seq, std::int64_t ts_ms);
  // Returns the seq of a record with this id still within the window at `now_ms`.
  std::optional<std::uint64_t> find(const std::string& room, std::string_view client_id, std::int64_t now_ms);
  void clear();

 private:
  struct Seen {
    std::uint64_t seq;
    std::int64_t ts_ms;
  };
  static std::string key(const std::string& room, std::string_view client_id);
  void expire_locked(std::int64_t now_ms);

  const std::chrono::milliseconds window_;
  const std::size_t max_ids_;
  std::mutex mu_;
  std::unordered_map<std::string, Seen> seen_;
  std::deque<std::pair<std::string, std::int64_t>> order_;  // key, ts: oldest first
};

}  // namespace chatd::bus
