// StompSession and Hub on one loop, with the real local bus and embedded store; only the
// socket is replaced by a transport that records what would be written.
#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>

#include <chrono>
#include <filesystem>
#include <future>
#include <mutex>
#include <thread>

#include "chat/session.h"

using namespace chatd;

namespace {

class RecordingTransport final : public chat::Transport {
 public:
  void send(chat::Outbound&& out) override {
    if (out.shared) written += out.shared->frame.head + out.own + out.shared->frame.tail;
    else written += out.own;
    queued += out.size();
  }
  void close(std::string_view reason) override {
    closed = true;
    close_reason = reason;
  }
  std::size_t queued_bytes() const override { return reading ? 0 : queued; }

  std::string written;
  std::size_t queued = 0;
  bool reading = true;  // false: nothing is ever written out, like a stalled client
  bool closed = false;
  std::string close_reason;
};

// The real local bus, counting publishes not yet answered: the local bus delivers and answers
// from its writer thread, so a test waits for that before it looks.
class CountingBus final : public bus::MessageBus {
 public:
  explicit CountingBus(std::unique_ptr<bus::MessageBus> inner) : inner_(std::move(inner)) {}
  void start(bus::DeliverFn d) override { inner_->start(std::move(d)); }
  void publish(std::string room, std::string payload, bus::PublishOptions o, bus::PublishedFn done) override {
    ++pending;
    inner_->publish(std::move(room), std::move(payload), std::move(o), [this, done = std::move(done)](std::error_code ec, std::uint64_t seq) {
      done(ec, seq);
      --pending;
    });
  }
  void history(bus::HistoryRequest r, bus::HistoryFn done) override {
    ++pending;
    inner_->history(std::move(r), [this, done = std::move(done)](std::error_code ec, bus::History h) {
      done(ec, std::move(h));
      --pending;
    });
  }
  void subscribe(const std::string& room, bus::DoneFn ready) override { inner_->subscribe(room, std::move(ready)); }
  void unsubscribe(const std::string& room) override { inner_->unsubscribe(room); }
  bool up() const override { return inner_->up(); }
  std::string describe() const override { return inner_->describe(); }
  void stop() override { inner_->stop(); }

  std::atomic<int> pending{0};

 private:
  std::unique_ptr<bus::MessageBus> inner_;
};

class SessionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir = std::filesystem::temp_directory_path() / ("chatd-session-" + std::to_string(::getpid()) + "-" +
                                                    ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir);
    store::StoreConfig sc;
    sc.data_dir = dir.string();
    rooms = store::make_embedded_store(sc);
    bus::BusConfig bc;
    bc.data_dir = dir.string();
    bus = std::make_unique<CountingBus>(bus::make_local_bus(bc, loop));
    chat::HubConfig hc;
    hc.node_id = "test";
    hc.limits.max_outbound_bytes = 8192;
    hc.limits.max_subscriptions = 3;
    hub = std::make_unique<chat::Hub>(hc, *rooms, *bus, std::vector<boost::asio::io_context*>{&loop});
    hub->start();
    hub->create_room("lunch", [&](std::error_code ec, store::Room r) {
      ASSERT_FALSE(ec);
      room = r.id;
    });
  }
  void TearDown() override {
    sessions.clear();
    hub.reset();
    bus->stop();
    std::filesystem::remove_all(dir);
  }

  // Returns a new session whose bytes land in `t`.
  chat::StompSession& open(RecordingTransport& t) {
    sessions.push_back(std::make_shared<chat::StompSession>(hub->shard(0), t, "s" + std::to_string(sessions.size())));
    sessions.back()->start_in_loop();
    return *sessions.back();
  }
  void feed(chat::StompSession& s, std::string_view bytes) {
    s.on_bytes_in_loop(bytes);
    settle();
  }
  // Runs the loop until every publish and history read has been answered and its answer run.
  void settle() {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    do {
      loop.restart();
      loop.poll();
      if (bus->pending.load() > 0) std::this_thread::sleep_for(std::chrono::microseconds(200));
    } while (bus->pending.load() > 0 && std::chrono::steady_clock::now() < deadline);
    loop.restart();
    loop.poll();
  }
  std::string talk(std::string_view text, std::string_view sender = "a") {
    return "SEND\ndestination:/pub/chat/message\n\n{\"type\":\"TALK\",\"roomId\":\"" + room + "\",\"sender\":\"" +
           std::string(sender) + "\",\"message\":\"" + std::string(text) + "\"}";
  }

  std::filesystem::path dir;
  boost::asio::io_context loop;
  std::unique_ptr<store::RoomStore> rooms;
  std::unique_ptr<CountingBus> bus;
  std::unique_ptr<chat::Hub> hub;
  std::vector<std::shared_ptr<chat::StompSession>> sessions;
  std::string room;
};

