// StompSession and Hub on one loop, with the real local bus and embedded store; only the
// socket is replaced by a transport that records what would be written.
#include <gtest/gtest.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>
#include <list>
#include <mutex>
#include <thread>

#include "auth/jwt.h"
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
    if (refuse_next > 0) {  // an engine that refuses for a moment (a shard between primaries)
      --refuse_next;
      return done(bus::Error::engine_down, 0, {});
    }
    ++pending;
    inner_->publish(std::move(room), std::move(payload), std::move(o), [this, done = std::move(done)](std::error_code ec, std::uint64_t seq, std::string_view epoch) {
      done(ec, seq, epoch);
      --pending;
    });
  }
  void history(bus::HistoryRequest r, bus::HistoryFn done) override {
    ++pending;
    inner_->history(std::move(r), [this, done = std::move(done)](std::error_code ec, bus::History h) {
      {
        std::lock_guard lock(mu_);
        if (hold_history) {  // answered by release_history(); counts as answered now
          held_.push_back([done, ec, h = std::move(h)]() mutable { done(ec, std::move(h)); });
          --pending;
          return;
        }
      }
      done(ec, std::move(h));
      --pending;
    });
  }
  // Answers the history reads held since hold_history was set, in the order they came.
  void release_history() {
    std::vector<std::function<void()>> held;
    {
      std::lock_guard lock(mu_);
      hold_history = false;
      held.swap(held_);
    }
    for (auto& h : held) h();
  }
  void subscribe(const std::string& room, bus::DoneFn ready) override { inner_->subscribe(room, std::move(ready)); }
  void unsubscribe(const std::string& room) override { inner_->unsubscribe(room); }
  void on_control(bus::ControlFn fn) override { inner_->on_control(std::move(fn)); }
  void delete_history(const std::string& room, bus::DoneFn done) override { inner_->delete_history(room, std::move(done)); }
  void publish_control(bus::ControlMessage m, bus::DoneFn done) override { inner_->publish_control(std::move(m), std::move(done)); }
  bool up() const override { return inner_->up(); }
  std::string describe() const override { return inner_->describe(); }
  void stop() override { inner_->stop(); }

  std::atomic<int> pending{0};
  int refuse_next = 0;  // publishes to refuse before the next one goes through
  bool hold_history = false;  // set under no concurrent read; cleared by release_history()

 private:
  std::unique_ptr<bus::MessageBus> inner_;
  std::mutex mu_;
  std::vector<std::function<void()>> held_;
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
    bc.history_size = 20;
    bus = std::make_unique<CountingBus>(bus::make_local_bus(bc, loop));
    chat::HubConfig hc;
    hc.node_id = "test";
    hc.limits.max_outbound_bytes = 8192;
    hc.limits.max_subscriptions = 3;
    hc.limits.max_replay = 8;
    configure(hc);
    if (with_presence()) presence = bus::make_local_presence(loop);
    hub = std::make_unique<chat::Hub>(hc, *rooms, *bus, std::vector<boost::asio::io_context*>{&loop}, presence.get());
    hub->start();
    hub->create_room("lunch", [&](std::error_code ec, store::Room r) {
      ASSERT_FALSE(ec);
      room = r.id;
    });
  }
  // Lets a derived fixture change the hub's configuration before the hub is built.
  virtual void configure(chat::HubConfig&) {}
  virtual bool with_presence() { return false; }
  void TearDown() override {
    sessions.clear();
    hub.reset();
    if (presence) presence->stop();
    bus->stop();
    std::filesystem::remove_all(dir);
  }

  // Returns a new session whose bytes land in `t`.
  chat::StompSession& open(chat::Transport& t) {
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
    // An answer may ask the bus again (a second history read): done only when a poll that
    // found nothing pending ran nothing either.
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    for (;;) {
      bool idle = bus->pending.load() == 0;
      loop.restart();
      if (loop.poll() == 0 && idle) break;
      if (std::chrono::steady_clock::now() > deadline) break;
      if (bus->pending.load() > 0) std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  }
  std::string talk(std::string_view text, std::string_view sender = "a") {
    return "SEND\ndestination:/pub/chat/message\n\n{\"type\":\"TALK\",\"roomId\":\"" + room + "\",\"sender\":\"" +
           std::string(sender) + "\",\"message\":\"" + std::string(text) + "\"}";
  }

  std::filesystem::path dir;
  boost::asio::io_context loop;
  std::unique_ptr<store::RoomStore> rooms;
  std::unique_ptr<CountingBus> bus;
  std::unique_ptr<bus::Presence> presence;
  std::unique_ptr<chat::Hub> hub;
  std::vector<std::shared_ptr<chat::StompSession>> sessions;
  std::string room;
};

// Returns the seq of every chat MESSAGE in `written`, in order.
std::vector<std::uint64_t> seqs_of(const std::string& written) {
  std::vector<std::uint64_t> out;
  for (auto p = written.find("\"seq\":"); p != std::string::npos; p = written.find("\"seq\":", p + 1))
    out.push_back(std::stoull(written.substr(p + 6)));
  return out;
}

std::vector<std::uint64_t> range(std::uint64_t from, std::uint64_t to) {
  std::vector<std::uint64_t> out;
  for (auto i = from; i <= to; ++i) out.push_back(i);
  return out;
}

// Returns the value of the first `"name":"value"` in `s`.
std::string json_string(const std::string& s, const std::string& name) {
  auto p = s.find("\"" + name + "\":\"");
  if (p == std::string::npos) return {};
  p += name.size() + 4;
  return s.substr(p, s.find('"', p) - p);
}

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
  EXPECT_EQ(t.written.rfind("CONNECTED\nversion:1.2\nheart-beat:10000,10000\nserver:chatd/0.1.0\nsession:test-s0\n\n", 0), 0u)
      << t.written;
}

