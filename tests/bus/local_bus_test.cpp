// The local bus with its embedded history (SQLite in a temp data dir): order, seq, epoch,
// the history queries, bounds by size and age, x-client-id de-duplication, and a restart.
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <boost/asio/io_context.hpp>

#include <chrono>
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <thread>
#include <type_traits>
#include <unistd.h>

#include <sys/wait.h>

#include "bus/history_file.h"
#include "bus/message_bus.h"

using namespace chatd::bus;
using namespace std::chrono_literals;

namespace {

template <class Pred>
bool eventually(Pred pred, std::chrono::milliseconds limit) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(5ms);
  }
  return true;
}

class LocalBusTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir = std::filesystem::temp_directory_path() / ("chatd-localbus-" + std::to_string(::getpid()) + "-" +
                                                    ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir);
    cfg.data_dir = dir.string();
  }
  void TearDown() override {
    if (bus) bus->stop();
    bus.reset();
    std::filesystem::remove_all(dir);
  }

  // (Re)starts the bus on the data dir, recording every delivery.
  void open() {
    if (bus) bus->stop();
    bus = make_local_bus(cfg, io);
    bus->on_control([this](ControlMessage&& m) {
      std::lock_guard lock(mu);
      controls.push_back(std::move(m));
    });
    bus->start([this](Delivery&& d) {
      std::lock_guard lock(mu);
      got.push_back(std::move(d));
    });
  }

  // Publishes and returns {error, seq} once answered.
  std::pair<std::error_code, std::uint64_t> publish(const std::string& room, std::string payload, std::string client_id = {}) {
    std::promise<std::pair<std::error_code, std::uint64_t>> p;
    bus->publish(room, std::move(payload), PublishOptions{std::move(client_id)},
                 [&](std::error_code ec, std::uint64_t seq, std::string_view) { p.set_value({ec, seq}); });
    return p.get_future().get();
  }

  // In a child process, a bus of its own on the same data dir: `body(pub)` publishes through
  // pub(room, payload, client id, the seq it must get), then the child ends without stopping
  // that bus (what a kill -9 leaves). Returns whether every publish got its seq. No gtest
  // assertions run in the child, only its exit status counts. A body that takes a second
  // argument gets erase(room), which deletes the room's history (and counts a failure).
  template <class Body>
  bool in_killed_child(Body body) {
    const pid_t child = ::fork();
    if (child < 0) return false;
    if (child == 0) {
      auto b = make_local_bus(cfg, io);
      b->start([](Delivery&&) {});
      int bad = 0;
      auto pub = [&](const std::string& room, std::string payload, std::string client_id, std::uint64_t want) {
        std::promise<std::uint64_t> p;
        b->publish(room, std::move(payload), PublishOptions{std::move(client_id)},
                   [&](std::error_code ec, std::uint64_t seq, std::string_view) { p.set_value(ec ? 0 : seq); });
        bad += p.get_future().get() != want;
      };
      auto erase = [&](const std::string& room) {
        std::promise<std::error_code> p;
        b->delete_history(room, [&](std::error_code ec) { p.set_value(ec); });
        bad += static_cast<bool>(p.get_future().get());
      };
      if constexpr (std::is_invocable_v<Body, decltype(pub)&, decltype(erase)&>) body(pub, erase);
      else body(pub);
      ::_exit(bad);  // no stop()
    }
    int status = 0;
    return ::waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0;
  }

  History history(HistoryRequest req) {
    std::promise<History> p;
    bus->history(std::move(req), [&](std::error_code ec, History h) {
      EXPECT_FALSE(ec) << ec.message();
      p.set_value(std::move(h));
    });
    return p.get_future().get();
  }

  std::vector<Delivery> delivered() {
    std::lock_guard lock(mu);
    return got;
  }

  static std::vector<std::uint64_t> seqs(const History& h) {
    std::vector<std::uint64_t> out;
    for (auto& m : h.messages) out.push_back(m.seq);
    return out;
  }

  std::filesystem::path dir;
  BusConfig cfg;
  boost::asio::io_context io;
  std::unique_ptr<MessageBus> bus;
  std::mutex mu;
  std::vector<Delivery> got;
  std::vector<ControlMessage> controls;
};

// Runs `sql` on the SQLite file at `path` (a connection of its own); returns the first column
// of the last row it produced as text ("" if none), or nothing with the error in `why`.
std::optional<std::string> try_sql_on(const std::filesystem::path& path, const std::string& sql, std::string& why) {
  sqlite3* db = nullptr;
  if (sqlite3_open(path.c_str(), &db) != SQLITE_OK) {
    why = sqlite3_errmsg(db);
    sqlite3_close(db);
    return std::nullopt;
  }
  sqlite3_busy_timeout(db, 5000);
  std::string last;
  char* err = nullptr;
  auto keep = [](void* out, int n, char** cols, char**) {
    if (n > 0) *static_cast<std::string*>(out) = cols[0] ? cols[0] : "";
    return 0;
  };
  const int rc = sqlite3_exec(db, sql.c_str(), keep, &last, &err);
  if (rc != SQLITE_OK) why = err ? err : sqlite3_errstr(rc);
  sqlite3_free(err);
  sqlite3_close(db);
  if (rc != SQLITE_OK) return std::nullopt;
  return last;
}

// try_sql_on that fails the test on an error.
std::string sql_on(const std::filesystem::path& path, const std::string& sql) {
  std::string why;
  auto r = try_sql_on(path, sql, why);
  EXPECT_TRUE(r) << why << " in " << sql;
  return r.value_or("");
}

// Returns how many bytes the journal files in `dir` hold (history.journal.<n>).
std::uintmax_t journal_bytes(const std::filesystem::path& dir) {
  std::uintmax_t n = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir))
    if (e.path().filename().string().starts_with("history.journal.")) n += e.file_size();
  return n;
}

}  // namespace

TEST_F(LocalBusTest, NumbersDeliversAndAnswersInOrder) {
  open();
  std::vector<std::uint64_t> answered(200);
  std::vector<std::string> epochs(200);
  std::atomic<int> done{0};
  // From two threads at once: each room still gets 1..n in delivery order.
  auto send = [&](int from) {
    for (int i = from; i < 200; i += 2)
      bus->publish(i % 2 ? "odd" : "even", "m" + std::to_string(i), {},
                   [&, i](std::error_code ec, std::uint64_t seq, std::string_view epoch) {
                     EXPECT_FALSE(ec);
                     answered[static_cast<std::size_t>(i)] = seq;
                     epochs[static_cast<std::size_t>(i)] = epoch;
                     ++done;
                   });
  };
  std::thread t1(send, 0), t2(send, 1);
  t1.join();
  t2.join();
  ASSERT_TRUE(eventually([&] { return done == 200; }, 10s));
  auto d = delivered();
  ASSERT_EQ(d.size(), 200u);
  std::map<std::string, std::uint64_t> last;
  for (auto& m : d) {
    EXPECT_EQ(m.seq, last[m.room_id] + 1) << m.room_id;
    last[m.room_id] = m.seq;
    EXPECT_FALSE(m.epoch.empty());
    EXPECT_EQ(m.epoch, d[0].epoch);
    auto i = std::stoul(m.payload.substr(1));
    EXPECT_EQ(answered[i], m.seq) << "done() gets the seq the message was delivered with";
    EXPECT_EQ(epochs[i], m.epoch) << "and the epoch that seq counts in";
  }
  EXPECT_EQ(last["odd"], 100u);
  EXPECT_EQ(last["even"], 100u);
}

