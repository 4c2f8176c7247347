// The Kafka bus against a real broker (started once per CTest run by the `kafka` fixture, see
// kafka.cmake). Each test uses its own topic, so tests do not see each other's messages.
#include <gtest/gtest.h>
#include <librdkafka/rdkafkacpp.h>

#include <boost/asio/io_context.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <condition_variable>
#include <cstdlib>
#include <future>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "bus/message_bus.h"

namespace chatd::bus {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

std::string broker() {
  const char* port = std::getenv("CHATD_TEST_KAFKA_PORT");
  if (!port || !*port) {
    ADD_FAILURE() << "CHATD_TEST_KAFKA_PORT is not set: run these tests through ctest, whose "
                     "kafka fixture starts the broker";
    return "127.0.0.1:1";
  }
  return std::string("127.0.0.1:") + port;
}

// A topic no other test (or earlier run on the same broker) has used.
std::string fresh_topic(const std::string& what) {
  static std::mt19937_64 rng{std::random_device{}()};
  return "chatd-test-" + what + "-" + std::to_string(rng() % 1000000000);
}

BusConfig config(const std::string& topic, const std::string& node) {
  BusConfig cfg;
  cfg.kind = "kafka";
  cfg.kafka_brokers = broker();
  cfg.kafka_topic = topic;
  cfg.kafka_partitions = 3;
  cfg.node_id = node;
  return cfg;
}

// Polls `pred` until it holds or `limit` passes; returns whether it held.
template <class Pred>
bool eventually(Pred pred, std::chrono::milliseconds limit) {
  auto deadline = Clock::now() + limit;
  while (!pred()) {
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(10ms);
  }
  return true;
}

// One chatd node's bus, recording what it delivers.
class Node {
 public:
  Node(const std::string& topic, const std::string& id)
      : bus_(make_kafka_bus(config(topic, id), io_)) {
    bus_->start([this](Delivery&& d) {
      std::lock_guard lock(mu_);
      got_.push_back(std::move(d));
      arrived_.notify_all();
    });
  }
  ~Node() { bus_->stop(); }

  MessageBus& bus() { return *bus_; }

  std::vector<Delivery> got() {
    std::lock_guard lock(mu_);
    return got_;
  }
  std::size_t count() {
    std::lock_guard lock(mu_);
    return got_.size();
  }
  bool wait_count(std::size_t n, std::chrono::milliseconds limit) {
    std::unique_lock lock(mu_);
    return arrived_.wait_for(lock, limit, [&] { return got_.size() >= n; });
  }

  // subscribe() and wait for `ready`; returns its code (timed_out if it never came).
  std::error_code subscribe(const std::string& room, std::chrono::milliseconds limit = 15s) {
    auto promise = std::make_shared<std::promise<std::error_code>>();
    auto future = promise->get_future();
    bus_->subscribe(room, [promise](std::error_code ec) { promise->set_value(ec); });
    if (future.wait_for(limit) != std::future_status::ready) return Error::timed_out;
    return future.get();
  }

 private:
  boost::asio::io_context io_;  // the Kafka bus runs its own threads and never uses it
  std::unique_ptr<MessageBus> bus_;
  std::mutex mu_;
  std::condition_variable arrived_;
  std::vector<Delivery> got_;
};

// Counts publish() outcomes.
struct Acks {
  std::atomic<int> ok{0};
  std::atomic<int> failed{0};
  std::mutex mu;
  std::error_code last_error;

