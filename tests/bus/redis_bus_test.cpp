// The redis bus against a real redis-server. Each Node is one chatd node: its own bus on its
// own engine thread.
#include <gtest/gtest.h>

#include <boost/asio/post.hpp>

#include <algorithm>
#include <future>
#include <map>
#include <mutex>
#include <thread>
#include <tuple>

#include "bus/message_bus.h"
#include "redis/redis_cluster.h"
#include "redis/redis_server.h"
#include "redis/slot.h"
#include "redis/stall_proxy.h"

namespace chatd::bus {
namespace {

using namespace std::chrono_literals;
using test::Engine;
using test::RedisServer;

struct Node {
  explicit Node(const std::string& url, const std::function<void(BusConfig&)>& tune = {}) {
    BusConfig cfg;
    cfg.kind = "redis";
    cfg.redis_url = url;
    if (tune) tune(cfg);
    bus = make_bus(cfg, engine.io());
    bus->on_control([this](ControlMessage&& m) {
      std::lock_guard lock(mu);
      controls.push_back(std::move(m));
    });
    bus->start([this](Delivery&& d) {
      std::lock_guard lock(mu);
      got[d.room_id].push_back(std::move(d));
    });
  }
  ~Node() { bus->stop(); }

  // Returns the code `ready` got, waiting at most 3 s.
  std::error_code subscribe(const std::string& room) {
    auto p = std::make_shared<std::promise<std::error_code>>();
    bus->subscribe(room, [p](std::error_code ec) { p->set_value(ec); });
    auto f = p->get_future();
    if (f.wait_for(3s) != std::future_status::ready) return make_error_code(Error::timed_out);
    return f.get();
  }
  // Returns the code `done` got (timed_out after 3 s); `seq` gets the seq it was given, and
  // last_epoch the epoch it came with.
  std::error_code publish(const std::string& room, std::string payload, std::uint64_t* seq = nullptr,
                          std::string client_id = {}) {
    auto p = std::make_shared<std::promise<std::tuple<std::error_code, std::uint64_t, std::string>>>();
    bus->publish(room, std::move(payload), {std::move(client_id)},
                 [p](std::error_code ec, std::uint64_t s, std::string_view e) { p->set_value({ec, s, std::string(e)}); });
    auto f = p->get_future();
    if (f.wait_for(3s) != std::future_status::ready) return make_error_code(Error::timed_out);
    auto [ec, s, e] = f.get();
    if (seq) *seq = s;
    last_epoch = e;
    return ec;
  }
  std::string last_epoch;
  // Returns the bus's answer to `req` (an error code and an empty History after 3 s).
  std::pair<std::error_code, History> history(HistoryRequest req) {
    auto p = std::make_shared<std::promise<std::pair<std::error_code, History>>>();
    bus->history(std::move(req), [p](std::error_code ec, History h) { p->set_value({ec, std::move(h)}); });
    auto f = p->get_future();
    if (f.wait_for(3s) != std::future_status::ready) return {make_error_code(Error::timed_out), {}};
    return f.get();
  }
  std::size_t count(const std::string& room) {
    std::lock_guard lock(mu);
    return got[room].size();
  }
  std::vector<Delivery> deliveries(const std::string& room) {
    std::lock_guard lock(mu);
    return got[room];
  }

  // Returns the code publish_control's `done` got (timed_out after 3 s).
  std::error_code publish_control(std::string type, std::string body) {
    auto p = std::make_shared<std::promise<std::error_code>>();
    bus->publish_control({std::move(type), {}, std::move(body)}, [p](std::error_code ec) { p->set_value(ec); });
    auto f = p->get_future();
    if (f.wait_for(3s) != std::future_status::ready) return make_error_code(Error::timed_out);
    return f.get();
  }
  std::vector<ControlMessage> control_messages() {
    std::lock_guard lock(mu);
    return controls;
  }