TEST_F(LocalBusTest, HistoryNewestOldestAndPages) {
  open();
  for (int i = 1; i <= 30; ++i) ASSERT_EQ(publish("r", "m" + std::to_string(i)).second, static_cast<std::uint64_t>(i));
  publish("other", "x");

  auto last5 = history({"r", 0, 0, 5});  // x-history: 5
  EXPECT_EQ(seqs(last5), (std::vector<std::uint64_t>{26, 27, 28, 29, 30}));
  EXPECT_EQ(last5.messages.back().payload, "m30");
  EXPECT_EQ(last5.first_seq, 1u);
  EXPECT_EQ(last5.last_seq, 30u);
  EXPECT_EQ(last5.epoch, delivered()[0].epoch);

  auto resume = history({"r", 27, 0, 100});  // x-since-seq: 27
  EXPECT_EQ(seqs(resume), (std::vector<std::uint64_t>{28, 29, 30}));
  auto capped = history({"r", 10, 0, 3});  // the OLDEST 3 above 10
  EXPECT_EQ(seqs(capped), (std::vector<std::uint64_t>{11, 12, 13}));
  auto page = history({"r", 0, 11, 4});  // REST before=11&limit=4
  EXPECT_EQ(seqs(page), (std::vector<std::uint64_t>{7, 8, 9, 10}));
  EXPECT_EQ(page.messages.front().payload, "m7");
  auto head = history({"r", 0, 3, 10});
  EXPECT_EQ(seqs(head), (std::vector<std::uint64_t>{1, 2}));

  auto none = history({"never-used", 0, 0, 10});
  EXPECT_TRUE(none.messages.empty());
  EXPECT_EQ(none.first_seq, 0u);
  EXPECT_EQ(none.last_seq, 0u);
  EXPECT_EQ(none.epoch, last5.epoch) << "one epoch per history file";
  EXPECT_TRUE(history({"r", 0, 0, 0}).messages.empty()) << "limit 0: only the numbers";
}

TEST_F(LocalBusTest, HistoryHoldsEverythingDeliveredBeforeTheCall) {
  open();
  // Publishes keep coming while we read: every read holds every message delivered before it.
  std::atomic<bool> stop{false};
  std::thread sender([&] {
    for (int i = 0; i < 2000 && !stop; ++i) bus->publish("busy", "m", {}, [](std::error_code, std::uint64_t, std::string_view) {});
  });
  for (int i = 0; i < 50; ++i) {
    std::uint64_t seen = 0;
    {
      std::lock_guard lock(mu);
      if (!got.empty()) seen = got.back().seq;
    }
    auto h = history({"busy", 0, 0, 1});
    std::uint64_t newest = h.messages.empty() ? 0 : h.messages.back().seq;
    EXPECT_GE(newest, seen);
    EXPECT_GE(h.last_seq, newest);
  }
  stop = true;
  sender.join();
}

TEST_F(LocalBusTest, SeqEpochAndHistorySurviveARestart) {
  open();
  for (int i = 1; i <= 5; ++i) publish("r", "before" + std::to_string(i));
  auto epoch = delivered().back().epoch;
  open();  // stop, then a new bus on the same file
  auto h = history({"r", 0, 0, 10});
  EXPECT_EQ(seqs(h), (std::vector<std::uint64_t>{1, 2, 3, 4, 5}));
  EXPECT_EQ(h.epoch, epoch);
  EXPECT_EQ(h.last_seq, 5u);
  auto [ec, seq] = publish("r", "after");
  EXPECT_FALSE(ec);
  EXPECT_EQ(seq, 6u) << "a room's seq continues after a restart";
  EXPECT_EQ(delivered().back().epoch, epoch);

  // A lost history file is a new epoch.
  bus->stop();
  bus.reset();
  std::filesystem::remove_all(dir);
  open();
  auto fresh = history({"r", 0, 0, 10});
  EXPECT_NE(fresh.epoch, epoch);
  EXPECT_EQ(fresh.last_seq, 0u);
  EXPECT_EQ(publish("r", "anew").second, 1u);
}

TEST_F(LocalBusTest, HistoryIsBoundedBySize) {
  cfg.history_size = 10;
  open();
  for (int i = 0; i < 25; ++i) publish("r", "m");
  auto h = history({"r", 0, 0, 100});
  EXPECT_EQ(h.messages.size(), 10u);
  EXPECT_EQ(h.first_seq, 16u);
  EXPECT_EQ(h.last_seq, 25u);
  auto from_old = history({"r", 3, 0, 100});
  EXPECT_EQ(seqs(from_old).front(), 16u) << "a resume from before the window starts at the oldest kept";
}

TEST_F(LocalBusTest, HistorySizeZeroKeepsNoMessagesButTheSeqs) {
  cfg.history_size = 0;
  open();
  for (int i = 0; i < 5; ++i) publish("r", "m");
  ASSERT_TRUE(eventually([&] { return delivered().size() == 5; }, 5s)) << "delivered as always";
  auto h = history({"r", 0, 0, 100});
  EXPECT_TRUE(h.messages.empty());
  EXPECT_EQ(h.first_seq, 0u) << "nothing retained, so a resume is told so";
  EXPECT_EQ(h.last_seq, 5u);
  EXPECT_EQ(publish("r", "x", "c-1").second, 6u);
  EXPECT_EQ(publish("r", "x", "c-1").second, 6u) << "x-client-id still de-duplicates";
  open();
  EXPECT_EQ(publish("r", "after a restart").second, 7u) << "the seq continues";
  EXPECT_TRUE(history({"r", 0, 0, 100}).messages.empty());
}

TEST_F(LocalBusTest, HistoryIsBoundedByAge) {
  cfg.history_ttl = 1s;
  open();
  for (int i = 0; i < 3; ++i) publish("r", "old");
  EXPECT_EQ(history({"r", 0, 0, 10}).messages.size(), 3u);
  ASSERT_TRUE(eventually([&] { return history({"r", 0, 0, 10}).messages.empty(); }, 5s));
  auto h = history({"r", 0, 0, 10});
  EXPECT_EQ(h.first_seq, 0u);
  EXPECT_EQ(h.last_seq, 3u) << "seq is not forgotten with the messages";
  publish("r", "new");
  h = history({"r", 0, 0, 10});
  EXPECT_EQ(seqs(h), (std::vector<std::uint64_t>{4}));
  EXPECT_EQ(h.first_seq, 4u);
}

