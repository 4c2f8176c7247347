// This node's share of presence: per room and member, how many of this node's connections
// are in, and which members are in their grace period (their last connection dropped without
// goodbye; a reconnect within it is neither a leave nor a join). Pure bookkeeping, no clock of
// its own and no engine: the Hub asks it what to tell bus::Presence. Not thread-safe.
//
// Every call is O(1) amortized, whatever the room's size: nothing here walks a member list.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace chatd::chat {

class Roster {
 public:
  using Clock = std::chrono::steady_clock;
  // What the node must tell the engine after a call.
  enum class Step { none, join, leave };

  // A connection of `member` entered `room`. Returns join for the member's first connection
  // on this node, none for a further one or one that comes back within the grace period.
  Step attach(const std::string& room, const std::string& member);

  // A connection of `member` left `room`. At the member's last connection here: returns leave
  // when `leave_at` is not after `now` (a goodbye), else none and the member stays until
  // expire() reaches `leave_at` (a drop). Detaching a member that is not attached: none.
  Step detach(const std::string& room, const std::string& member, Clock::time_point now, Clock::time_point leave_at);

  // Returns the members whose grace period ended by `now` and who did not come back; they
  // are forgotten here and must be left in the engine.
  std::vector<std::pair<std::string, std::string>> expire(Clock::time_point now);

  // Connections of `member` in `room` on this node (0 while in grace).
  std::size_t connections(const std::string& room, const std::string& member) const;
  // Members of `room` this node holds for the engine, those in grace included.
  std::size_t members(const std::string& room) const;
  // Members in their grace period, all rooms.
  std::size_t in_grace() const { return grace_count_; }

 private:
  struct Entry {
    std::size_t connections = 0;
    std::uint64_t grace = 0;  // non-zero: the token of its pending leave
  };
  struct Pending {
    std::string room;
    std::string member;
    Clock::time_point at;
    std::uint64_t token;
  };
  Entry* find(const std::string& room, const std::string& member);
  void erase(const std::string& room, const std::string& member);

  std::unordered_map<std::string, std::unordered_map<std::string, Entry>> rooms_;
  // Pending leaves, in the order they were scheduled. expire() looks at the front only, so
  // a caller that schedules with one grace period gets them in deadline order.
  std::deque<Pending> pending_;
  std::uint64_t next_token_ = 0;
  std::size_t grace_count_ = 0;
};

}  // namespace chatd::chat