  Engine engine;
  std::unique_ptr<MessageBus> bus;
  std::mutex mu;
  std::map<std::string, std::vector<Delivery>> got;
  std::vector<ControlMessage> controls;
};

bool both_up(Node& a, Node& b) {
  return test::eventually([&] { return a.bus->up() && b.bus->up(); });
}

TEST(RedisBus, TwoNodesSeeOneOrderWithContiguousSeq) {
  RedisServer redis;
  Node a(redis.url()), b(redis.url()), c(redis.url());
  ASSERT_TRUE(both_up(a, b));
  ASSERT_TRUE(test::eventually([&] { return c.bus->up(); }));
  ASSERT_FALSE(a.subscribe("lunch"));
  ASSERT_FALSE(b.subscribe("lunch"));

  // 3 publishers (one per node) x 200 messages, all pipelined: nobody waits for a reply.
  constexpr int kEach = 200;
  std::atomic<int> ok{0}, failed{0};
  std::vector<std::thread> publishers;
  Node* nodes[] = {&a, &b, &c};
  for (int p = 0; p < 3; ++p)
    publishers.emplace_back([&, p] {
      for (int i = 0; i < kEach; ++i) {
        std::string body = "p";  // built step by step: GCC 12 warns falsely on a + chain here
        body += std::to_string(p);
        body += " #";
        body += std::to_string(i);
        nodes[p]->bus->publish("lunch", std::move(body), {}, [&](std::error_code ec, std::uint64_t, std::string_view) { ++(ec ? failed : ok); });
      }
    });
  for (auto& t : publishers) t.join();
  ASSERT_TRUE(test::eventually([&] { return ok + failed == 3 * kEach; }));
  EXPECT_EQ(failed, 0);
  ASSERT_TRUE(test::eventually([&] { return a.count("lunch") == 3 * kEach && b.count("lunch") == 3 * kEach; }))
      << a.count("lunch") << " " << b.count("lunch");

  auto da = a.deliveries("lunch"), db = b.deliveries("lunch");
  std::map<std::string, int> next_of;  // each publisher's messages keep its order
  for (std::size_t i = 0; i < da.size(); ++i) {
    EXPECT_EQ(da[i].seq, i + 1) << "seq must be strictly increasing and contiguous";
    EXPECT_EQ(da[i].seq, db[i].seq);
    EXPECT_EQ(da[i].payload, db[i].payload) << "both nodes see the same order";
    const std::string who = da[i].payload.substr(0, 2);
    EXPECT_EQ(da[i].payload, who + " #" + std::to_string(next_of[who]++));
  }
  EXPECT_EQ(c.count("lunch"), 0u) << "a node only gets the rooms it subscribed";
}

TEST(RedisBus, ControlMessagesReachEveryNodeWithTheirTypeOriginAndBytes) {
  RedisServer redis;
  Node a(redis.url(), [](BusConfig& c) { c.node_id = "node-a"; });
  Node b(redis.url(), [](BusConfig& c) { c.node_id = "node b"; });  // a space in the id
  ASSERT_TRUE(both_up(a, b));
  // The control channel is subscribed once the subscriber connection is up; publish until
  // both have seen a probe, so the checks below do not race the subscription.
  ASSERT_TRUE(test::eventually([&] {
    a.publish_control("probe", "");
    return !a.control_messages().empty() && !b.control_messages().empty();
  }));
  const std::string body("{\"user\":\"kim\"}\0 with a NUL and spaces", 36);
  ASSERT_FALSE(b.publish_control("disconnect", body));
  ASSERT_FALSE(a.publish_control("room.deleted", "r1"));
  auto last_two = [](Node& n) {
    std::vector<ControlMessage> out;
    for (auto& m : n.control_messages())
      if (m.type != "probe") out.push_back(m);
    return out;
  };
  ASSERT_TRUE(test::eventually([&] { return last_two(a).size() == 2 && last_two(b).size() == 2; }));
  for (Node* n : {&a, &b}) {
    auto got = last_two(*n);
    // Two publishers: no order between them is promised, so find each by type.
    auto& d = got[0].type == "disconnect" ? got[0] : got[1];
    auto& r = got[0].type == "disconnect" ? got[1] : got[0];
    EXPECT_EQ(d.type, "disconnect");
    EXPECT_EQ(d.origin, "node b");
    EXPECT_EQ(d.body, body);
    EXPECT_EQ(r.type, "room.deleted");
    EXPECT_EQ(r.origin, "node-a");
    EXPECT_EQ(r.body, "r1");
  }
  EXPECT_EQ(a.count("r1"), 0u) << "control messages are not room traffic";
  EXPECT_EQ(a.publish_control("Bad Type", "x"), make_error_code(Error::rejected));
  EXPECT_EQ(a.publish_control("big", std::string(kMaxControlBody + 1, 'x')), make_error_code(Error::rejected));
}

TEST(RedisBus, DeletedHistoryIsGone) {
  RedisServer redis;
  Node a(redis.url());
  ASSERT_TRUE(test::eventually([&] { return a.bus->up(); }));
  ASSERT_FALSE(a.publish("gone", "x"));
  ASSERT_FALSE(a.publish("kept", "y"));
  auto p = std::make_shared<std::promise<std::error_code>>();
  a.bus->delete_history("gone", [p](std::error_code ec) { p->set_value(ec); });
  auto f = p->get_future();
  ASSERT_EQ(f.wait_for(3s), std::future_status::ready);
  ASSERT_FALSE(f.get());
  auto [ec, h] = a.history({"gone", 0, 0, 10});
  ASSERT_FALSE(ec);
  EXPECT_TRUE(h.messages.empty());
  EXPECT_EQ(a.history({"kept", 0, 0, 10}).second.messages.size(), 1u);
}

// The hub publishes from the engine thread (a room lookup answered there) while a worker
// publishes the same sender's next message. Asio keeps posts made on a one-thread context's
// own thread aside until the running handler returns, so a post from the worker could
// overtake them; publish() called on the engine thread must therefore not post.
TEST(RedisBus, PublishesFromTheEngineThreadKeepOrderWithOtherThreads) {
  RedisServer redis;
  Node a(redis.url());
  ASSERT_TRUE(test::eventually([&] { return a.bus->up(); }));
  ASSERT_FALSE(a.subscribe("order"));
  std::promise<void> worker_done;
  boost::asio::post(a.engine.io(), [&] {
    for (int i = 0; i < 50; ++i) a.bus->publish("order", std::to_string(i), {}, [](std::error_code, std::uint64_t, std::string_view) {});
    // The next message comes from another thread while this handler still runs.
    std::thread([&] {
      a.bus->publish("order", "50", {}, [](std::error_code, std::uint64_t, std::string_view) {});
      worker_done.set_value();
    }).join();
  });
  ASSERT_EQ(worker_done.get_future().wait_for(3s), std::future_status::ready);
  ASSERT_TRUE(test::eventually([&] { return a.count("order") == 51; })) << a.count("order");
  auto got = a.deliveries("order");
  for (std::size_t i = 0; i < got.size(); ++i) EXPECT_EQ(got[i].payload, std::to_string(i));
}

TEST(RedisBus, RoomsKeepTheirOwnSequence) {
  RedisServer redis;
  Node a(redis.url()), b(redis.url());
  ASSERT_TRUE(both_up(a, b));
  ASSERT_FALSE(a.subscribe("r1"));
  ASSERT_FALSE(a.subscribe("r2"));
  ASSERT_FALSE(b.publish("r1", "x"));
  ASSERT_FALSE(b.publish("r2", "y"));
  ASSERT_FALSE(b.publish("r1", "z"));
  ASSERT_TRUE(test::eventually([&] { return a.count("r1") == 2 && a.count("r2") == 1; }));
  EXPECT_EQ(a.deliveries("r1")[1].seq, 2u);
  EXPECT_EQ(a.deliveries("r2")[0].seq, 1u);
  EXPECT_EQ(a.deliveries("r2")[0].payload, "y");
  EXPECT_EQ(redis.command({"GET", "chatd:{r1}:seq"}), "2");
}

// SCRIPT FLUSH (or a failover to a server without the script) while publishes are in flight
// must neither fail nor reorder them.
TEST(RedisBus, ScriptCacheFlushedMidStreamKeepsEveryMessageInOrder) {
  RedisServer redis;
  Node a(redis.url());
  ASSERT_TRUE(test::eventually([&] { return a.bus->up(); }));
  ASSERT_FALSE(a.subscribe("r"));
  constexpr int kCount = 3000;
  std::atomic<int> ok{0}, failed{0};
  std::atomic<bool> publishing{true};
  std::thread publisher([&] {
    for (int i = 0; i < kCount; ++i) {
      a.bus->publish("r", std::to_string(i), {}, [&](std::error_code ec, std::uint64_t, std::string_view) { ++(ec ? failed : ok); });
      if (i % 500 == 499) std::this_thread::sleep_for(1ms);  // bursts, so a flush lands mid-pipeline
    }
    publishing = false;
  });
  while (publishing && ok + failed < kCount / 3) std::this_thread::yield();
  redis.command({"SCRIPT", "FLUSH"});
  publisher.join();
  ASSERT_TRUE(test::eventually([&] { return ok + failed == kCount; }));
  EXPECT_EQ(failed, 0);
  ASSERT_TRUE(test::eventually([&] { return a.count("r") == kCount; })) << a.count("r");
  auto got = a.deliveries("r");
  int out_of_place = 0;
  for (int i = 0; i < kCount; ++i) out_of_place += got[i].payload != std::to_string(i);
  EXPECT_EQ(out_of_place, 0);
  EXPECT_EQ(got.back().seq, static_cast<std::uint64_t>(kCount));
}

TEST(RedisBus, PayloadBytesArriveUnchanged) {
  RedisServer redis;
  Node a(redis.url());
  ASSERT_TRUE(test::eventually([&] { return a.bus->up(); }));
  ASSERT_FALSE(a.subscribe("bytes"));
  const std::string payload = std::string("{\"message\":\"밥 먹자 \\u0000\"} ", 30) + std::string(1, '\0') + " 7 tail";
  ASSERT_FALSE(a.publish("bytes", payload));
  ASSERT_TRUE(test::eventually([&] { return a.count("bytes") == 1; }));
  EXPECT_EQ(a.deliveries("bytes")[0].payload, payload);
}

TEST(RedisBus, PublishAfterSubscribeReadyIsNeverMissed) {
  RedisServer redis;
  Node a(redis.url()), b(redis.url());
  ASSERT_TRUE(both_up(a, b));
  for (int i = 0; i < 100; ++i) {
    const std::string room = "room-" + std::to_string(i);
    ASSERT_FALSE(a.subscribe(room));
    ASSERT_FALSE(b.publish(room, "first"));  // the other node, right after the receipt
    ASSERT_TRUE(test::eventually([&] { return a.count(room) == 1; }, 2s)) << room;
  }
}

TEST(RedisBus, UnsubscribeStopsDeliveryAndResubscribeWorks) {
  RedisServer redis;
  Node a(redis.url()), b(redis.url());
  ASSERT_TRUE(both_up(a, b));
  ASSERT_FALSE(a.subscribe("r"));
  ASSERT_FALSE(b.publish("r", "1"));
  ASSERT_TRUE(test::eventually([&] { return a.count("r") == 1; }));

  a.bus->unsubscribe("r");
  ASSERT_TRUE(test::eventually([&] {  // Redis itself says nobody listens on the channel
    return redis.command({"EVAL", "return redis.call('PUBSUB','NUMSUB',KEYS[1])[2]", "1", "chatd:{r}:live"}) == "0";
  }));
  ASSERT_FALSE(b.publish("r", "2"));
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(a.count("r"), 1u);

  // Quick flapping must end subscribed, and ready only once Redis confirmed the last SUBSCRIBE.
  a.bus->subscribe("r", [](std::error_code) {});
  a.bus->unsubscribe("r");
  ASSERT_FALSE(a.subscribe("r"));
  ASSERT_FALSE(b.publish("r", "3"));
  ASSERT_TRUE(test::eventually([&] { return a.count("r") == 2; }));
  EXPECT_EQ(a.deliveries("r")[1].payload, "3");
  EXPECT_EQ(a.deliveries("r")[1].seq, 3u);
}

TEST(RedisBus, SurvivesRedisKilledAndRestarted) {
  RedisServer redis;
  Node a(redis.url()), b(redis.url());
  ASSERT_TRUE(both_up(a, b));
  ASSERT_FALSE(a.subscribe("r"));
  ASSERT_FALSE(b.publish("r", "before"));
  ASSERT_TRUE(test::eventually([&] { return a.count("r") == 1; }));

  redis.kill9();
  // up() turns false a moment before describe() gets the reason: wait for both.
  ASSERT_TRUE(test::eventually([&] {
    return !a.bus->up() && !b.bus->up() && b.bus->describe().find("down") != std::string::npos;
  }, 3s)) << b.bus->describe();
  const auto t0 = std::chrono::steady_clock::now();
  // engine_down once the publish connection knows; timed_out (sent, unconfirmed) when it was
  // written to a socket whose end it had not read yet.
  auto failed = [](std::error_code ec) { return ec == Error::engine_down || ec == Error::timed_out; };
  EXPECT_PRED1(failed, b.publish("r", "while down"));
  EXPECT_PRED1(failed, a.publish("r", "while down"));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 500ms) << "publishes fail fast while down";
  EXPECT_EQ(a.subscribe("other"), Error::engine_down);