TEST_F(LocalBusTest, AClientIdIsPublishedOnceAndAnsweredAlike) {
  open();
  auto first = publish("r", "hello", "c-1");
  auto retry = publish("r", "hello again", "c-1");
  EXPECT_FALSE(first.first);
  EXPECT_FALSE(retry.first);
  EXPECT_EQ(retry.second, first.second);
  EXPECT_EQ(publish("other", "hello", "c-1").second, 1u) << "ids are per room";
  EXPECT_EQ(publish("r", "x", "c-2").second, first.second + 1);
  EXPECT_EQ(publish("r", "no id").second, first.second + 2);
  EXPECT_EQ(publish("r", "no id").second, first.second + 3) << "no id: never de-duplicated";

  // Many retries at once, from two threads, while the first is in flight: one message.
  std::atomic<int> answered{0};
  std::mutex seqs_mu;
  std::set<std::uint64_t> answers;
  std::set<std::string> answer_epochs;
  auto burst = [&] {
    for (int i = 0; i < 50; ++i)
      bus->publish("r", "burst", {"c-3"}, [&](std::error_code ec, std::uint64_t seq, std::string_view epoch) {
        EXPECT_FALSE(ec);
        std::lock_guard lock(seqs_mu);
        answers.insert(seq);
        answer_epochs.emplace(epoch);
        ++answered;
      });
  };
  std::thread t1(burst), t2(burst);
  t1.join();
  t2.join();
  ASSERT_TRUE(eventually([&] { return answered == 100; }, 10s));
  EXPECT_EQ(answers.size(), 1u);
  auto d = delivered();
  EXPECT_EQ(answer_epochs, std::set<std::string>{d.back().epoch}) << "retries are answered with the first's epoch too";
  EXPECT_EQ(std::count_if(d.begin(), d.end(), [](const Delivery& m) { return m.payload == "burst"; }), 1);
  EXPECT_EQ(std::count_if(d.begin(), d.end(), [](const Delivery& m) { return m.payload == "hello again"; }), 0);

  open();  // a restart remembers ids within the window
  EXPECT_EQ(publish("r", "hello", "c-1").second, first.second);
}

// An id outlives its message: with history off, or once the room passed --history-size, a
// retry within the window is still answered with the first seq after a restart or a kill.
TEST_F(LocalBusTest, AClientIdOutlivesItsMessageAcrossARestartAndAKill) {
  for (std::size_t size : {std::size_t{0}, std::size_t{100}}) {
    SCOPED_TRACE("history size " + std::to_string(size));
    if (bus) bus->stop();
    bus.reset();
    std::filesystem::remove_all(dir);
    cfg.history_size = size;
    open();
    const auto first = publish("r", "hello", "outbox-1");
    ASSERT_FALSE(first.first);
    for (int i = 0; i < 300; ++i) ASSERT_FALSE(publish("r", "filler").first);
    open();
    if (size) {
      EXPECT_GT(history({"r", 0, 0, 1000}).messages.front().seq, first.second) << "its message left history";
    }
    EXPECT_EQ(publish("r", "hello", "outbox-1").second, first.second);

    bus->stop();
    bus.reset();
    ASSERT_TRUE(in_killed_child([](auto& pub) {
      pub("r", "bye", "outbox-2", 302);
      for (std::uint64_t seq = 303; seq < 603; ++seq) pub("r", "filler", "", seq);
    })) << "the child published 302..602";
    open();
    EXPECT_EQ(publish("r", "bye", "outbox-2").second, 302u);
    EXPECT_EQ(publish("r", "new", "outbox-3").second, 603u);
  }
}

TEST_F(LocalBusTest, AClientIdIsForgottenAfterTheWindow) {
  cfg.dedupe_window = 1s;
  open();
  auto first = publish("r", "a", "c");
  EXPECT_EQ(publish("r", "a", "c").second, first.second);
  std::this_thread::sleep_for(1100ms);  // the window is what is under test, not a wait for work
  EXPECT_EQ(publish("r", "a", "c").second, first.second + 1);
}

TEST_F(LocalBusTest, AStoppedBusRefuses) {
  open();
  publish("r", "x");
  bus->stop();
  EXPECT_EQ(publish("r", "y").first, Error::stopped);
  std::promise<std::error_code> p;
  bus->history({"r", 0, 0, 1}, [&](std::error_code ec, History) { p.set_value(ec); });
  EXPECT_EQ(p.get_future().get(), Error::stopped);
}

TEST_F(LocalBusTest, ControlMessagesReachThisNodeAtOnceAndBadOnesAreRefused) {
  cfg.node_id = "solo";
  open();
  std::vector<std::error_code> answers;
  auto done = [&](std::error_code ec) { answers.push_back(ec); };
  bus->publish_control({"disconnect", "ignored", "{\"user\":\"kim\"}"}, done);
  bus->publish_control({"Bad Type", {}, "x"}, done);
  bus->publish_control({"big", {}, std::string(kMaxControlBody + 1, 'x')}, done);
  ASSERT_EQ(answers.size(), 3u);
  EXPECT_FALSE(answers[0]);
  EXPECT_EQ(answers[1], make_error_code(Error::rejected));
  EXPECT_EQ(answers[2], make_error_code(Error::rejected));
  std::lock_guard lock(mu);
  ASSERT_EQ(controls.size(), 1u);
  EXPECT_EQ(controls[0].type, "disconnect");
  EXPECT_EQ(controls[0].origin, "solo") << "the bus sets the origin, not the caller";
  EXPECT_EQ(controls[0].body, "{\"user\":\"kim\"}");
  EXPECT_TRUE(got.empty()) << "control messages are not room traffic";
}

// A deleted room leaves nothing behind, not even its seq: room ids are random UUIDs, never
// reused, so churn (API deletes, --room-idle-expiry) must not grow room_seq, the seqs loaded at
// start, or the prune walk.
TEST_F(LocalBusTest, DeletedHistoryIsGoneWithItsSeq) {
  open();
  ASSERT_FALSE(publish("gone", "a").first);
  ASSERT_FALSE(publish("gone", "b").first);
  ASSERT_FALSE(publish("kept", "c").first);
  std::promise<std::error_code> erased;
  bus->delete_history("gone", [&](std::error_code ec) { erased.set_value(ec); });
  ASSERT_FALSE(erased.get_future().get());
  EXPECT_TRUE(history({"gone", 0, 0, 10}).messages.empty());
  EXPECT_EQ(history({"gone", 0, 0, 10}).last_seq, 0u) << "its seq is forgotten in memory";
  EXPECT_EQ(history({"kept", 0, 0, 10}).messages.size(), 1u);
  open();  // and after a restart
  EXPECT_TRUE(history({"gone", 0, 0, 10}).messages.empty());
  EXPECT_EQ(sql_on(dir / "history.db", "SELECT group_concat(room) FROM room_seq"), "kept");
  EXPECT_EQ(sql_on(dir / "history.db", "SELECT count(*) FROM erased"), "0") << "no journal file left to guard against";
}