TEST_F(SessionTest, NoCommonVersionIsAnError) {
  RecordingTransport t;
  auto& s = open(t);
  feed(s, std::string("CONNECT\naccept-version:2.0\nreceipt:c1\n\n") + '\0');
  EXPECT_NE(t.written.find("ERROR\n"), std::string::npos);
  EXPECT_NE(t.written.find("version:1.0,1.1,1.2"), std::string::npos);
  EXPECT_NE(t.written.find("receipt-id:c1\n"), std::string::npos) << t.written;  // like every ERROR a frame causes
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
  const auto at = a.written.find("\"epoch\":\"");
  ASSERT_NE(at, std::string::npos) << a.written;
  const std::string epoch = a.written.substr(at + 9, a.written.find('"', at + 9) - (at + 9));
  EXPECT_NE(b.written.find("RECEIPT\nreceipt-id:r2\nx-seq:1\nx-epoch:" + epoch + "\n\n"), std::string::npos)
      << "the seq and the epoch it counts in, as the MESSAGE has them: " << b.written;
  EXPECT_EQ(count(a.written, "MESSAGE\n"), 1u) << a.written;
  EXPECT_NE(a.written.find("subscription:sub-a\n"), std::string::npos);
  EXPECT_NE(b.written.find("subscription:x\\cy\n"), std::string::npos) << "1.2 escapes ':' in the echoed id";
  EXPECT_NE(a.written.find("\"seq\":1,\"epoch\":\""), std::string::npos);
  EXPECT_NE(a.written.find("destination:/sub/chat/room/" + room + "\n"), std::string::npos);
}