  redis.start();
  ASSERT_TRUE(test::eventually([&] { return a.bus->up() && b.bus->up(); }, 5s)) << a.bus->describe();
  // Nobody re-subscribes by hand: the bus does it on reconnect. Publish until it lands.
  ASSERT_TRUE(test::eventually([&] {
    b.publish("r", "after");
    return a.count("r") >= 2;
  }, 5s));
  EXPECT_EQ(a.deliveries("r")[1].payload, "after");
  // The room subscribed while down was kept and subscribed again too.
  ASSERT_TRUE(test::eventually([&] {
    b.publish("other", "hello");
    return a.count("other") >= 1;
  }, 5s));
}

TEST(RedisBus, FrozenRedisFailsPublishesWithinSeconds) {
  RedisServer redis;
  Node a(redis.url());
  ASSERT_TRUE(test::eventually([&] { return a.bus->up(); }));
  redis.signal(SIGSTOP);  // sockets stay open: only the health ping can tell
  const auto t0 = std::chrono::steady_clock::now();
  auto p = std::make_shared<std::promise<std::error_code>>();
  a.bus->publish("r", "stuck", {}, [p](std::error_code ec, std::uint64_t, std::string_view) { p->set_value(ec); });
  auto f = p->get_future();
  ASSERT_EQ(f.wait_for(8s), std::future_status::ready) << "a publish must not hang on a frozen Redis";
  // It was sent: Redis runs it when it wakes, though the answer can no longer come back. So it
  // is not "down, not published" but "not confirmed" (the client retries with its x-client-id).
  EXPECT_EQ(f.get(), Error::timed_out);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 6s);
  EXPECT_FALSE(a.bus->up());
  EXPECT_NE(a.bus->describe().find("PING"), std::string::npos) << a.bus->describe();
  redis.signal(SIGCONT);
  EXPECT_TRUE(test::eventually([&] { return a.bus->up(); }, 5s)) << a.bus->describe();
  EXPECT_FALSE(a.publish("r", "thawed"));
}

TEST(RedisBus, PasswordChangedWhileRunningIsReportedAndRetried) {
  RedisServer redis("one");
  Node a(redis.url());
  ASSERT_TRUE(test::eventually([&] { return a.bus->up(); }));
  redis.command({"CONFIG", "SET", "requirepass", "two"});
  redis.use_password("two");
  redis.command({"CLIENT", "KILL", "TYPE", "normal"});  // our publish connection among them
  ASSERT_TRUE(test::eventually([&] { return a.bus->describe().find("refused AUTH") != std::string::npos; }, 5s))
      << a.bus->describe();
  EXPECT_FALSE(a.bus->up());
  EXPECT_EQ(a.publish("r", "x"), Error::engine_down);
  redis.command({"CONFIG", "SET", "requirepass", "one"});
  redis.use_password("one");
  EXPECT_TRUE(test::eventually([&] { return a.bus->up(); }, 5s)) << a.bus->describe();
  EXPECT_FALSE(a.publish("r", "y"));
}

TEST(RedisBus, StopAnswersEveryPendingPublish) {
  RedisServer redis;
  Node a(redis.url());
  ASSERT_TRUE(test::eventually([&] { return a.bus->up(); }));
  std::atomic<int> answered{0}, bad{0};
  constexpr int kCount = 2000;
  for (int i = 0; i < kCount; ++i)
    a.bus->publish("r", "m", {}, [&](std::error_code ec, std::uint64_t, std::string_view) {
      if (ec && ec != Error::stopped) ++bad;
      ++answered;
    });
  a.bus->stop();
  EXPECT_TRUE(test::eventually([&] { return answered == kCount; }, 3s)) << answered;
  EXPECT_EQ(bad, 0);
  EXPECT_EQ(a.publish("r", "late"), Error::stopped);
  EXPECT_EQ(a.subscribe("r"), Error::stopped);
  EXPECT_FALSE(a.bus->up());
}

// Not a timed test: prints a figure when asked (--gtest_also_run_disabled_tests).
TEST(RedisBus, DISABLED_PipelinedThroughput) {
  RedisServer redis;
  Node a(redis.url()), b(redis.url());
  ASSERT_TRUE(both_up(a, b));
  ASSERT_FALSE(b.subscribe("t"));
  constexpr int kCount = 100000;
  const std::string payload(200, 'x');
  std::atomic<int> done{0};
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < kCount; ++i) a.bus->publish("t", payload, {}, [&](std::error_code, std::uint64_t, std::string_view) { ++done; });
  ASSERT_TRUE(test::eventually([&] { return b.count("t") == kCount; }, 60s)) << b.count("t");
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(done, kCount);
  std::printf("redis bus: %d publishes of %zu B, node A -> node B: %.2f s, %.0f msg/s\n", kCount, payload.size(),
              s, kCount / s);
}

// ---- history, epoch, dedupe -------------------------------------------------------------

std::vector<std::uint64_t> seqs_of(const std::vector<Delivery>& ds) {
  std::vector<std::uint64_t> out;
  for (const auto& d : ds) out.push_back(d.seq);
  return out;
}

std::vector<std::uint64_t> range(std::uint64_t from, std::uint64_t to) {  // [from, to]
  std::vector<std::uint64_t> out;
  for (auto s = from; s <= to; ++s) out.push_back(s);
  return out;
}

TEST(RedisBus, HistoryKeepsEveryPublishWithItsSeqAndEpoch) {
  RedisServer redis;
  Node a(redis.url()), b(redis.url());
  ASSERT_TRUE(both_up(a, b));
  ASSERT_FALSE(a.subscribe("h"));
  for (int i = 1; i <= 30; ++i) {
    std::uint64_t seq = 0;
    ASSERT_FALSE(b.publish("h", "m" + std::to_string(i), &seq));
    EXPECT_EQ(seq, static_cast<std::uint64_t>(i)) << "done() carries the seq the message was given";
  }
  ASSERT_TRUE(test::eventually([&] { return a.count("h") == 30; }));
  const std::string epoch = a.deliveries("h")[0].epoch;
  EXPECT_EQ(epoch.size(), 16u) << epoch;
  EXPECT_EQ(b.last_epoch, epoch) << "and the epoch it counts in";
  EXPECT_EQ(redis.command({"GET", "chatd:{h}:epoch"}), epoch);

  auto [ec, newest] = a.history({.room_id = "h", .limit = 10});  // join: the newest 10
  ASSERT_FALSE(ec) << ec.message();
  EXPECT_EQ(newest.epoch, epoch);
  EXPECT_EQ(newest.first_seq, 1u);
  EXPECT_EQ(newest.last_seq, 30u);
  EXPECT_EQ(seqs_of(newest.messages), range(21, 30));
  EXPECT_EQ(newest.messages.back().payload, "m30");
  EXPECT_EQ(newest.messages.back().epoch, epoch);

  auto [ec2, resumed] = b.history({.room_id = "h", .after_seq = 5, .limit = 100});  // resume
  ASSERT_FALSE(ec2);
  EXPECT_EQ(seqs_of(resumed.messages), range(6, 30));
  for (const auto& d : resumed.messages) EXPECT_EQ(d.payload, "m" + std::to_string(d.seq));
  EXPECT_EQ(seqs_of(b.history({.room_id = "h", .after_seq = 5, .limit = 3}).second.messages), range(6, 8))
      << "after a seq: the OLDEST `limit`";

  auto older = b.history({.room_id = "h", .before_seq = 10, .limit = 3}).second;  // paging up
  EXPECT_EQ(seqs_of(older.messages), range(7, 9));
  EXPECT_EQ(seqs_of(b.history({.room_id = "h", .before_seq = 3, .limit = 50}).second.messages), range(1, 2));
  EXPECT_TRUE(b.history({.room_id = "h", .after_seq = 30, .limit = 50}).second.messages.empty());

  auto empty = b.history({.room_id = "never", .limit = 10}).second;
  EXPECT_EQ(empty.first_seq, 0u);
  EXPECT_EQ(empty.last_seq, 0u);
  EXPECT_TRUE(empty.messages.empty());
  EXPECT_EQ(empty.epoch.size(), 16u) << "a room gets its epoch on first sight, publish or read";
  std::uint64_t seq = 0;
  ASSERT_FALSE(a.publish("never", "first", &seq));
  EXPECT_EQ(b.history({.room_id = "never", .limit = 10}).second.epoch, empty.epoch);
}