TEST_F(LocalBusTest, RoomChurnLeavesNoRows) {
  cfg.history_size = 0;  // history off keeps only the seqs: those must go too
  for (const std::size_t size : {std::size_t{0}, std::size_t{100}}) {
    cfg.history_size = size;
    open();
    for (int i = 0; i < 20; ++i) {
      const auto room = "churn-" + std::to_string(size) + "-" + std::to_string(i);
      ASSERT_FALSE(publish(room, "hello").first);
      std::promise<std::error_code> erased;
      bus->delete_history(room, [&](std::error_code ec) { erased.set_value(ec); });
      ASSERT_FALSE(erased.get_future().get());
    }
    open();
    EXPECT_EQ(sql_on(dir / "history.db", "SELECT count(*) FROM room_seq"), "0") << "history size " << size;
    EXPECT_EQ(sql_on(dir / "history.db", "SELECT count(*) FROM erased"), "0") << "history size " << size;
    EXPECT_EQ(history({"churn-" + std::to_string(size) + "-0", 0, 0, 10}).last_seq, 0u);
  }
}

// A journal cut short (a kill mid-write, or a file damaged or truncated by hand) loses what
// follows the cut: it must say so in the log, not start as if nothing was missing (s21 probe).
TEST_F(LocalBusTest, AJournalCutShortIsSaidInTheLog) {
  cfg.local_history.fold_age = std::chrono::hours(1);  // nothing folded: all of it in the journal
  ASSERT_TRUE(in_killed_child([&](auto& pub) {
    for (std::uint64_t i = 1; i <= 20; ++i) pub("r", "m" + std::to_string(i), "", i);
  }));
  std::filesystem::path journal;
  for (const auto& e : std::filesystem::directory_iterator(dir))
    if (e.path().filename().string().starts_with("history.journal.")) journal = e.path();
  ASSERT_FALSE(journal.empty()) << "the kill left the journal";
  std::filesystem::resize_file(journal, std::filesystem::file_size(journal) - 5);
  ::testing::internal::CaptureStderr();
  open();
  const std::string log = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(log.find("history_journal_cut"), std::string::npos) << log;
  EXPECT_NE(log.find(journal.filename().string()), std::string::npos) << log;
  const auto kept = seqs(history({"r", 0, 0, 100}));
  ASSERT_FALSE(kept.empty());
  EXPECT_LT(kept.size(), 20u) << "the cut record is gone";
  EXPECT_EQ(kept.front(), 1u);  // what came before the cut is all there
  EXPECT_EQ(kept.back(), kept.size());
}

// An older journal file cut short (only the newest may end so) is kept aside as .damaged, under a
// name no earlier one holds: journal numbers start again after a clean stop, so the same file
// name can be cut twice, and the second must not overwrite the first.
TEST_F(LocalBusTest, ACutJournalFileIsKeptAsideUnderAFreeName) {
  cfg.local_history.fold_age = std::chrono::hours(1);  // nothing folded: all of it in the journal
  std::vector<std::uintmax_t> cut_sizes;
  for (std::uint64_t round = 0; round < 2; ++round) {
    ASSERT_TRUE(in_killed_child([&](auto& pub) {
      for (std::uint64_t i = 1; i <= 10; ++i) pub("r", "m", "", round * 10 + i);
    })) << "round " << round;
    std::vector<std::filesystem::path> journals;
    for (const auto& e : std::filesystem::directory_iterator(dir)) {
      const auto name = e.path().filename().string();
      if (name.starts_with("history.journal.") && name.find(".damaged") == std::string::npos) journals.push_back(e.path());
    }
    ASSERT_EQ(journals.size(), 1u) << "round " << round;
    const auto older = journals[0];
    const auto n = std::stoull(older.filename().string().substr(std::string("history.journal.").size()));
    // A newer file holding the same records makes the cut one an older file, and loses nothing.
    std::filesystem::copy_file(older, dir / ("history.journal." + std::to_string(n + 1)));
    cut_sizes.push_back(std::filesystem::file_size(older) - 5);
    std::filesystem::resize_file(older, cut_sizes.back());
    open();
    EXPECT_EQ(seqs(history({"r", 0, 0, 100})).size(), (round + 1) * 10) << "round " << round;
    bus->stop();
    bus.reset();
  }
  std::vector<std::uintmax_t> kept;
  for (const auto& e : std::filesystem::directory_iterator(dir))
    if (e.path().filename().string().find(".damaged") != std::string::npos) kept.push_back(e.file_size());
  EXPECT_EQ(kept.size(), 2u) << "both cut files kept, neither overwritten";
  std::sort(kept.begin(), kept.end());
  std::sort(cut_sizes.begin(), cut_sizes.end());
  EXPECT_EQ(kept, cut_sizes);
}

// The room_seq row used to be kept so that recover() would not fold a deleted room's messages
// back from the journal after a kill. Here they are folded into chunks (a full chunk), but the
// journal file stays (the quiet room's message still needs it) when the room is deleted and the
// process killed: the room must not come back, and its erased row goes once the file is gone.
TEST_F(LocalBusTest, ADeletedRoomStaysGoneAfterAKill) {
  cfg.local_history.fold_age = std::chrono::hours(1);  // only whole chunks are folded
  ASSERT_TRUE(in_killed_child([&](auto& pub, auto& erase) {
    pub("quiet", "alone", "", 1);
    for (int i = 1; i <= 64; ++i) pub("gone", "m" + std::to_string(i), "", static_cast<std::uint64_t>(i));
    pub("gone-later", "tail", "", 1);  // in the journal only
    for (int i = 0; i < 100; ++i) {   // until the fold (every 100 ms) has the whole chunk
      std::this_thread::sleep_for(50ms);
      std::string why;
      auto n = try_sql_on(dir / "history.db", "SELECT count(*) FROM chunks WHERE room = 'gone'", why);
      if (n && *n == "1") break;
    }
    erase("gone");
    erase("gone-later");
  })) << "the child's publishes and erasures were answered";
  ASSERT_GT(journal_bytes(dir), 0u) << "the kill left the journal, with the erased rooms' messages";
  EXPECT_EQ(sql_on(dir / "history.db", "SELECT group_concat(room) FROM room_seq"), "") << "no row for the erased rooms";
  open();
  EXPECT_TRUE(history({"gone", 0, 0, 100}).messages.empty()) << "not folded back from the journal";
  EXPECT_TRUE(history({"gone-later", 0, 0, 100}).messages.empty()) << "not folded back from the journal";
  EXPECT_EQ(seqs(history({"quiet", 0, 0, 10})), (std::vector<std::uint64_t>{1}));
  EXPECT_EQ(journal_bytes(dir), 0u);
  EXPECT_EQ(sql_on(dir / "history.db", "SELECT group_concat(room) FROM room_seq"), "quiet");
  EXPECT_EQ(sql_on(dir / "history.db", "SELECT count(*) FROM erased"), "0") << "its journal file is gone";
}

