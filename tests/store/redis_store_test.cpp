// The redis store against a real redis-server: two stores are two chatd nodes.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <future>

#include <signal.h>

#include "redis/redis_server.h"
#include "store/room_store.h"

namespace chatd::store {
namespace {

using namespace std::chrono_literals;
using test::Engine;
using test::RedisServer;

struct Node {
  Node(const std::string& url, std::size_t max_rooms = 100, std::size_t max_members = 200000) {
    StoreConfig cfg;
    cfg.kind = "redis";
    cfg.redis_url = url;
    cfg.max_rooms = max_rooms;
    cfg.max_members_total = max_members;
    store = make_store(cfg, engine.io());
  }
  ~Node() { store->stop(); }

  // Each call waits at most 3 s for its callback.
  std::error_code create(Room r) {
    std::promise<std::error_code> p;
    store->create(std::move(r), [&](std::error_code ec) { p.set_value(ec); });
    auto f = p.get_future();
    EXPECT_EQ(f.wait_for(3s), std::future_status::ready);
    return f.get();
  }
  std::pair<std::error_code, std::vector<Room>> list() {
    std::promise<std::pair<std::error_code, std::vector<Room>>> p;
    store->list([&](std::error_code ec, std::vector<Room> rooms) { p.set_value({ec, std::move(rooms)}); });
    auto f = p.get_future();
    EXPECT_EQ(f.wait_for(3s), std::future_status::ready);
    return f.get();
  }
  std::pair<std::error_code, std::optional<Room>> find(const std::string& id) {
    std::promise<std::pair<std::error_code, std::optional<Room>>> p;
    store->find(id, [&](std::error_code ec, std::optional<Room> r) { p.set_value({ec, std::move(r)}); });
    auto f = p.get_future();
    EXPECT_EQ(f.wait_for(3s), std::future_status::ready);
    return f.get();
  }

  std::pair<std::error_code, bool> remove(const std::string& id, std::int64_t idle_before = 0) {
    std::promise<std::pair<std::error_code, bool>> p;
    store->remove(id, idle_before, [&](std::error_code ec, bool removed) { p.set_value({ec, removed}); });
    auto f = p.get_future();
    EXPECT_EQ(f.wait_for(3s), std::future_status::ready);
    return f.get();
  }
  std::error_code touch(std::vector<std::string> ids, std::int64_t now) {
    std::promise<std::error_code> p;
    store->touch(std::move(ids), now, [&](std::error_code ec) { p.set_value(ec); });
    auto f = p.get_future();
    EXPECT_EQ(f.wait_for(3s), std::future_status::ready);
    return f.get();
  }
  std::vector<std::string> idle(std::int64_t before) {
    std::promise<std::vector<std::string>> p;
    store->idle(before, 100, [&](std::error_code ec, std::vector<Room> rooms) {
      EXPECT_FALSE(ec);
      std::vector<std::string> ids;
      for (auto& r : rooms) ids.push_back(r.id);
      std::sort(ids.begin(), ids.end());
      p.set_value(ids);
    });
    auto f = p.get_future();
    EXPECT_EQ(f.wait_for(3s), std::future_status::ready);
    return f.get();
  }