TEST(RedisBus, HistoryIsBoundedByCount) {
  RedisServer redis;
  Node a(redis.url(), [](BusConfig& c) { c.history_size = 50; });
  ASSERT_TRUE(test::eventually([&] { return a.bus->up(); }));
  for (int i = 1; i <= 400; ++i) ASSERT_FALSE(a.publish("c", std::to_string(i)));
  auto [ec, h] = a.history({.room_id = "c", .after_seq = 100, .limit = 1000});
  ASSERT_FALSE(ec);
  EXPECT_EQ(h.first_seq, 351u) << "exactly the newest history_size, though MAXLEN ~ keeps a few more";
  EXPECT_EQ(h.last_seq, 400u);
  EXPECT_EQ(seqs_of(h.messages), range(351, 400));
  const auto len = std::stoul(redis.command({"XLEN", "chatd:{c}:hist"}));
  EXPECT_GE(len, 50u);
  EXPECT_LT(len, 400u) << "the stream itself is trimmed";
  EXPECT_EQ(seqs_of(a.history({.room_id = "c", .before_seq = 360, .limit = 1000}).second.messages), range(351, 359));
}

TEST(RedisBus, HistoryIsBoundedByAge) {
  RedisServer redis;
  Node a(redis.url(), [](BusConfig& c) { c.history_ttl = 1s; });
  ASSERT_TRUE(test::eventually([&] { return a.bus->up(); }));
  for (int i = 1; i <= 100; ++i) ASSERT_FALSE(a.publish("t", std::to_string(i)));
  EXPECT_EQ(a.history({.room_id = "t", .limit = 1000}).second.messages.size(), 100u);
  const auto pttl = std::stol(redis.command({"PTTL", "chatd:{t}:hist"}));
  EXPECT_GT(pttl, 0);
  EXPECT_LE(pttl, 1125) << "an idle room's stream goes away after the ttl and its slack (an eighth)";

  // Keep the room busy (so the stream never idles out) until the first 100 are past the ttl.
  std::uint64_t seq = 100;
  ASSERT_TRUE(test::eventually([&] {
    a.publish("t", "later", &seq);
    std::this_thread::sleep_for(50ms);
    return a.history({.room_id = "t", .after_seq = 10, .limit = 1000}).second.first_seq > 100;
  }, 5s));
  for (int i = 0; i < 64; ++i) ASSERT_FALSE(a.publish("t", "last", &seq));  // the trim looks every 64th
  auto h = a.history({.room_id = "t", .after_seq = 10, .limit = 1000}).second;
  ASSERT_FALSE(h.messages.empty());
  EXPECT_GT(h.messages.front().seq, 100u);
  EXPECT_EQ(h.first_seq, h.messages.front().seq);
  EXPECT_EQ(h.messages.back().seq, seq);
  EXPECT_EQ(seqs_of(h.messages), range(h.first_seq, seq));
  const std::string oldest = redis.command(
      {"EVAL", "return redis.call('XRANGE',KEYS[1],'-','+','COUNT',1)[1][1]", "1", "chatd:{t}:hist"});
  EXPECT_GT(std::stoull(oldest), 100u) << "publishing trims what expired: " << oldest;

  // An idle room: the whole stream expires; seq does not.
  ASSERT_TRUE(test::eventually(
      [&] { return redis.command({"EXISTS", "chatd:{t}:hist"}) == "0"; }, 3s));
  auto idle = a.history({.room_id = "t", .after_seq = 10, .limit = 1000}).second;
  EXPECT_TRUE(idle.messages.empty());
  EXPECT_EQ(idle.first_seq, 0u);
  EXPECT_EQ(idle.last_seq, seq);
}

// Each node decides for itself when a room's stream expiry needs pushing out (no key is read to
// decide it): a message from a node that did not renew it lately must still get its whole ttl,
// and the expiry is never pushed past ttl + slack.
TEST(RedisBus, EachNodeKeepsItsOwnMessagesForTheWholeTtl) {
  RedisServer redis;
  auto two_s = [](BusConfig& c) { c.history_ttl = 2s; };  // slack 250 ms, renewed every 125 ms
  Node a(redis.url(), two_s), b(redis.url(), two_s);
  ASSERT_TRUE(both_up(a, b));
  auto expires_after = [&](Node& n, const std::string& text) {
    const auto sent = std::chrono::steady_clock::now();
    EXPECT_FALSE(n.publish("q", text));
    const auto pttl = std::stol(redis.command({"PTTL", "chatd:{q}:hist"}));
    const auto since = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - sent);
    EXPECT_GE(pttl, 2000 - since.count()) << text << " must be kept for the whole ttl";
    EXPECT_LE(pttl, 2250) << "at most ttl + slack";
  };
  expires_after(a, "1");
  std::this_thread::sleep_for(600ms);
  expires_after(b, "2");  // b never renewed it
  std::this_thread::sleep_for(600ms);
  expires_after(a, "3");  // a renewed it 1.2 s ago
  std::this_thread::sleep_for(600ms);
  expires_after(b, "4");
  EXPECT_EQ(seqs_of(a.history({.room_id = "q", .limit = 10}).second.messages), range(1, 4));
}

// A publish Redis refused renewed no expiry, although the node had decided it would: the
// room's next publish renews it, so that message too is kept for the whole ttl.
TEST(RedisBus, APublishThatFailedLeavesTheExpiryRenewalToTheNextOne) {
  RedisServer redis;
  Node a(redis.url(), [](BusConfig& c) { c.history_ttl = 2s; });  // slack 250 ms, renewed every 125 ms
  ASSERT_TRUE(test::eventually([&] { return a.bus->up(); }, 5s));
  ASSERT_FALSE(a.publish("f", "1"));
  std::this_thread::sleep_for(400ms);  // past the slack: the next publish must renew
  redis.command({"CONFIG", "SET", "min-replicas-to-write", "1"});  // refuses every write
  EXPECT_TRUE(a.publish("f", "refused"));
  redis.command({"CONFIG", "SET", "min-replicas-to-write", "0"});
  const auto sent = std::chrono::steady_clock::now();
  ASSERT_FALSE(a.publish("f", "2"));
  const auto pttl = std::stol(redis.command({"PTTL", "chatd:{f}:hist"}));
  const auto since = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - sent);
  EXPECT_GE(pttl, 2000 - since.count()) << "the message after a refused one is kept for the whole ttl";
  EXPECT_EQ(seqs_of(a.history({.room_id = "f", .limit = 10}).second.messages), range(1, 2));
}

// A message's time (the age bound's clock) is Redis's TIME, whichever node publishes and
// whatever its own wall clock says: the node passes Redis's clock as it reckons it from a TIME
// read now and then (the first publishes, before that answer, let the function read TIME).
TEST(RedisBus, HistoryTimesAreRedisClockFromEveryNodeAndGrowWithSeq) {
  RedisServer redis;
  Node a(redis.url()), b(redis.url());
  ASSERT_TRUE(both_up(a, b));
  const auto redis_ms = [&] {
    const std::string r = redis.command(
        {"EVAL", "local t=redis.call('TIME') return t[1]*1000+math.floor(t[2]/1000)", "0"});
    return std::stoll(r);
  };
  const auto before = redis_ms();
  for (int i = 0; i < 200; ++i) {
    ASSERT_FALSE((i % 2 ? a : b).publish("clk", std::to_string(i)));
    if (i % 50 == 0) std::this_thread::sleep_for(20ms);  // let time pass between publishes
  }
  const auto after = redis_ms();
  const std::string ts = redis.command(
      {"EVAL",
       "local r={} for _,x in ipairs(redis.call('XRANGE',KEYS[1],'-','+')) do r[#r+1]=x[2][2] end "
       "return table.concat(r,',')",
       "1", "chatd:{clk}:hist"});
  std::vector<long long> t;
  for (std::size_t at = 0; at < ts.size();) {
    const auto comma = std::min(ts.find(',', at), ts.size());
    t.push_back(std::stoll(ts.substr(at, comma - at)));
    at = comma + 1;
  }
  ASSERT_EQ(t.size(), 200u) << ts;
  // A node's estimate is within half of kClockMaxRtt (20 ms) plus a millisecond of rounding;
  // two nodes' estimates within twice that.
  constexpr long long kSlack = 25;
  for (std::size_t i = 0; i < t.size(); ++i) {
    EXPECT_GE(t[i], before - kSlack) << "entry " << i << ": not Redis's clock";
    EXPECT_LE(t[i], after + kSlack) << "entry " << i << ": not Redis's clock";
    if (i > 0) {
      EXPECT_GE(t[i], t[i - 1] - kSlack) << "entry " << i << ": t must grow with seq";
    }
  }
  EXPECT_GE(t.back() - t.front(), 80 - kSlack) << "four pauses of 20 ms passed between the first and the last";
}