std::size_t count(const std::string& hay, std::string_view needle) {
  std::size_t n = 0;
  for (auto p = hay.find(needle); p != std::string::npos; p = hay.find(needle, p + 1)) ++n;
  return n;
}

}  // namespace

TEST_F(SessionTest, ConnectNegotiatesVersionAndHeartBeat) {
  RecordingTransport t;
  auto& s = open(t);
  feed(s, std::string("CONNECT\naccept-version:1.0,1.1,1.2\nheart-beat:5000,20000\n\n") + '\0');
  EXPECT_TRUE(s.connected());
  EXPECT_EQ(t.written.rfind("CONNECTED\nversion:1.2\nheart-beat:10000,10000\nserver:chatd/0.1.0\nsession:s0\n\n", 0), 0u)
      << t.written;
}

TEST_F(SessionTest, NoCommonVersionIsAnError) {
  RecordingTransport t;
  auto& s = open(t);
  feed(s, std::string("CONNECT\naccept-version:2.0\n\n") + '\0');
  EXPECT_NE(t.written.find("ERROR\n"), std::string::npos);
  EXPECT_NE(t.written.find("version:1.0,1.1,1.2"), std::string::npos);
  EXPECT_TRUE(t.closed);
}

TEST_F(SessionTest, FramesBeforeConnectAreAnError) {
  RecordingTransport t;
  auto& s = open(t);
  feed(s, std::string("SEND\ndestination:/pub/chat/message\n\n") + '\0');
  EXPECT_EQ(t.written.rfind("ERROR\nmessage:expected CONNECT\n", 0), 0u) << t.written;
  EXPECT_TRUE(t.closed);
}

TEST_F(SessionTest, SubscribeGetsItsReceiptAndMessagesCarryTheSubscription) {
  RecordingTransport a, b;
  auto& sa = open(a);
  auto& sb = open(b);
  for (auto* s : {&sa, &sb}) feed(*s, std::string("CONNECT\naccept-version:1.2\n\n") + '\0');
  feed(sa, "SUBSCRIBE\nid:sub-a\ndestination:/sub/chat/room/" + room + "\nreceipt:r1\n\n" + '\0');
  EXPECT_NE(a.written.find("RECEIPT\nreceipt-id:r1\n\n"), std::string::npos);
  feed(sb, "SUBSCRIBE\nid:x:y\ndestination:/sub/chat/room/" + room + "\n\n" + '\0');
  feed(sb, talk("hello", "b") + "\nreceipt" + '\0');  // body ends at NUL; "\nreceipt" is part of it
  feed(sb, "SEND\ndestination:/pub/chat/message\nreceipt:r2\n\n{\"type\":\"TALK\",\"roomId\":\"" + room +
               "\",\"sender\":\"b\",\"message\":\"hello\"}" + '\0');
  EXPECT_NE(b.written.find("RECEIPT\nreceipt-id:r2\n\n"), std::string::npos) << b.written;
  EXPECT_EQ(count(a.written, "MESSAGE\n"), 1u) << a.written;
  EXPECT_NE(a.written.find("subscription:sub-a\n"), std::string::npos);
  EXPECT_NE(b.written.find("subscription:x\\cy\n"), std::string::npos) << "1.2 escapes ':' in the echoed id";
  EXPECT_NE(a.written.find("\"seq\":1,\"epoch\":\""), std::string::npos);
  EXPECT_NE(a.written.find("destination:/sub/chat/room/" + room + "\n"), std::string::npos);
}

TEST_F(SessionTest, RejectionsGoToTheErrorQueueAndKeepTheSession) {
  RecordingTransport t;
  auto& s = open(t);
  feed(s, std::string("CONNECT\naccept-version:1.2\n\n") + '\0');
  feed(s, std::string("SUBSCRIBE\nid:e\ndestination:/user/queue/errors\n\n") + '\0');
  feed(s, std::string("SEND\ndestination:/pub/chat/message\nreceipt:r\n\n{oops") + '\0');
  feed(s, talk("x").replace(talk("x").find(room), room.size(), "0b7a4c2e-1f3d-4e5a-8b9c-0d1e2f3a4b5c") + '\0');
  feed(s, std::string("SEND\ndestination:/app/elsewhere\n\n{}") + '\0');
  EXPECT_EQ(count(t.written, "destination:/user/queue/errors"), 3u) << t.written;
  EXPECT_NE(t.written.find(R"({"status":400,"error":"the message body is not a JSON object","receipt":"r"})"),
            std::string::npos)
      << "the rejection names the SEND's receipt";
  EXPECT_NE(t.written.find("receipt-id:r\n"), std::string::npos);
  EXPECT_NE(t.written.find(R"({"status":404,"error":"no such room"})"), std::string::npos);
  EXPECT_EQ(t.written.find("RECEIPT\n"), std::string::npos) << "a rejected SEND gets no receipt";
  EXPECT_FALSE(t.closed);
  EXPECT_TRUE(s.connected());
}

