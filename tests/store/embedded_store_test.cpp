// The embedded store refuses a damaged or truncated file at start and reports DOWN while
// writes fail (issue 13, finding 9).
#include <gtest/gtest.h>

#include <thread>
#include <sqlite3.h>
#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <thread>

#include "store/room_store.h"

using namespace chatd;

namespace {

class EmbeddedStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir = std::filesystem::temp_directory_path() /
          ("chatd-embedded-" + std::to_string(::getpid()) + "-" + ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir);
    cfg.data_dir = dir.string();
    cfg.max_rooms = 100000;
  }
  void TearDown() override {
    store_.reset();
    std::filesystem::remove_all(dir);
  }

  // Returns the error of creating room `i` in `s` synchronously.
  static std::error_code create(store::RoomStore& s, int i) {
    std::error_code out = make_error_code(std::errc::timed_out);
    s.create({"00000000-0000-4000-8000-" + std::string(12 - std::to_string(i).size(), '0') + std::to_string(i),
              "room " + std::to_string(i)},
             [&](std::error_code ec) { out = ec; });
    return out;
  }

  // Creates rooms while files may not grow past 64 KiB (a full disk, as far as this process can
  // tell) until one is refused; the limit is lifted again before it returns that refusal.
  static std::error_code create_until_the_disk_is_full(store::RoomStore& s) {
    std::signal(SIGXFSZ, SIG_IGN);
    rlimit old{};
    ::getrlimit(RLIMIT_FSIZE, &old);
    rlimit tight = old;
    tight.rlim_cur = 64 * 1024;
    if (::setrlimit(RLIMIT_FSIZE, &tight) != 0) return std::make_error_code(std::errc::operation_not_permitted);
    std::error_code ec;
    for (int i = 1; i < 5000 && !ec; ++i) ec = create(s, i);
    ::setrlimit(RLIMIT_FSIZE, &old);
    return ec;
  }

  // Returns the message of the exception opening the store throws ("" when it opens).
  std::string open_error() {
    try {
      store::make_embedded_store(cfg);
    } catch (const std::runtime_error& e) {
      return e.what();
    }
    return "";
  }

  std::filesystem::path dir;
  store::StoreConfig cfg;
  std::unique_ptr<store::RoomStore> store_;  // closed before TearDown removes its folder
};

}  // namespace

TEST_F(EmbeddedStoreTest, AZeroByteFileIsRefused) {
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "chatd.db").close();
  EXPECT_NE(open_error().find("is empty (0 bytes)"), std::string::npos) << open_error();
}