// An erased row lives while a journal file may hold the room's messages, and goes when the
// writer drops that file (here by the final fold of a clean stop).
TEST_F(LocalBusTest, AnErasedRowGoesWithTheJournalFile) {
  cfg.local_history.fold_age = std::chrono::hours(1);  // the quiet room keeps the file
  open();
  ASSERT_FALSE(publish("quiet", "a").first);
  ASSERT_FALSE(publish("gone", "b").first);
  std::promise<std::error_code> erased;
  bus->delete_history("gone", [&](std::error_code ec) { erased.set_value(ec); });
  ASSERT_FALSE(erased.get_future().get());
  EXPECT_EQ(sql_on(dir / "history.db", "SELECT room || ':' || seq FROM erased"), "gone:1");
  bus->stop();
  EXPECT_EQ(journal_bytes(dir), 0u);
  EXPECT_EQ(sql_on(dir / "history.db", "SELECT count(*) FROM erased"), "0") << "dropped with the journal file";
  EXPECT_EQ(sql_on(dir / "history.db", "SELECT group_concat(room) FROM room_seq"), "quiet");
}

// A history.db written by the chatd before the (room, seq) table: a rowid table `messages`.
// Opening it moves every message, keeps the epoch, and the seqs and client ids carry on.
TEST_F(LocalBusTest, AFileOfTheOldSchemaIsMovedWithoutLosingAMessage) {
  std::filesystem::create_directories(dir);
  const auto now = std::chrono::duration_cast<std::chrono::milliseconds>(
                       std::chrono::system_clock::now().time_since_epoch()).count();
  std::string sql =
      "PRAGMA journal_mode=WAL;"
      "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
      "CREATE TABLE room_seq (room TEXT PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID;"
      "CREATE TABLE messages (room TEXT NOT NULL, seq INTEGER NOT NULL, ts INTEGER NOT NULL,"
      " payload BLOB NOT NULL, client_id TEXT);"
      "CREATE UNIQUE INDEX messages_room_seq ON messages (room, seq);"
      "INSERT INTO meta VALUES ('epoch', 'oldepoch1234');"
      "INSERT INTO room_seq VALUES ('a', 30), ('b', 2);";
  for (int i = 1; i <= 30; ++i)
    sql += "INSERT INTO messages VALUES ('a', " + std::to_string(i) + ", " + std::to_string(now) + ", 'a" +
           std::to_string(i) + "', " + (i == 30 ? "'cid-30'" : "NULL") + ");";
  sql += "INSERT INTO messages VALUES ('b', 1, " + std::to_string(now) + ", 'b1', NULL);"
         "INSERT INTO messages VALUES ('b', 2, " + std::to_string(now) + ", 'b2', NULL);";
  sql_on(dir / "history.db", sql);

  cfg.history_size = 20;
  open();
  auto a = history({"a", 0, 0, 100});
  std::vector<std::uint64_t> want;
  for (std::uint64_t i = 11; i <= 30; ++i) want.push_back(i);
  EXPECT_EQ(seqs(a), want) << "the newest history_size of the old rows";
  EXPECT_EQ(a.messages.back().payload, "a30");
  EXPECT_EQ(a.epoch, "oldepoch1234") << "an upgrade is not a new epoch";
  EXPECT_EQ(a.last_seq, 30u);
  EXPECT_EQ(seqs(history({"b", 0, 0, 100})), (std::vector<std::uint64_t>{1, 2}));
  EXPECT_EQ(publish("a", "new", "cid-30").second, 30u) << "a client id written by the old file still de-duplicates";
  EXPECT_EQ(publish("a", "new").second, 31u);
  EXPECT_EQ(sql_on(dir / "history.db", "SELECT count(*) FROM sqlite_master WHERE name = 'messages'"), "0");
}

// A history.db of the layout before chunks: the WITHOUT ROWID (room, seq) table `history` and a
// per-message `journal` that a killed process left. Opening it moves both into chunks, keeps the
// epoch, and the seqs and client ids carry on.
TEST_F(LocalBusTest, AFileOfThePerMessageLayoutIsMovedWithItsJournal) {
  std::filesystem::create_directories(dir);
  const auto now = std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(
                                      std::chrono::system_clock::now().time_since_epoch()).count());
  std::string sql =
      "PRAGMA journal_mode=WAL;"
      "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
      "CREATE TABLE room_seq (room TEXT PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID;"
      "CREATE TABLE history (room TEXT NOT NULL, seq INTEGER NOT NULL, ts INTEGER NOT NULL,"
      " payload BLOB NOT NULL, client_id TEXT, PRIMARY KEY (room, seq)) WITHOUT ROWID;"
      "CREATE TABLE journal (room TEXT NOT NULL, seq INTEGER NOT NULL, ts INTEGER NOT NULL,"
      " payload BLOB NOT NULL, client_id TEXT);"
      "INSERT INTO meta VALUES ('epoch', 'rowsepoch123');"
      "INSERT INTO room_seq VALUES ('a', 100);";
  for (int i = 1; i <= 100; ++i)
    sql += "INSERT INTO history VALUES ('a', " + std::to_string(i) + ", " + now + ", 'a" + std::to_string(i) + "', NULL);";
  // The journal is not counted in room_seq yet.
  sql += "INSERT INTO journal VALUES ('a', 101, " + now + ", 'a101', 'cid-101'), ('b', 1, " + now + ", 'b1', NULL);";
  sql_on(dir / "history.db", sql);

  open();
  auto a = history({"a", 0, 0, 1000});
  ASSERT_EQ(a.messages.size(), 101u);
  for (std::size_t i = 0; i < a.messages.size(); ++i) {
    EXPECT_EQ(a.messages[i].seq, i + 1);
    EXPECT_EQ(a.messages[i].payload, "a" + std::to_string(i + 1));
  }
  EXPECT_EQ(a.epoch, "rowsepoch123") << "an upgrade is not a new epoch";
  EXPECT_EQ(a.last_seq, 101u);
  EXPECT_EQ(seqs(history({"b", 0, 0, 100})), (std::vector<std::uint64_t>{1}));
  EXPECT_EQ(publish("a", "again", "cid-101").second, 101u) << "a client id of the old journal still de-duplicates";
  EXPECT_EQ(publish("a", "new").second, 102u);
  EXPECT_EQ(publish("b", "new").second, 2u);
  EXPECT_EQ(sql_on(dir / "history.db", "SELECT count(*) FROM sqlite_master WHERE name = 'history'"), "0");
  EXPECT_EQ(sql_on(dir / "history.db", "SELECT count(*) FROM pragma_table_info('journal') WHERE name = 'room'"), "0");
  EXPECT_EQ(sql_on(dir / "history.db", "SELECT count(*) FROM chunks WHERE room = 'a'"), "3") << "the old table's 100: 64 + 36; its journal's 101: one more";
}

