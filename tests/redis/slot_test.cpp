#include <gtest/gtest.h>

#include "redis/slot.h"

namespace chatd::redis {
namespace {

// Expected slots are redis-server 7.0's own answers to CLUSTER KEYSLOT.
TEST(KeySlot, MatchesRedis) {
  const std::pair<const char*, std::uint16_t> known[] = {
      {"foo", 12182},
      {"bar", 5061},
      {"123456789", 12739},  // CRC16/XMODEM check value 0x31C3 = 12739
      {"", 0},
      {"chatd:{r1}:seq", 2121},
  };
  for (const auto& [key, slot] : known) EXPECT_EQ(key_slot(key), slot) << key;
}

TEST(KeySlot, HashTags) {
  // Only the text inside the first {...} counts, when it is not empty.
  EXPECT_EQ(key_slot("{user1000}.following"), 3443);
  EXPECT_EQ(key_slot("{user1000}.followers"), 3443);
  EXPECT_EQ(key_slot("foo{bar}{zap}"), 5061);   // = slot of "bar"
  EXPECT_EQ(key_slot("foo{}{bar}"), 8363);      // empty first tag: the whole key
  EXPECT_EQ(key_slot("foo{{bar}}zap"), 4015);   // tag is "{bar"
  EXPECT_EQ(key_slot("{}foo"), 9500);
  EXPECT_EQ(key_slot("a{b"), 13340);            // no closing brace: the whole key
  // A room's keys and its channel share one slot.
  const std::string room = "6f1c2a1e-5b7e-4a43-9d2b-1f7d1d5e8a10";
  const auto slot = key_slot("chatd:{" + room + "}:seq");
  for (const char* what : {"epoch", "hist", "live", "cid:abc", "no-old-seq"})
    EXPECT_EQ(key_slot("chatd:{" + room + "}:" + what), slot) << what;
}

TEST(Redirect, ReadsMovedAndAsk) {
  auto m = parse_redirect("MOVED 3999 127.0.0.1:6381");
  ASSERT_TRUE(m);
  EXPECT_TRUE(m->moved);
  EXPECT_EQ(m->slot, 3999);
  EXPECT_EQ(m->host, "127.0.0.1");
  EXPECT_EQ(m->port, 6381);

  auto a = parse_redirect("ASK 16383 ::1:7002");  // IPv6 without brackets, as Redis writes it
  ASSERT_TRUE(a);
  EXPECT_FALSE(a->moved);
  EXPECT_EQ(a->slot, 16383);
  EXPECT_EQ(a->host, "::1");
  EXPECT_EQ(a->port, 7002);

  auto same_host = parse_redirect("MOVED 1 :6380");  // Redis 7: the host of the node asked
  ASSERT_TRUE(same_host);
  EXPECT_EQ(same_host->host, "");
  EXPECT_EQ(same_host->port, 6380);
}

TEST(Redirect, RefusesWhatIsNotOne) {
  for (const char* bad : {"", "MOVED", "MOVED 3999", "MOVED 3999 host", "MOVED 16384 h:1", "MOVED x h:1",
                          "MOVED 1 h:0", "MOVED 1 h:65536", "MOVED 1 h:12x", "ASK -1 h:1", "ERR unknown command",
                          "CLUSTERDOWN The cluster is down", "moved 1 h:1", "MOVED  1 h:1"})
    EXPECT_FALSE(parse_redirect(bad)) << bad;
}

}  // namespace
}  // namespace chatd::redis