  Engine engine;
  std::unique_ptr<RoomStore> store;
};

TEST(RedisStore, RoomsCreatedOnOneNodeAreSeenByAnother) {
  RedisServer redis;
  Node a(redis.url()), b(redis.url());
  ASSERT_TRUE(test::eventually([&] { return a.store->up() && b.store->up(); }));

  EXPECT_FALSE(a.create({"id-2", "점심 메뉴"}));
  EXPECT_FALSE(a.create({"id-1", "Lunch"}));
  EXPECT_FALSE(b.create({"id-3", "Lunch"}));

  auto [ec, rooms] = b.list();
  EXPECT_FALSE(ec);
  ASSERT_EQ(rooms.size(), 3u);  // sorted by name, then id
  EXPECT_EQ(rooms[0].id, "id-1");
  EXPECT_EQ(rooms[1].id, "id-3");
  EXPECT_EQ(rooms[2].id, "id-2");
  EXPECT_EQ(rooms[2].name, "점심 메뉴");
  EXPECT_EQ(a.list().second.size(), 3u);

  auto [fec, found] = a.find("id-3");
  EXPECT_FALSE(fec);
  ASSERT_TRUE(found);
  EXPECT_EQ(found->name, "Lunch");
  auto [nec, none] = b.find("no-such-room");
  EXPECT_FALSE(nec);
  EXPECT_FALSE(none);

  // The hash holds exactly the Spring-compatible JSON, so other tools can read it.
  EXPECT_EQ(redis.command({"HGET", "CHAT_ROOM", "id-2"}), to_json(Room{"id-2", "점심 메뉴"}));
  EXPECT_EQ(redis.command({"HLEN", "CHAT_ROOM"}), "3");
}

std::int64_t wall_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

TEST(RedisStore, RemoveIsWonByOneNodeAndIdleRoomsAreThoseNotTouched) {
  RedisServer redis;
  Node a(redis.url()), b(redis.url());
  ASSERT_TRUE(test::eventually([&] { return a.store->up() && b.store->up(); }));
  const std::string r1 = "00000000-0000-4000-8000-000000000001", r2 = "00000000-0000-4000-8000-000000000002",
                    r3 = "00000000-0000-4000-8000-000000000003";
  for (auto& id : {r1, r2, r3}) ASSERT_FALSE(a.create({id, "room"}));
  const std::int64_t later = wall_ms() + 60'000;
  EXPECT_EQ(a.idle(wall_ms() - 60'000), std::vector<std::string>{}) << "just created: active";
  EXPECT_EQ(a.idle(later), (std::vector<std::string>{r1, r2, r3}));
  ASSERT_FALSE(b.touch({r2, "00000000-0000-4000-8000-00000000dead"}, later + 1));
  EXPECT_EQ(a.idle(later), (std::vector<std::string>{r1, r3}));
  // Idle removal keeps a room touched since: r2 is active after `later`.
  EXPECT_EQ(a.remove(r2, later), std::make_pair(std::error_code{}, false));
  // Two nodes remove r1: exactly one wins.
  auto x = a.remove(r1, later), y = b.remove(r1, later);
  EXPECT_FALSE(x.first || y.first);
  EXPECT_NE(x.second, y.second);
  EXPECT_FALSE(b.find(r1).second);
  EXPECT_EQ(a.remove(r3), std::make_pair(std::error_code{}, true));
  EXPECT_EQ(a.idle(later), std::vector<std::string>{}) << "removed rooms leave the activity set";
  EXPECT_EQ(a.list().second.size(), 1u);
}

TEST(RedisStore, RoomLimitHoldsAcrossNodes) {
  RedisServer redis;
  Node a(redis.url(), 2), b(redis.url(), 2);
  ASSERT_TRUE(test::eventually([&] { return a.store->up() && b.store->up(); }));
  EXPECT_FALSE(a.create({"r1", "one"}));
  EXPECT_FALSE(b.create({"r2", "two"}));
  EXPECT_EQ(a.create({"r3", "three"}), Error::full);
  EXPECT_EQ(b.create({"r4", "four"}), Error::full);
  EXPECT_EQ(a.list().second.size(), 2u);
}

// Every node holds every restricted room's member list: their total is bounded across nodes,
// a create asked again counts once, and a removal gives its members' room back.
TEST(RedisStore, RestrictedRoomMembersAreBoundedInTotalAcrossNodes) {
  RedisServer redis;
  Node a(redis.url(), 100, 5), b(redis.url(), 100, 5);
  ASSERT_TRUE(test::eventually([&] { return a.store->up() && b.store->up(); }));
  const Room three("m1", "three", true, {"u1", "u2", "u3"});
  EXPECT_FALSE(a.create(three));
  EXPECT_FALSE(b.create(three)) << "the same room again (a create whose answer was lost)";
  EXPECT_EQ(b.create({"m2", "three more", true, {"u4", "u5", "u6"}}), Error::members_full);
  EXPECT_FALSE(b.create({"m3", "two", true, {"u4", "u5"}})) << "3 + 2 fit in 5";
  EXPECT_EQ(a.create({"m4", "one", true, {"u6"}}), Error::members_full);
  EXPECT_FALSE(a.create({"p1", "public"})) << "public rooms list no members";
  EXPECT_FALSE(a.create({"m5", "restricted, no list", true, {}}));
  EXPECT_EQ(a.list().second.size(), 4u);
  EXPECT_EQ(b.remove("m1"), std::make_pair(std::error_code{}, true));
  EXPECT_FALSE(b.remove("m1").second);
  EXPECT_FALSE(a.create({"m2", "three more", true, {"u4", "u5", "u6"}})) << "m1's three went with it";
  EXPECT_EQ(a.create({"m6", "one", true, {"u7"}}), Error::members_full);
}

TEST(RedisStore, UnreadableValueIsCorruptAndSkippedInLists) {
  RedisServer redis;
  Node a(redis.url());
  ASSERT_TRUE(test::eventually([&] { return a.store->up(); }));
  EXPECT_FALSE(a.create({"good", "fine"}));
  redis.command({"HSET", "CHAT_ROOM", "bad", "not json"});
  EXPECT_EQ(a.find("bad").first, Error::corrupt);
  auto [ec, rooms] = a.list();
  EXPECT_FALSE(ec);
  ASSERT_EQ(rooms.size(), 1u);
  EXPECT_EQ(rooms[0].id, "good");
}

TEST(RedisStore, FailsFastWhileRedisIsDownAndRecovers) {
  RedisServer redis;
  Node a(redis.url());
  ASSERT_TRUE(test::eventually([&] { return a.store->up(); }));
  EXPECT_FALSE(a.create({"before", "kept?"}));

  redis.kill9();
  // up() turns false a moment before describe() gets the reason: wait for both.
  ASSERT_TRUE(test::eventually([&] { return !a.store->up() && a.store->describe().find("down") != std::string::npos; }, 3s))
      << a.store->describe();
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(a.create({"during", "x"}), Error::engine_down);
  EXPECT_EQ(a.list().first, Error::engine_down);
  EXPECT_EQ(a.find("before").first, Error::engine_down);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 500ms);  // promptly, not after a hang

  redis.start();
  ASSERT_TRUE(test::eventually([&] { return a.store->up(); }, 5s)) << a.store->describe();
  EXPECT_FALSE(a.create({"after", "y"}));
  auto [fec, found] = a.find("after");
  EXPECT_FALSE(fec);
  EXPECT_TRUE(found);
}

// A frozen Redis still holds what reached its socket and runs it once it resumes, after chatd's
// ping timeout dropped the connection: the create and the remove happen though their answers
// are lost. Asked again on the new connection, they settle as done, not "unavailable".
TEST(RedisStore, ChangesWhoseAnswersWereLostAreAskedAgain) {
  RedisServer redis;
  Node a(redis.url());
  ASSERT_TRUE(test::eventually([&] { return a.store->up(); }));
  ASSERT_FALSE(a.create({"old", "o"}));

  redis.signal(SIGSTOP);
  std::promise<std::error_code> created;
  a.store->create({"new", "n"}, [&](std::error_code ec) { created.set_value(ec); });
  std::promise<std::pair<std::error_code, bool>> removed;
  a.store->remove("old", 0, [&](std::error_code ec, bool r) { removed.set_value({ec, r}); });
  ASSERT_TRUE(test::eventually([&] { return !a.store->up(); }, 8s));  // the ping timeout
  redis.signal(SIGCONT);

  auto c = created.get_future();
  ASSERT_EQ(c.wait_for(10s), std::future_status::ready);
  EXPECT_FALSE(c.get()) << "the room was made; the store must say so";
  auto r = removed.get_future();
  ASSERT_EQ(r.wait_for(10s), std::future_status::ready);
  auto [rec, gone] = r.get();
  EXPECT_FALSE(rec);
  EXPECT_TRUE(gone) << "removed by the lost run: the caller must announce it";
  auto [lec, rooms] = a.list();
  EXPECT_FALSE(lec);
  ASSERT_EQ(rooms.size(), 1u);
  EXPECT_EQ(rooms[0].id, "new");

  // Redis never comes back: the outcome stays unknown, and the answer says so.
  redis.signal(SIGSTOP);
  std::promise<std::error_code> unknown;
  a.store->create({"maybe", "m"}, [&](std::error_code ec) { unknown.set_value(ec); });
  ASSERT_TRUE(test::eventually([&] { return !a.store->up(); }, 8s));
  auto u = unknown.get_future();
  ASSERT_EQ(u.wait_for(10s), std::future_status::ready);
  EXPECT_EQ(u.get(), Error::unsettled);
  redis.signal(SIGCONT);
}

TEST(RedisStore, StopAnswersPendingAndLaterCallsWithStopped) {
  RedisServer redis;
  Node a(redis.url());
  ASSERT_TRUE(test::eventually([&] { return a.store->up(); }));
  std::atomic<int> answered{0};
  for (int i = 0; i < 200; ++i)
    a.store->find("x", [&](std::error_code ec, std::optional<Room>) {
      EXPECT_TRUE(!ec || ec == Error::stopped) << ec.message();
      ++answered;
    });
  a.store->stop();
  EXPECT_TRUE(test::eventually([&] { return answered == 200; }, 3s));
  std::error_code late;
  a.store->create({"z", "z"}, [&](std::error_code ec) { late = ec; });
  EXPECT_EQ(late, Error::stopped);
  EXPECT_FALSE(a.store->up());
}

TEST(RedisStore, BadConfigurationFailsAtStartWithinSeconds) {
  RedisServer redis("right-password");
  Engine engine;
  StoreConfig cfg;
  cfg.kind = "redis";
  auto start_fails = [&](const std::string& url, const std::string& says) {
    cfg.redis_url = url;
    const auto t0 = std::chrono::steady_clock::now();
    try {
      make_store(cfg, engine.io());
      ADD_FAILURE() << url << " started";
    } catch (const std::runtime_error& e) {
      EXPECT_NE(std::string(e.what()).find(says), std::string::npos) << e.what();
    }
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 4s) << url;
  };
  start_fails("redis:/nohost", "bad Redis URL");
  start_fails("mysql://127.0.0.1:3306", "bad Redis URL");
  start_fails(redis.url("wrong-password"), "refused");
  start_fails(redis.url(""), "NOAUTH");
  start_fails("redis://127.0.0.1:" + std::to_string(test::free_port()), "cannot reach");

  cfg.redis_url = redis.url();
  auto ok = make_store(cfg, engine.io());
  EXPECT_TRUE(test::eventually([&] { return ok->up(); })) << ok->describe();
  ok->stop();
}

}  // namespace
}  // namespace chatd::store