// What a killed process leaves: journal records (one per group commit) whose messages were not
// folded into chunks yet. A child process writes them and ends without stopping its bus; they
// are history after the restart, and the room's seq and client ids carry on.
TEST_F(LocalBusTest, TheJournalAKilledProcessLeftIsKeptAndCounted) {
  cfg.local_history.fold_age = std::chrono::hours(1);  // nothing is folded before the "kill"
  ASSERT_TRUE(in_killed_child([](auto& pub) {
    for (int i = 1; i <= 5; ++i) pub("r", "m" + std::to_string(i), i == 4 ? "cid-4" : "", static_cast<std::uint64_t>(i));
  })) << "the child published 1..5";
  ASSERT_GT(journal_bytes(dir), 0u) << "the kill left a journal";
  // And a record the kill cut short (its messages were never answered): ignored.
  for (const auto& e : std::filesystem::directory_iterator(dir))
    if (e.path().filename().string().starts_with("history.journal.")) {
      std::ofstream(e.path(), std::ios::binary | std::ios::app) << std::string("\x64\x00\x00\x00torn", 8);
      break;
    }
  ASSERT_EQ(sql_on(dir / "history.db", "SELECT count(*) FROM chunks"), "0");
  open();
  auto h = history({"r", 0, 0, 10});
  EXPECT_EQ(seqs(h), (std::vector<std::uint64_t>{1, 2, 3, 4, 5}));
  EXPECT_EQ(h.messages.back().payload, "m5");
  EXPECT_EQ(h.last_seq, 5u);
  EXPECT_EQ(journal_bytes(dir), 0u) << "folded at the start";
  EXPECT_EQ(publish("r", "m6").second, 6u);
  EXPECT_EQ(publish("r", "again", "cid-4").second, 4u);
}

// A busy room's whole chunks are folded as soon as they fill, long before a quiet room's lone
// message is old enough, and the journal files those chunks free are dropped; but never the file
// that still holds the quiet room's message: a kill -9 then loses nothing.
TEST_F(LocalBusTest, FullChunksFoldEarlyAndAKillStillLosesTheQuietRoomsMessage) {
  cfg.local_history.fold_age = std::chrono::hours(1);  // only whole chunks are folded
  constexpr int kBusy = 3 * 64 + 10;                    // three whole chunks and a tail
  const std::string big(60 * 1024, 'x');                // 4 MiB journal files fill in ~70 messages
  ASSERT_TRUE(in_killed_child([&](auto& pub) {
    pub("quiet", "alone", "", 1);
    for (int i = 1; i <= kBusy; ++i) pub("busy", big + std::to_string(i), "", static_cast<std::uint64_t>(i));
    pub("quiet-later", "later", "", 1);
    // Wait (bounded) until the busy room's chunks are in the file: the fold runs every 100 ms.
    for (int i = 0; i < 100; ++i) {
      std::this_thread::sleep_for(50ms);
      std::string why;
      auto n = try_sql_on(dir / "history.db", "SELECT count(*) FROM chunks WHERE room = 'busy'", why);
      if (n && *n == "3") break;
    }
  })) << "the child's publishes were answered in order";
  EXPECT_EQ(sql_on(dir / "history.db", "SELECT count(*) FROM chunks WHERE room = 'busy'"), "3")
      << "whole chunks folded without waiting for fold_age";
  EXPECT_EQ(sql_on(dir / "history.db", "SELECT count(*) FROM chunks WHERE room <> 'busy'"), "0")
      << "the quiet rooms were not old enough";
  open();
  auto quiet = history({"quiet", 0, 0, 10});
  ASSERT_EQ(seqs(quiet), (std::vector<std::uint64_t>{1}));
  EXPECT_EQ(quiet.messages[0].payload, "alone");
  EXPECT_EQ(seqs(history({"quiet-later", 0, 0, 10})), (std::vector<std::uint64_t>{1}));
  auto busy = history({"busy", 0, 0, 1000});
  ASSERT_EQ(busy.messages.size(), static_cast<std::size_t>(kBusy));
  for (int i = 0; i < kBusy; ++i) EXPECT_EQ(busy.messages[static_cast<std::size_t>(i)].seq, static_cast<std::uint64_t>(i + 1));
  EXPECT_EQ(busy.messages.back().payload, big + std::to_string(kBusy));
  EXPECT_EQ(publish("quiet", "next").second, 2u);
}

// Folds that keep failing (here a trigger; a damaged page or a read-only history.db act the same)
// left every message in memory and in the journal while appends went on succeeding: memory and
// the journal grew without bound and the bus said up. Now it says down, and past the memory
// bound refuses new messages until a fold succeeds again (s18).
TEST_F(LocalBusTest, FoldsThatKeepFailingTurnItDownAndBoundWhatIsHeld) {
  cfg.local_history.fold_age = 50ms;
  cfg.history_memory_messages = 200;
  open();
  ASSERT_FALSE(publish("r", "first").first);
  sql_on(dir / "history.db", "CREATE TRIGGER no_fold BEFORE INSERT ON chunks BEGIN SELECT RAISE(ABORT, 'test: no fold'); END");
  int ok = 0, refused = 0;
  for (int i = 0; i < 600; ++i) {
    auto [ec, seq] = publish("r", "m" + std::to_string(i));
    if (!ec) ++ok;
    else if (ec == Error::engine_down) ++refused;
    else ADD_FAILURE() << ec.message();
    if (i == 100) std::this_thread::sleep_for(300ms);  // a few folds at fold_age fail meanwhile
  }
  EXPECT_FALSE(bus->up()) << "folds fail: not up, though every append works";
  EXPECT_GT(refused, 0);
  EXPECT_LE(ok, 200 + 64) << "held past the memory bound";
  sql_on(dir / "history.db", "DROP TRIGGER no_fold");
  EXPECT_TRUE(eventually([&] { return bus->up(); }, 10s)) << "a fold succeeds again";
  EXPECT_TRUE(eventually([&] { return !publish("r", "after").first; }, 10s));
  auto h = history({"r", 0, 0, 1000});
  EXPECT_EQ(h.messages.size(), static_cast<std::size_t>(ok + 2)) << "every acknowledged message kept";
}