// The stream's expiry is renewed only when a message needs it: the second message, sent after
// more than the slack (an eighth of the ttl), must push it out to its own ttl.
TEST(RedisBus, AQuietRoomsNewestMessageKeepsItsStreamForTheWholeTtl) {
  RedisServer redis;
  Node a(redis.url(), [](BusConfig& c) { c.history_ttl = 2s; });
  ASSERT_TRUE(test::eventually([&] { return a.bus->up(); }));
  ASSERT_FALSE(a.publish("q", "first"));
  std::this_thread::sleep_for(1s);
  const auto sent = std::chrono::steady_clock::now();
  ASSERT_FALSE(a.publish("q", "newest"));
  const auto pttl = std::stol(redis.command({"PTTL", "chatd:{q}:hist"}));
  const auto since = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - sent);
  EXPECT_GE(pttl, 2000 - since.count()) << "the newest message's stream must outlive its ttl";
  EXPECT_LE(pttl, 2250) << "at most the ttl and its slack";
}

TEST(RedisBus, EpochChangesWhenRedisRestartsWithoutPersistence) {
  RedisServer redis;  // --save "" --appendonly no
  Node a(redis.url()), b(redis.url());
  ASSERT_TRUE(both_up(a, b));
  ASSERT_FALSE(a.subscribe("e"));
  for (int i = 0; i < 5; ++i) ASSERT_FALSE(b.publish("e", "old"));
  ASSERT_TRUE(test::eventually([&] { return a.count("e") == 5; }));
  const auto before = a.history({.room_id = "e", .limit = 10}).second;
  EXPECT_EQ(before.epoch, a.deliveries("e")[0].epoch);

  redis.kill9();
  redis.start();
  ASSERT_TRUE(test::eventually([&] { return a.bus->up() && b.bus->up(); }, 5s));
  ASSERT_TRUE(test::eventually([&] {
    b.publish("e", "new");
    return a.count("e") >= 6;
  }, 5s));
  const Delivery d = a.deliveries("e").back();
  EXPECT_NE(d.epoch, before.epoch) << "a Redis that lost its data gives the room a new epoch";
  // (The first publishes may go out before `a` is subscribed again: look at history, not a.)
  const auto after = b.history({.room_id = "e", .limit = 1000}).second;
  ASSERT_FALSE(after.messages.empty());
  EXPECT_EQ(after.messages.front().seq, 1u) << "... because its seq restarted";
  EXPECT_EQ(after.epoch, d.epoch);
  EXPECT_EQ(after.messages.front().epoch, d.epoch);
}

TEST(RedisBus, SameClientIdIsPublishedOnceEvenThroughAnotherNode) {
  RedisServer redis;
  Node a(redis.url()), b(redis.url(), [](BusConfig& c) { c.dedupe_window = 1s; });
  ASSERT_TRUE(both_up(a, b));
  ASSERT_FALSE(a.subscribe("d"));
  std::uint64_t s1 = 0, s2 = 0, s3 = 0, s4 = 0;
  ASSERT_FALSE(a.publish("d", "hello", &s1, "c-1"));
  ASSERT_FALSE(a.publish("d", "hello", &s2, "c-1"));  // a retry on the same node
  ASSERT_FALSE(b.publish("d", "hello", &s3, "c-1"));  // a retry after reconnecting elsewhere
  const std::string retry_epoch = b.last_epoch;
  ASSERT_FALSE(b.publish("d", "other", &s4, "c-2"));
  EXPECT_EQ(s1, 1u);
  EXPECT_EQ(s2, s1) << "a retry gets the first publish's seq";
  EXPECT_EQ(s3, s1);
  EXPECT_EQ(s4, 2u);
  ASSERT_TRUE(test::eventually([&] { return a.count("d") == 2; }));
  EXPECT_EQ(retry_epoch, a.deliveries("d")[0].epoch) << "with the first's epoch";
  std::this_thread::sleep_for(100ms);  // a duplicate would have arrived with the others
  EXPECT_EQ(a.count("d"), 2u);
  EXPECT_EQ(seqs_of(a.history({.room_id = "d", .limit = 10}).second.messages), range(1, 2));
  // The same id in another room is another message; no id means no dedupe at all.
  std::uint64_t other_room = 0, plain1 = 0, plain2 = 0;
  ASSERT_FALSE(a.publish("d2", "hello", &other_room, "c-1"));
  EXPECT_EQ(other_room, 1u);
  ASSERT_FALSE(a.publish("d", "x", &plain1));
  ASSERT_FALSE(a.publish("d", "x", &plain2));
  EXPECT_EQ(plain2, plain1 + 1);
  // Past the window (node b's: 1 s) the id is forgotten.
  ASSERT_TRUE(test::eventually([&] {
    std::uint64_t again = 0;
    return !b.publish("d", "late", &again, "c-2") && again > s4;
  }, 4s));
}

// The join a subscriber does: subscribe (ready), then read history, then take live messages
// with a larger seq than the history's newest. Publishing never pauses meanwhile; in the last
// round Redis freezes after the join.
TEST(RedisBus, HistoryReadDuringPublishingJoinsLiveWithoutGapOrDuplicate) {
  RedisServer redis;
  Node a(redis.url());
  ASSERT_TRUE(test::eventually([&] { return a.bus->up(); }));
  std::atomic<int> sent{0}, acked{0}, failed{0};  // outlive the rounds: a late answer still finds them
  for (int round = 0; round < 10; ++round) {
    const std::string room = "race-" + std::to_string(round);
    std::atomic<bool> go{true};
    sent = 0;
    acked = 0;
    failed = 0;
    // Publishes until told to stop, so it is still going when the joiner subscribes and reads
    // (a cap of 5,000 ran out before a slow machine had the joiner up); bounded by 20 s, and by
    // 1,000 unanswered, so a frozen Redis is not left a backlog that outlasts the test.
    std::thread publisher([&] {
      const auto deadline = std::chrono::steady_clock::now() + 20s;
      while (go && std::chrono::steady_clock::now() < deadline) {
        if (sent - acked >= 1000) {
          std::this_thread::sleep_for(1ms);
          continue;
        }
        a.bus->publish(room, "x", {}, [&](std::error_code ec, std::uint64_t, std::string_view) {
          if (ec) ++failed;
          ++acked;
        });
        if (++sent % 20 == 0) std::this_thread::sleep_for(200us);
      }
    });
    ASSERT_TRUE(test::eventually([&] { return acked > 100; }));
    Node joiner(redis.url());
    ASSERT_TRUE(test::eventually([&] { return joiner.bus->up(); }));
    ASSERT_FALSE(joiner.subscribe(room));
    auto [ec, h] = joiner.history({.room_id = room, .limit = 50});
    std::this_thread::sleep_for(20ms);
    if (round == 9) {
      // Longer than a PING's interval (1 s) plus its timeout (3 s) and the check after it: both
      // nodes drop and reconnect, node a's publishes fail meanwhile, and the joiner reads what
      // it missed once its subscription is back.
      redis.signal(SIGSTOP);
      std::this_thread::sleep_for(7s);
      redis.signal(SIGCONT);
    }
    go = false;
    publisher.join();
    ASSERT_TRUE(test::eventually([&] { return acked == sent; }, 20s));
    ASSERT_FALSE(ec);
    ASSERT_EQ(h.messages.size(), 50u);
    // The room's newest seq as Redis has it, not `sent`: on a stalled machine node a can miss a
    // PING and reconnect, failing the publishes it had out, some of which Redis had written.
    std::uint64_t total = 0;
    ASSERT_TRUE(test::eventually([&] {
      auto [newest_ec, newest] = a.history({.room_id = room, .limit = 1});
      total = newest.last_seq;
      return !newest_ec;
    }));
    ASSERT_TRUE(test::eventually([&] {
      auto live = joiner.deliveries(room);
      return !live.empty() && live.back().seq == total;
    })) << "round " << round << ": newest seq " << total << ", " << failed << " of " << sent
        << " publishes failed";
    std::vector<std::uint64_t> seen = seqs_of(h.messages);
    for (const auto& d : joiner.deliveries(room))
      if (d.seq > h.last_seq) seen.push_back(d.seq);
    EXPECT_EQ(seen, range(h.messages.front().seq, total)) << "round " << round;
    EXPECT_EQ(h.messages.back().seq, h.last_seq);
  }
}

TEST(RedisBus, ANodeStartedAfterTheMessagesReadsThem) {
  RedisServer redis;
  auto early = std::make_unique<Node>(redis.url());
  ASSERT_TRUE(test::eventually([&] { return early->bus->up(); }));
  for (int i = 1; i <= 20; ++i) ASSERT_FALSE(early->publish("late", std::to_string(i)));
  early.reset();
  Node late(redis.url());
  auto [ec, h] = late.history({.room_id = "late", .after_seq = 0, .limit = 100});
  ASSERT_FALSE(ec) << ec.message();
  EXPECT_EQ(seqs_of(h.messages), range(1, 20));
}

