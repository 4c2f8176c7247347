#include "chat/rate_limit.h"

#include <gtest/gtest.h>

using chatd::chat::TokenBucket;
using namespace std::chrono_literals;

TEST(TokenBucket, BurstThenRate) {
  TokenBucket b;
  auto t = TokenBucket::Clock::time_point{} + 1h;
  int taken = 0;
  for (int i = 0; i < 20; ++i) taken += b.take(t, 5, 10);
  EXPECT_EQ(taken, 10) << "a fresh bucket holds the burst";
  EXPECT_FALSE(b.take(t + 100ms, 5, 10)) << "half a token after 100 ms at 5/s";
  EXPECT_TRUE(b.take(t + 200ms, 5, 10));
  EXPECT_FALSE(b.full(t + 1s, 5, 10));
  EXPECT_TRUE(b.full(t + 3s, 5, 10)) << "refills to the burst, never past it";
  taken = 0;
  for (int i = 0; i < 20; ++i) taken += b.take(t + 1h, 5, 10);
  EXPECT_EQ(taken, 10);
}

TEST(TokenBucket, ZeroRateMeansNoLimit) {
  TokenBucket b;
  auto t = TokenBucket::Clock::now();
  for (int i = 0; i < 1000; ++i) ASSERT_TRUE(b.take(t, 0, 1));
}