// A room's history across many chunk rows and the unfolded tail in memory reads as one, for
// every kind of request, with the exact bounds at any seq.
TEST_F(LocalBusTest, HistoryReadsAcrossChunksAndTheTail) {
  cfg.local_history.fold_age = std::chrono::hours(1);  // only whole chunks are folded while it runs
  open();
  for (int i = 1; i <= 300; ++i) publish("r", "m" + std::to_string(i));
  ASSERT_TRUE(eventually([&] { return sql_on(dir / "history.db", "SELECT max(last_seq) FROM chunks WHERE room = 'r'") == "256"; }, 10s))
      << "a chunk's worth is folded within a fold period";
  ASSERT_EQ(sql_on(dir / "history.db", "SELECT count(*) FROM chunks WHERE room = 'r'"), "4") << "4 × 64; 257.. stay in memory";
  ASSERT_GT(journal_bytes(dir), 0u) << "the journal keeps the unfolded tail";
  for (int i = 301; i <= 310; ++i) publish("r", "m" + std::to_string(i));  // the tail, in memory
  auto range = [](std::uint64_t a, std::uint64_t b) {
    std::vector<std::uint64_t> v;
    for (auto i = a; i <= b; ++i) v.push_back(i);
    return v;
  };
  EXPECT_EQ(seqs(history({"r", 0, 0, 1000})), range(1, 310));
  EXPECT_EQ(seqs(history({"r", 0, 0, 100})), range(211, 310)) << "the newest 100";
  EXPECT_EQ(seqs(history({"r", 0, 0, 5})), range(306, 310)) << "the newest 5: the tail only";
  EXPECT_EQ(seqs(history({"r", 63, 0, 3})), range(64, 66)) << "the oldest 3 above 63: across a chunk's end";
  EXPECT_EQ(seqs(history({"r", 250, 0, 100})), range(251, 310)) << "above 250: chunks and tail";
  EXPECT_EQ(seqs(history({"r", 0, 129, 70})), range(59, 128)) << "REST before=129&limit=70";
  EXPECT_EQ(seqs(history({"r", 0, 260, 10})), range(250, 259)) << "before=260: a chunk and the tail";
  EXPECT_EQ(seqs(history({"r", 0, 305, 10})), range(295, 304)) << "before=305: the tail only";
  EXPECT_EQ(seqs(history({"r", 0, 2, 10})), range(1, 1));
  auto h = history({"r", 0, 0, 1000});
  EXPECT_EQ(h.first_seq, 1u);
  EXPECT_EQ(h.last_seq, 310u);
  for (std::size_t i = 0; i < h.messages.size(); ++i) ASSERT_EQ(h.messages[i].payload, "m" + std::to_string(i + 1));
  open();  // and after a restart, with the tail folded at the stop
  EXPECT_EQ(journal_bytes(dir), 0u) << "a clean stop leaves no journal";
  EXPECT_EQ(seqs(history({"r", 0, 129, 70})), range(59, 128));
  EXPECT_EQ(seqs(history({"r", 0, 0, 1000})), range(1, 310));
}

// The size bound is exact to readers at any seq (a chunk partly out is filtered), and whole
// chunks beyond it leave the file.
TEST_F(LocalBusTest, TheSizeBoundIsExactAndDropsWholeChunks) {
  cfg.history_size = 100;
  open();
  for (int i = 1; i <= 1000; ++i) publish("r", "m" + std::to_string(i));
  auto h = history({"r", 0, 0, 1000});
  ASSERT_EQ(h.messages.size(), 100u);
  EXPECT_EQ(h.messages.front().seq, 901u);
  EXPECT_EQ(h.first_seq, 901u);
  EXPECT_EQ(seqs(history({"r", 850, 0, 3})), (std::vector<std::uint64_t>{901, 902, 903}));
  ASSERT_TRUE(eventually([&] { return sql_on(dir / "history.db", "SELECT max(last_seq) FROM chunks") == "1000"; }, 10s));
  const auto kept = std::stoul(sql_on(dir / "history.db", "SELECT sum(last_seq - first_seq + 1) FROM chunks"));
  EXPECT_LE(kept, 100u + 2 * 64) << "at most the bound and the chunks it cuts through";
  EXPECT_GE(kept, 100u);
}

// Past --history-memory-messages unfolded messages, the oldest rooms' tails are folded, however
// young, a slice at a time until memory holds fewer: the bound holds what memory keeps, without
// one transaction over every room (which held every delivery behind it).
TEST_F(LocalBusTest, TheMemoryBoundFoldsTheOldestRooms) {
  cfg.history_memory_messages = 1000;
  cfg.local_history.fold_age = std::chrono::hours(1);
  open();
  for (int i = 0; i < 999; ++i) publish("room-" + std::to_string(i), "m");
  EXPECT_EQ(sql_on(dir / "history.db", "SELECT count(*) FROM chunks"), "0") << "below the bound nothing young is folded";
  for (int i = 999; i < 1010; ++i) publish("room-" + std::to_string(i), "m");
  ASSERT_TRUE(eventually([&] { return std::stoul(sql_on(dir / "history.db", "SELECT count(*) FROM chunks")) >= 11; }, 10s))
      << "enough of the oldest folded to be under the bound again";
  EXPECT_LT(std::stoul(sql_on(dir / "history.db", "SELECT count(*) FROM chunks")), 100u) << "not every room at once";
  EXPECT_EQ(sql_on(dir / "history.db", "SELECT count(*) FROM chunks WHERE room = 'room-0'"), "1") << "the oldest first";
  EXPECT_EQ(sql_on(dir / "history.db", "SELECT count(*) FROM chunks WHERE room = 'room-1009'"), "0") << "the newest stays in memory";
  EXPECT_EQ(seqs(history({"room-5", 0, 0, 10})), (std::vector<std::uint64_t>{1}));
  EXPECT_EQ(seqs(history({"room-1009", 0, 0, 10})), (std::vector<std::uint64_t>{1}));
}

// More rooms due at once than one fold slice writes: every one is folded over the following
// slices, and each reads the same before, during and after.
TEST_F(LocalBusTest, ManyRoomsDueAtOnceAreFoldedInSlicesWithoutLosingOne) {
  cfg.local_history.fold_age = std::chrono::milliseconds(20);
  open();
  constexpr int kRooms = 300;
  for (int i = 0; i < kRooms; ++i) publish("room-" + std::to_string(i), "m" + std::to_string(i));
  auto all_read = [&] {
    for (int i = 0; i < kRooms; ++i) {
      auto h = history({"room-" + std::to_string(i), 0, 0, 10});
      if (h.messages.size() != 1 || h.messages[0].seq != 1 || h.messages[0].payload != "m" + std::to_string(i)) return false;
    }
    return true;
  };
  EXPECT_TRUE(all_read()) << "while the slices run";
  ASSERT_TRUE(eventually([&] { return sql_on(dir / "history.db", "SELECT count(*) FROM chunks") == std::to_string(kRooms); }, 10s))
      << "every due room folded, not only the first slice";
  EXPECT_TRUE(all_read()) << "once folded";
  open();
  EXPECT_EQ(journal_bytes(dir), 0u);
  EXPECT_TRUE(all_read()) << "after a restart";
  EXPECT_EQ(publish("room-7", "again").second, 2u) << "the seq goes on";
}

// The WAL is fsynced only by a checkpoint, so one runs within seconds of a write even when far
// too little was written to trigger one by size: the main file alone (without its -wal) then
// holds the message.
TEST_F(LocalBusTest, WritesReachTheMainFileWithinACheckpointPeriod) {
  open();
  publish("r", "kept");
  auto copy = dir / "copy.db";
  // A copy taken while a checkpoint writes the file can be torn ("malformed"): the next try
  // takes another.
  std::string why;
  ASSERT_TRUE(eventually([&] {
    for (auto* tail : {"", "-wal", "-shm"}) std::filesystem::remove(copy.string() + tail);
    std::filesystem::copy_file(dir / "history.db", copy);
    return try_sql_on(copy, "SELECT count(*) FROM sqlite_master WHERE name = 'chunks'", why) == "1" &&
           try_sql_on(copy, "SELECT count(*) FROM chunks WHERE room = 'r' AND instr(data, CAST('kept' AS BLOB)) > 0", why) == "1";
  }, 25s)) << "a checkpoint every 10 s; last error: " << why;
}

