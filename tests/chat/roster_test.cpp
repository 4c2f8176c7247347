// The node's presence bookkeeping: connections per member, the grace period, and that the
// engine is told only on a member's first and last connection.
#include "chat/roster.h"

#include <gtest/gtest.h>

#include <string>

namespace chatd::chat {
namespace {

using Step = Roster::Step;
using namespace std::chrono_literals;

const std::string kRoom = "room-1";
const Roster::Clock::time_point t0{};

TEST(Roster, FirstConnectionJoinsLastGoodbyeLeaves) {
  Roster r;
  EXPECT_EQ(r.attach(kRoom, "alice"), Step::join);
  EXPECT_EQ(r.members(kRoom), 1u);
  EXPECT_EQ(r.detach(kRoom, "alice", t0, t0), Step::leave);
  EXPECT_EQ(r.members(kRoom), 0u);
}

TEST(Roster, TwoTabsAreOneMember) {
  Roster r;
  EXPECT_EQ(r.attach(kRoom, "alice"), Step::join);
  EXPECT_EQ(r.attach(kRoom, "alice"), Step::none);
  EXPECT_EQ(r.connections(kRoom, "alice"), 2u);
  EXPECT_EQ(r.members(kRoom), 1u);
  EXPECT_EQ(r.detach(kRoom, "alice", t0, t0), Step::none) << "the other tab is still in";
  EXPECT_EQ(r.detach(kRoom, "alice", t0, t0), Step::leave);
}

TEST(Roster, MembersAreCountedPerRoom) {
  Roster r;
  EXPECT_EQ(r.attach("a", "alice"), Step::join);
  EXPECT_EQ(r.attach("b", "alice"), Step::join) << "another room is another membership";
  EXPECT_EQ(r.attach("a", "bob"), Step::join);
  EXPECT_EQ(r.members("a"), 2u);
  EXPECT_EQ(r.members("b"), 1u);
}

TEST(Roster, ADropLeavesOnlyAfterTheGracePeriod) {
  Roster r;
  r.attach(kRoom, "alice");
  EXPECT_EQ(r.detach(kRoom, "alice", t0, t0 + 5s), Step::none);
  EXPECT_EQ(r.in_grace(), 1u);
  EXPECT_EQ(r.members(kRoom), 1u) << "still held for the engine during the grace period";
  EXPECT_TRUE(r.expire(t0 + 4s).empty());
  auto gone = r.expire(t0 + 5s);
  ASSERT_EQ(gone.size(), 1u);
  EXPECT_EQ(gone[0].first, kRoom);
  EXPECT_EQ(gone[0].second, "alice");
  EXPECT_EQ(r.members(kRoom), 0u);
  EXPECT_EQ(r.in_grace(), 0u);
  EXPECT_TRUE(r.expire(t0 + 10s).empty()) << "expired once";
}

TEST(Roster, AReconnectWithinTheGracePeriodIsNeitherLeaveNorJoin) {
  Roster r;
  r.attach(kRoom, "alice");
  r.detach(kRoom, "alice", t0, t0 + 5s);
  EXPECT_EQ(r.attach(kRoom, "alice"), Step::none);
  EXPECT_EQ(r.in_grace(), 0u);
  EXPECT_TRUE(r.expire(t0 + 60s).empty()) << "the pending leave was cancelled";
  EXPECT_EQ(r.connections(kRoom, "alice"), 1u);
}

TEST(Roster, ADropAfterAReconnectStartsAFreshGracePeriod) {
  Roster r;
  r.attach(kRoom, "alice");
  r.detach(kRoom, "alice", t0, t0 + 5s);
  r.attach(kRoom, "alice");
  r.detach(kRoom, "alice", t0 + 3s, t0 + 8s);
  EXPECT_TRUE(r.expire(t0 + 6s).empty()) << "the first, cancelled deadline must not take her";
  EXPECT_EQ(r.expire(t0 + 8s).size(), 1u);
}

TEST(Roster, AGoodbyeDuringAnotherTabsGraceLeavesAtOnce) {
  Roster r;
  r.attach(kRoom, "alice");
  r.attach(kRoom, "alice");
  EXPECT_EQ(r.detach(kRoom, "alice", t0, t0 + 5s), Step::none);  // a tab dropped
  EXPECT_EQ(r.detach(kRoom, "alice", t0, t0), Step::leave);       // the other said goodbye
  EXPECT_TRUE(r.expire(t0 + 5s).empty());
}

TEST(Roster, DetachingAStrangerDoesNothing) {
  Roster r;
  EXPECT_EQ(r.detach(kRoom, "nobody", t0, t0), Step::none);
  r.attach(kRoom, "alice");
  r.detach(kRoom, "alice", t0, t0 + 5s);
  EXPECT_EQ(r.detach(kRoom, "alice", t0, t0), Step::none) << "no connection left to detach";
  EXPECT_EQ(r.expire(t0 + 5s).size(), 1u);
}

// 10,000 members: each join and leave touches only its own entry, so the engine hears of each
// member exactly twice and nothing walks the room.
TEST(Roster, ABigRoomCostsOneStepPerMember) {
  Roster r;
  std::size_t joins = 0, leaves = 0;
  for (int i = 0; i < 10000; ++i) joins += r.attach(kRoom, "m" + std::to_string(i)) == Step::join;
  for (int i = 0; i < 10000; ++i) joins += r.attach(kRoom, "m" + std::to_string(i)) == Step::join;  // second tabs
  EXPECT_EQ(r.members(kRoom), 10000u);
  for (int i = 0; i < 10000; ++i) {
    leaves += r.detach(kRoom, "m" + std::to_string(i), t0, t0) == Step::leave;
    leaves += r.detach(kRoom, "m" + std::to_string(i), t0, t0 + 1s) == Step::leave;
  }
  EXPECT_EQ(joins, 10000u);
  EXPECT_EQ(leaves, 0u) << "every member's last tab dropped: all in grace";
  EXPECT_EQ(r.in_grace(), 10000u);
  EXPECT_EQ(r.expire(t0 + 1s).size(), 10000u);
  EXPECT_EQ(r.members(kRoom), 0u);
}

}  // namespace
}  // namespace chatd::chat
