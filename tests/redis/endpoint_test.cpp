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

}  // namespace
}  // namespace chatd::redis
