// The redis bus against a real redis-server. Each Node is one chatd node: its own bus on its
// own engine thread.
#include <gtest/gtest.h>

#include <boost/asio/post.hpp>

#include <future>
#include <map>
#include <mutex>

#include "bus/message_bus.h"
#include "redis/redis_server.h"

namespace chatd::bus {
namespace {

using namespace std::chrono_literals;
using test::Engine;
using test::RedisServer;

struct Node {
  explicit Node(const std::string& url) {
    BusConfig cfg;
    cfg.kind = "redis";
    cfg.redis_url = url;
    bus = make_bus(cfg, engine.io());
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
  std::error_code publish(const std::string& room, std::string payload) {
    auto p = std::make_shared<std::promise<std::error_code>>();
    bus->publish(room, std::move(payload), {}, [p](std::error_code ec, std::uint64_t) { p->set_value(ec); });
    auto f = p->get_future();
    if (f.wait_for(3s) != std::future_status::ready) return make_error_code(Error::timed_out);
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

  Engine engine;
  std::unique_ptr<MessageBus> bus;
  std::mutex mu;
  std::map<std::string, std::vector<Delivery>> got;
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
        nodes[p]->bus->publish("lunch", std::move(body), {}, [&](std::error_code ec, std::uint64_t) { ++(ec ? failed : ok); });
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
    for (int i = 0; i < 50; ++i) a.bus->publish("order", std::to_string(i), {}, [](std::error_code, std::uint64_t) {});
    // The next message comes from another thread while this handler still runs.
    std::thread([&] {
      a.bus->publish("order", "50", {}, [](std::error_code, std::uint64_t) {});
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
  EXPECT_EQ(redis.command({"GET", "chatd:seq:r1"}), "2");
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
      a.bus->publish("r", std::to_string(i), {}, [&](std::error_code ec, std::uint64_t) { ++(ec ? failed : ok); });
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
    return redis.command({"EVAL", "return redis.call('PUBSUB','NUMSUB',KEYS[1])[2]", "1", "chatd:room:r"}) == "0";
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
  EXPECT_EQ(b.publish("r", "while down"), Error::engine_down);
  EXPECT_EQ(a.publish("r", "while down"), Error::engine_down);
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
  a.bus->publish("r", "stuck", {}, [p](std::error_code ec, std::uint64_t) { p->set_value(ec); });
  auto f = p->get_future();
  ASSERT_EQ(f.wait_for(8s), std::future_status::ready) << "a publish must not hang on a frozen Redis";
  EXPECT_EQ(f.get(), Error::engine_down);
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
    a.bus->publish("r", "m", {}, [&](std::error_code ec, std::uint64_t) {
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
  for (int i = 0; i < kCount; ++i) a.bus->publish("t", payload, {}, [&](std::error_code, std::uint64_t) { ++done; });
  ASSERT_TRUE(test::eventually([&] { return b.count("t") == kCount; }, 60s)) << b.count("t");
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(done, kCount);
  std::printf("redis bus: %d publishes of %zu B, node A -> node B: %.2f s, %.0f msg/s\n", kCount, payload.size(),
              s, kCount / s);
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

}  // namespace
}  // namespace chatd::bus
