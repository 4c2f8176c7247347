// The Kafka bus against a real broker (started once per CTest run by the `kafka` fixture, see
// kafka.cmake). Each test uses its own topic, so tests do not see each other's messages.
#include <gtest/gtest.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafkacpp.h>

#include <boost/asio/io_context.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
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
#include <tuple>
#include <vector>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

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
  Node(const std::string& topic, const std::string& id, const std::function<void(BusConfig&)>& tune = {})
      : bus_(make_kafka_bus(tuned(config(topic, id), tune), io_)) {
    bus_->on_control([this](ControlMessage&& m) {
      std::lock_guard lock(mu_);
      controls_.push_back(std::move(m));
    });
    bus_->start([this](Delivery&& d) {
      std::lock_guard lock(mu_);
      got_.push_back(std::move(d));
      arrived_.notify_all();
    });
  }
  ~Node() { bus_->stop(); }

  MessageBus& bus() { return *bus_; }

  static BusConfig tuned(BusConfig cfg, const std::function<void(BusConfig&)>& tune) {
    if (tune) tune(cfg);
    return cfg;
  }

  // Publishes and waits (15 s); returns the code and the seq `done` got (and keeps its epoch
  // in last_epoch).
  std::pair<std::error_code, std::uint64_t> publish(const std::string& room, std::string payload,
                                                    std::string client_id = {}) {
    auto p = std::make_shared<std::promise<std::tuple<std::error_code, std::uint64_t, std::string>>>();
    bus_->publish(room, std::move(payload), {std::move(client_id)},
                  [p](std::error_code ec, std::uint64_t seq, std::string_view e) { p->set_value({ec, seq, std::string(e)}); });
    auto f = p->get_future();
    last_epoch.clear();
    if (f.wait_for(15s) != std::future_status::ready) return {Error::timed_out, 0};
    auto [ec, seq, e] = f.get();
    last_epoch = e;
    return {ec, seq};
  }
  std::string last_epoch;  // the test thread's last publish()

  // Asks for history and waits (15 s).
  std::pair<std::error_code, History> history(HistoryRequest req) {
    auto p = std::make_shared<std::promise<std::pair<std::error_code, History>>>();
    bus_->history(std::move(req), [p](std::error_code ec, History h) { p->set_value({ec, std::move(h)}); });
    auto f = p->get_future();
    if (f.wait_for(15s) != std::future_status::ready) return {Error::timed_out, {}};
    return f.get();
  }

  std::vector<Delivery> got() {
    std::lock_guard lock(mu_);
    return got_;
  }
  std::vector<ControlMessage> controls() {
    std::lock_guard lock(mu_);
    return controls_;
  }
  // Publishes a control message and waits (15 s) for `done`.
  std::error_code publish_control(std::string type, std::string body) {
    auto p = std::make_shared<std::promise<std::error_code>>();
    bus_->publish_control({std::move(type), {}, std::move(body)}, [p](std::error_code ec) { p->set_value(ec); });
    auto f = p->get_future();
    if (f.wait_for(15s) != std::future_status::ready) return Error::timed_out;
    return f.get();
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
  std::vector<ControlMessage> controls_;
};

// Counts publish() outcomes.
struct Acks {
  std::atomic<int> ok{0};
  std::atomic<int> failed{0};
  std::mutex mu;
  std::error_code last_error;