TEST_F(SessionTest, Stomp12ClientAckSubscriptionsGetAnAckHeaderOthersDoNot) {
  RecordingTransport a, b, c;
  auto& sa = open(a);
  auto& sb = open(b);
  auto& sc = open(c);
  feed(sa, std::string("CONNECT\naccept-version:1.2\n\n") + '\0');
  feed(sb, std::string("CONNECT\naccept-version:1.2\n\n") + '\0');
  feed(sc, std::string("CONNECT\naccept-version:1.1\n\n") + '\0');
  feed(sa, "SUBSCRIBE\nid:k:1\nack:client-individual\ndestination:/sub/chat/room/" + room + "\n\n" + '\0');
  feed(sa, std::string("SUBSCRIBE\nid:e\nack:client\ndestination:/user/queue/errors\n\n") + '\0');
  feed(sb, "SUBSCRIBE\nid:auto\ndestination:/sub/chat/room/" + room + "\n\n" + '\0');
  feed(sc, "SUBSCRIBE\nid:old\nack:client\ndestination:/sub/chat/room/" + room + "\n\n" + '\0');
  feed(sb, talk("one", "b") + '\0');
  EXPECT_NE(a.written.find("message-id:" + room + "-1\n"), std::string::npos) << a.written;
  EXPECT_NE(a.written.find("\nsubscription:k\\c1\nack:" + room + "-1\n\n{"), std::string::npos)
      << "1.2 requires an ack header on a client-individual subscription's MESSAGE: " << a.written;
  EXPECT_EQ(b.written.find("\nack:"), std::string::npos) << "auto: no ack header: " << b.written;
  EXPECT_EQ(c.written.find("\nack:"), std::string::npos) << "1.1 ACKs by message-id: " << c.written;

  // The error queue's copy carries one too, and an ACK naming it is taken without complaint.
  feed(sa, std::string("SEND\ndestination:/pub/chat/message\n\n{oops") + '\0');
  const auto error_at = a.written.find("destination:/user/queue/errors\n");
  ASSERT_NE(error_at, std::string::npos) << a.written;
  const auto error_frame = a.written.substr(error_at, a.written.find('\0', error_at) - error_at);
  const auto id_at = error_frame.find("message-id:") + 11;
  const auto message_id = error_frame.substr(id_at, error_frame.find('\n', id_at) - id_at);
  EXPECT_NE(error_frame.find("\nack:" + message_id + "\n"), std::string::npos) << error_frame;
  feed(sa, "ACK\nid:" + room + "-1\n\n" + '\0');
  EXPECT_TRUE(sa.connected());

  // A later auto subscription under the same id gets none.
  feed(sa, std::string("UNSUBSCRIBE\nid:k:1\n\n") + '\0');
  feed(sa, "SUBSCRIBE\nid:k:1\ndestination:/sub/chat/room/" + room + "\n\n" + '\0');
  feed(sb, talk("two", "b") + '\0');
  EXPECT_NE(a.written.find("\nsubscription:k\\c1\n\n{"), std::string::npos) << a.written;
  EXPECT_EQ(count(a.written, "\nack:"), 2u) << a.written;
  EXPECT_FALSE(a.closed);
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
  EXPECT_NE(t.written.find(R"x({"status":400,"error":"the message body must be one JSON object of valid JSON (UTF-8, no unpaired surrogate)","receipt":"r"})x"),
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
      {"SEND\n\n", ""},
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

// A transport that gives up on its reader inside send(), as WsSession does for one past its
// hard bound: the session closes and leaves its rooms in the middle of the room's fan-out.
class DroppingTransport final : public chat::Transport {
 public:
  void send(chat::Outbound&&) override {
    if (drop_next && session) {
      drop_next = false;
      session->on_closed_in_loop();
      return;
    }
    ++sent;
  }
  void close(std::string_view) override {}
  std::size_t queued_bytes() const override { return 0; }

  chat::StompSession* session = nullptr;
  bool drop_next = false;
  std::size_t sent = 0;
};

// The walk over a room's subscribers must survive one of them leaving inside it: with
// swap-and-pop under the walk it went on over the slot past the vector's new end (a moved-from
// subscriber), and a room left empty freed the vector under it.
TEST_F(SessionTest, ASubscriberDroppedInsideTheFanOutDoesNotCostTheOthersTheMessage) {
  RecordingTransport first, last;
  DroppingTransport middle;
  auto& a = open(first);
  auto& b = open(middle);
  middle.session = &b;
  auto& c = open(last);
  for (auto* s : {&a, &b, &c}) {
    feed(*s, std::string("CONNECT\naccept-version:1.2\n\n") + '\0');
    feed(*s, "SUBSCRIBE\nid:0\ndestination:/sub/chat/room/" + room + "\n\n" + '\0');
  }
  middle.drop_next = true;
  middle.sent = 0;  // its CONNECTED
  feed(a, talk("one") + '\0');
  EXPECT_EQ(count(first.written, "MESSAGE\n"), 1u);
  EXPECT_EQ(count(last.written, "MESSAGE\n"), 1u) << "the subscriber after the one that left";
  feed(a, talk("two") + '\0');
  EXPECT_EQ(count(first.written, "MESSAGE\n"), 2u);
  EXPECT_EQ(count(last.written, "MESSAGE\n"), 2u);
  // Before, the walk read the moved-from slot behind the vector's end: the message went out
  // with an empty subscription header.
  EXPECT_EQ(count(last.written, "\nsubscription:0\n"), 2u);
  EXPECT_EQ(middle.sent, 0u) << "nothing reaches a session that closed";
}

class PresenceSessionTest : public SessionTest {
 protected:
  bool with_presence() override { return true; }
  void configure(chat::HubConfig& hc) override { hc.announce_retry = std::chrono::milliseconds(50); }
};

// A Redis Cluster probe lost ENTER/QUIT lines while a slot moved for a few seconds: the
// publish was refused and the announcement dropped. It is sent again after a pause.
TEST_F(PresenceSessionTest, AnAnnouncementTheEngineRefusedIsSentAgain) {
  RecordingTransport t;
  auto& s = open(t);
  feed(s, std::string("CONNECT\naccept-version:1.2\n\n") + '\0');
  feed(s, "SUBSCRIBE\nid:0\ndestination:/sub/chat/room/" + room + "\nreceipt:sub\n\n" + '\0');
  bus->refuse_next = 2;
  feed(s, "SEND\ndestination:/pub/chat/message\nreceipt:in\n\n{\"type\":\"ENTER\",\"roomId\":\"" + room +
              "\",\"sender\":\"amy\"}" + '\0');
  for (int i = 0; i < 40 && t.written.find("receipt-id:in") == std::string::npos; ++i) {
    loop.restart();
    loop.run_for(std::chrono::milliseconds(25));
    settle();
  }
  EXPECT_EQ(bus->refuse_next, 0);
  EXPECT_NE(t.written.find("\"type\":\"ENTER\""), std::string::npos) << t.written;
  const auto enter = t.written.find("\"type\":\"ENTER\""), receipt = t.written.find("receipt-id:in");
  ASSERT_NE(receipt, std::string::npos) << "the ENTER's RECEIPT comes once its announcement is out";
  EXPECT_LT(enter, receipt);
}

class RatedPresenceSessionTest : public PresenceSessionTest {
 protected:
  void configure(chat::HubConfig& hc) override {
    PresenceSessionTest::configure(hc);
    hc.limits.room_send_rate = 1;
    hc.limits.room_send_burst = 4;
  }
};

// A client cycling SUBSCRIBE, ENTER, UNSUBSCRIBE made two announcements a cycle, none of them
// counted against --room-send-rate: an outside probe flooded a room with 10,800 lines in 3 s.
TEST_F(RatedPresenceSessionTest, AnnouncementsCountAgainstTheRoomRate) {
  RecordingTransport watcher_t, cycler_t;
  auto& watcher = open(watcher_t);
  auto& cycler = open(cycler_t);
  for (auto* s : {&watcher, &cycler}) feed(*s, std::string("CONNECT\naccept-version:1.2\n\n") + '\0');
  feed(watcher, "SUBSCRIBE\nid:w\ndestination:/sub/chat/room/" + room + "\n\n" + '\0');
  for (int i = 0; i < 10; ++i) {
    const auto id = std::to_string(i);
    feed(cycler, "SUBSCRIBE\nid:" + id + "\ndestination:/sub/chat/room/" + room + "\n\n" + '\0');
    feed(cycler, "SEND\ndestination:/pub/chat/message\n\n{\"type\":\"ENTER\",\"roomId\":\"" + room + "\",\"sender\":\"bot\"}" + '\0');
    feed(cycler, "UNSUBSCRIBE\nid:" + id + "\n\n" + '\0');
  }
  const auto lines = count(watcher_t.written, "\"type\":\"ENTER\"") + count(watcher_t.written, "\"type\":\"QUIT\"");
  EXPECT_GE(lines, 2u) << "the first join and leave are announced";
  EXPECT_LE(lines, 5u) << "20 announcements against a room burst of 4";
}

TEST_F(SessionTest, DisconnectSendsReceiptThenCloses) {
  RecordingTransport t;
  auto& s = open(t);
  feed(s, std::string("CONNECT\naccept-version:1.2\n\n") + '\0');
  feed(s, std::string("DISCONNECT\nreceipt:bye\n\n") + '\0');
  EXPECT_NE(t.written.find("RECEIPT\nreceipt-id:bye"), std::string::npos);
  EXPECT_TRUE(t.closed);
}

// A SEND's RECEIPT comes once the engine took the message; an ERROR the next frame draws must
// not take it away (the client would resend a message that was published).
TEST_F(SessionTest, AnErrorWaitsForTheReceiptsOfEarlierFrames) {
  RecordingTransport t, watcher;
  auto& w = open(watcher);
  feed(w, std::string("CONNECT\naccept-version:1.2\n\n") + '\0' + "SUBSCRIBE\nid:0\ndestination:/sub/chat/room/" + room +
              "\n\n" + '\0');
  auto& s = open(t);
  feed(s, std::string("CONNECT\naccept-version:1.2\n\n") + '\0');
  std::string send = talk("before the error");
  send.insert(send.find("\n\n"), "\nreceipt:r1");
  feed(s, send + '\0' + "SEND\nreceipt:r2\n\n" + '\0' + talk("after the error") + '\0');
  const auto receipt = t.written.find("RECEIPT\nreceipt-id:r1\n"), error = t.written.find("ERROR\n");
  ASSERT_NE(receipt, std::string::npos) << t.written;
  ASSERT_NE(error, std::string::npos) << t.written;
  EXPECT_LT(receipt, error);
  EXPECT_NE(t.written.find("receipt-id:r2\n", error), std::string::npos) << t.written;
  EXPECT_TRUE(t.closed);
  // The frame after the bad one was not acted on.
  EXPECT_EQ(count(watcher.written, "before the error"), 1u);
  EXPECT_EQ(count(watcher.written, "after the error"), 0u) << watcher.written;
}

TEST_F(SessionTest, AnErrorWaitsForEarlierAnswersOnlySoLong) {
  RecordingTransport t;
  auto& s = open(t);
  feed(s, std::string("CONNECT\naccept-version:1.2\n\n") + '\0');
  std::string send = talk("slow engine");
  send.insert(send.find("\n\n"), "\nreceipt:r1");
  // Not settled: the engine's answer stays queued on the loop, as if it were slow.
  s.on_bytes_in_loop(send + '\0' + "SEND\n\n" + '\0');
  EXPECT_FALSE(t.closed);
  EXPECT_EQ(t.written.find("ERROR\n"), std::string::npos);
  s.tick_in_loop(chat::StompSession::Clock::now() + std::chrono::seconds(3));
  EXPECT_TRUE(t.closed);
  EXPECT_NE(t.written.find("ERROR\nmessage:SEND needs a destination"), std::string::npos) << t.written;
  settle();  // the late answer finds the session closing and writes nothing after the ERROR
  EXPECT_EQ(t.written.find("RECEIPT"), std::string::npos) << t.written;
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
  void publish(std::string, std::string, bus::PublishOptions, bus::PublishedFn done) override { done({}, 1, "e1"); }
  void history(bus::HistoryRequest, bus::HistoryFn done) override { done({}, {}); }
  void subscribe(const std::string& room, bus::DoneFn ready) override {
    entered.set_value();
    release.wait();
    record("subscribe " + room);
    ready({});
  }
  void unsubscribe(const std::string& room) override { record("unsubscribe " + room); }
  void on_control(bus::ControlFn) override {}
  void delete_history(const std::string&, bus::DoneFn done) override { done({}); }
  void publish_control(bus::ControlMessage, bus::DoneFn done) override { done({}); }
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
// would leave the room unsubscribed while a subscriber waits for it). Neither worker waits for
// the bus: the calls run in order on one strand.
TEST(HubInterest, BusHearsSubscribeAndUnsubscribeInTheOrderInterestChanged) {
  auto dir = std::filesystem::temp_directory_path() / ("chatd-hub-order-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  store::StoreConfig sc;
  sc.data_dir = dir.string();
  auto rooms = store::make_embedded_store(sc);
  boost::asio::io_context loop;
  auto work = boost::asio::make_work_guard(loop);
  std::thread runner([&] { loop.run(); });
  OrderBus order;
  std::promise<void> go;
  order.release = go.get_future().share();
  chat::HubConfig hc;
  hc.node_id = "test";
  {
    chat::Hub hub(hc, *rooms, order, std::vector<boost::asio::io_context*>{&loop});
    auto joined = std::async(std::launch::async, [&] { hub.join("r", 0, [](std::error_code) {}); });
    EXPECT_EQ(joined.wait_for(std::chrono::seconds(5)), std::future_status::ready) << "join() waited for the bus";
    order.entered.get_future().wait();  // the strand is inside bus.subscribe()
    auto left = std::async(std::launch::async, [&] { hub.leave("r", 0); });
    EXPECT_EQ(left.wait_for(std::chrono::seconds(5)), std::future_status::ready)
        << "leave() waited for the subscribe it follows";
    {
      std::lock_guard lock(order.mu);
      EXPECT_EQ(order.calls, std::vector<std::string>{}) << "the unsubscribe overtook the held subscribe";
    }
    go.set_value();
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    for (;;) {
      {
        std::lock_guard lock(order.mu);
        if (order.calls.size() >= 2 || std::chrono::steady_clock::now() > deadline) break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    std::lock_guard lock(order.mu);
    EXPECT_EQ(order.calls, (std::vector<std::string>{"subscribe r", "unsubscribe r"}));
  }
  work.reset();
  runner.join();
  std::filesystem::remove_all(dir);
}

// Deliveries go only to the shards that have a subscriber of the room.
TEST(HubInterest, CountsInterestPerShard) {
  boost::asio::io_context loop;
  OrderBus order;
  std::promise<void> go;
  go.set_value();
  order.release = go.get_future().share();
  chat::RoomInterest interest(order, loop, 3);
  std::vector<std::size_t> shards;
  EXPECT_FALSE(interest.shards_with("r", shards));
  interest.join("r", 2, [](std::error_code) {});
  interest.join("r", 0, [](std::error_code) {});
  interest.join("r", 2, [](std::error_code) {});
  ASSERT_TRUE(interest.shards_with("r", shards));
  EXPECT_EQ(shards, (std::vector<std::size_t>{0, 2}));
  interest.leave("r", 2);
  ASSERT_TRUE(interest.shards_with("r", shards));
  EXPECT_EQ(shards, (std::vector<std::size_t>{0, 2}));
  interest.leave("r", 0);
  ASSERT_TRUE(interest.shards_with("r", shards));
  EXPECT_EQ(shards, (std::vector<std::size_t>{2}));
  interest.leave("r", 2);
  EXPECT_FALSE(interest.shards_with("r", shards));
  EXPECT_TRUE(shards.empty());
  loop.run();  // the bus hears one subscribe and one unsubscribe
  EXPECT_EQ(order.calls, (std::vector<std::string>{"subscribe r", "unsubscribe r"}));
}

}  // namespace

// Finding 11: a SUBSCRIBE to a room that does not exist is refused on the error queue (404,
// naming its receipt), gets no RECEIPT and makes no subscription; the session goes on.
TEST_F(SessionTest, SubscribeToAnUnknownRoomIsRefusedWithoutASubscription) {
  RecordingTransport t;
  auto& s = open(t);
  feed(s, std::string("CONNECT\naccept-version:1.2\n\n") + '\0');
  feed(s, std::string("SUBSCRIBE\nid:e\ndestination:/user/queue/errors\n\n") + '\0');
  const std::string ghost = "0b7a4c2e-1f3d-4e5a-8b9c-0d1e2f3a4b5c";
  feed(s, "SUBSCRIBE\nid:g\ndestination:/sub/chat/room/" + ghost + "\nreceipt:rg\n\n" + '\0');
  EXPECT_NE(t.written.find(R"({"status":404,"error":"no such room","receipt":"rg"})"), std::string::npos) << t.written;
  EXPECT_NE(t.written.find("receipt-id:rg\n"), std::string::npos);
  EXPECT_EQ(t.written.find("RECEIPT\n"), std::string::npos) << "a refused SUBSCRIBE gets no RECEIPT";
  EXPECT_EQ(hub->refusals.get(chat::Refusal::subscribe_unknown_room), 1u);
  EXPECT_TRUE(s.connected());
  // No subscription was made: the id is free again, and a real room still subscribes.
  feed(s, "SUBSCRIBE\nid:g\ndestination:/sub/chat/room/" + room + "\nreceipt:ok\n\n" + '\0');
  EXPECT_NE(t.written.find("RECEIPT\nreceipt-id:ok\n"), std::string::npos) << t.written;
  feed(s, talk("hi") + '\0');
  EXPECT_EQ(count(t.written, "MESSAGE\ndestination:/sub/chat/room/"), 1u) << t.written;
}

// A room made on another node (or before a restart) is not in this node's cache: the store
// is asked, and the subscription then works like any other.
TEST_F(SessionTest, SubscribeToARoomOnlyTheStoreKnowsWorks) {
  store::Room other{"5c0ffee0-1111-4222-8333-444455556666", "elsewhere"};
  std::error_code made = make_error_code(std::errc::io_error);
  rooms->create(other, [&](std::error_code ec) { made = ec; });
  settle();
  ASSERT_FALSE(made);
  RecordingTransport t;
  auto& s = open(t);
  feed(s, std::string("CONNECT\naccept-version:1.2\n\n") + '\0');
  feed(s, "SUBSCRIBE\nid:0\ndestination:/sub/chat/room/" + other.id + "\nreceipt:r\n\n" + '\0');
  EXPECT_NE(t.written.find("RECEIPT\nreceipt-id:r\n"), std::string::npos) << t.written;
  EXPECT_EQ(hub->refusals.get(chat::Refusal::subscribe_unknown_room), 0u);
}

// Finding 3: past its burst a connection's SENDs get 429 on the error queue; one that keeps
// sending at more than twice its rate is disconnected.
TEST_F(SessionTest, SendRateLimitThenDisconnect) {
  loop.poll();  // Hub::start posted work for this hub: let it run before the hub goes
  hub.reset();
  chat::HubConfig hc;
  hc.node_id = "test";
  hc.limits.send_rate = 1;
  hc.limits.send_burst = 5;
  hub = std::make_unique<chat::Hub>(hc, *rooms, *bus, std::vector<boost::asio::io_context*>{&loop});
  hub->start();
  RecordingTransport t;
  auto& s = open(t);
  feed(s, std::string("CONNECT\naccept-version:1.2\n\n") + '\0');
  feed(s, std::string("SUBSCRIBE\nid:e\ndestination:/user/queue/errors\n\n") + '\0');
  feed(s, "SUBSCRIBE\nid:r\ndestination:/sub/chat/room/" + room + "\n\n" + '\0');
  for (int i = 0; i < 5; ++i) feed(s, talk("ok") + '\0');
  EXPECT_EQ(count(t.written, "\"message\":\"ok\""), 5u) << t.written;
  EXPECT_FALSE(t.closed);
  feed(s, talk("over") + '\0');
  EXPECT_NE(t.written.find(R"x({"status":429,"error":"too many messages: slow down (--send-rate)"})x"), std::string::npos)
      << t.written;
  EXPECT_EQ(count(t.written, "\"message\":\"over\""), 0u);
  EXPECT_FALSE(t.closed) << "one refusal is not abuse";
  for (int i = 0; i < 10 && !t.closed; ++i) feed(s, talk("over") + '\0');
  EXPECT_TRUE(t.closed);
  EXPECT_NE(t.written.find("ERROR\nmessage:too many messages"), std::string::npos);
  EXPECT_EQ(hub->refusals.get(chat::Refusal::send_rate), 5u);
  EXPECT_EQ(hub->refusals.get(chat::Refusal::send_flood), 1u);
}

namespace {

class HistoryTest : public SessionTest {
 protected:
  // Sends n TALKs from a session of its own and waits for them.
  void say(int n) {
    auto& t = kept.emplace_back();
    auto& s = open(t);
    feed(s, std::string("CONNECT\naccept-version:1.2\n\n") + '\0');
    for (int i = 0; i < n; ++i) feed(s, talk("m" + std::to_string(i)) + '\0');
  }
  // Returns a connected session subscribed to the room with `headers` ("x-history:3\n").
  chat::StompSession& join(RecordingTransport& t, const std::string& headers) {
    auto& s = open(t);
    feed(s, std::string("CONNECT\naccept-version:1.2\n\n") + '\0');
    feed(s, "SUBSCRIBE\nid:0\ndestination:/sub/chat/room/" + room + "\n" + headers + "\n" + '\0');
    return s;
  }
  std::string epoch() {
    auto& t = kept.emplace_back();
    join(t, "x-history:1\n");
    return json_string(t.written, "epoch");
  }
  std::list<RecordingTransport> kept;  // transports of helper sessions, which outlive the call
};

}  // namespace

TEST_F(HistoryTest, NoHeadersNoHistory) {
  say(3);
  RecordingTransport t;
  auto& s = join(t, "");
  feed(s, talk("live") + '\0');
  EXPECT_EQ(seqs_of(t.written), (std::vector<std::uint64_t>{4}));
}

TEST_F(HistoryTest, JoinWithHistoryGetsTheLastNThenLive) {
  say(10);
  RecordingTransport t;
  auto& s = join(t, "x-history:3\n");
  feed(s, talk("live") + '\0');
  EXPECT_EQ(seqs_of(t.written), (std::vector<std::uint64_t>{8, 9, 10, 11}));
  EXPECT_EQ(count(t.written, "HISTORY"), 0u) << "a join is never told anything: " << t.written;
  EXPECT_FALSE(json_string(t.written, "epoch").empty());
  EXPECT_NE(t.written.find("message-id:" + room + "-8\n"), std::string::npos) << "history frames look like live ones";

  RecordingTransport big;
  join(big, "x-history:500\n");
  EXPECT_EQ(seqs_of(big.written), range(4, 11)) << "x-history is capped at --max-replay (8 here)";
}

// A history read outlives an UNSUBSCRIBE; a later SUBSCRIBE may take the same id (a STOMP 1.0
// client's id is its destination) for another room. The old read's answer must go nowhere:
// before, room A's replay came on subscription 0, now room B's, and B's replay was cut short.
TEST_F(HistoryTest, AReadForAnEndedSubscriptionGoesNowhereWhenItsIdIsTakenAgain) {
  say(5);
  std::string other;
  hub->create_room("dinner", [&](std::error_code ec, store::Room r) {
    ASSERT_FALSE(ec);
    other = r.id;
  });
  settle();
  auto& w = open(kept.emplace_back());
  feed(w, std::string("CONNECT\naccept-version:1.2\n\n") + '\0');
  for (int i = 0; i < 3; ++i)
    feed(w, "SEND\ndestination:/pub/chat/message\n\n{\"type\":\"TALK\",\"roomId\":\"" + other +
                "\",\"sender\":\"b\",\"message\":\"d" + std::to_string(i) + "\"}" + '\0');

  RecordingTransport t;
  bus->hold_history = true;
  auto& s = join(t, "x-history:5\n");  // room A's read is held
  feed(s, "UNSUBSCRIBE\nid:0\n\n" + std::string(1, '\0') + "SUBSCRIBE\nid:0\ndestination:/sub/chat/room/" + other +
              "\nx-history:3\n\n" + '\0');
  bus->release_history();
  settle();
  EXPECT_EQ(count(t.written, "destination:/sub/chat/room/" + room + "\n"), 0u) << t.written;
  EXPECT_EQ(count(t.written, "destination:/sub/chat/room/" + other + "\n"), 3u) << t.written;
  EXPECT_EQ(seqs_of(t.written), range(1, 3));
}

TEST_F(HistoryTest, ResumeSendsWhatWasMissedOnceThenLive) {
  say(5);
  auto e = epoch();
  say(4);
  RecordingTransport t;
  auto& s = join(t, "x-since-seq:5\nx-epoch:" + e + "\n");
  feed(s, talk("live") + '\0');
  EXPECT_EQ(seqs_of(t.written), range(6, 10));
  EXPECT_EQ(count(t.written, "HISTORY"), 0u) << t.written;

  RecordingTransport none;
  join(none, "x-since-seq:10\nx-epoch:" + e + "\n");
  EXPECT_TRUE(seqs_of(none.written).empty()) << "nothing missed, nothing sent";
  EXPECT_EQ(count(none.written, "HISTORY"), 0u) << none.written;
}

TEST_F(HistoryTest, AStaleEpochIsToldThenGetsWhatThereIs) {
  say(3);
  RecordingTransport t;
  join(t, "x-since-seq:2\nx-epoch:gone-epoch\n");
  EXPECT_NE(t.written.find("x-history-status:reset\n"), std::string::npos) << t.written;
  EXPECT_NE(t.written.find(R"("status":"reset","reason":"epoch")"), std::string::npos) << t.written;
  EXPECT_NE(t.written.find(R"("askedEpoch":"gone-epoch")"), std::string::npos);
  EXPECT_NE(t.written.find(R"("fromSeq":1)"), std::string::npos);
  EXPECT_EQ(seqs_of(t.written), range(1, 3)) << "the notice first, then everything of the current epoch";
  EXPECT_LT(t.written.find("HISTORY"), t.written.find("\"seq\":1,"));
}

TEST_F(HistoryTest, ASeqAheadOfTheRoomIsToldAsAReset) {
  say(2);
  RecordingTransport t;
  join(t, "x-since-seq:50\nx-epoch:" + epoch() + "\n");
  EXPECT_NE(t.written.find(R"("status":"reset","reason":"ahead")"), std::string::npos) << t.written;
  EXPECT_EQ(seqs_of(t.written), range(1, 2));
}

// Clients that ask for history and never read would each hold a replay (~5 MB at the defaults)
// past their --max-outbound-bytes: the node lends that room from --max-history-memory, and a
// replay it cannot cover is cut to its newest messages that fit, with a notice.
class HistoryMemoryTest : public HistoryTest {
  void configure(chat::HubConfig& hc) override { hc.limits.max_history_memory = 20000; }
};

TEST_F(HistoryMemoryTest, ReplaysPastTheBoundShareTheNodesHistoryMemoryAndGiveItBack) {
  auto& w = open(kept.emplace_back());
  feed(w, std::string("CONNECT\naccept-version:1.2\n\n") + '\0');
  for (int i = 0; i < 8; ++i) feed(w, talk(std::string(3000, 'a' + i)) + '\0');  // 8 x ~3.3 KB, past 8 KiB

  RecordingTransport a, b;
  a.reading = b.reading = false;  // neither takes a byte
  auto& sa = join(a, "x-history:8\n");
  EXPECT_EQ(seqs_of(a.written), range(1, 8)) << "lent what it needs past its own 8 KiB";
  EXPECT_EQ(count(a.written, "HISTORY"), 0u);
  const auto lent = hub->history_memory().used();
  EXPECT_GT(lent, 15000u);

  auto& sb = join(b, "x-since-seq:0\n");
  const auto got = seqs_of(b.written);
  ASSERT_FALSE(got.empty());
  EXPECT_LT(got.size(), 8u) << "the rest of the memory covers only part of it";
  EXPECT_EQ(got, range(9 - got.size(), 8)) << "the newest, in order";
  EXPECT_EQ(count(b.written, "\"reason\":\"memory\""), 1u) << b.written;
  EXPECT_NE(b.written.find("\"fromSeq\":" + std::to_string(got.front())), std::string::npos) << "where paging starts";
  EXPECT_LE(hub->history_memory().used(), 20000u);

  // Each gives back its share: once its client has taken what waited, or when it closes.
  sa.tick_in_loop(chat::StompSession::Clock::now());
  EXPECT_GT(hub->history_memory().used(), 0u) << "a still holds it: nothing was read";
  a.reading = true;
  sa.tick_in_loop(chat::StompSession::Clock::now());
  sb.on_closed_in_loop();
  EXPECT_EQ(hub->history_memory().used(), 0u);
  EXPECT_EQ(hub->counters().refusals[static_cast<std::size_t>(chat::Refusal::history_memory)], 1u);
}

TEST_F(HistoryTest, AResumeFromBeforeRetentionIsPartial) {
  say(30);  // history-size 20: 11..30 kept
  auto e = epoch();
  RecordingTransport t;
  join(t, "x-since-seq:5\nx-epoch:" + e + "\n");
  EXPECT_NE(t.written.find("x-history-status:partial\n"), std::string::npos) << t.written;
  EXPECT_NE(t.written.find(R"("status":"partial","reason":"retention")"), std::string::npos) << t.written;
  EXPECT_NE(t.written.find(R"("firstSeq":11,"lastSeq":30,"fromSeq":23,"sinceSeq":5)"), std::string::npos) << t.written;
  EXPECT_EQ(seqs_of(t.written), range(23, 30)) << "the newest --max-replay";

  RecordingTransport capped;
  join(capped, "x-since-seq:12\nx-epoch:" + e + "\n");
  EXPECT_NE(capped.written.find(R"("status":"partial","reason":"replay-limit")"), std::string::npos) << capped.written;
  EXPECT_EQ(seqs_of(capped.written), range(23, 30));

  RecordingTransport whole;
  join(whole, "x-since-seq:22\nx-epoch:" + e + "\n");
  EXPECT_EQ(count(whole.written, "HISTORY"), 0u) << whole.written;
  EXPECT_EQ(seqs_of(whole.written), range(23, 30));
}

TEST_F(HistoryTest, MalformedHistoryHeadersAreProtocolErrors) {
  for (std::string h : {"x-history:many\n", "x-since-seq:-1\n", "x-since-seq:1\nx-epoch:a b\n", "x-history:\n"}) {
    RecordingTransport t;
    join(t, h);
    EXPECT_NE(t.written.find("ERROR\nmessage:bad x-"), std::string::npos) << h << " -> " << t.written;
    EXPECT_TRUE(t.closed);
  }
}

TEST_F(HistoryTest, AClientIdIsPublishedOnceAndItsReceiptsCarryTheSeq) {
  RecordingTransport watcher, t;
  join(watcher, "");
  auto& s = open(t);
  feed(s, std::string("CONNECT\naccept-version:1.2\n\n") + '\0');
  feed(s, std::string("SUBSCRIBE\nid:e\ndestination:/user/queue/errors\n\n") + '\0');
  auto body = talk("once").substr(talk("once").find("\n\n"));
  feed(s, "SEND\ndestination:/pub/chat/message\nx-client-id:abc-1\nreceipt:r1" + body + '\0');
  feed(s, "SEND\ndestination:/pub/chat/message\nx-client-id:abc-1\nreceipt:r2" + body + '\0');
  feed(s, "SEND\ndestination:/pub/chat/message\nreceipt:r3" + body + '\0');
  EXPECT_NE(t.written.find("RECEIPT\nreceipt-id:r1\nx-seq:1\n"), std::string::npos) << t.written;
  EXPECT_NE(t.written.find("RECEIPT\nreceipt-id:r2\nx-seq:1\n"), std::string::npos) << "a retry: the same answer";
  EXPECT_NE(t.written.find("RECEIPT\nreceipt-id:r3\nx-seq:2\n"), std::string::npos);
  EXPECT_EQ(seqs_of(watcher.written), (std::vector<std::uint64_t>{1, 2})) << "published once";

  feed(s, "SEND\ndestination:/pub/chat/message\nx-client-id:" + std::string(200, 'x') + "\nreceipt:r4" + body + '\0');
  EXPECT_NE(t.written.find("x-client-id must be"), std::string::npos) << t.written;
  EXPECT_FALSE(t.closed);
}

// Returns a JwtConfig with what `set` changes (designated initializers would have to name every field).
template <class F>
chatd::auth::JwtConfig config(F set) {
  chatd::auth::JwtConfig c;
  set(c);
  return c;
}

// --auth jwt: the real verifier over an HS256 secret file, with a clock the test moves.
class AuthSessionTest : public SessionTest {
 protected:
  void configure(chat::HubConfig& hc) override {
    std::filesystem::create_directories(dir);
    auto secret = dir / "secret";
    std::ofstream(secret) << kSecret;
    auto v = std::make_shared<auth::JwtVerifier>(config([&](auth::JwtConfig& c) { c.secret_file = secret.string(); c.clock_skew = std::chrono::seconds(0); }));
    v->set_clock([this] { return now.load(); });
    hc.verifier = v;
  }
  std::string token(std::string_view sub, std::string_view name, std::int64_t exp) {
    return auth::mint_hs256(kSecret, "{\"sub\":\"" + std::string(sub) + "\",\"name\":\"" + std::string(name) +
                                         "\",\"exp\":" + std::to_string(exp) + "}");
  }
  // Returns a session connected with `header` (e.g. "passcode:<token>") in its CONNECT.
  chat::StompSession& connect(RecordingTransport& t, const std::string& header) {
    auto& s = open(t);
    feed(s, "CONNECT\naccept-version:1.2\n" + header + "\n\n" + '\0');
    return s;
  }
  static constexpr std::string_view kSecret = "a-test-secret-of-at-least-32-bytes!!";
  std::atomic<std::int64_t> now{1'800'000'000};
};

TEST_F(AuthSessionTest, ConnectWithoutATokenIsRefused) {
  RecordingTransport t;
  auto& s = open(t);
  feed(s, std::string("CONNECT\naccept-version:1.2\n\n") + '\0');
  EXPECT_EQ(t.written.rfind("ERROR\nmessage:unauthorized (no token)\n", 0), 0u) << t.written;
  EXPECT_TRUE(t.closed);
  EXPECT_FALSE(s.connected());
  EXPECT_EQ(hub->refusals.get(chat::Refusal::auth_failed), 1u);
}

TEST_F(AuthSessionTest, ExpiredOrForgedTokensAreRefusedWithTheReason) {
  RecordingTransport a, b;
  connect(a, "Authorization:Bearer " + token("u1", "짱구", now - 1));
  EXPECT_EQ(a.written.rfind("ERROR\nmessage:unauthorized (token expired)\n", 0), 0u) << a.written;
  EXPECT_TRUE(a.closed);
  auto forged = auth::mint_hs256("another-secret-of-at-least-32-bytes!", R"({"sub":"u1"})");
  connect(b, "passcode:" + forged);
  EXPECT_EQ(b.written.rfind("ERROR\nmessage:unauthorized (bad signature)\n", 0), 0u) << b.written;
}

TEST_F(AuthSessionTest, SenderComesFromTheTokenAndSpoofingIsRefused) {
  RecordingTransport t;
  auto& s = connect(t, "Authorization:Bearer " + token("u1", "짱구", now + 60));
  ASSERT_TRUE(s.connected()) << t.written;
  ASSERT_NE(s.identity(), nullptr);
  EXPECT_EQ(s.identity()->user, "u1");
  EXPECT_EQ(s.identity()->name, "짱구");
  feed(s, "SUBSCRIBE\nid:e\ndestination:/user/queue/errors\n\n" + std::string(1, '\0') + "SUBSCRIBE\nid:r\ndestination:/sub/chat/room/" +
              room + "\nreceipt:r1\n\n" + std::string(1, '\0'));
  t.written.clear();
  // Someone else's name, for TALK and for ENTER: refused, the session stays.
  feed(s, talk("hi", "철수") + '\0');
  feed(s, "SEND\ndestination:/pub/chat/message\n\n{\"type\":\"ENTER\",\"roomId\":\"" + room + "\",\"sender\":\"철수\"}" + '\0');
  EXPECT_EQ(count(t.written, "\"status\":403"), 2u) << t.written;
  EXPECT_EQ(count(t.written, "sender must be your own name"), 2u) << t.written;
  EXPECT_TRUE(s.connected());
  // Its own name, or none at all: delivered as the token's name.
  feed(s, talk("mine", "짱구") + '\0');
  feed(s, "SEND\ndestination:/pub/chat/message\n\n{\"type\":\"TALK\",\"roomId\":\"" + room + "\",\"message\":\"anon\"}" + '\0');
  EXPECT_EQ(count(t.written, "\"sender\":\"짱구\""), 2u) << t.written;
  EXPECT_EQ(count(t.written, "철수"), 0u) << t.written;
}

TEST_F(AuthSessionTest, AnExpiringTokenClosesTheLiveSession) {
  RecordingTransport t;
  auto& s = connect(t, "passcode:" + token("u1", "짱구", now + 5));
  ASSERT_TRUE(s.connected()) << t.written;
  s.tick_in_loop(std::chrono::steady_clock::now());
  EXPECT_FALSE(t.closed);
  now += 5;
  s.tick_in_loop(std::chrono::steady_clock::now());
  EXPECT_TRUE(t.closed);
  EXPECT_NE(t.written.find("ERROR\nmessage:token expired\n"), std::string::npos) << t.written;
}

TEST_F(AuthSessionTest, TheUrlTokenServesWhenConnectHasNone) {
  RecordingTransport t;
  auto& s = open(t);
  s.set_url_token(token("u2", "Ann", now + 60));
  feed(s, std::string("CONNECT\naccept-version:1.2\n\n") + '\0');
  ASSERT_TRUE(s.connected()) << t.written;
  EXPECT_EQ(s.identity()->user, "u2");
}

TEST_F(AuthSessionTest, CloseUserEndsEverySessionOfThatUserOnly) {
  RecordingTransport a, b, c;
  connect(a, "passcode:" + token("u1", "짱구", now + 60));
  connect(b, "passcode:" + token("u1", "짱구", now + 60));
  connect(c, "passcode:" + token("u2", "철수", now + 60));
  EXPECT_EQ(hub->shard(0).close_user_in_loop("u1", "removed by an operator"), 2u);
  EXPECT_TRUE(a.closed);
  EXPECT_TRUE(b.closed);
  EXPECT_FALSE(c.closed);
  EXPECT_NE(a.written.find("ERROR\nmessage:disconnected\n"), std::string::npos) << a.written;
}

TEST_F(SessionTest, WithoutAuthTheBodySenderIsTrustedAndThereIsNoIdentity) {
  RecordingTransport t;
  auto& s = open(t);
  feed(s, std::string("CONNECT\naccept-version:1.2\npasscode:whatever\n\n") + '\0');
  ASSERT_TRUE(s.connected());
  EXPECT_EQ(s.identity(), nullptr);
}

// Every connection carries a StompSession from its upgrade on (bench/run.sh's idle scenario:
// at most 2 KiB of RSS per idle connection, issue 15). State only a subscriber needs belongs in
// StompSession::Joined, made at first use; 584 bytes on x86-64 with libstdc++ when this was
// written, 792 when the maps were members.
TEST(StompSessionSize, AnIdleSessionCarriesNoSubscriptionMaps) {
  EXPECT_LE(sizeof(chat::StompSession), 600u) << "per-connection state grew: move what only subscribers need into Joined";
}