TEST(RedisBus, SeqContinuesFromTheKeyUsedBeforeTheHashTag) {
  RedisServer redis;
  redis.command({"SET", "chatd:seq:legacy", "41"});
  Node a(redis.url());
  ASSERT_TRUE(test::eventually([&] { return a.bus->up(); }));
  EXPECT_EQ(a.history({.room_id = "legacy", .limit = 10}).second.last_seq, 41u);
  std::uint64_t seq = 0;
  ASSERT_FALSE(a.publish("legacy", "x", &seq));
  EXPECT_EQ(seq, 42u);
  EXPECT_EQ(redis.command({"EXISTS", "chatd:seq:legacy"}), "0") << "moved, not copied";
  EXPECT_EQ(redis.command({"GET", "chatd:{legacy}:seq"}), "42");
  // A counter lost on its own (evicted) continues after the stream's newest id rather than
  // making every later XADD fail.
  redis.command({"DEL", "chatd:{legacy}:seq"});
  ASSERT_FALSE(a.publish("legacy", "y", &seq));
  EXPECT_EQ(seq, 43u);
}

TEST(RedisBus, BadConfigurationFailsAtStartWithinSeconds) {
  RedisServer redis("s3cret");
  Engine engine;
  BusConfig cfg;
  cfg.kind = "redis";
  auto start_fails = [&](const std::string& url, const std::string& says) {
    cfg.redis_url = url;
    const auto t0 = std::chrono::steady_clock::now();
    try {
      make_bus(cfg, engine.io());
      ADD_FAILURE() << url << " started";
    } catch (const std::runtime_error& e) {
      EXPECT_NE(std::string(e.what()).find(says), std::string::npos) << e.what();
    }
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 4s) << url;
  };
  start_fails("redis//127.0.0.1", "bad Redis URL");
  start_fails("redis://127.0.0.1:6379/x", "bad Redis URL");
  start_fails(redis.url("nope"), "refused");
  start_fails(redis.url(""), "NOAUTH");
  start_fails("redis://127.0.0.1:" + std::to_string(test::free_port()), "cannot reach");

  // The right password works end to end, also in the user:password form (default user).
  Node a(redis.url()), b("redis://default:s3cret@127.0.0.1:" + std::to_string(redis.port()));
  ASSERT_TRUE(both_up(a, b)) << a.bus->describe();
  ASSERT_FALSE(a.subscribe("r"));
  ASSERT_FALSE(b.publish("r", "hi"));
  EXPECT_TRUE(test::eventually([&] { return a.count("r") == 1; }));
}

// ---- gap repair: what the channel missed is read from history -------------------------------

TEST(RedisBus, MessagesPublishedWhileTheChannelWasDroppedAreDeliveredInOrderOnce) {
  RedisServer redis;
  Node a(redis.url()), b(redis.url());
  ASSERT_TRUE(both_up(a, b));
  ASSERT_FALSE(a.subscribe("r"));
  ASSERT_FALSE(b.publish("r", "0"));
  ASSERT_TRUE(test::eventually([&] { return a.count("r") == 1; }));

  // Every subscribed connection drops (as on a pub/sub buffer limit or a network blip); the
  // publishing connections stay, so these go out while A is not listening.
  EXPECT_NE(redis.command({"CLIENT", "KILL", "TYPE", "pubsub"}), "0");
  for (int i = 1; i <= 50; ++i) ASSERT_FALSE(b.publish("r", std::to_string(i)));
  ASSERT_TRUE(test::eventually([&] { return a.count("r") >= 51; }, 5s)) << a.count("r");
  ASSERT_FALSE(b.publish("r", "live"));
  ASSERT_TRUE(test::eventually([&] { return a.count("r") >= 52; }, 5s));
  std::this_thread::sleep_for(100ms);  // nothing is delivered twice, late
  const auto got = a.deliveries("r");
  EXPECT_EQ(seqs_of(got), range(1, 52));
  EXPECT_EQ(got[50].payload, "50");
  EXPECT_EQ(got[51].payload, "live");
}

// The same before the room's first message reached this node: there is no last seq delivered to
// repair from, so the node reads where the room stood when it subscribed (s18: all 50 were lost).
TEST(RedisBus, MessagesPublishedWhileTheChannelWasDroppedBeforeAnyCameAreDeliveredToo) {
  RedisServer redis;
  Node a(redis.url()), b(redis.url());
  ASSERT_TRUE(both_up(a, b));
  for (int i = 1; i <= 3; ++i) ASSERT_FALSE(b.publish("old", "before " + std::to_string(i)));
  ASSERT_FALSE(a.subscribe("old"));    // has history: its floor is seq 3
  ASSERT_FALSE(a.subscribe("empty"));  // none yet: its floor is 0
  std::this_thread::sleep_for(300ms);  // the floor reads land (a round trip each)

  EXPECT_NE(redis.command({"CLIENT", "KILL", "TYPE", "pubsub"}), "0");
  for (int i = 1; i <= 50; ++i) {
    ASSERT_FALSE(b.publish("old", std::to_string(i)));
    ASSERT_FALSE(b.publish("empty", std::to_string(i)));
  }
  ASSERT_TRUE(test::eventually([&] { return a.count("old") >= 50 && a.count("empty") >= 50; }, 5s))
      << a.count("old") << " " << a.count("empty");
  ASSERT_FALSE(b.publish("old", "live"));
  ASSERT_TRUE(test::eventually([&] { return a.count("old") >= 51; }, 5s));
  std::this_thread::sleep_for(100ms);  // nothing is delivered twice, late
  const auto old = a.deliveries("old");
  EXPECT_EQ(seqs_of(old), range(4, 54));
  EXPECT_EQ(old.front().payload, "1");
  EXPECT_EQ(old.back().payload, "live");
  EXPECT_EQ(seqs_of(a.deliveries("empty")), range(1, 50));
}

// Redis restarted from an older snapshot (or a failover that lost writes) keeps the room's epoch
// but its seq goes back: seqs 6..10 were delivered, and new messages would get them again. Every
// node dropped those as ones it had, silently, until the counter passed 10 (s19 probe: 5 of 5
// lost). Now the room starts a new epoch: on the publish of a node that delivered past the
// counter, or at the repair read of one that reconnects.
void roll_back_to_seq_5(RedisServer& redis, const std::string& room) {
  const std::string hist = "chatd:{" + room + "}:hist";
  redis.command({"SET", "chatd:{" + room + "}:seq", "5"});
  redis.command({"XDEL", hist, "6-0", "7-0", "8-0", "9-0", "10-0"});
  redis.command({"XSETID", hist, "5-0"});  // as the snapshot had it
}

// `to` subscribes to `room` and gets seqs 1..10, published by `from`.
void ten_delivered(Node& to, Node& from, const std::string& room) {
  ASSERT_TRUE(both_up(to, from));
  ASSERT_FALSE(to.subscribe(room));
  for (int i = 1; i <= 10; ++i) ASSERT_FALSE(from.publish(room, std::to_string(i)));
  ASSERT_TRUE(test::eventually([&] { return to.count(room) == 10; }));
}

TEST(RedisBus, ASeqThatWentBackStartsANewEpochInsteadOfSilence) {
  RedisServer redis;
  Node a(redis.url()), b(redis.url());
  ten_delivered(a, a, "p");
  const std::string old_epoch = a.deliveries("p").back().epoch;

  roll_back_to_seq_5(redis, "p");
  std::uint64_t seq = 0;
  ASSERT_FALSE(a.publish("p", "after", &seq));  // a delivered up to 10: its publish tells
  EXPECT_EQ(seq, 6u);
  ASSERT_FALSE(b.publish("p", "from b"));
  ASSERT_TRUE(test::eventually([&] { return a.count("p") == 12; }, 3s)) << a.count("p");
  const auto got = a.deliveries("p");
  EXPECT_EQ(got[10].payload, "after");
  EXPECT_EQ(got[11].payload, "from b");
  EXPECT_NE(got[10].epoch, old_epoch);
  EXPECT_EQ(got[11].epoch, got[10].epoch);
  auto [ec, h] = a.history({"p", 0, 0, 10});
  ASSERT_FALSE(ec);
  EXPECT_EQ(h.epoch, got[10].epoch) << "a resume with the old epoch is told reset";
}

