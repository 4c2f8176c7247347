// A token bucket: `rate` tokens a second up to `burst`; each admitted event takes one. Pure
// (the caller passes the time), so tests drive it with a fake clock. Not thread-safe: one
// owner, or the owner's lock.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <mutex>
#include <string>
#include <unordered_map>

namespace chatd::chat {

class TokenBucket {
 public:
  using Clock = std::chrono::steady_clock;

  // Returns whether one event at `now` fits; takes its token when it does. A rate of 0 means
  // no limit.
  bool take(Clock::time_point now, double rate, double burst) {
    if (rate <= 0) return true;
    refill(now, rate, burst);
    if (tokens_ < 1) return false;
    tokens_ -= 1;
    return true;
  }

  // Returns whether the bucket is full at `now`: nothing would be lost by forgetting it.
  bool full(Clock::time_point now, double rate, double burst) const {
    if (!started_ || rate <= 0) return true;
    double elapsed = now > last_ ? std::chrono::duration<double>(now - last_).count() : 0;
    return tokens_ + rate * elapsed >= burst;
  }

 private:
  void refill(Clock::time_point now, double rate, double burst) {
    if (!started_) {
      started_ = true;
      tokens_ = burst;
      last_ = now;
      return;
    }
    if (now > last_) {
      tokens_ = std::min(burst, tokens_ + rate * std::chrono::duration<double>(now - last_).count());
      last_ = now;
    }
  }

  bool started_ = false;
  double tokens_ = 0;
  Clock::time_point last_{};
};

// Token buckets by key (a room, a client address), from any thread. Buckets that are full
// again are forgotten as the map grows, so it stays about the size of the keys busy lately.
class KeyedBuckets {
 public:
  // Returns whether one event for `key` fits now; a rate of 0 means no limit.
  bool take(const std::string& key, double rate, double burst) {
    if (rate <= 0) return true;
    auto now = TokenBucket::Clock::now();
    std::lock_guard lock(mu_);
    if (buckets_.size() >= prune_at_) {
      std::erase_if(buckets_, [&](const auto& kv) { return kv.second.full(now, rate, burst); });
      prune_at_ = std::max<std::size_t>(1024, 2 * buckets_.size());
    }
    return buckets_[key].take(now, rate, burst);
  }

 private:
  std::mutex mu_;
  std::unordered_map<std::string, TokenBucket> buckets_;
  std::size_t prune_at_ = 1024;
};

}  // namespace chatd::chat
