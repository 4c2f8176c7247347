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
  http_framing,  // a request whose length cannot be known (Transfer-Encoding not ending in chunked)
  count_,
};

// Returns the metric label of `r`.
constexpr std::string_view to_string(Refusal r) {
  switch (r) {
    case Refusal::http_framing: return "http_framing";
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
