// The redis bus: one channel per room (chatd:room:<roomId>), so Redis sends a node only the
// rooms it has subscribers for. A Lua script stamps the room's sequence (INCR chatd:seq:<roomId>)
// and PUBLISHes "<seq> <payload>" in one step; Redis runs scripts one at a time, so sequence
// order is delivery order on every node.
//
// Two connections on the engine thread: "publish" (pipelined EVAL, never waits for one reply
// before sending the next) and "subscribe" (pub/sub mode). Redis pub/sub keeps nothing: a node
// that is not subscribed, or not connected, when a message is published never sees it.
#include <boost/asio/post.hpp>

#include <hiredis/hiredis.h>

#include <charconv>
#include <unordered_map>

#include "bus/message_bus.h"
#include "redis/connection.h"
#include "redis/endpoint.h"
#include "redis/loop.h"

namespace chatd::bus {
namespace {

constexpr std::string_view kChannelPrefix = "chatd:room:";
constexpr std::string_view kSeqPrefix = "chatd:seq:";
// Until Redis keeps history (issue 9, history-engines): one fixed epoch, no history.
constexpr std::string_view kEpoch = "0";

// KEYS[1] = the room's seq key, ARGV[1] = its channel, ARGV[2] = the payload.
// Returns the message's seq.
constexpr const char* kPublishScript = R"lua(
local seq = redis.call('INCR', KEYS[1])
redis.call('PUBLISH', ARGV[1], string.format('%d ', seq) .. ARGV[2])
return seq
)lua";

std::string channel_of(std::string_view room) { return std::string(kChannelPrefix) + std::string(room); }

std::string_view str(const redisReply* r) {
  return r && r->type == REDIS_REPLY_STRING ? std::string_view(r->str, r->len) : std::string_view{};
}

// One room this node wants. `pending` counts (UN)SUBSCRIBEs whose reply has not come back:
// Redis answers in order, so when it reaches 0 the server's state is our last command.
struct RoomSub {
  bool wanted = false;
  bool confirmed = false;
  int pending = 0;
  std::vector<DoneFn> waiters;  // subscribe() calls waiting for the confirmation
};

class Core : public std::enable_shared_from_this<Core> {
 public:
  Core(boost::asio::io_context& io, const redis::Endpoint& ep) : io_(io), display_(ep.display()) {}

  // Separate from the constructor: the hooks need a finished object.
  void init(const redis::Endpoint& ep) {
    pub_ = redis::Connection::create(io_, ep, {.name = "publish"}, {});
    script_ = pub_->add_script(kPublishScript);
    sub_ = redis::Connection::create(
        io_, ep, {.name = "subscribe", .health_ping = false},
        {.on_up = [this] { on_sub_up_in_loop(); },
         .on_down = [this](const std::string&) { on_sub_down_in_loop(); },
         .on_push = [this](const redisReply& r) { on_push_in_loop(r); }});
  }

  void start_in_loop(DeliverFn deliver) {
    deliver_ = std::move(deliver);
    pub_->start_in_loop();
    sub_->start_in_loop();
  }

  void publish_in_loop(std::string room, std::string payload, PublishedFn done) {
    std::string key = std::string(kSeqPrefix) + room;
    pub_->eval_in_loop(script_, {std::move(key)}, {channel_of(room), std::move(payload)},
                       [done = std::move(done)](redis::Status st, const redisReply* r) {
                         if (st == redis::Status::stopped) return done(Error::stopped, 0);
                         if (st == redis::Status::down) return done(Error::engine_down, 0);
                         if (r->type != REDIS_REPLY_INTEGER) return done(Error::rejected, 0);
                         done({}, static_cast<std::uint64_t>(r->integer));
                       });
  }

  void subscribe_in_loop(const std::string& room, DoneFn ready) {
    if (stopped_in_loop_) return ready(Error::stopped);
    RoomSub& rs = rooms_[room];
    rs.waiters.push_back(std::move(ready));
    if (rs.wanted && rs.confirmed) return fire(rs, {});
    const bool was_wanted = std::exchange(rs.wanted, true);
    if (!sub_->up()) {
      // Still wanted: subscribed when the connection comes (back) up. During the first
      // connect the caller just waits for that.
      if (sub_ever_up_) fire(rs, Error::engine_down);
      return;
    }
    // A SUBSCRIBE already in flight will confirm; after an UNSUBSCRIBE in flight, send anew.
    if (!was_wanted || rs.pending == 0) send_subscribe(room, rs);
  }

  void unsubscribe_in_loop(const std::string& room) {
    auto it = rooms_.find(room);
    if (it == rooms_.end() || !it->second.wanted) return;
    RoomSub& rs = it->second;
    rs.wanted = false;
    rs.confirmed = false;
    fire(rs, std::make_error_code(std::errc::operation_canceled));
    if (sub_->unsubscribe_in_loop(channel_of(room))) ++rs.pending;
    if (rs.pending == 0) rooms_.erase(it);
  }

  void stop_in_loop() {
    if (stopped_in_loop_) return;
    stopped_in_loop_ = true;
    pub_->stop_in_loop();  // pending publishes get Error::stopped
    sub_->stop_in_loop();
    for (auto& [room, rs] : rooms_) fire(rs, Error::stopped);
    rooms_.clear();
    deliver_ = nullptr;
  }

  void send_subscribe(const std::string& room, RoomSub& rs) {
    if (sub_->subscribe_in_loop(channel_of(room))) ++rs.pending;
  }

