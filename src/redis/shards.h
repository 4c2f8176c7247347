// chatd::redis — one role's connections ("publish", "history", "subscribe", "store") to a Redis:
// one connection to a single server, or, for a Redis Cluster, one per primary with the slot map.
// Commands are routed by their key's hash slot; MOVED updates the map and resends, ASK resends
// once with ASKING; a MOVED, a lost primary or a slot nobody serves makes it read the map again
// (CLUSTER SLOTS), every 500 ms while anything is missing. Callers see one shape either way.
//
// Engine thread only (..._in_loop), except up() and describe().
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "redis/connection.h"
#include "redis/endpoint.h"

namespace chatd::redis {

class Shards : public std::enable_shared_from_this<Shards> {
 public:
  // A connection to one primary; ids are never reused, so a stale id names nothing. 0: none.
  using ShardId = std::uint64_t;
  struct Hooks {
    std::function<void(ShardId)> on_up;    // that shard's connection is ready (again)
    std::function<void(ShardId)> on_down;  // lost, or closed because it serves no slot now
    std::function<void(ShardId, const redisReply&)> on_push;  // ConnectionOptions::push_only
    // The map was read again, changed or not: a push connection that lost a channel (its slot
    // moved) re-checks where it lives now, even when the node asked had not heard of the move.
    std::function<void()> on_map_read;
  };

  static std::shared_ptr<Shards> create(boost::asio::io_context& io, Target target, ConnectionOptions opts,
                                        Hooks hooks);
  Shards(const Shards&) = delete;
  Shards& operator=(const Shards&) = delete;

  // Loaded (FUNCTION LOAD REPLACE) by every connection's setup, so every primary has it,
  // including one that a failover just promoted. Call before start_in_loop.
  void set_function_library(std::string code);
  void start_in_loop();
  // Closes for good: pending commands get Status::stopped and no hook runs afterwards.
  void stop_in_loop();

  // Whether every slot has a shard and every shard's connection is up. Any thread.
  bool up() const;
  std::string describe() const;
  bool cluster() const { return target_.cluster; }

  // Sends argv to the shard serving `key`'s slot and runs `done` once with the reply. A MOVED
  // or ASK is followed (5 hops, then it starts over a little later while a slot moves); the
  // reply is the final node's.
  void command_in_loop(std::string_view key, std::vector<std::string> argv, ReplyFn done);
  // FCALL / EVAL, routed by keys[0] (all keys must share its slot).
  void fcall_in_loop(std::string_view function, std::vector<std::string> keys, std::vector<std::string> args,
                     ReplyFn done);
  void eval_in_loop(std::string_view script, std::vector<std::string> keys, std::vector<std::string> args,
                    ReplyFn done);

  // Returns the shard serving `key` now, or 0 when no shard serves its slot.
  ShardId shard_of(std::string_view key) const;
  // Returns some shard whose connection is up, or 0.
  ShardId any_up_shard() const;
  // push_only: sends argv on that shard's connection. Returns false when it is not up (or gone).
  bool send_push_in_loop(ShardId shard, const std::vector<std::string>& argv);
  // Reads the slot map again soon (a push connection saw a redirect or lost a slot).
  void refresh_in_loop();

 private:
  struct Node {
    ShardId id = 0;
    std::string addr;  // host:port
    std::shared_ptr<Connection> conn;
  };

  Shards(boost::asio::io_context& io, Target target, ConnectionOptions opts, Hooks hooks);
  std::shared_ptr<Node> node_for(const std::string& host, std::uint16_t port);
  void apply_map_in_loop(const std::vector<SlotRange>& map);
  void call_in_loop(std::string_view verb, std::string_view what, std::vector<std::string> keys,
                    std::vector<std::string> args, ReplyFn done);
  void route_in_loop(std::shared_ptr<const std::vector<std::string>> argv, std::uint16_t slot,
                     std::shared_ptr<Node> node, bool asking, int hops, ReplyFn done, int tries = 0);
  void schedule_refresh_in_loop(std::chrono::milliseconds after);
  void read_map_in_loop();
  bool complete_in_loop() const;
  void publish_view_in_loop();

  boost::asio::io_context& io_;
  const Target target_;
  const ConnectionOptions opts_;
  Hooks hooks_;
  std::string function_library_;
  bool stopped_ = false;
  ShardId next_id_ = 0;
  std::map<std::string, std::shared_ptr<Node>> nodes_;  // by addr: the primaries in use
  std::vector<std::shared_ptr<Node>> slots_;           // 16384 entries (cluster); null: unserved
  std::shared_ptr<Node> single_;                       // one server
  // Reading the map: one CLUSTER SLOTS at a time on a short-lived connection.
  boost::asio::steady_timer refresh_timer_;
  bool refresh_scheduled_ = false;
  bool refresh_again_ = false;  // asked for while a read was in flight
  std::chrono::steady_clock::time_point last_read_{};  // when the last read was answered
  std::shared_ptr<Connection> map_conn_;
  std::size_t next_seed_ = 0;
  // For up() and describe() from other threads: the connections in use and whether every
  // slot is served.
  mutable std::mutex view_mu_;
  std::vector<std::shared_ptr<Connection>> view_;
  bool view_complete_ = false;
};

}  // namespace chatd::redis