TEST(RedisBus, ASeqThatWentBackWhileTheNodeWasAwayStartsANewEpochWhenItReconnects) {
  RedisServer redis;
  Node a(redis.url()), b(redis.url());
  ten_delivered(a, b, "q");

  roll_back_to_seq_5(redis, "q");
  EXPECT_NE(redis.command({"CLIENT", "KILL", "TYPE", "pubsub"}), "0");  // a subscribes again and reads
  ASSERT_TRUE(test::eventually([&] { return redis.command({"GET", "chatd:{q}:epoch"}) != a.deliveries("q").back().epoch; }, 5s));
  ASSERT_FALSE(b.publish("q", "from b"));  // b never delivered this room: only a could tell
  ASSERT_TRUE(test::eventually([&] { return a.count("q") == 11; }, 3s)) << a.count("q");
  EXPECT_EQ(a.deliveries("q").back().payload, "from b");
  EXPECT_EQ(a.deliveries("q").back().seq, 6u);
}

// A path that stops carrying bytes without closing (a wedged proxy, load balancer or NAT) while
// new connections get through: the subscriber connection is pinged like the others, so it is
// dropped and subscribed again, and what it missed meanwhile is read from history.
TEST(RedisBus, AStalledSubscriberConnectionIsReplacedAndMissesNothing) {
  RedisServer redis;
  test::StallProxy proxy(redis.port());
  Node a("redis://127.0.0.1:" + std::to_string(proxy.port()), [](BusConfig& cfg) {
    cfg.redis_timing.ping_every = 100ms;
    cfg.redis_timing.ping_timeout = 500ms;
  });
  Node b(redis.url());
  ASSERT_TRUE(both_up(a, b));
  ASSERT_FALSE(a.subscribe("r"));
  ASSERT_FALSE(b.publish("r", "0"));
  ASSERT_TRUE(test::eventually([&] { return a.count("r") == 1; }));
  const int flows = proxy.accepted();

  proxy.stall();  // A's connections stay open, and nothing passes either way
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 1; i <= 20; ++i) ASSERT_FALSE(b.publish("r", std::to_string(i)));
  // A's own publishes flow again once its publish connection is replaced...
  ASSERT_TRUE(test::eventually([&] { return !a.publish("r", "own"); }, 5s)) << a.bus->describe();
  // ...and its subscriber hears them, with the 20 it missed read from history first.
  ASSERT_TRUE(test::eventually([&] { return a.count("r") >= 22; }, 5s))
      << a.count("r") << " delivered; " << a.bus->describe();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
  EXPECT_GE(proxy.accepted(), flows + 3) << "publish, history and subscribe connections are all new";
  ASSERT_FALSE(b.publish("r", "live"));
  ASSERT_TRUE(test::eventually([&] { return a.count("r") >= 23; }, 3s));
  std::this_thread::sleep_for(100ms);  // nothing is delivered twice, late
  const auto got = a.deliveries("r");
  EXPECT_EQ(seqs_of(got), range(1, 23));
  EXPECT_EQ(got[21].payload, "own");
  EXPECT_EQ(got[22].payload, "live");
}

TEST(RedisBus, ARedisRestartedWithItsDataLosesNoMessageLive) {
  RedisServer redis({}, /*aof=*/true);
  Node a(redis.url()), b(redis.url());
  ASSERT_TRUE(both_up(a, b));
  ASSERT_FALSE(a.subscribe("r"));
  ASSERT_FALSE(b.publish("r", "0"));
  ASSERT_TRUE(test::eventually([&] { return a.count("r") == 1; }));

  redis.kill9();
  redis.start();
  // B publishes as soon as its connection is back. A's subscription and history connections
  // come back on their own schedules; whichever order they take, A delivers every seq once.
  std::vector<std::uint64_t> sent;
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (sent.size() < 30 && std::chrono::steady_clock::now() < deadline) {
    std::uint64_t seq = 0;
    if (!b.publish("r", std::to_string(sent.size()), &seq)) sent.push_back(seq);
    else std::this_thread::sleep_for(1ms);
  }
  ASSERT_EQ(sent.size(), 30u);
  EXPECT_EQ(sent, range(2, 31)) << "the data survived: seq continues";
  ASSERT_TRUE(test::eventually([&] { return a.count("r") >= 31; }, 5s)) << a.count("r");
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(seqs_of(a.deliveries("r")), range(1, 31));
}

TEST(RedisBus, AMessageMissedLiveIsReadFromHistoryBeforeTheNextOne) {
  RedisServer redis;
  Node a(redis.url()), b(redis.url());
  ASSERT_TRUE(both_up(a, b));
  ASSERT_FALSE(a.subscribe("r"));
  ASSERT_FALSE(b.publish("r", "1"));
  ASSERT_TRUE(test::eventually([&] { return a.count("r") == 1; }));

  // Seq 2 is in the room's history but was never published on its channel.
  const auto now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::system_clock::now().time_since_epoch()).count();
  ASSERT_EQ(redis.command({"INCR", "chatd:{r}:seq"}), "2");
  ASSERT_EQ(redis.command({"XADD", "chatd:{r}:hist", "2-0", "t", std::to_string(now_ms), "p", "missed"}), "2-0");
  ASSERT_FALSE(b.publish("r", "3"));
  ASSERT_TRUE(test::eventually([&] { return a.count("r") == 3; }));
  auto got = a.deliveries("r");
  EXPECT_EQ(seqs_of(got), range(1, 3));
  EXPECT_EQ(got[1].payload, "missed");
  EXPECT_EQ(got[2].payload, "3");

  // A seq kept nowhere (assigned, then lost) does not hold the room back.
  ASSERT_EQ(redis.command({"INCR", "chatd:{r}:seq"}), "4");
  ASSERT_FALSE(b.publish("r", "5"));
  ASSERT_FALSE(b.publish("r", "6"));
  ASSERT_TRUE(test::eventually([&] { return a.count("r") == 5; }));
  std::this_thread::sleep_for(100ms);
  got = a.deliveries("r");
  EXPECT_EQ(seqs_of(got), (std::vector<std::uint64_t>{1, 2, 3, 5, 6}));
}

// ---- on a Redis Cluster: 3 primaries + 3 replicas (scripts/redis-cluster.sh) ----

// Returns one room name per primary, for the slot ranges `redis-cli --cluster create` gives 3
// primaries (0-5460, 5461-10922, 10923-16383: ports base, base+1, base+2).
std::vector<std::string> rooms_per_shard() {
  std::vector<std::string> rooms(3);
  for (int i = 0; std::any_of(rooms.begin(), rooms.end(), [](auto& r) { return r.empty(); }); ++i) {
    std::string room = "room-" + std::to_string(i);
    const auto slot = redis::key_slot("chatd:{" + room + "}:live");
    const int shard = slot <= 5460 ? 0 : slot <= 10922 ? 1 : 2;
    if (rooms[static_cast<std::size_t>(shard)].empty()) rooms[static_cast<std::size_t>(shard)] = room;
  }
  return rooms;
}

// Returns whether a publish to `room` through `from` succeeded and reached both nodes within
// `limit`, publishing again after each failure.
bool publishes_again(Node& from, Node& a, Node& b, const std::string& room, std::chrono::milliseconds limit) {
  int n = 0;
  return test::eventually(
      [&] {
        const std::string body = "again " + std::to_string(n++);
        if (from.publish(room, body)) return false;
        return test::eventually([&] {
          auto da = a.deliveries(room), db = b.deliveries(room);
          return !da.empty() && da.back().payload == body && !db.empty() && db.back().payload == body;
        }, 3s);
      },
      limit);
}

// Returns whether `n` got `room`'s deliveries in ascending seq order, none twice. That is what a
// failover keeps; a message in flight while a node moves its subscription may be missed by it
// (clients recover it with x-since-seq), so two nodes' lists need not be equal then.
bool ascending(Node& n, const std::string& room) {
  auto d = n.deliveries(room);
  for (std::size_t i = 1; i < d.size(); ++i)
    if (d[i].seq <= d[i - 1].seq) return false;
  return true;
}

// Returns whether the deliveries of `room` are the same on both nodes, with ascending seqs.
bool one_order(Node& a, Node& b, const std::string& room) {
  auto da = a.deliveries(room), db = b.deliveries(room);
  if (da.size() != db.size()) return false;
  for (std::size_t i = 0; i < da.size(); ++i)
    if (da[i].seq != db[i].seq || da[i].payload != db[i].payload || (i && da[i].seq <= da[i - 1].seq)) return false;
  return true;
}

