#include <gtest/gtest.h>

#include "redis/endpoint.h"

namespace chatd::redis {
namespace {

TEST(RedisUrl, ReadsHostPortPasswordAndDb) {
  auto ep = parse_url("redis://:s3cret@10.0.0.7:6380/2");
  EXPECT_EQ(ep.host, "10.0.0.7");
  EXPECT_EQ(ep.port, 6380);
  EXPECT_EQ(ep.user, "");
  EXPECT_EQ(ep.password, "s3cret");
  EXPECT_EQ(ep.db, 2);
  EXPECT_EQ(ep.display(), "10.0.0.7:6380/2");  // never the password
}

TEST(RedisUrl, DefaultsAndUserPassword) {
  auto ep = parse_url("redis://localhost");
  EXPECT_EQ(ep.host, "localhost");
  EXPECT_EQ(ep.port, 6379);
  EXPECT_EQ(ep.db, 0);
  EXPECT_TRUE(ep.password.empty());

  ep = parse_url("redis://alice:p%40ss@127.0.0.1:7000");
  EXPECT_EQ(ep.user, "alice");
  EXPECT_EQ(ep.password, "p@ss");
  EXPECT_EQ(ep.port, 7000);

  ep = parse_url("redis://[::1]:7001/");
  EXPECT_EQ(ep.host, "::1");
  EXPECT_EQ(ep.port, 7001);
}

TEST(RedisUrl, RejectsWhatCanNeverWork) {
  for (const char* bad : {"", "127.0.0.1:6379", "http://127.0.0.1:6379", "redis://", "redis://h:port",
                          "redis://h:6379/db", "redis://h:6379/-1", "redis://h:0", "redis://h:6379/1?x=1",
                          "redis://h:99999"}) {
    EXPECT_THROW(parse_url(bad), std::runtime_error) << bad;
  }
}

TEST(RedisClusterUrl, ReadsSeedsAndOnePassword) {
  auto t = parse_target("redis+cluster://:pw@10.0.0.1:7000,10.0.0.2:7001,[::1]:7002");
  EXPECT_TRUE(t.cluster);
  ASSERT_EQ(t.seeds.size(), 3u);
  EXPECT_EQ(t.seeds[0].host, "10.0.0.1");
  EXPECT_EQ(t.seeds[0].port, 7000);
  EXPECT_EQ(t.seeds[2].host, "::1");
  EXPECT_EQ(t.seeds[2].port, 7002);
  for (const auto& ep : t.seeds) EXPECT_EQ(ep.password, "pw");
  EXPECT_EQ(t.display(), "cluster 10.0.0.1:7000,10.0.0.2:7001,::1:7002");  // never the password

  auto one = parse_target("redis+cluster://alice:s%40cret@h");
  ASSERT_EQ(one.seeds.size(), 1u);
  EXPECT_EQ(one.seeds[0].user, "alice");
  EXPECT_EQ(one.seeds[0].password, "s@cret");
  EXPECT_EQ(one.seeds[0].port, 6379);

  auto single = parse_target("redis://127.0.0.1:6380/2");
  EXPECT_FALSE(single.cluster);
  ASSERT_EQ(single.seeds.size(), 1u);
  EXPECT_EQ(single.seeds[0].db, 2);
}

TEST(RedisClusterUrl, RejectsWhatCanNeverWork) {
  for (const char* bad : {"redis+cluster://", "redis+cluster://h:1,", "redis+cluster://h:1,,h:2",
                          "redis+cluster://h:1/2", "redis+cluster://h:1?x=1", "redis+cluster://h:0",
                          "redis+cluster://:pw@", "redis+cluster://h:port"}) {
    EXPECT_THROW(parse_target(bad), std::runtime_error) << bad;
  }
}

}  // namespace
}  // namespace chatd::redis