  static void fire(RoomSub& rs, std::error_code ec) {
    auto waiters = std::move(rs.waiters);
    rs.waiters.clear();
    for (auto& w : waiters) w(ec);
  }

  // Every room wanted here is subscribed again on each (re)connect.
  void on_sub_up_in_loop() {
    sub_ever_up_ = true;
    for (auto& [room, rs] : rooms_)
      if (rs.wanted) send_subscribe(room, rs);
  }

  void on_sub_down_in_loop() {
    for (auto it = rooms_.begin(); it != rooms_.end();) {
      RoomSub& rs = it->second;
      rs.confirmed = false;
      rs.pending = 0;
      fire(rs, Error::engine_down);
      it = rs.wanted ? std::next(it) : rooms_.erase(it);
    }
  }

  void on_push_in_loop(const redisReply& r) {
    if (r.type != REDIS_REPLY_ARRAY || r.elements < 3) return;
    const std::string_view kind = str(r.element[0]);
    const std::string_view channel = str(r.element[1]);
    if (!channel.starts_with(kChannelPrefix)) return;
    const std::string room(channel.substr(kChannelPrefix.size()));
    auto it = rooms_.find(room);
    if (it == rooms_.end()) return;
    RoomSub& rs = it->second;
    if (kind == "message") {
      if (!rs.wanted || !deliver_) return;
      const std::string_view data = str(r.element[2]);
      const auto space = data.find(' ');
      Delivery d{room, 0, std::string(kEpoch), {}};
      if (space == std::string_view::npos) return;
      auto [end, ec] = std::from_chars(data.data(), data.data() + space, d.seq);
      if (ec != std::errc{} || end != data.data() + space) return;  // not ours
      d.payload.assign(data.substr(space + 1));
      deliver_(std::move(d));
    } else if (kind == "subscribe" || kind == "unsubscribe") {
      if (rs.pending > 0) --rs.pending;
      if (rs.pending != 0) return;
      if (rs.wanted && kind == "subscribe") {
        rs.confirmed = true;
        fire(rs, {});
      } else if (!rs.wanted) {
        rooms_.erase(it);
      }
    }
  }

  boost::asio::io_context& io_;
  std::string display_;
  std::shared_ptr<redis::Connection> pub_, sub_;
  std::size_t script_ = 0;
  std::atomic<bool> stopped_{false};
  // Engine thread only:
  DeliverFn deliver_;
  std::unordered_map<std::string, RoomSub> rooms_;
  bool sub_ever_up_ = false;
  bool stopped_in_loop_ = false;
};

class RedisBus final : public MessageBus {
 public:
  RedisBus(boost::asio::io_context& io, const redis::Endpoint& ep) : core_(std::make_shared<Core>(io, ep)) {
    core_->init(ep);
  }
  ~RedisBus() override { stop(); }

  void start(DeliverFn on_deliver) override {
    boost::asio::post(core_->io_, [c = core_, d = std::move(on_deliver)]() mutable {
      c->start_in_loop(std::move(d));
    });
  }

  // x-client-id de-duplication is not done here yet (history-engines).
  void publish(std::string room_id, std::string payload, PublishOptions, PublishedFn done) override {
    if (core_->stopped_) return done(Error::stopped, 0);
    // On the engine thread, run now: a one-thread io_context holds posts made from its own
    // thread until the running handler returns, so a post from a worker could overtake them
    // and reorder one sender's messages (the hub publishes from here after a room lookup).
    if (core_->io_.get_executor().running_in_this_thread())
      return core_->publish_in_loop(std::move(room_id), std::move(payload), std::move(done));
    boost::asio::post(core_->io_, [c = core_, room = std::move(room_id), body = std::move(payload),
                                   done = std::move(done)]() mutable {
      c->publish_in_loop(std::move(room), std::move(body), std::move(done));
    });
  }

  // Nothing is kept yet (history-engines): the epoch and no messages.
  void history(HistoryRequest, HistoryFn done) override {
    if (core_->stopped_) return done(Error::stopped, {});
    done({}, History{std::string(kEpoch), 0, 0, {}});
  }

  void subscribe(const std::string& room_id, DoneFn ready) override {
    if (core_->stopped_) return ready(Error::stopped);
    boost::asio::post(core_->io_, [c = core_, room = room_id, ready = std::move(ready)]() mutable {
      c->subscribe_in_loop(room, std::move(ready));
    });
  }

  void unsubscribe(const std::string& room_id) override {
    if (core_->stopped_) return;
    boost::asio::post(core_->io_, [c = core_, room = room_id] { c->unsubscribe_in_loop(room); });
  }

  bool up() const override { return core_->pub_->up() && core_->sub_->up(); }
  std::string describe() const override {
    return "redis " + core_->display_ + ": " + core_->pub_->describe() + ", " + core_->sub_->describe();
  }

  void stop() override {
    if (core_->stopped_.exchange(true)) return;
    redis::run_in_loop_and_wait(core_->io_, [c = core_] { c->stop_in_loop(); });
  }

 private:
  std::shared_ptr<Core> core_;
};

}  // namespace

std::unique_ptr<MessageBus> make_redis_bus(const BusConfig& cfg, boost::asio::io_context& engine) {
  redis::Endpoint ep = redis::parse_url(cfg.redis_url);
  redis::resolve_and_verify(ep, std::chrono::seconds(3));
  return std::make_unique<RedisBus>(engine, ep);
}

}  // namespace chatd::bus
