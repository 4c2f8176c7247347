// What chatd refuses to protect itself and other clients, counted by reason for /metrics
// (chatd_refusals_total{reason=...}). Counted from any thread.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace chatd::chat {

enum class Refusal : std::size_t {
  http_framing,            // a request whose length cannot be known (Transfer-Encoding not ending in chunked)
  subscribe_unknown_room,  // a SUBSCRIBE to a room that does not exist
  send_rate,               // a SEND over the connection's rate (429)
  send_flood,              // a connection closed for sending at more than twice its rate
  room_rate,               // a SEND over the room's rate on this node (429)
  count_,
};

// Returns the metric label of `r`.
constexpr std::string_view to_string(Refusal r) {
  switch (r) {
    case Refusal::http_framing: return "http_framing";
    case Refusal::subscribe_unknown_room: return "subscribe_unknown_room";
    case Refusal::send_rate: return "send_rate";
    case Refusal::send_flood: return "send_flood";
    case Refusal::room_rate: return "room_rate";
    case Refusal::count_: break;
  }
  return "unknown";
}

class Refusals {
 public:
  void count(Refusal r) { counts_[static_cast<std::size_t>(r)].fetch_add(1, std::memory_order_relaxed); }
  std::uint64_t get(Refusal r) const { return counts_[static_cast<std::size_t>(r)].load(std::memory_order_relaxed); }

 private:
  std::array<std::atomic<std::uint64_t>, static_cast<std::size_t>(Refusal::count_)> counts_{};
};

}  // namespace chatd::chat
