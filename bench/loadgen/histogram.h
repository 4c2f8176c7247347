// A small HDR-style log-linear histogram for nanosecond latencies.
#pragma once

#include <algorithm>
#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>

namespace loadgen {

// Exact below 256; above, 128 linear sub-buckets per power of two, so every value lands in a
// bucket no wider than 1/128 (< 0.8 %) of its lower edge. Fixed size and trivially copyable, so
// results can be summed across threads and copied through shared memory between processes.
class Histogram {
 public:
  static constexpr int kSubBits = 7;
  static constexpr int kMaxShift = 40;  // largest bucket starts near 2^47 ns (~39 hours)
  static constexpr std::size_t kBuckets = std::size_t(kMaxShift + 2) << kSubBits;

  void record(std::uint64_t v) {
    ++counts_[index(v)];
    ++total_;
    max_ = std::max(max_, v);
  }

  void merge(const Histogram& o) {
    for (std::size_t i = 0; i < kBuckets; ++i) counts_[i] += o.counts_[i];
    total_ += o.total_;
    max_ = std::max(max_, o.max_);
  }

  std::uint64_t count() const { return total_; }
  std::uint64_t max() const { return max_; }

  // Returns the value at quantile q (0..1): the upper edge of the bucket holding it, capped at
  // the exact maximum, so a reported percentile is never below the true one. 0 when empty.
  std::uint64_t quantile(double q) const {
    if (total_ == 0) return 0;
    auto rank = static_cast<std::uint64_t>(q * static_cast<double>(total_));
    rank = std::clamp<std::uint64_t>(rank, 1, total_);
    std::uint64_t seen = 0;
    for (std::size_t i = 0; i < kBuckets; ++i) {
      seen += counts_[i];
      if (seen >= rank) return std::min(upper(i), max_);
    }
    return max_;
  }

  static std::size_t index(std::uint64_t v) {
    if (v < (std::uint64_t{2} << kSubBits)) return static_cast<std::size_t>(v);
    int shift = (63 - std::countl_zero(v)) - kSubBits;
    if (shift > kMaxShift) return kBuckets - 1;
    return (std::size_t(shift) << kSubBits) + static_cast<std::size_t>(v >> shift);
  }

  // Returns the smallest value that maps to bucket i.
  static std::uint64_t lower(std::size_t i) {
    if (i < (std::size_t{2} << kSubBits)) return i;
    const int shift = static_cast<int>(i >> kSubBits) - 1;
    return (std::uint64_t(i) - (std::uint64_t(shift) << kSubBits)) << shift;
  }

  // Returns the largest value that maps to bucket i.
  static std::uint64_t upper(std::size_t i) {
    return i + 1 < kBuckets ? lower(i + 1) - 1 : ~std::uint64_t{0};
  }

 private:
  std::array<std::uint64_t, kBuckets> counts_{};
  std::uint64_t total_ = 0;
  std::uint64_t max_ = 0;
};

}  // namespace loadgen