// When the checkpointer thread is not asked (its size threshold is out of reach) and its timer
// is far off, the writer itself checkpoints once the WAL reaches writer_checkpoint_pages (64 MiB
// by default, 200 pages here): the main file alone then holds what was written.
TEST_F(LocalBusTest, TheWriterCheckpointsItselfAtItsThreshold) {
  cfg.local_history.checkpoint_pages = 1 << 30;
  cfg.local_history.checkpoint_every = std::chrono::hours(1);
  cfg.local_history.writer_checkpoint_pages = 200;
  open();
  const std::string big(2000, 'x');
  auto copy = dir / "copy.db";
  // A copy taken while a checkpoint writes the file can be torn; that copy proves nothing
  // either way, and the next try takes another.
  auto main_file_has = [&](const std::string& room) {
    for (auto* tail : {"", "-wal", "-shm"}) std::filesystem::remove(copy.string() + tail);
    std::filesystem::copy_file(dir / "history.db", copy);
    std::string why;
    auto chunks = try_sql_on(copy, "SELECT count(*) FROM sqlite_master WHERE name = 'chunks'", why);
    auto rows = try_sql_on(copy, "SELECT count(*) FROM chunks WHERE room = '" + room + "'", why);
    return chunks == "1" && rows && *rows != "0";
  };
  publish("small", big);
  ASSERT_TRUE(eventually([&] { return sql_on(dir / "history.db", "SELECT count(*) FROM chunks WHERE room = 'small'") == "1"; }, 10s))
      << "folded within a second";
  EXPECT_FALSE(main_file_has("small")) << "a few pages: no checkpoint yet";
  // ~1 MB of chunks, folded every 64 messages: past 200 pages, and after each commit the writer checks.
  for (int i = 0; i < 500; ++i) publish("big", big);
  EXPECT_TRUE(eventually([&] { return main_file_has("big"); }, 10s)) << "the writer copied the WAL into the file";
}

// Age pruning deletes the rows from the file, not only from what readers see.
TEST(HistoryFile, AgePruningDeletesRows) {
  auto path = std::filesystem::temp_directory_path() / ("chatd-historyfile-" + std::to_string(::getpid()) + ".db");
  for (auto* tail : {"", "-wal", "-shm"}) std::filesystem::remove(path.string() + tail);
  {
    HistoryFile f(path.string());
    std::vector<HistoryFile::Stored> old_msgs, young_msgs;
    for (std::uint64_t i = 1; i <= 100; ++i) old_msgs.push_back({i, 1000 + static_cast<std::int64_t>(i), "old", "", 0});
    for (std::uint64_t i = 101; i <= 110; ++i) young_msgs.push_back({i, 5000, "young", "", 0});
    std::vector<HistoryFile::Fold> folds{{"r", old_msgs}, {"gone", std::span(old_msgs).first(10)}};
    ASSERT_TRUE(f.fold(folds, 0, 0));
    std::vector<HistoryFile::Fold> young{{"r", young_msgs}};
    ASSERT_TRUE(f.fold(young, 0, 0));
    ASSERT_EQ(sql_on(path, "SELECT count(*) FROM chunks"), "4") << "r: 64 + 36 + 10, gone: 10";
    // Cut at 1050: r's first chunk (ts up to 1064) is partly young and stays; nothing of
    // `gone` (ts up to 1010) is young.
    EXPECT_EQ(f.prune(1050, 0, 1), 1u);
    EXPECT_EQ(sql_on(path, "SELECT count(*) FROM chunks WHERE room = 'gone'"), "0");
    EXPECT_EQ(sql_on(path, "SELECT count(*) FROM chunks WHERE room = 'r'"), "3");
    EXPECT_EQ(f.prune(2000, 0, 1), 2u) << "r's old chunks";
    EXPECT_EQ(sql_on(path, "SELECT group_concat(first_seq) FROM chunks"), "101");
    History h;
    ASSERT_TRUE(f.read({"r", 0, 0, 100}, 2000, 0, h));
    EXPECT_EQ(h.first_seq, 101u);
    EXPECT_EQ(h.messages.size(), 10u);
  }
  for (auto* tail : {"", "-wal", "-shm"}) std::filesystem::remove(path.string() + tail);
}

// A prune walks the rooms a slice at a time, in name order, and each slice deletes what it
// should: chunks past the size bound and chunks older than the cutoff, nothing else.
TEST(HistoryFile, PruneWalksTheRoomsASliceAtATime) {
  auto path = std::filesystem::temp_directory_path() / ("chatd-historyprune-" + std::to_string(::getpid()) + ".db");
  for (auto* tail : {"", "-wal", "-shm"}) std::filesystem::remove(path.string() + tail);
  {
    HistoryFile f(path.string());
    std::vector<HistoryFile::Stored> msgs;
    for (std::uint64_t i = 1; i <= 3 * 64; ++i) msgs.push_back({i, 5000 + static_cast<std::int64_t>(i), "m", "", 0});
    std::vector<HistoryFile::Fold> folds{{"a", msgs}, {"b", msgs}, {"c", msgs}};
    ASSERT_TRUE(f.fold(folds, 0, 0));
    ASSERT_EQ(sql_on(path, "SELECT count(*) FROM chunks"), "9");
    // Keep the newest 100 of each room's 192: the first chunk (1..64) is wholly beyond it, the
    // second (65..128) only in part, so it stays.
    std::string after;
    bool done = false;
    EXPECT_EQ(f.prune_rooms(0, 100, 2, after, done), 2u);
    EXPECT_FALSE(done);
    EXPECT_EQ(after, "b");
    EXPECT_EQ(sql_on(path, "SELECT count(*) FROM chunks WHERE room = 'c'"), "3") << "not in this slice";
    EXPECT_EQ(f.prune_rooms(0, 100, 2, after, done), 1u);
    EXPECT_TRUE(done);
    EXPECT_EQ(sql_on(path, "SELECT group_concat(first_seq) FROM chunks WHERE room = 'c'"), "65,129");
    // A cutoff past the second chunk's newest message takes it too; the third stays.
    after.clear();
    EXPECT_EQ(f.prune_rooms(5000 + 129, 0, 10, after, done), 3u);
    EXPECT_TRUE(done);
    EXPECT_EQ(sql_on(path, "SELECT group_concat(room || first_seq) FROM chunks ORDER BY room"), "a129,b129,c129");
  }
  for (auto* tail : {"", "-wal", "-shm"}) std::filesystem::remove(path.string() + tail);
}
