// chatd::redis — Redis Cluster's key space, as pure functions: which of the 16384 hash slots a
// key lives in, and what a MOVED or ASK redirect says. No I/O; unit-tested against Redis's own
// CLUSTER KEYSLOT answers.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace chatd::redis {

inline constexpr std::uint16_t kSlots = 16384;

// Returns the hash slot of `key`: CRC16 (XMODEM) modulo 16384 of the key, or of its hash tag
// (the text between the first '{' and the next '}', when that is not empty), as Redis Cluster
// computes it. Channels of sharded pub/sub map to slots the same way.
std::uint16_t key_slot(std::string_view key) noexcept;

// A redirect from a cluster node: "MOVED <slot> <host>:<port>" (the slot lives there now:
// update the map) or "ASK <slot> <host>:<port>" (this one command: send ASKING, then it, there).
struct Redirect {
  bool moved = false;  // false: ASK
  std::uint16_t slot = 0;
  std::string host;    // as the node announced it; may be empty (Redis 7: "MOVED 3999 :6381"
                       // means the same host as the node that answered)
  std::uint16_t port = 0;
};
// Returns the redirect in a Redis error text, or nullopt when it is not one.
std::optional<Redirect> parse_redirect(std::string_view error) noexcept;

}  // namespace chatd::redis