TEST_F(SessionTest, ProtocolViolationsCloseWithAnError) {
  struct Case {
    std::string frame;
    std::string message;
  };
  std::vector<Case> cases = {
      {"SUBSCRIBE\nid:1\n\n", "SUBSCRIBE needs a destination"},
      {"SUBSCRIBE\ndestination:/sub/chat/room/" + std::string(36, 'z') + "\nid:1\n\n", "unknown destination"},
      {"SUBSCRIBE\ndestination:/topic/x\nid:1\n\n", "unknown destination"},
      {"SEND\n\n", "SEND needs a destination"},
      {"MESSAGE\n\n", "unexpected MESSAGE frame"},
      {"CONNECT\n\n", "unexpected CONNECT frame"},
      {"BOGUS\n\n", ""},
  };
  for (auto& c : cases) {
    RecordingTransport t;
    auto& s = open(t);
    feed(s, std::string("CONNECT\naccept-version:1.2\n\n") + '\0');
    feed(s, c.frame + '\0');
    EXPECT_NE(t.written.find("ERROR\nmessage:" + c.message), std::string::npos) << c.frame << " -> " << t.written;
    EXPECT_TRUE(t.closed) << c.frame;
  }
}

TEST_F(SessionTest, SubscriptionBounds) {
  RecordingTransport t;
  auto& s = open(t);
  feed(s, std::string("CONNECT\naccept-version:1.2\n\n") + '\0');
  for (int i = 0; i < 3; ++i) feed(s, "SUBSCRIBE\nid:" + std::to_string(i) + "\ndestination:/sub/chat/room/" + room + "\n\n" + '\0');
  EXPECT_FALSE(t.closed);
  feed(s, "SUBSCRIBE\nid:9\ndestination:/sub/chat/room/" + room + "\n\n" + '\0');
  EXPECT_NE(t.written.find("ERROR\nmessage:too many subscriptions"), std::string::npos);
  RecordingTransport d;
  auto& s2 = open(d);
  feed(s2, std::string("CONNECT\naccept-version:1.2\n\n") + '\0');
  feed(s2, "SUBSCRIBE\nid:0\ndestination:/sub/chat/room/" + room + "\n\n" + '\0');
  feed(s2, "SUBSCRIBE\nid:0\ndestination:/sub/chat/room/" + room + "\n\n" + '\0');
  EXPECT_NE(d.written.find("ERROR\nmessage:duplicate subscription id"), std::string::npos);
}

TEST_F(SessionTest, UnsubscribeStopsDelivery) {
  RecordingTransport t;
  auto& s = open(t);
  feed(s, std::string("CONNECT\naccept-version:1.2\n\n") + '\0');
  feed(s, "SUBSCRIBE\nid:0\ndestination:/sub/chat/room/" + room + "\n\n" + '\0');
  feed(s, talk("one") + '\0');
  feed(s, std::string("UNSUBSCRIBE\nid:0\nreceipt:u\n\n") + '\0');
  feed(s, talk("two") + '\0');
  EXPECT_EQ(count(t.written, "MESSAGE\n"), 1u);
  EXPECT_NE(t.written.find("RECEIPT\nreceipt-id:u"), std::string::npos);
}

TEST_F(SessionTest, ASlowReaderIsDisconnectedOthersAreNot) {
  RecordingTransport stalled, fine;
  stalled.reading = false;
  auto& slow = open(stalled);
  auto& fast = open(fine);
  for (auto* s : {&slow, &fast}) {
    feed(*s, std::string("CONNECT\naccept-version:1.2\n\n") + '\0');
    feed(*s, "SUBSCRIBE\nid:0\ndestination:/sub/chat/room/" + room + "\n\n" + '\0');
  }
  for (int i = 0; i < 40; ++i) feed(fast, talk(std::string(300, 'x')) + '\0');
  EXPECT_TRUE(stalled.closed);
  EXPECT_NE(stalled.written.find("ERROR\nmessage:slow consumer"), std::string::npos);
  EXPECT_FALSE(fine.closed);
  EXPECT_EQ(count(fine.written, "MESSAGE\n"), 40u);
  EXPECT_EQ(hub->slow_consumers.load(), 1u);
}

