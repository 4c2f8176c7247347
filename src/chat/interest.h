// Node-wide interest in rooms, counted per subscription and per shard, from any thread, and the
// bus (un)subscribes it causes. Those reach the engine in the order the interest changed: each
// is posted, under the lock that orders the changes, to one strand, so no worker ever waits for
// another's bus call (a leave on one worker and a join on another swapped at the engine would
// leave a wanted room unsubscribed).
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/strand.hpp>

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "bus/message_bus.h"

namespace chatd::chat {

class RoomInterest {
 public:
  // Bus calls run on a strand of `order_loop`; `shards` is how many shards count interest.
  RoomInterest(bus::MessageBus& bus, boost::asio::io_context& order_loop, std::size_t shards);

  // A subscription of `room_id` on shard `shard` begins. `ready` gets an empty code once
  // messages published afterwards are sure to reach this node (on any thread).
  void join(const std::string& room_id, std::size_t shard, bus::DoneFn ready);
  // A subscription of `room_id` on shard `shard` ends.
  void leave(const std::string& room_id, std::size_t shard);

  // Sets `shards` to the shards with a subscriber of `room_id`; returns false (and leaves it
  // empty) when this node has none.
  bool shards_with(const std::string& room_id, std::vector<std::size_t>& shards);

  // Returns the rooms with at least one subscription on this node.
  std::vector<std::string> rooms();

 private:
  struct Interest {
    std::size_t count = 0;
    std::vector<std::uint32_t> per_shard;  // subscriptions on each shard
    bool ready = false;
    bool pending = false;
    std::uint64_t generation = 0;
    std::vector<bus::DoneFn> waiters;
  };

  bus::MessageBus& bus_;
  boost::asio::strand<boost::asio::io_context::executor_type> order_;
  std::size_t shards_;
  std::mutex mu_;
  std::unordered_map<std::string, Interest> rooms_;
  std::uint64_t generations_ = 0;
};

}  // namespace chatd::chat