TEST(RedisClusterBus, EveryShardCarriesOnlyItsRoomsInOneOrderAndControlReachesEveryNode) {
  test::RedisCluster cluster;
  Node a(cluster.url(), [](BusConfig& c) { c.node_id = "a"; });
  Node b(cluster.url(), [](BusConfig& c) { c.node_id = "b"; });
  ASSERT_TRUE(both_up(a, b)) << a.bus->describe();
  const auto rooms = rooms_per_shard();
  for (const auto& r : rooms) {
    ASSERT_FALSE(a.subscribe(r));
    ASSERT_FALSE(b.subscribe(r));
  }
  constexpr int kEach = 100;
  std::atomic<int> ok{0}, failed{0};
  for (int i = 0; i < kEach; ++i)
    for (const auto& r : rooms)
      (i % 2 ? a : b).bus->publish(r, r + " #" + std::to_string(i), {},
                                   [&](std::error_code ec, std::uint64_t, std::string_view) { ++(ec ? failed : ok); });
  ASSERT_TRUE(test::eventually([&] { return ok + failed == 3 * kEach; }));
  EXPECT_EQ(failed, 0);
  for (std::size_t k = 0; k < rooms.size(); ++k) {
    const auto& r = rooms[k];
    ASSERT_TRUE(test::eventually([&] { return a.count(r) == kEach && b.count(r) == kEach; })) << r;
    auto da = a.deliveries(r);
    int next[2] = {0, 1};  // node b published the even numbers, node a the odd ones
    for (std::size_t i = 0; i < da.size(); ++i) {
      EXPECT_EQ(da[i].seq, i + 1);
      const int n = std::stoi(da[i].payload.substr(da[i].payload.find('#') + 1));
      EXPECT_EQ(n, next[n % 2]) << "each publisher keeps its order";
      next[n % 2] = n + 2;
    }
    EXPECT_TRUE(one_order(a, b, r));
    // Sharded pub/sub: the channel is subscribed on its owner only, once per node.
    for (int shard = 0; shard < 3; ++shard) {
      const std::string n = cluster.cli(cluster.port(shard), "pubsub shardnumsub chatd:{" + r + "}:live");
      EXPECT_EQ(n.substr(n.rfind('\n') + 1), static_cast<std::size_t>(shard) == k ? "2" : "0") << r << " on " << shard;
    }
  }
  // The control channel (a plain PUBLISH, cluster-wide) reaches both nodes once each.
  ASSERT_TRUE(test::eventually([&] {
    a.publish_control("probe", "");
    return !a.control_messages().empty() && !b.control_messages().empty();
  }));
  ASSERT_FALSE(b.publish_control("disconnect", "kim"));
  auto of_type = [](Node& n, const std::string& type) {
    auto all = n.control_messages();
    return std::count_if(all.begin(), all.end(), [&](auto& m) { return m.type == type && m.origin == "b"; });
  };
  ASSERT_TRUE(test::eventually([&] { return of_type(a, "disconnect") == 1 && of_type(b, "disconnect") == 1; }));
}

TEST(RedisClusterBus, GracefulFailoverAndAKilledPrimaryAreFollowed) {
  test::RedisCluster cluster;
  Node a(cluster.url()), b(cluster.url());
  ASSERT_TRUE(both_up(a, b)) << a.bus->describe();
  const auto rooms = rooms_per_shard();
  for (const auto& r : rooms) {
    ASSERT_FALSE(a.subscribe(r));
    ASSERT_FALSE(b.subscribe(r));
  }
  ASSERT_TRUE(publishes_again(a, a, b, rooms[0], 5s));
  int replica = 0;
  for (int k = 3; k < 6; ++k)
    if (cluster.cli(cluster.port(k), "info replication").find("master_port:" + std::to_string(cluster.port(0))) !=
        std::string::npos)
      replica = cluster.port(k);
  ASSERT_NE(replica, 0);

  // CLUSTER FAILOVER: the old primary stays up as a replica and answers MOVED; publishes must
  // follow to the new primary and keep reaching both nodes.
  ASSERT_EQ(cluster.cli(replica, "cluster failover"), "OK");
  EXPECT_TRUE(publishes_again(a, a, b, rooms[0], 20s)) << a.bus->describe();
  EXPECT_TRUE(publishes_again(b, a, b, rooms[0], 5s));
  EXPECT_TRUE(ascending(a, rooms[0]) && ascending(b, rooms[0]));
  // (Redis 7.0 keeps the sharded subscriptions of a demoted primary: as a replica it still
  // gets its shard's messages, so delivery never paused.)

  // kill -9 of that new primary: the old one takes over again; the other shards never stop.
  cluster.kill9(replica);
  const auto killed = std::chrono::steady_clock::now();
  int other_failed = 0;
  bool back = false;
  while (!back && std::chrono::steady_clock::now() - killed < 30s) {
    if (a.publish(rooms[1], "meanwhile")) ++other_failed;
    back = !a.publish(rooms[0], "probe");
    if (!back) std::this_thread::sleep_for(100ms);
  }
  EXPECT_TRUE(back) << a.bus->describe();
  EXPECT_EQ(other_failed, 0) << "a room of another shard never stops";
  EXPECT_TRUE(publishes_again(b, a, b, rooms[0], 10s)) << b.bus->describe();
  EXPECT_TRUE(ascending(a, rooms[0]) && ascending(b, rooms[0]));
  EXPECT_TRUE(test::eventually([&] { return a.bus->up() && b.bus->up(); }, 10s)) << a.bus->describe();
}

// A slot moved by hand (redis-cli --cluster reshard): the old owner drops the room's channel
// at once, while the node the map is read from (the lowest port) still names the old owner for
// a while. The subscription must follow the move once the map catches up, although no read ever
// showed a change of the slot (it went from "old owner" to "old owner" and then to "new owner").
TEST(RedisClusterBus, ASubscriptionFollowsASlotMovedWhileTheMapReadIsStale) {
  test::RedisCluster cluster;
  Node a(cluster.url()), b(cluster.url());
  ASSERT_TRUE(both_up(a, b)) << a.bus->describe();
  const std::string room = rooms_per_shard()[2];
  const int src = cluster.port(2), dst = cluster.port(1), stale = cluster.port(0);
  ASSERT_FALSE(a.subscribe(room));
  ASSERT_TRUE(publishes_again(b, a, a, room, 5s));
  const std::string slot = std::to_string(redis::key_slot("chatd:{" + room + "}:live"));
  const std::string src_id = cluster.cli(src, "cluster myid"), dst_id = cluster.cli(dst, "cluster myid");
  ASSERT_EQ(cluster.cli(dst, "cluster setslot " + slot + " importing " + src_id), "OK");
  ASSERT_EQ(cluster.cli(src, "cluster setslot " + slot + " migrating " + dst_id), "OK");
  std::string keys = " " + cluster.cli(src, "cluster getkeysinslot " + slot + " 100");
  std::replace(keys.begin(), keys.end(), '\n', ' ');
  ASSERT_NE(keys.find(":seq"), std::string::npos) << keys;
  ASSERT_EQ(cluster.cli(src, "migrate 127.0.0.1 " + std::to_string(dst) + " \"\" 0 5000 keys" + keys), "OK");
  ASSERT_EQ(cluster.cli(src, "cluster setslot " + slot + " node " + dst_id), "OK");
  // The old owner dropped the channel; the others still map the slot to it for a while.
  ASSERT_TRUE(test::eventually([&] {
    const std::string n = cluster.cli(src, "pubsub shardnumsub chatd:{" + room + "}:live");
    return n.substr(n.rfind('\n') + 1) == "0";
  }, 5s));
  // Meanwhile the old owner answers MOVED to the new one, which (still importing) answers MOVED
  // back: a publish must wait for the move to end rather than fail after a few redirects.
  const auto seen = a.deliveries(room);
  const std::uint64_t last = seen.empty() ? 0 : seen.back().seq;
  auto during = std::make_shared<std::promise<std::pair<std::error_code, std::uint64_t>>>();
  b.bus->publish(room, "during the move", {}, [during](std::error_code ec, std::uint64_t s, std::string_view) { during->set_value({ec, s}); });
  std::this_thread::sleep_for(500ms);  // reads of the map meanwhile see no change
  ASSERT_EQ(cluster.cli(dst, "cluster setslot " + slot + " node " + dst_id), "OK");
  ASSERT_EQ(cluster.cli(stale, "cluster setslot " + slot + " node " + dst_id), "OK");
  auto moved = during->get_future();
  ASSERT_EQ(moved.wait_for(5s), std::future_status::ready);
  const auto [ec, seq] = moved.get();
  EXPECT_FALSE(ec) << ec.message();
  EXPECT_EQ(seq, last + 1);
  EXPECT_TRUE(test::eventually([&] {
    const std::string n = cluster.cli(dst, "pubsub shardnumsub chatd:{" + room + "}:live");
    return n.substr(n.rfind('\n') + 1) == "1";
  }, 10s)) << a.bus->describe();
  EXPECT_TRUE(publishes_again(b, a, a, room, 10s)) << a.bus->describe();
  EXPECT_TRUE(ascending(a, room));
}

}  // namespace
}  // namespace chatd::bus