TEST_F(SessionTest, DisconnectSendsReceiptThenCloses) {
  RecordingTransport t;
  auto& s = open(t);
  feed(s, std::string("CONNECT\naccept-version:1.2\n\n") + '\0');
  feed(s, std::string("DISCONNECT\nreceipt:bye\n\n") + '\0');
  EXPECT_NE(t.written.find("RECEIPT\nreceipt-id:bye"), std::string::npos);
  EXPECT_TRUE(t.closed);
}

TEST_F(SessionTest, HeartBeatsAreSentAndSilenceIsFatal) {
  RecordingTransport t;
  auto& s = open(t);
  feed(s, std::string("CONNECT\naccept-version:1.2\nheart-beat:10000,10000\n\n") + '\0');
  auto now = chat::StompSession::Clock::now();
  s.tick_in_loop(now + std::chrono::seconds(10));
  EXPECT_EQ(t.written.back(), '\n');
  s.tick_in_loop(now + std::chrono::seconds(21));
  EXPECT_TRUE(t.closed);
  EXPECT_NE(t.written.find("ERROR\nmessage:heart-beat timeout"), std::string::npos);
}

TEST_F(SessionTest, ConnectDeadline) {
  RecordingTransport t;
  auto& s = open(t);
  s.tick_in_loop(chat::StompSession::Clock::now() + std::chrono::seconds(11));
  EXPECT_TRUE(t.closed);
  EXPECT_NE(t.written.find("ERROR\nmessage:no CONNECT"), std::string::npos);
}

TEST_F(SessionTest, ClosedSessionsLeaveTheirRooms) {
  RecordingTransport a, b;
  auto& sa = open(a);
  auto& sb = open(b);
  for (auto* s : {&sa, &sb}) {
    feed(*s, std::string("CONNECT\naccept-version:1.2\n\n") + '\0');
    feed(*s, "SUBSCRIBE\nid:0\ndestination:/sub/chat/room/" + room + "\n\n" + '\0');
  }
  sa.on_closed_in_loop();
  feed(sb, talk("after a left") + '\0');
  EXPECT_EQ(count(a.written, "MESSAGE\n"), 0u);
  EXPECT_EQ(count(b.written, "MESSAGE\n"), 1u);
  EXPECT_EQ(hub->shard(0).sessions(), 1u);
}

namespace {

// A bus that records the order of subscribe/unsubscribe calls; subscribe() can be held open
// to widen the window between the hub deciding and the bus hearing about it.
class OrderBus final : public bus::MessageBus {
 public:
  void start(bus::DeliverFn) override {}
  void publish(std::string, std::string, bus::PublishOptions, bus::PublishedFn done) override { done({}, 1); }
  void history(bus::HistoryRequest, bus::HistoryFn done) override { done({}, {}); }
  void subscribe(const std::string& room, bus::DoneFn ready) override {
    entered.set_value();
    release.wait();
    record("subscribe " + room);
    ready({});
  }
  void unsubscribe(const std::string& room) override { record("unsubscribe " + room); }
  bool up() const override { return true; }
  std::string describe() const override { return "order"; }
  void stop() override {}

  void record(std::string what) {
    std::lock_guard lock(mu);
    calls.push_back(std::move(what));
  }
  std::promise<void> entered;
  std::shared_future<void> release;
  std::mutex mu;
  std::vector<std::string> calls;
};

// The last subscriber leaves on one worker while the first joins on another: the engine must
// hear subscribe then unsubscribe, the order the interest changed in, never the reverse (that
// would leave the room unsubscribed while a subscriber waits for it).
TEST(HubInterest, BusHearsSubscribeAndUnsubscribeInTheOrderInterestChanged) {
  auto dir = std::filesystem::temp_directory_path() / ("chatd-hub-order-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  store::StoreConfig sc;
  sc.data_dir = dir.string();
  auto rooms = store::make_embedded_store(sc);
  boost::asio::io_context loop;
  OrderBus order;
  std::promise<void> go;
  order.release = go.get_future().share();
  chat::HubConfig hc;
  hc.node_id = "test";
  chat::Hub hub(hc, *rooms, order, std::vector<boost::asio::io_context*>{&loop});

  auto joined = std::async(std::launch::async, [&] { hub.join("r", [](std::error_code) {}); });
  order.entered.get_future().wait();  // the join is inside bus.subscribe()
  auto left = std::async(std::launch::async, [&] { hub.leave("r"); });
  EXPECT_EQ(left.wait_for(std::chrono::milliseconds(100)), std::future_status::timeout)
      << "leave() must wait for the subscribe it follows to reach the bus";
  go.set_value();
  joined.get();
  left.get();
  EXPECT_EQ(order.calls, (std::vector<std::string>{"subscribe r", "unsubscribe r"}));
  std::filesystem::remove_all(dir);
}

}  // namespace