  PublishedFn done() {
    return [this](std::error_code ec, std::uint64_t, std::string_view) {
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

// An epoch on Kafka is "<topic id>.<partition>"; this is its topic id.
std::string topic_id_of(const std::string& epoch) { return epoch.substr(0, epoch.rfind('.')); }

void expect_increasing_seq_per_room(const std::vector<Delivery>& ds) {
  std::map<std::string, std::uint64_t> last;
  for (const auto& d : ds) {
    EXPECT_GT(d.seq, last[d.room_id]) << "room " << d.room_id << " payload " << d.payload;
    last[d.room_id] = d.seq;
  }
}

TEST(KafkaBus, ControlMessagesReachEveryNodeAndStayOutOfRoomsAndHistory) {
  const std::string topic = fresh_topic("control");
  Node a(topic, "node-a"), b(topic, "node-b");
  ASSERT_FALSE(a.subscribe("lunch"));
  ASSERT_FALSE(b.subscribe("lunch"));  // both assigned at the end: what follows reaches both
  ASSERT_FALSE(a.publish("lunch", "before").first);
  ASSERT_FALSE(b.publish_control("disconnect", "{\"user\":\"kim\"}"));
  ASSERT_FALSE(a.publish_control("room.deleted", "lunch"));
  ASSERT_FALSE(a.publish("lunch", "after").first);
  for (Node* n : {&a, &b}) {
    ASSERT_TRUE(eventually([&] { return n->controls().size() == 2 && n->count() == 2; }, 15s))
        << n->controls().size() << " " << n->count();
    auto c = n->controls();
    std::sort(c.begin(), c.end(), [](auto& x, auto& y) { return x.type < y.type; });
    EXPECT_EQ(c[0].type, "disconnect");
    EXPECT_EQ(c[0].origin, "node-b");
    EXPECT_EQ(c[0].body, "{\"user\":\"kim\"}");
    EXPECT_EQ(c[1].type, "room.deleted");
    EXPECT_EQ(c[1].origin, "node-a");
    EXPECT_EQ(payloads_of(n->got(), "lunch"), (std::vector<std::string>{"before", "after"}));
  }
  auto [ec, h] = a.history({"lunch", 0, 0, 10});
  ASSERT_FALSE(ec);
  ASSERT_EQ(h.messages.size(), 2u) << "history holds the room's messages only";
  EXPECT_EQ(a.publish_control("Bad Type", "x"), make_error_code(Error::rejected));
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

// A bootstrap broker that takes connections and never answers (a frozen JVM; a host dropping
// packets looks the same) listed first: the topic-id check, every topic_check_ms, waited the
// request timeout on it on the consumer thread, holding live delivery for that long (s18).
TEST(KafkaBus, ABrokerThatNeverAnswersDoesNotHoldLiveDelivery) {
  const int silent = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(silent, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  ASSERT_EQ(::bind(silent, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::listen(silent, 128), 0);  // the kernel completes handshakes; nobody ever reads
  ASSERT_EQ(::getsockname(silent, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  const std::string silent_broker = "127.0.0.1:" + std::to_string(ntohs(addr.sin_port));

  const std::string topic = fresh_topic("silentbroker");
  Node a(topic, "a");
  Node b(topic, "b", [&](BusConfig& c) {
    c.kafka_brokers = silent_broker + "," + c.kafka_brokers;
    c.kafka_timing.topic_check_ms = 200;
    c.kafka_timing.request_timeout_ms = 1500;
  });
  ASSERT_EQ(b.subscribe("r", 30s), std::error_code{});
  std::vector<double> ms;
  for (int i = 0; i < 60; ++i) {  // 3 s: several id checks
    auto t0 = Clock::now();
    a.bus().publish("r", "m" + std::to_string(i), {}, [](std::error_code, std::uint64_t, std::string_view) {});
    ASSERT_TRUE(b.wait_count(static_cast<std::size_t>(i) + 1, 10s)) << "message " << i;
    ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
    std::this_thread::sleep_for(50ms);
  }
  ::close(silent);
  const double worst = *std::max_element(ms.begin(), ms.end());
  std::cerr << "publish on a -> delivery on b, a silent broker listed first: worst " << worst << " ms\n";
  EXPECT_LT(worst, 1000.0) << "live delivery waited for a topic-id check (1.5 s on the silent broker)";
}

// A node started on a topic that already exists: its first line must not wait for the
// producer's first metadata refresh (it did: about a second, for every SEND of a node's first
// second). `ready` means the node is up, so it is timed from there.
TEST(KafkaBus, ANodeStartedOnAnExistingTopicSendsItsFirstLineAtOnce) {
  const std::string topic = fresh_topic("firstline");
  Node a(topic, "a");  // creates the topic
  ASSERT_EQ(a.subscribe("r"), std::error_code{});
  Node b(topic, "b");
  ASSERT_EQ(b.subscribe("r"), std::error_code{});
  Acks acks;
  const auto t0 = Clock::now();
  b.bus().publish("r", "first", {}, acks.done());
  ASSERT_TRUE(a.wait_count(1, 5s));
  const double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  std::cerr << "a new node's first line: " << ms << " ms\n";
  EXPECT_LT(ms, 500.0);  // loose, as above: a metadata refresh is ~1 s, a warmed trip a few ms
  ASSERT_TRUE(acks.wait(1, 10s));
  EXPECT_EQ(acks.ok, 1);
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
  EXPECT_EQ(a.bus().control_gaps(), 0u) << "no outage yet";

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
      a.bus().publish(room, "m" + std::to_string(i), {}, [&, i, count = acks.done()](std::error_code ec, std::uint64_t s, std::string_view) {
        status[i] = ec ? 2 : 1;
        count(ec, s, {});
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
  // Control records sent in an outage may have expired unsent: the chat core is told to look again.
  EXPECT_GE(a.bus().control_gaps(), 1u);
  EXPECT_GE(b.bus().control_gaps(), 1u);

  ASSERT_EQ(c_ready_future.wait_for(20s), std::future_status::ready) << c.bus().describe();
  EXPECT_EQ(c_ready_future.get(), std::error_code{});
  EXPECT_TRUE(eventually([&] { return c.bus().up(); }, 5s)) << c.bus().describe();
  int confirmed = acks.ok;
  a.bus().publish(room, "tail", {}, acks.done());
  ASSERT_TRUE(acks.wait(kTotal + 1, 20s));
  EXPECT_EQ(acks.ok, confirmed + 1);
  ASSERT_TRUE(c.wait_count(1, 10s));
  EXPECT_TRUE(eventually([&] { return payloads_of(c.got(), room).back() == "tail"; }, 10s));
  // c's history reader sat idle through the outage; its stale "all brokers down", served inside
  // this read from the topic, must not mark a healthy bus down.
  auto [history_ec, older] = c.history({.room_id = room, .after_seq = 1, .limit = 10});
  EXPECT_EQ(history_ec, std::error_code{});
  EXPECT_FALSE(older.messages.empty());
  EXPECT_TRUE(c.bus().up()) << c.bus().describe();

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

// A fatal producer error (librdkafka gives the idempotent producer up, faked here with
// rd_kafka_test_fatal_error) mid-stream: the bus replaces the producer instead of refusing
// every message from then on. Every publish gets one answer, a failure is engine_down, what
// was confirmed arrives exactly once and in order on another node, and publishing works again.
TEST(KafkaBus, FatalProducerErrorReplacesTheProducer) {
  const std::string topic = fresh_topic("fatal");
  const std::string room = "r";
  Node a(topic, "a"), b(topic, "b");
  ASSERT_EQ(a.subscribe(room), std::error_code{});
  ASSERT_EQ(b.subscribe(room), std::error_code{});

  constexpr int kTotal = 300;
  Acks acks;
  std::vector<std::atomic<int>> status(kTotal);  // 0 pending, 1 confirmed, 2 failed
  std::vector<std::error_code> errors(kTotal);
  std::mutex errors_mu;
  std::atomic<int> sent{0};
  std::thread publisher([&] {
    for (int i = 0; i < kTotal; ++i) {
      a.bus().publish(room, "m" + std::to_string(i), {}, [&, i, count = acks.done()](std::error_code ec, std::uint64_t s, std::string_view) {
        if (ec) {
          std::lock_guard lock(errors_mu);
          errors[static_cast<std::size_t>(i)] = ec;
        }
        status[static_cast<std::size_t>(i)] = ec ? 2 : 1;
        count(ec, s, {});
      });
      sent = i + 1;
      std::this_thread::sleep_for(5ms);
    }
  });
  ASSERT_TRUE(eventually([&] { return sent >= 100; }, 20s));
  const bool injected = inject_kafka_fatal_error(a.bus(), "test: a sequence gap mid-stream");
  const int at = sent;
  publisher.join();
  ASSERT_TRUE(injected);
  ASSERT_TRUE(acks.wait(kTotal, 45s)) << acks.ok << " ok, " << acks.failed << " failed";
  std::cerr << "fatal error injected after " << at << " publishes: " << acks.ok << " confirmed, " << acks.failed
            << " failed; " << a.bus().describe() << "\n";
  EXPECT_NE(a.bus().describe().find("producer replaced 1x"), std::string::npos) << a.bus().describe();
  for (int i = 0; i < kTotal; ++i) {
    if (status[static_cast<std::size_t>(i)] == 2) {
      // engine_down: never sent; timed_out: was in flight, may be in the topic (504, not 503).
      const auto e = errors[static_cast<std::size_t>(i)];
      EXPECT_TRUE(e == Error::engine_down || e == Error::timed_out) << "m" << i << ": " << e.message();
    }
  }
  // The new producer took over within a second or so: the last publishes (over 0.5 s later) all landed.
  for (int i = kTotal - 50; i < kTotal; ++i) EXPECT_EQ(status[static_cast<std::size_t>(i)], 1) << "m" << i;
  EXPECT_TRUE(eventually([&] { return a.bus().up(); }, 10s)) << a.bus().describe();
  EXPECT_EQ(a.publish(room, "tail").first, std::error_code{});

  // Every confirmed message exactly once and in publish order; a failed one may have reached
  // the topic (it was in flight) but never twice and never out of order.
  std::vector<std::string> confirmed;
  for (int i = 0; i < kTotal; ++i)
    if (status[static_cast<std::size_t>(i)] == 1) confirmed.push_back("m" + std::to_string(i));
  confirmed.push_back("tail");
  for (Node* n : {&a, &b}) {
    EXPECT_TRUE(eventually([&] { return !n->got().empty() && n->got().back().payload == "tail"; }, 30s));
    std::this_thread::sleep_for(200ms);  // a duplicate would arrive right behind
    const auto got = payloads_of(n->got(), room);
    std::vector<std::string> got_confirmed;
    int last = -1;
    for (const auto& p : got) {
      const int idx = p == "tail" ? kTotal : std::stoi(p.substr(1));
      EXPECT_GT(idx, last) << "out of order or twice: " << p;
      last = idx;
      if (idx == kTotal || status[static_cast<std::size_t>(idx)] == 1) got_confirmed.push_back(p);
      else EXPECT_NE(errors[static_cast<std::size_t>(idx)], Error::engine_down) << p << " was said never sent";
    }
    EXPECT_EQ(got_confirmed, confirmed);
    expect_increasing_seq_per_room(n->got());
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

// ---- history, epoch, dedupe -------------------------------------------------------------

std::vector<std::uint64_t> seqs_of(const std::vector<Delivery>& ds) {
  std::vector<std::uint64_t> out;
  for (const auto& d : ds) out.push_back(d.seq);
  return out;
}

// Runs one admin request about one topic (`request` sends it to the queue, `results` reads
// the answer's topic list); returns whether the broker said done within 15 s.
bool admin_call(const std::function<void(rd_kafka_t*, rd_kafka_queue_t*)>& request,
                const std::function<const rd_kafka_topic_result_t**(rd_kafka_event_t*, size_t*)>& results) {
  std::unique_ptr<RdKafka::Conf> conf(RdKafka::Conf::create(RdKafka::Conf::CONF_GLOBAL));
  std::string why;
  conf->set("bootstrap.servers", broker(), why);
  std::unique_ptr<RdKafka::Producer> admin(RdKafka::Producer::create(conf.get(), why));
  if (!admin) return false;
  rd_kafka_queue_t* queue = rd_kafka_queue_new(admin->c_ptr());
  request(admin->c_ptr(), queue);
  rd_kafka_event_t* ev = rd_kafka_queue_poll(queue, 15000);
  bool ok = false;
  if (ev) {
    size_t n = 0;
    const rd_kafka_topic_result_t** res = results(ev, &n);
    ok = !rd_kafka_event_error(ev) && n == 1 && rd_kafka_topic_result_error(res[0]) == RD_KAFKA_RESP_ERR_NO_ERROR;
    rd_kafka_event_destroy(ev);
  }
  rd_kafka_queue_destroy(queue);
  return ok;
}

// Deletes `topic` with the admin API; returns whether the broker said done.
bool delete_topic(const std::string& topic) {
  rd_kafka_DeleteTopic_t* del = rd_kafka_DeleteTopic_new(topic.c_str());
  const bool ok = admin_call([&](rd_kafka_t* rk, rd_kafka_queue_t* q) { rd_kafka_DeleteTopics(rk, &del, 1, nullptr, q); },
                             [](rd_kafka_event_t* ev, size_t* n) {
                               return rd_kafka_DeleteTopics_result_topics(rd_kafka_event_DeleteTopics_result(ev), n);
                             });
  rd_kafka_DeleteTopic_destroy(del);
  return ok;
}

TEST(KafkaBus, HistoryComesFromTheCacheAndFromTheTopicOnANodeStartedLater) {
  const std::string topic = fresh_topic("history");
  Node a(topic, "a");
  ASSERT_EQ(a.subscribe("h"), std::error_code{});
  std::vector<std::uint64_t> seq;  // seq[i] of payload "m<i>"
  for (int i = 0; i < 30; ++i) {
    auto [ec, s] = a.publish("h", "m" + std::to_string(i));
    ASSERT_FALSE(ec) << ec.message();
    seq.push_back(s);
    a.publish("other", "noise");  // another room between: seq is not contiguous on Kafka
  }
  ASSERT_TRUE(a.wait_count(60, 20s));
  const auto first = a.got();
  const std::string epoch = std::find_if(first.begin(), first.end(), [](const Delivery& d) { return d.room_id == "h"; })->epoch;
  EXPECT_EQ(topic_id_of(epoch).size(), 22u) << "the topic id, as Kafka prints it, then the partition: " << epoch;
  std::vector<std::uint64_t> live;
  for (const auto& d : a.got())
    if (d.room_id == "h") live.push_back(d.seq);
  EXPECT_EQ(live, seq) << "done() carries the seq consumers see";

  auto [ec, newest] = a.history({.room_id = "h", .limit = 10});  // from a's cache
  ASSERT_FALSE(ec) << ec.message();
  EXPECT_EQ(newest.epoch, epoch);
  EXPECT_EQ(seqs_of(newest.messages), std::vector<std::uint64_t>(seq.begin() + 20, seq.end()));
  EXPECT_EQ(newest.messages.back().payload, "m29");
  EXPECT_GE(newest.last_seq, seq.back());
  EXPECT_GT(newest.first_seq, 0u);
  EXPECT_LE(newest.first_seq, seq.front());

  // A node that started after all of it: everything comes from the topic.
  Node late(topic, "late");
  ASSERT_EQ(late.subscribe("h"), std::error_code{});
  auto [ec2, resumed] = late.history({.room_id = "h", .after_seq = seq[4], .limit = 100});
  ASSERT_FALSE(ec2) << ec2.message();
  EXPECT_EQ(resumed.epoch, epoch);
  EXPECT_EQ(seqs_of(resumed.messages), std::vector<std::uint64_t>(seq.begin() + 5, seq.end()));
  for (std::size_t i = 0; i < resumed.messages.size(); ++i)
    EXPECT_EQ(resumed.messages[i].payload, "m" + std::to_string(i + 5));
  EXPECT_EQ(seqs_of(late.history({.room_id = "h", .limit = 10}).second.messages),
            std::vector<std::uint64_t>(seq.begin() + 20, seq.end()));
  EXPECT_EQ(seqs_of(late.history({.room_id = "h", .before_seq = seq[10], .limit = 3}).second.messages),
            std::vector<std::uint64_t>(seq.begin() + 7, seq.begin() + 10));

  // Ten more after `late` started: a resume spans the topic (before it started) and its cache.
  for (int i = 30; i < 40; ++i) {
    auto [e, s] = a.publish("h", "m" + std::to_string(i));
    ASSERT_FALSE(e);
    seq.push_back(s);
  }
  ASSERT_TRUE(late.wait_count(10, 20s));
  auto both = late.history({.room_id = "h", .after_seq = seq[2], .limit = 100}).second;
  EXPECT_EQ(seqs_of(both.messages), std::vector<std::uint64_t>(seq.begin() + 3, seq.end()));
  EXPECT_GE(both.last_seq, seq.back());
}

// After a restart resumes come as a herd; the reader answers those waiting together with one
// scan per partition, and each request must still get exactly its own room, range and limit.
TEST(KafkaBus, ResumesAskedTogetherOnANodeStartedLaterEachGetTheirOwn) {
  const std::string topic = fresh_topic("herd");
  Node a(topic, "a");
  ASSERT_EQ(a.subscribe("r0"), std::error_code{});
  constexpr int kRooms = 4, kEach = 20;
  std::vector<std::vector<std::uint64_t>> seq(kRooms);  // seq[room][i] of payload "<room>:<i>"
  for (int i = 0; i < kEach; ++i)
    for (int r = 0; r < kRooms; ++r) {
      auto [ec, s] = a.publish("r" + std::to_string(r), std::to_string(r) + ":" + std::to_string(i));
      ASSERT_FALSE(ec) << ec.message();
      seq[r].push_back(s);
    }
  ASSERT_TRUE(a.wait_count(kRooms * kEach, 20s));

  Node late(topic, "late");
  ASSERT_EQ(late.subscribe("r0"), std::error_code{});
  struct Ask {
    int room;
    std::size_t after;  // index of the last message seen
    std::size_t limit;
    std::promise<std::pair<std::error_code, History>> answer;
  };
  std::vector<std::unique_ptr<Ask>> asks;
  for (int r = 0; r < kRooms; ++r)
    for (std::size_t after = 0; after < kEach; after += 3)
      asks.push_back(std::make_unique<Ask>(Ask{r, after, after % 2 ? 4u : 100u, {}}));
  // All asked before the first is answered, as a herd would.
  for (auto& ask : asks)
    late.bus().history({.room_id = "r" + std::to_string(ask->room), .after_seq = seq[ask->room][ask->after], .limit = ask->limit},
                       [p = &ask->answer](std::error_code ec, History h) { p->set_value({ec, std::move(h)}); });
  auto newest = late.history({.room_id = "r1", .limit = 3});  // a read backwards in the same queue
  for (auto& ask : asks) {
    auto future = ask->answer.get_future();
    ASSERT_EQ(future.wait_for(15s), std::future_status::ready);
    auto [ec, h] = future.get();
    ASSERT_FALSE(ec) << ec.message();
    const std::size_t first = ask->after + 1, last = std::min<std::size_t>(kEach, first + ask->limit);
    EXPECT_EQ(seqs_of(h.messages), std::vector<std::uint64_t>(seq[ask->room].begin() + first, seq[ask->room].begin() + last))
        << "room r" << ask->room << " after #" << ask->after << " limit " << ask->limit;
    for (std::size_t i = 0; i < h.messages.size(); ++i) {
      EXPECT_EQ(h.messages[i].room_id, "r" + std::to_string(ask->room));
      EXPECT_EQ(h.messages[i].payload, std::to_string(ask->room) + ":" + std::to_string(first + i));
    }
  }
  ASSERT_FALSE(newest.first);
  EXPECT_EQ(seqs_of(newest.second.messages), std::vector<std::uint64_t>(seq[1].end() - 3, seq[1].end()));
}

TEST(KafkaBus, HistoryIsBoundedByCountAndAge) {
  const std::string topic = fresh_topic("bounds");
  Node a(topic, "a", [](BusConfig& c) {
    c.history_size = 5;
    c.history_ttl = 2s;
  });
  ASSERT_EQ(a.subscribe("b"), std::error_code{});
  std::vector<std::uint64_t> seq;
  for (int i = 0; i < 20; ++i) seq.push_back(a.publish("b", std::to_string(i)).second);
  ASSERT_TRUE(a.wait_count(20, 20s));
  auto h = a.history({.room_id = "b", .after_seq = seq[0], .limit = 100}).second;
  EXPECT_EQ(seqs_of(h.messages), std::vector<std::uint64_t>(seq.begin() + 1, seq.begin() + 6))
      << "at most history_size per answer";
  EXPECT_EQ(seqs_of(a.history({.room_id = "b", .limit = 100}).second.messages),
            std::vector<std::uint64_t>(seq.begin() + 15, seq.end()));
  // Past the ttl nothing is answered, and first_seq says where history starts again.
  ASSERT_TRUE(eventually([&] { return a.history({.room_id = "b", .limit = 100}).second.messages.empty(); }, 10s));
  auto old = a.history({.room_id = "b", .after_seq = seq[0], .limit = 100}).second;
  EXPECT_TRUE(old.messages.empty());
  EXPECT_EQ(old.first_seq, 0u) << "nothing younger than the ttl";
  auto [ec, fresh] = a.publish("b", "fresh");
  ASSERT_FALSE(ec);
  ASSERT_TRUE(a.wait_count(21, 20s));  // history holds what this node has delivered
  auto now = a.history({.room_id = "b", .after_seq = seq[0], .limit = 100}).second;
  EXPECT_EQ(now.first_seq, fresh);
  EXPECT_EQ(seqs_of(now.messages), std::vector<std::uint64_t>{fresh});
}

TEST(KafkaBus, EpochChangesWhenTheTopicIsRecreated) {
  const std::string topic = fresh_topic("epoch");
  Node a(topic, "a");
  ASSERT_EQ(a.subscribe("e"), std::error_code{});
  ASSERT_FALSE(a.publish("e", "before").first);
  ASSERT_TRUE(a.wait_count(1, 20s));
  const std::string before = a.got()[0].epoch;
  ASSERT_FALSE(before.empty());
  EXPECT_EQ(a.history({.room_id = "e", .limit = 5}).second.epoch, before);

  ASSERT_TRUE(delete_topic(topic));
  // A node started now creates the topic again (retrying while the deletion completes).
  Node b(topic, "b");
  ASSERT_EQ(b.subscribe("e"), std::error_code{});
  ASSERT_TRUE(eventually([&] { return !b.publish("e", "after").first; }, 30s));
  auto h = b.history({.room_id = "e", .limit = 5}).second;
  EXPECT_NE(h.epoch, before) << "a recreated topic is a new history";
  ASSERT_FALSE(h.epoch.empty());
  // The node that ran all along notices too (it checks the topic id every few seconds).
  ASSERT_TRUE(eventually([&] {
    b.publish("e", "later");
    auto got = a.got();
    return got.back().epoch == h.epoch;
  }, 40s)) << a.got().back().epoch;
  EXPECT_EQ(a.history({.room_id = "e", .limit = 5}).second.epoch, h.epoch);
}

// Running nodes whose consumers sit at the old topic's offsets must still get every record of
// the new one, under its epoch: senders got RECEIPTs for them. Rooms on every partition, so
// some old offsets are past the new topic's end (out of range) and some are not.
TEST(KafkaBus, ARecreatedTopicLosesNothingOnRunningNodes) {
  const std::string topic = fresh_topic("recreate");
  const std::vector<std::string> rooms = {"r0", "r1", "r2", "r3", "r4", "r5"};
  Node a(topic, "a"), b(topic, "b");
  for (Node* n : {&a, &b}) ASSERT_EQ(n->subscribe(rooms[0]), std::error_code{});
  for (int i = 0; i < 30; ++i) ASSERT_FALSE(a.publish(rooms[i % rooms.size()], "old" + std::to_string(i)).first);
  for (Node* n : {&a, &b}) ASSERT_TRUE(n->wait_count(30, 20s)) << n->count();
  const std::string old_epoch = topic_id_of(a.got()[0].epoch);  // rooms on every partition: their topic's id

  ASSERT_TRUE(delete_topic(topic));
  Node c(topic, "c");  // creates the topic again, and sends into it at once
  ASSERT_EQ(c.subscribe(rooms[0], 30s), std::error_code{});
  std::map<std::string, std::pair<std::string, std::uint64_t>> acked;  // payload -> room, seq
  for (int i = 0; i < 200; ++i) {
    const std::string room = rooms[static_cast<std::size_t>(i) % rooms.size()], payload = "new" + std::to_string(i);
    auto [ec, seq] = c.publish(room, payload);
    if (!ec) acked[payload] = {room, seq};
    std::this_thread::sleep_for(20ms);
  }
  ASSERT_GE(acked.size(), 190u) << "the new topic takes records";
  ASSERT_TRUE(c.wait_count(acked.size(), 20s));
  const std::string new_epoch = topic_id_of(c.got()[0].epoch);
  ASSERT_NE(new_epoch, old_epoch);

  for (Node* n : {&a, &b}) {
    const char* name = n == &a ? "a" : "b";
    auto has_all = [&] {
      std::set<std::string> seen;
      for (const auto& d : n->got())
        if (topic_id_of(d.epoch) == new_epoch) seen.insert(d.payload);
      return std::all_of(acked.begin(), acked.end(), [&](const auto& kv) { return seen.contains(kv.first); });
    };
    EXPECT_TRUE(eventually(has_all, 15s)) << name << " missed records of the new topic";
    std::map<std::string, int> times;
    for (const auto& d : n->got()) {
      if (d.payload.starts_with("old")) {
        EXPECT_EQ(topic_id_of(d.epoch), old_epoch) << name << ": the old topic's " << d.payload << " again";
        continue;
      }
      EXPECT_EQ(topic_id_of(d.epoch), new_epoch) << name << ": " << d.payload << " under the old epoch";
      EXPECT_EQ(++times[d.payload], 1) << name << ": " << d.payload << " twice";
      auto it = acked.find(d.payload);
      if (it != acked.end()) {
        EXPECT_EQ(d.seq, it->second.second) << name << ": " << d.payload;
      }
    }
    // The cache starts again with the new topic: a resume from before the recreation (whose
    // seqs mean nothing now) gets the new epoch's messages, from the first.
    for (const auto& room : rooms) {
      std::vector<std::uint64_t> want;
      for (const auto& [payload, at] : acked)
        if (at.first == room) want.push_back(at.second);
      std::sort(want.begin(), want.end());
      auto [ec, h] = n->history({.room_id = room, .limit = 100});
      ASSERT_FALSE(ec) << name << " " << room << ": " << ec.message();
      EXPECT_EQ(topic_id_of(h.epoch), new_epoch) << name << " " << room;
      EXPECT_EQ(seqs_of(h.messages), want) << name << " " << room;
    }
  }
}

// Gives `topic` `total` partitions with the admin API; returns whether the broker said done.
bool add_partitions(const std::string& topic, int total) {
  char err[256];
  rd_kafka_NewPartitions_t* more = rd_kafka_NewPartitions_new(topic.c_str(), static_cast<size_t>(total), err, sizeof err);
  if (!more) return false;
  const bool ok = admin_call(
      [&](rd_kafka_t* rk, rd_kafka_queue_t* q) { rd_kafka_CreatePartitions(rk, &more, 1, nullptr, q); },
      [](rd_kafka_event_t* ev, size_t* n) {
        return rd_kafka_CreatePartitions_result_topics(rd_kafka_event_CreatePartitions_result(ev), n);
      });
  rd_kafka_NewPartitions_destroy(more);
  return ok;
}

// The first room id "<prefix><i>" that the producers' partitioner puts on `want` of `parts`.
std::string room_on(const std::string& prefix, int want, int parts) {
  for (int i = 0;; ++i) {
    const std::string room = prefix + std::to_string(i);
    if (rd_kafka_msg_partitioner_murmur2_random(nullptr, room.data(), room.size(), parts, nullptr, nullptr) == want)
      return room;
  }
}

// Partitions added under running nodes move some rooms to a new partition, whose offsets (the
// seqs) start again: such a room must start a new epoch on every node, or its seqs go back
// within one epoch and a resume from before is answered with unrelated messages. A room that
// stays keeps its epoch and its history.
TEST(KafkaBus, PartitionsAddedGiveAMovedRoomANewEpochAndLeaveTheOthers) {
  const std::string topic = fresh_topic("grow");
  auto tune = [](BusConfig& c) {
    c.kafka_partitions = 1;
    c.kafka_timing.partition_check_ms = 200;
  };
  const std::string moved = room_on("moved", 1, 2), stays = room_on("stays", 0, 2);
  Node a(topic, "a", tune), b(topic, "b", tune);
  for (Node* n : {&a, &b}) ASSERT_EQ(n->subscribe(moved), std::error_code{});
  for (int i = 0; i < 3; ++i) {
    ASSERT_FALSE(a.publish(moved, "old" + std::to_string(i)).first);
    ASSERT_FALSE(b.publish(stays, "old" + std::to_string(i)).first);
  }
  for (Node* n : {&a, &b}) ASSERT_TRUE(n->wait_count(6, 20s));
  const std::string before = a.got()[0].epoch;
  for (const auto& d : a.got()) ASSERT_EQ(d.epoch, before) << "one partition, one epoch";
  EXPECT_EQ(a.last_epoch, before) << "a publish is answered with the epoch its seq counts in";

  ASSERT_TRUE(add_partitions(topic, 2));
  // Each node's SENDs follow the room to its new partition once that node finds it.
  std::string after;
  for (Node* n : {&a, &b}) {
    int i = 0;
    EXPECT_TRUE(eventually([&] {
      const std::string payload = std::string(n == &a ? "a" : "b") + "-new" + std::to_string(i++);
      if (n->publish(moved, payload).first) return false;
      const std::string answered = n->last_epoch;
      // Its own copy, found by payload: it may arrive before publish() returns.
      std::string epoch;
      eventually([&] {
        for (const auto& d : n->got())
          if (d.payload == payload) return epoch = d.epoch, true;
        return false;
      }, 5s);
      EXPECT_EQ(answered, epoch) << payload << ": the answer's epoch is the one it was delivered under";
      if (epoch.empty() || epoch == before) return false;
      return after = epoch, true;
    }, 30s)) << "node " << (n == &a ? "a" : "b") << " still publishes the moved room under " << before;
  }
  ASSERT_FALSE(after.empty());
  EXPECT_EQ(topic_id_of(after), topic_id_of(before)) << "the same topic";
  ASSERT_FALSE(a.publish(moved, "last").first);
  EXPECT_EQ(a.last_epoch, after);
  ASSERT_FALSE(a.publish(stays, "kept").first);
  EXPECT_EQ(a.last_epoch, before) << "a room that stayed keeps its epoch";

  for (Node* n : {&a, &b}) {
    const char* name = n == &a ? "a" : "b";
    ASSERT_TRUE(eventually([&] {
      auto got = n->got();
      return std::count_if(got.begin(), got.end(), [](const Delivery& d) { return d.payload == "last" || d.payload == "kept"; }) == 2;
    }, 20s)) << name;
    std::map<std::pair<std::string, std::string>, std::uint64_t> last;  // (room, epoch) -> seq
    for (const auto& d : n->got()) {
      auto& prev = last[std::make_pair(d.room_id, d.epoch)];
      EXPECT_GT(d.seq, prev) << name << ": seq went back within one epoch at " << d.payload;
      prev = d.seq;
      if (d.payload == "last") {
        EXPECT_EQ(d.epoch, after) << name;
      }
      if (d.payload == "kept") {
        EXPECT_EQ(d.epoch, before) << name << ": a room that stayed keeps its epoch";
      }
    }
    // History answers each room under the epoch of the partition it is on now.
    auto [ec, h] = n->history({.room_id = moved, .limit = 100});
    ASSERT_FALSE(ec) << name;
    EXPECT_EQ(h.epoch, after) << name;
    ASSERT_FALSE(h.messages.empty()) << name;
    EXPECT_EQ(h.messages.back().payload, "last") << name;
    for (const auto& m : h.messages) {
      EXPECT_EQ(m.epoch, after) << name;
      EXPECT_FALSE(m.payload.starts_with("old")) << name << ": the old partition's " << m.payload << " under the new epoch";
    }
    auto [ec2, k] = n->history({.room_id = stays, .limit = 100});
    ASSERT_FALSE(ec2) << name;
    EXPECT_EQ(k.epoch, before) << name;
    std::vector<std::string> payloads;
    for (const auto& m : k.messages) payloads.push_back(m.payload);
    EXPECT_EQ(payloads, (std::vector<std::string>{"old0", "old1", "old2", "kept"})) << name;
  }
}

TEST(KafkaBus, SameClientIdIsPublishedOnceAcrossNodes) {
  const std::string topic = fresh_topic("dedupe");
  Node a(topic, "a"), b(topic, "b");
  ASSERT_EQ(a.subscribe("d"), std::error_code{});
  ASSERT_EQ(b.subscribe("d"), std::error_code{});
  auto [e1, s1] = a.publish("d", "hello", "c-1");
  ASSERT_FALSE(e1);
  ASSERT_TRUE(b.wait_count(1, 20s));  // b has seen the first in the stream
  const std::string first_epoch = a.last_epoch;
  auto [e2, s2] = b.publish("d", "hello", "c-1");  // the retry, after a reconnect to b
  EXPECT_EQ(b.last_epoch, first_epoch) << "and its epoch";
  auto [e3, s3] = a.publish("d", "hello", "c-1");
  EXPECT_EQ(a.last_epoch, first_epoch);
  EXPECT_FALSE(e2);
  EXPECT_EQ(s2, s1) << "a retry gets the first publish's seq";
  EXPECT_EQ(s3, s1);
  ASSERT_FALSE(first_epoch.empty());
  EXPECT_EQ(b.got()[0].epoch, first_epoch);

  // Two sends of one id back to back on one node, before either is acknowledged.
  auto p = std::make_shared<std::promise<std::uint64_t>>();
  a.bus().publish("d", "twice", {"c-2"}, [](std::error_code, std::uint64_t, std::string_view) {});
  a.bus().publish("d", "twice", {"c-2"}, [p](std::error_code, std::uint64_t s, std::string_view) { p->set_value(s); });
  // The same id at the same moment on both nodes: both may reach the topic; every consumer
  // drops the later one (the same records decide the same on every node).
  b.bus().publish("d", "race", {"c-3"}, [](std::error_code, std::uint64_t, std::string_view) {});
  a.bus().publish("d", "race", {"c-3"}, [](std::error_code, std::uint64_t, std::string_view) {});
  auto [e4, s4] = a.publish("d", "last");
  ASSERT_FALSE(e4);
  ASSERT_TRUE(a.wait_count(4, 20s));
  ASSERT_TRUE(b.wait_count(4, 20s));
  std::this_thread::sleep_for(300ms);  // a duplicate would have arrived by now
  // Each once. Where b's "race" falls among a's records is the broker's arrival order (two
  // producers), but it is one order, the same on every node and in history.
  const auto order = payloads_of(a.got(), "d");
  auto sorted = order;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(sorted, (std::vector<std::string>{"hello", "last", "race", "twice"}));
  EXPECT_EQ(order.front(), "hello");
  EXPECT_EQ(payloads_of(b.got(), "d"), order);
  EXPECT_EQ(payloads_of(a.history({.room_id = "d", .limit = 10}).second.messages, "d"), order);
  Node late(topic, "late");  // reads the topic: drops the same duplicate
  ASSERT_EQ(late.subscribe("d"), std::error_code{});
  EXPECT_EQ(payloads_of(late.history({.room_id = "d", .limit = 10}).second.messages, "d"), order);
}

// Subscribe (ready), read history, then take live messages past the last one replayed; the
// room's publisher never pauses. Every node sees the same seqs, so `a` is the reference.
TEST(KafkaBus, HistoryReadDuringPublishingJoinsLiveWithoutGapOrDuplicate) {
  const std::string topic = fresh_topic("join");
  Node a(topic, "a");
  ASSERT_EQ(a.subscribe("j"), std::error_code{});
  for (int round = 0; round < 3; ++round) {
    std::atomic<bool> go{true};
    std::atomic<int> issued{0}, acked{0}, answered{0};
    std::atomic<std::uint64_t> last{0};
    std::thread publisher([&] {
      for (int i = 0; go && i < 3000; ++i) {
        ++issued;
        a.bus().publish("j", "x", {}, [&](std::error_code ec, std::uint64_t s, std::string_view) {
          if (!ec) ++acked;
          std::uint64_t prev = last;
          while (s > prev && !last.compare_exchange_weak(prev, s)) {}
          ++answered;
        });
        std::this_thread::sleep_for(1ms);
      }
    });
    ASSERT_TRUE(eventually([&] { return acked > 100; }, 20s));
    Node joiner(topic, "joiner" + std::to_string(round));
    ASSERT_EQ(joiner.subscribe("j"), std::error_code{});
    auto [ec, h] = joiner.history({.room_id = "j", .limit = 50});
    std::this_thread::sleep_for(200ms);
    go = false;
    publisher.join();
    ASSERT_FALSE(ec) << ec.message();
    ASSERT_EQ(h.messages.size(), 50u);
    // A resume from last_seq must not skip what the reply itself holds.
    EXPECT_GE(h.last_seq, h.messages.back().seq) << "round " << round;
    ASSERT_TRUE(eventually([&] { return answered == issued; }, 30s));
    ASSERT_TRUE(eventually([&] { return a.got().back().seq == last; }, 20s));
    ASSERT_TRUE(eventually([&] { return !joiner.got().empty() && joiner.got().back().seq == last; }, 20s));
    std::vector<std::uint64_t> seen = seqs_of(h.messages);
    for (const auto& d : joiner.got())
      if (d.seq > h.messages.back().seq) seen.push_back(d.seq);  // as the chat side cuts
    std::vector<std::uint64_t> reference;
    for (const auto& d : a.got())
      if (d.seq >= h.messages.front().seq) reference.push_back(d.seq);
    EXPECT_EQ(seen, reference) << "round " << round;
  }
}

TEST(KafkaBus, StoppedBusRefusesPublishAndSubscribe) {
  Node a(fresh_topic("stopped"), "a");
  a.bus().stop();
  std::error_code published = Error::timed_out, subscribed = Error::timed_out;
  a.bus().publish("r", "x", {}, [&](std::error_code ec, std::uint64_t, std::string_view) { published = ec; });
  a.bus().subscribe("r", [&](std::error_code ec) { subscribed = ec; });
  EXPECT_EQ(published, Error::stopped);
  EXPECT_EQ(subscribed, Error::stopped);
}

}  // namespace
}  // namespace chatd::bus