TEST_F(EmbeddedStoreTest, ADamagedFileIsRefusedNotServedInPart) {
  {
    auto s = store::make_embedded_store(cfg);
    for (int i = 0; i < 3000; ++i) ASSERT_FALSE(create(*s, i));
  }
  auto db = dir / "chatd.db";
  std::filesystem::remove(dir / "chatd.db-wal");
  std::filesystem::remove(dir / "chatd.db-shm");
  auto size = std::filesystem::file_size(db);
  ASSERT_GT(size, 16u * 4096);
  {
    // Overwrite one page in the middle (page 10) with garbage, as a bad disk would.
    std::fstream f(db, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(9 * 4096);
    std::string junk(4096, '\xA5');
    f.write(junk.data(), static_cast<std::streamsize>(junk.size()));
  }
  auto why = open_error();
  EXPECT_NE(why.find("is damaged"), std::string::npos) << why;
}

TEST_F(EmbeddedStoreTest, FailedWritesTurnItDownUntilOneSucceeds) {
  auto s = store::make_embedded_store(cfg);
  ASSERT_FALSE(create(*s, 0));
  EXPECT_TRUE(s->up());
  EXPECT_EQ(create_until_the_disk_is_full(*s), store::Error::engine_down);
  EXPECT_FALSE(s->up()) << "a store that cannot write must not report UP";
  EXPECT_NE(s->describe().find("last write failed"), std::string::npos) << s->describe();
  EXPECT_FALSE(create(*s, 9999));
  EXPECT_TRUE(s->up());
}

// A node out of its balancer's rotation gets no room writes: freed space must bring the store
// back by itself (s21 probe: /healthz stayed 503 after a full disk until a room was created).
TEST_F(EmbeddedStoreTest, AStoreTurnedDownComesBackWithoutAWriteOfItsOwn) {
  auto s = store::make_embedded_store(cfg);
  ASSERT_FALSE(create(*s, 0));
  ASSERT_EQ(create_until_the_disk_is_full(*s), store::Error::engine_down);
  EXPECT_FALSE(s->up());
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!s->up() && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_TRUE(s->up()) << "space came back; no room write came";
  EXPECT_EQ(s->describe().find("last write failed"), std::string::npos) << s->describe();
}

TEST_F(EmbeddedStoreTest, RemoveTouchAndIdleSurviveARestartAndKeepTheListOrder) {
  const auto now = std::chrono::duration_cast<std::chrono::milliseconds>(
                       std::chrono::system_clock::now().time_since_epoch()).count();
  auto id = [](int i) { return "00000000-0000-4000-8000-" + std::string(12 - std::to_string(i).size(), '0') + std::to_string(i); };
  auto idle = [](store::RoomStore& s, std::int64_t before) {
    std::vector<std::string> ids;
    s.idle(before, 100, [&](std::error_code ec, std::vector<store::Room> rooms) {
      EXPECT_FALSE(ec);
      for (auto& r : rooms) ids.push_back(r.id);
    });
    return ids;
  };
  auto remove = [](store::RoomStore& s, const std::string& room, std::int64_t idle_before) {
    bool out = false;
    s.remove(room, idle_before, [&](std::error_code ec, bool removed) {
      EXPECT_FALSE(ec);
      out = removed;
    });
    return out;
  };
  {
    auto s = store::make_embedded_store(cfg);
    for (int i = 1; i <= 4; ++i) ASSERT_FALSE(create(*s, i));
    EXPECT_TRUE(idle(*s, now - 60'000).empty());
    s->touch({id(2), id(9)}, now + 120'000, [](std::error_code ec) { EXPECT_FALSE(ec); });
    EXPECT_EQ(idle(*s, now + 60'000), (std::vector<std::string>{id(1), id(3), id(4)}));
    EXPECT_FALSE(remove(*s, id(2), now + 60'000)) << "touched after the cut: stays";
    EXPECT_TRUE(remove(*s, id(3), now + 60'000));
    EXPECT_FALSE(remove(*s, id(3), 0)) << "removed once";
  }
  auto s = store::make_embedded_store(cfg);  // what was written is what a restart reads
  std::vector<std::string> listed;
  s->list([&](std::error_code, std::vector<store::Room> rooms) {
    for (auto& r : rooms) listed.push_back(r.id);
  });
  EXPECT_EQ(listed, (std::vector<std::string>{id(1), id(2), id(4)})) << "creation order, without the removed";
  EXPECT_EQ(idle(*s, now + 60'000), (std::vector<std::string>{id(1), id(4)}));
  ASSERT_FALSE(create(*s, 5));
  s->list([&](std::error_code, std::vector<store::Room> rooms) { EXPECT_EQ(rooms.back().id, id(5)); });
}

// A touch the file refused used to stay in memory: the room looked active all this run, and
// the first idle sweep after a restart (which reads the older time) removed it.
TEST_F(EmbeddedStoreTest, ARefusedTouchChangesNothingInMemory) {
  const auto now = std::chrono::duration_cast<std::chrono::milliseconds>(
                       std::chrono::system_clock::now().time_since_epoch()).count();
  const std::string room = "00000000-0000-4000-8000-000000000001";
  auto idle = [](store::RoomStore& s, std::int64_t before) {
    std::size_t n = 0;
    s.idle(before, 100, [&](std::error_code ec, std::vector<store::Room> rooms) {
      EXPECT_FALSE(ec);
      n = rooms.size();
    });
    return n;
  };
  {
    auto s = store::make_embedded_store(cfg);
    ASSERT_FALSE(create(*s, 1));
    // No file may grow (see FailedWritesTurnItDownUntilOneSucceeds): the UPDATE fails.
    std::signal(SIGXFSZ, SIG_IGN);
    rlimit old{};
    ::getrlimit(RLIMIT_FSIZE, &old);
    rlimit tight = old;
    tight.rlim_cur = 0;
    ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &tight), 0);
    std::error_code ec;
    s->touch({room}, now + 120'000, [&](std::error_code e) { ec = e; });
    ::setrlimit(RLIMIT_FSIZE, &old);
    ASSERT_EQ(ec, store::Error::engine_down);
    EXPECT_EQ(idle(*s, now + 60'000), 1u) << "the refused touch must not make the room look active";
    s->touch({room}, now + 120'000, [&](std::error_code e) { ec = e; });
    EXPECT_FALSE(ec);
    EXPECT_TRUE(s->up()) << "a touch that is written is a write that succeeded";
    EXPECT_EQ(idle(*s, now + 60'000), 0u);
  }
  auto s = store::make_embedded_store(cfg);
  EXPECT_EQ(idle(*s, now + 60'000), 0u) << "the touch that was written survives a restart";
}

TEST_F(EmbeddedStoreTest, RestrictedRoomsKeepTheirMembersAcrossRestarts) {
  {
    auto s = store::make_embedded_store(cfg);
    std::error_code ec = make_error_code(std::errc::timed_out);
    s->create(store::Room("00000000-0000-4000-8000-000000000001", "secret", true, {"u-a", "u-b"}), [&](std::error_code e) { ec = e; });
    ASSERT_FALSE(ec);
    ASSERT_FALSE(create(*s, 2));
  }
  auto s = store::make_embedded_store(cfg);
  std::vector<store::Room> rooms;
  s->list([&](std::error_code, std::vector<store::Room> all) { rooms = std::move(all); });
  ASSERT_EQ(rooms.size(), 2u);
  EXPECT_TRUE(rooms[0].restricted);
  EXPECT_EQ(rooms[0].members, (std::vector<std::string>{"u-a", "u-b"}));
  EXPECT_FALSE(rooms[1].restricted);
  EXPECT_TRUE(rooms[1].members.empty());
  // The JSON (Redis's CHAT_ROOM value and the REST answer) carries the same.
  auto back = store::room_from_json(store::to_json(rooms[0]));
  ASSERT_TRUE(back);
  EXPECT_TRUE(back->restricted);
  EXPECT_EQ(back->members, rooms[0].members);
  EXPECT_EQ(store::to_json(rooms[1]), R"({"roomId":"00000000-0000-4000-8000-000000000002","name":"room 2"})");
}

// The member lists of all restricted rooms together are bounded, across restarts (the count
// is rebuilt from the file), and a removal gives its members' room back.
TEST_F(EmbeddedStoreTest, RestrictedRoomMembersAreBoundedInTotal) {
  cfg.max_members_total = 5;
  auto make = [&](int i, std::vector<std::string> members) {
    std::error_code ec = make_error_code(std::errc::timed_out);
    const bool restricted = !members.empty();
    store_->create(store::Room("00000000-0000-4000-8000-00000000000" + std::to_string(i), "r", restricted, std::move(members)),
                   [&](std::error_code e) { ec = e; });
    return ec;
  };
  store_ = store::make_embedded_store(cfg);
  ASSERT_FALSE(make(1, {"u1", "u2", "u3"}));
  EXPECT_EQ(make(2, {"u4", "u5", "u6"}), store::Error::members_full);
  EXPECT_EQ(make(2, {"u4", "u5", "u6"}).message().find("restricted-room members") != std::string::npos, true);
  ASSERT_FALSE(make(3, {"u4"}));
  ASSERT_FALSE(make(4, {})) << "a public room lists no members";
  store_.reset();
  store_ = store::make_embedded_store(cfg);  // the count comes back from the file
  EXPECT_EQ(make(5, {"u5", "u6"}), store::Error::members_full);
  ASSERT_FALSE(make(5, {"u5"}));
  bool removed = false;
  store_->remove("00000000-0000-4000-8000-000000000001", 0, [&](std::error_code, bool r) { removed = r; });
  ASSERT_TRUE(removed);
  EXPECT_FALSE(make(6, {"u6", "u7", "u8"})) << "room 1's three went with it";
  EXPECT_EQ(make(7, {"u9"}), store::Error::members_full);
}

TEST_F(EmbeddedStoreTest, AFileFromBeforeRestrictedRoomsOpensWithEveryRoomPublic) {
  std::filesystem::create_directories(dir);
  // The schema chatd wrote before issue 10 (no access column).
  {
    auto s = store::make_embedded_store(cfg);
    ASSERT_FALSE(create(*s, 1));
  }
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open((dir / "chatd.db").string().c_str(), &db), SQLITE_OK);
  EXPECT_EQ(sqlite3_exec(db, "ALTER TABLE rooms DROP COLUMN access", nullptr, nullptr, nullptr), SQLITE_OK) << sqlite3_errmsg(db);
  sqlite3_close(db);
  auto s = store::make_embedded_store(cfg);
  std::vector<store::Room> rooms;
  s->list([&](std::error_code, std::vector<store::Room> all) { rooms = std::move(all); });
  ASSERT_EQ(rooms.size(), 1u);
  EXPECT_FALSE(rooms[0].restricted);
  EXPECT_FALSE(create(*s, 2));
}