  PublishedFn done() {
    return [this](std::error_code ec, std::uint64_t) {
      if (!ec) {
        ++ok;
        return;
      }
      std::lock_guard lock(mu);
      last_error = ec;
      ++failed;
    };
  }
  bool wait(int n, std::chrono::milliseconds limit) {
    return eventually([&] { return ok + failed >= n; }, limit);
  }
};

std::vector<std::string> payloads_of(const std::vector<Delivery>& ds, const std::string& room) {
  std::vector<std::string> out;
  for (const auto& d : ds)
    if (d.room_id == room) out.push_back(d.payload);
  return out;
}

void expect_increasing_seq_per_room(const std::vector<Delivery>& ds) {
  std::map<std::string, std::uint64_t> last;
  for (const auto& d : ds) {
    EXPECT_GT(d.seq, last[d.room_id]) << "room " << d.room_id << " payload " << d.payload;
    last[d.room_id] = d.seq;
  }
}

TEST(KafkaBus, EveryNodeSeesEveryMessageOfEveryRoom) {
  const std::string topic = fresh_topic("fanout");
  Node a(topic, "a"), b(topic, "b");
  const std::vector<std::string> rooms = {"r1", "r2", "r3", "r4", "r5"};
  for (const auto& room : rooms) {
    ASSERT_EQ(a.subscribe(room), std::error_code{});
    ASSERT_EQ(b.subscribe(room), std::error_code{});
  }
  EXPECT_TRUE(a.bus().up());
  EXPECT_NE(a.bus().describe().find("up"), std::string::npos) << a.bus().describe();

  Acks acks;
  for (int i = 0; i < 50; ++i) {
    a.bus().publish(rooms[i % 5], "a" + std::to_string(i), {}, acks.done());
    b.bus().publish(rooms[i % 5], "b" + std::to_string(i), {}, acks.done());
  }
  ASSERT_TRUE(acks.wait(100, 30s));
  EXPECT_EQ(acks.ok, 100) << acks.last_error.message();
  ASSERT_TRUE(a.wait_count(100, 20s)) << a.count();
  ASSERT_TRUE(b.wait_count(100, 20s)) << b.count();

  auto ga = a.got(), gb = b.got();
  EXPECT_EQ(ga.size(), 100u);
  EXPECT_EQ(gb.size(), 100u);
  expect_increasing_seq_per_room(ga);
  expect_increasing_seq_per_room(gb);
  for (const auto& room : rooms) {
    EXPECT_EQ(payloads_of(ga, room), payloads_of(gb, room)) << room;
    EXPECT_EQ(payloads_of(ga, room).size(), 20u) << room;
  }
  // Both nodes also number each message the same.
  std::map<std::string, std::uint64_t> seq_a;
  for (const auto& d : ga) seq_a[d.payload] = d.seq;
  for (const auto& d : gb) EXPECT_EQ(seq_a[d.payload], d.seq) << d.payload;
}

TEST(KafkaBus, ThreePublishersIntoOneRoomGiveOneOrderOnEveryNode) {
  const std::string topic = fresh_topic("order");
  const std::string room = "meal-mates";
  Node a(topic, "a"), b(topic, "b"), c(topic, "c");
  for (Node* n : {&a, &b, &c}) ASSERT_EQ(n->subscribe(room), std::error_code{});

  constexpr int kEach = 200;
  Acks acks;
  std::vector<std::thread> publishers;
  for (Node* n : {&a, &b, &c}) {
    const std::string tag = n == &a ? "a" : n == &b ? "b" : "c";
    publishers.emplace_back([n, tag, &room, &acks] {
      for (int i = 0; i < kEach; ++i) n->bus().publish(room, tag + "-" + std::to_string(i), {}, acks.done());
    });
  }
  for (auto& t : publishers) t.join();
  ASSERT_TRUE(acks.wait(3 * kEach, 30s));
  EXPECT_EQ(acks.ok, 3 * kEach) << acks.last_error.message();
  for (Node* n : {&a, &b, &c}) ASSERT_TRUE(n->wait_count(3 * kEach, 30s)) << n->count();

  auto pa = payloads_of(a.got(), room);
  EXPECT_EQ(pa.size(), 3u * kEach);
  EXPECT_EQ(pa, payloads_of(b.got(), room));
  EXPECT_EQ(pa, payloads_of(c.got(), room));
  expect_increasing_seq_per_room(a.got());
  // Each publisher's own messages keep the order it sent them in.
  std::map<std::string, int> next;
  for (const auto& p : pa) {
    std::string tag = p.substr(0, 1);
    EXPECT_EQ(p, tag + "-" + std::to_string(next[tag]++));
  }
}

// One message at a time from node a to node b: the latency settings (linger.ms=1,
// fetch.wait.max.ms=10) keep a chat line's trip well under what a person notices.
TEST(KafkaBus, OneLineTravelsBetweenNodesQuickly) {
  const std::string topic = fresh_topic("latency");
  Node a(topic, "a"), b(topic, "b");
  ASSERT_EQ(b.subscribe("r"), std::error_code{});
  Acks acks;
  std::vector<double> ms;
  for (int i = 0; i < 100; ++i) {
    auto t0 = Clock::now();
    a.bus().publish("r", "ping" + std::to_string(i), {}, acks.done());
    ASSERT_TRUE(b.wait_count(static_cast<std::size_t>(i) + 1, 5s)) << "message " << i;
    ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  double p50 = ms[ms.size() / 2], p99 = ms[ms.size() * 99 / 100];
  std::cerr << "publish on a -> delivery on b: p50 " << p50 << " ms, p99 " << p99 << " ms\n";
  EXPECT_LT(p50, 100.0);  // loose: a loaded 2-core CI box, but not a batching or polling delay
  ASSERT_TRUE(acks.wait(100, 10s));
  EXPECT_EQ(acks.ok, 100);
}

// The seed's bug: consumers sharing one group split the partitions, so each node sees only some
// rooms. Two raw consumers in one group must split; two chatd buses must both see everything.
TEST(KafkaBus, SameGroupConsumersSplitMessagesButBusesDoNot) {
  const std::string topic = fresh_topic("seedbug");
  Node a(topic, "a"), b(topic, "b");  // a creates the topic with 3 partitions
  ASSERT_EQ(a.subscribe("x"), std::error_code{});
  ASSERT_EQ(b.subscribe("x"), std::error_code{});

  const std::string group = "seed-bug-" + topic;
  std::vector<std::unique_ptr<RdKafka::KafkaConsumer>> raw;
  for (int i = 0; i < 2; ++i) {
    std::unique_ptr<RdKafka::Conf> conf(RdKafka::Conf::create(RdKafka::Conf::CONF_GLOBAL));
    std::string why;
    ASSERT_EQ(conf->set("bootstrap.servers", broker(), why), RdKafka::Conf::CONF_OK) << why;
    ASSERT_EQ(conf->set("group.id", group, why), RdKafka::Conf::CONF_OK) << why;  // the bug
    ASSERT_EQ(conf->set("auto.offset.reset", "earliest", why), RdKafka::Conf::CONF_OK) << why;
    raw.emplace_back(RdKafka::KafkaConsumer::create(conf.get(), why));
    ASSERT_TRUE(raw.back()) << why;
    ASSERT_EQ(raw.back()->subscribe({topic}), RdKafka::ERR_NO_ERROR);
  }
  std::vector<std::set<std::string>> seen(2);
  auto poll_raw = [&] {
    for (int i = 0; i < 2; ++i) {
      std::unique_ptr<RdKafka::Message> m(raw[i]->consume(50));
      if (m->err() == RdKafka::ERR_NO_ERROR)
        seen[i].insert(std::string(static_cast<const char*>(m->payload()), m->len()));
    }
  };
  auto assigned = [&](int i) {
    std::vector<RdKafka::TopicPartition*> parts;
    raw[i]->assignment(parts);
    std::size_t n = parts.size();
    RdKafka::TopicPartition::destroy(parts);
    return n;
  };
  ASSERT_TRUE(eventually([&] { poll_raw(); return assigned(0) + assigned(1) == 3 && assigned(0) && assigned(1); }, 30s))
      << "the group never settled: " << assigned(0) << " + " << assigned(1);

  constexpr int kMessages = 60;
  Acks acks;
  for (int i = 0; i < kMessages; ++i)
    a.bus().publish("room-" + std::to_string(i % 30), "m" + std::to_string(i), {}, acks.done());
  ASSERT_TRUE(acks.wait(kMessages, 30s));
  ASSERT_EQ(acks.ok, kMessages) << acks.last_error.message();
  ASSERT_TRUE(eventually([&] { poll_raw(); return seen[0].size() + seen[1].size() >= kMessages; }, 20s));
  for (auto& c : raw) c->close();

  EXPECT_LT(seen[0].size(), static_cast<std::size_t>(kMessages));
  EXPECT_LT(seen[1].size(), static_cast<std::size_t>(kMessages));
  EXPECT_GT(seen[0].size(), 0u);
  EXPECT_GT(seen[1].size(), 0u);
  ASSERT_TRUE(a.wait_count(kMessages, 20s)) << a.count();
  ASSERT_TRUE(b.wait_count(kMessages, 20s)) << b.count();
  EXPECT_EQ(a.count(), static_cast<std::size_t>(kMessages));
  EXPECT_EQ(b.count(), static_cast<std::size_t>(kMessages));
}

// A node that just started begins at the end of the log, and whatever is published after its
// subscribe() said ready reaches it.
TEST(KafkaBus, PublishAfterReadyIsNeverMissedAndNewNodesStartAtTheEnd) {
  const std::string topic = fresh_topic("ready");
  const std::string room = "r";
  Node a(topic, "a");
  ASSERT_EQ(a.subscribe(room), std::error_code{});
  Acks acks;
  int published = 0;
  for (int round = 0; round < 5; ++round) {
    // History the new node must not replay.
    for (int i = 0; i < 10; ++i) a.bus().publish(room, "old", {}, acks.done());
    published += 10;
    ASSERT_TRUE(acks.wait(published, 20s));

    Node late(topic, "late" + std::to_string(round));
    auto t0 = Clock::now();
    ASSERT_EQ(late.subscribe(room), std::error_code{});
    auto ready_ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0);
    EXPECT_LT(ready_ms, 5s) << "ready took " << ready_ms.count() << " ms";
    const std::string fresh = "after-ready-" + std::to_string(round);
    a.bus().publish(room, fresh, {}, acks.done());
    ++published;
    ASSERT_TRUE(late.wait_count(1, 10s)) << "round " << round << ": the message after ready never came";
    std::this_thread::sleep_for(100ms);  // room for a wrongly replayed backlog to show up
    EXPECT_EQ(payloads_of(late.got(), room), std::vector<std::string>{fresh}) << "round " << round;
  }
  ASSERT_TRUE(acks.wait(published, 20s));
  EXPECT_EQ(acks.ok, published);
}

// Runs scripts/kafka.sh; returns its exit status.
int kafka_sh(const std::string& args) {
  std::string cmd = std::string(CHATD_TEST_KAFKA_SH) + " " + args + " >>" + CHATD_TEST_KAFKA_DIR +
                    "-restart.log 2>&1";
  return std::system(cmd.c_str());
}

// The broker goes away mid-stream and comes back: nothing crashes, health says down then up,
// and every accepted message arrives exactly once, in order (the idempotent producer's job).
TEST(KafkaBus, BrokerRestartMidStreamLosesAndDuplicatesNothing) {
  const std::string topic = fresh_topic("restart");
  const std::string room = "r";
  const std::string port = std::getenv("CHATD_TEST_KAFKA_PORT") ? std::getenv("CHATD_TEST_KAFKA_PORT") : "";
  ASSERT_FALSE(port.empty());
  const std::string start_args = "start --port " + port + " --dir " + CHATD_TEST_KAFKA_DIR;
  const std::string stop_args = std::string("stop --dir ") + CHATD_TEST_KAFKA_DIR;

  Node a(topic, "a"), b(topic, "b");
  ASSERT_EQ(a.subscribe(room), std::error_code{});
  ASSERT_EQ(b.subscribe(room), std::error_code{});
  ASSERT_TRUE(a.bus().up());

  // Whatever happens below, later tests get their broker back.
  bool broker_down = false;
  struct Restore {
    bool& down;
    const std::string& args;
    ~Restore() {
      if (down) kafka_sh(args);
    }
  } restore{broker_down, start_args};

  constexpr int kTotal = 300;
  Acks acks;
  std::vector<std::atomic<int>> status(kTotal);  // 0 pending, 1 confirmed, 2 failed
  std::atomic<int> sent{0};
  std::atomic<int> phase{0};  // 0: broker up, 1: seen down, 2: restarting
  std::thread publisher([&] {
    for (int i = 0; i < kTotal; ++i) {
      if (i == 100) eventually([&] { return phase >= 1; }, 30s);  // 100..199 while down
      if (i == 200) eventually([&] { return phase >= 2; }, 30s);  // 200..299 during restart
      a.bus().publish(room, "m" + std::to_string(i), {}, [&, i, count = acks.done()](std::error_code ec, std::uint64_t) {
        status[i] = ec ? 2 : 1;
        count(ec, 0);
      });
      sent = i + 1;
      if (i < 100 || i >= 200) std::this_thread::sleep_for(10ms);
    }
  });

  eventually([&] { return sent >= 50; }, 10s);
  auto outage_began = Clock::now();
  broker_down = true;
  EXPECT_EQ(kafka_sh(stop_args), 0);  // SIGTERM lands while messages are in flight
  bool saw_down = eventually([&] { return !a.bus().up() && !b.bus().up(); }, 20s);
  std::string while_down = a.bus().describe();
  // A node that starts during the outage sets itself up once the broker is back.
  Node c(topic, "c");
  auto c_ready = std::make_shared<std::promise<std::error_code>>();
  auto c_ready_future = c_ready->get_future();
  c.bus().subscribe(room, [c_ready](std::error_code ec) { c_ready->set_value(ec); });
  phase = 1;
  eventually([&] { return sent >= 200; }, 20s);
  phase = 2;
  int started = kafka_sh(start_args);
  auto outage = Clock::now() - outage_began;
  broker_down = started != 0;
  publisher.join();
  ASSERT_EQ(started, 0);
  std::cerr << "broker outage (stop + restart) lasted " << outage / 1ms << " ms\n";

  EXPECT_TRUE(saw_down) << "health never went down";
  EXPECT_NE(while_down.find("down"), std::string::npos) << while_down;
  ASSERT_TRUE(acks.wait(kTotal, 45s)) << acks.ok << " ok, " << acks.failed << " failed";
  // message.timeout.ms is 30 s: an outage well inside it must cost nothing. (On a badly
  // overloaded machine a restart can outlast it; then failures are honest, checked below.)
  if (outage < 25s) {
    EXPECT_EQ(acks.ok, kTotal) << acks.last_error.message();
  }
  EXPECT_TRUE(eventually([&] { return a.bus().up() && b.bus().up(); }, 20s)) << "health never came back";

  ASSERT_EQ(c_ready_future.wait_for(20s), std::future_status::ready) << c.bus().describe();
  EXPECT_EQ(c_ready_future.get(), std::error_code{});
  EXPECT_TRUE(eventually([&] { return c.bus().up(); }, 5s)) << c.bus().describe();
  int confirmed = acks.ok;
  a.bus().publish(room, "tail", {}, acks.done());
  ASSERT_TRUE(acks.wait(kTotal + 1, 20s));
  EXPECT_EQ(acks.ok, confirmed + 1);
  ASSERT_TRUE(c.wait_count(1, 10s));
  EXPECT_TRUE(eventually([&] { return payloads_of(c.got(), room).back() == "tail"; }, 10s));

  // Every confirmed message exactly once, in publish order, then the tail.
  std::vector<std::string> expected;
  for (int i = 0; i < kTotal; ++i)
    if (status[i] == 1) expected.push_back("m" + std::to_string(i));
  expected.push_back("tail");
  for (Node* n : {&a, &b}) {
    EXPECT_TRUE(eventually([&] { return n->count() >= expected.size(); }, 30s)) << n->count();
    std::this_thread::sleep_for(200ms);  // a duplicate would arrive right behind
    auto got = n->got();
    EXPECT_EQ(payloads_of(got, room), expected);
    expect_increasing_seq_per_room(got);
  }
}

// No broker at all: start-up is not fatal, health says down, and stop() answers what waits.
TEST(KafkaBus, UnreachableBrokerIsReportedDownAndStopAnswersPending) {
  BusConfig cfg = config(fresh_topic("nobroker"), "a");
  cfg.kafka_brokers = "127.0.0.1:1";  // nothing listens on port 1
  boost::asio::io_context io;
  auto bus = make_kafka_bus(cfg, io);
  auto t0 = Clock::now();
  bus->start([](Delivery&&) {});
  std::cerr << "start() without a broker took " << (Clock::now() - t0) / 1ms << " ms\n";
  EXPECT_LT(Clock::now() - t0, 10s) << "start() waited too long for a broker that is not there";
  EXPECT_FALSE(bus->up());
  EXPECT_NE(bus->describe().find("down"), std::string::npos) << bus->describe();

  Acks acks;
  std::error_code ready = Error::ok;
  std::atomic<bool> ready_called{false};
  bus->publish("r", "queued", {}, acks.done());
  bus->subscribe("r", [&](std::error_code ec) { ready = ec; ready_called = true; });
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(acks.ok + acks.failed, 0) << "nothing can be confirmed without a broker";
  EXPECT_FALSE(ready_called) << "ready before any partition was assigned";
  t0 = Clock::now();
  bus->stop();
  EXPECT_LT(Clock::now() - t0, 5s) << "stop() waited on a broker that is not there";
  EXPECT_EQ(acks.failed, 1);
  EXPECT_EQ(acks.last_error, Error::stopped);
  EXPECT_TRUE(ready_called);
  EXPECT_EQ(ready, Error::stopped);
}

TEST(KafkaBus, StoppedBusRefusesPublishAndSubscribe) {
  Node a(fresh_topic("stopped"), "a");
  a.bus().stop();
  std::error_code published = Error::timed_out, subscribed = Error::timed_out;
  a.bus().publish("r", "x", {}, [&](std::error_code ec, std::uint64_t) { published = ec; });
  a.bus().subscribe("r", [&](std::error_code ec) { subscribed = ec; });
  EXPECT_EQ(published, Error::stopped);
  EXPECT_EQ(subscribed, Error::stopped);
}

}  // namespace
}  // namespace chatd::bus
