// chatd::bus::Presence — who is in which room, across every node. One implementation per engine
// (local, redis, kafka), chosen with the bus.
//
// The engine counts, per room and member, how many NODES hold that member; each node counts its
// own connections (chat::Roster) and calls join() and leave() only when its own count for a
// member goes 0 -> 1 and 1 -> 0. So a member with two tabs on one node is one join, and the
// engine's answers "first node" / "last node" decide, once for the whole cluster, when a join or
// a leave is news to announce. Counts are per room and O(1) per join or leave, whatever the
// room's size; only members() lists names.
//
// A node that dies stops refreshing its liveness (a heartbeat); within PresenceConfig's bound a
// surviving node removes the dead node's members and announces, through GoneFn, those that are
// now in the room on no node.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <system_error>
#include <vector>

#include "bus/message_bus.h"

namespace chatd::bus {

struct PresenceConfig {
  // How often a node says it is alive, and after how long without that it counts as dead:
  // its members leave within node_timeout + heartbeat (the bound in the README).
  std::chrono::milliseconds heartbeat{2000};
  std::chrono::milliseconds node_timeout{10000};
};

// Whether the call changed the room's membership for the cluster (join: no other node held
// the member; leave: no node holds them any more), and the room's member count after it.
// Called once, from any thread, never inside the call that was given it.
using ChangedFn = std::function<void(std::error_code, bool changed, std::size_t count)>;

struct MemberList {
  std::size_t count = 0;            // members in the room, on every node
  std::vector<std::string> names;   // at most the limit asked for, in no particular order
};
using MembersFn = std::function<void(std::error_code, MemberList)>;
// Member counts in the order the rooms were given.
using CountsFn = std::function<void(std::error_code, std::vector<std::size_t>)>;
// A member of a dead node (or of this node's previous run) is in `room` on no node any more;
// `count` is the room's member count after it. Called on one node per such member, from the
// engine's thread.
using GoneFn = std::function<void(const std::string& room, const std::string& member, std::size_t count)>;

class Presence {
 public:
  virtual ~Presence() = default;
  // Begins heartbeats and the watch for dead nodes. Each start is a new "run" of the node: what
  // a previous run held is a dead node's, reported through `gone` within the bound.
  virtual void start(GoneFn gone) = 0;
  // `member` is in `room` on this node (its first connection here).
  virtual void join(const std::string& room, const std::string& member, ChangedFn done) = 0;
  // `member` left `room` on this node (its last connection here, after any grace period).
  virtual void leave(const std::string& room, const std::string& member, ChangedFn done) = 0;
  // The room's members, and counts of many rooms. `done` runs on any thread, possibly inside.
  virtual void members(const std::string& room, std::size_t limit, MembersFn done) = 0;
  virtual void counts(std::vector<std::string> rooms, CountsFn done) = 0;
  // Whether the engine is reachable now (counts and lists may be stale otherwise).
  virtual bool up() const = 0;
  virtual void stop() = 0;
};

// Returns the presence for cfg.kind's engine. The redis one does its I/O on `engine`; the kafka
// one has its own thread, producer and consumer (of <kafka-topic>-presence). Throws
// std::runtime_error for configuration that can never work.
std::unique_ptr<Presence> make_presence(const BusConfig& cfg, const PresenceConfig& pcfg,
                                        boost::asio::io_context& engine);

std::unique_ptr<Presence> make_local_presence(boost::asio::io_context& engine);
std::unique_ptr<Presence> make_kafka_presence(const BusConfig& cfg, const PresenceConfig& pcfg);
std::unique_ptr<Presence> make_redis_presence(const BusConfig& cfg, const PresenceConfig& pcfg,
                                              boost::asio::io_context& engine);

}  // namespace chatd::bus
