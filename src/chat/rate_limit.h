// A token bucket: `rate` tokens a second up to `burst`; each admitted event takes one. Pure
// (the caller passes the time), so tests drive it with a fake clock. Not thread-safe: one
// owner, or the owner's lock.
#pragma once

#include <algorithm>
#include <chrono>

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

}  // namespace chatd::chat
