// The Kafka bus (librdkafka). One topic (cfg.kafka_topic), key = roomId, so one room lives on one
// partition and keeps one order on every node.
//
// Every node must see every message. Consumers that share a group split the partitions between
// them (the seed's bug: each node then sees only some rooms' messages), so this bus joins no
// group at all: it assigns itself every partition of the topic, starting at the end offsets it
// looked up itself. Why manual assignment rather than a per-node group `chatd-<node_id>`:
//  - no coordinator, no rebalance pauses, nothing committed: a chat node that restarts wants the
//    live stream, not a backlog, and no abandoned groups pile up in __consumer_offsets;
//  - two nodes started with the same --node-id still both see everything (a per-node group
//    would silently bring the seed's bug back);
//  - the start offsets are known numbers, so subscribe()'s `ready` can honestly say "everything
//    published from now on reaches this node".
// The group.id the consumer carries (`chatd-<node_id>`) is only a label: it is never joined and
// never committed to.
//
// The control channel (publish_control) rides in the same topic: a record with no key, on
// partition 0, whose header chatd-control names its type (chatd-origin: the publishing node).
// Why not a topic of its own: the consumer already reads every partition of this topic from
// its end, so every node gets control records with no second topic to create, authorise,
// watch for recreation or assign; and keyless records were always skipped as "not ours", so
// history reads and older nodes ignore them. The cost: they take a few offsets of partition 0
// (seqs are not contiguous anyway) and are kept as long as the topic keeps chat.
//
// Threads: start() spawns two. The consumer thread sets up the topic and assignment, then
// consumes and calls on_deliver in partition order, and fires subscribe() callbacks. The producer
// thread serves delivery reports (publish's `done`) and probes the broker while it is down.
// publish() never blocks: a full local queue answers Error::rejected at once.
//
// A fatal producer error (librdkafka gives up on the idempotent producer, e.g. after a sequence
// gap it cannot explain: rd_kafka_fatal_error) leaves that handle refusing every message for
// good. The producer thread then replaces it with a new one (a new producer id). What the old
// one had not sent yet fails with engine_down (librdkafka purges it); what it had in flight gets
// the broker's answer as usual. Until those answers are in, the new producer holds what is
// published (held_): sent at once, it could land ahead of the old one's last messages and break
// the room's order. Failed messages are never retried behind the sender's back (it
// may retry with the same x-client-id, published once). The consumer and the reader go on.
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafkacpp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <future>
#include <optional>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <unistd.h>
#include <vector>

#include "bus/kafka_history.h"
#include "bus/kafka_topic_id.h"
#include "bus/message_bus.h"
#include "log/log.h"
#include "log/thread_name.h"

namespace chatd::bus {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// How long the consumer and reader threads may sleep in one consume() or poll(): a slice, not
// a timeout (stop() and subscribe() wake them, and every loop checks its clocks between slices),
// so no option; short enough that a stop waits at most this long per thread.
constexpr int kConsumeTimeoutMs = 100;
// Pause between set-up attempts (create topic, find partitions, assign) while the broker is away.
constexpr milliseconds kSetupRetry{500};
// A broker-down probe (metadata request) waits at most this long: less than the probe interval.
constexpr int kProbeTimeoutMs = 1000;
// After stop()'s flush and purge, how long to wait for librdkafka to hand back what it held.
constexpr milliseconds kPurgeWait{2000};
// A topic created a moment ago may not be in the metadata yet: ask this many times, a slice apart.
constexpr int kNewTopicChecks = 20;
// A backwards history read from the topic starts with this many offsets, or 8 per message
// wanted (other rooms share the partition), and widens 4x per window.
constexpr std::int64_t kFirstReadWindow = 1000;
constexpr std::int64_t kReadWindowPerMessage = 8;
constexpr std::int64_t kReadWindowGrowth = 4;
// The record header that carries a SEND's x-client-id.
constexpr const char* kClientIdHeader = "x-client-id";
// The record headers of a control message: its type and its publishing node.
constexpr const char* kControlHeader = "chatd-control";
constexpr const char* kOriginHeader = "chatd-origin";
// History requests waiting for the reader thread; past it a request is refused at once.
constexpr std::size_t kMaxQueuedReads = 10000;
// Bounds what waits for a replaced producer's last answers (as queue.buffering.max.messages).
constexpr std::size_t kMaxHeld = 100000;
// The reader thread takes at most this many waiting requests at a time, to answer together.
constexpr std::size_t kReadBatch = 1000;

// A line about the bus's state for the operator, in the node's log format.
template <class... Args>
void say(const char* format, Args... args) {
  char line[1024];
  std::snprintf(line, sizeof line, format, args...);
  log::message("kafka_bus", line);
}

std::int64_t now_ms() {
  return std::chrono::duration_cast<milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// One publish waiting for its delivery report.
struct Pending {
  PublishedFn done;
  std::string room;
  std::string client_id;
};

// A record held back while a replaced producer still has requests in flight (produce_or_hold).
struct Held {
  std::int32_t partition;
  bool keyed;
  std::string key, payload;
  std::unique_ptr<RdKafka::Headers> headers;
  Pending* opaque;
};

// Sets one librdkafka property; a bad name or value is a configuration error (start-up only).
void set(RdKafka::Conf& conf, const std::string& name, const std::string& value) {
  std::string why;
  if (conf.set(name, value, why) != RdKafka::Conf::CONF_OK)
    throw std::runtime_error("kafka bus: " + name + "=" + value + ": " + why);
}

// Returns the bus error for a message librdkafka finally gave up on (or {} when delivered).
std::error_code final_error(RdKafka::ErrorCode err, bool engine_up) {
  switch (err) {
    case RdKafka::ERR_NO_ERROR: return {};
    case RdKafka::ERR__PURGE_QUEUE:
    case RdKafka::ERR__PURGE_INFLIGHT:
    case RdKafka::ERR__DESTROY: return Error::stopped;
    case RdKafka::ERR__MSG_TIMED_OUT:
    case RdKafka::ERR__TIMED_OUT:
    case RdKafka::ERR_REQUEST_TIMED_OUT: return engine_up ? Error::timed_out : Error::engine_down;
    case RdKafka::ERR_MSG_SIZE_TOO_LARGE:
    case RdKafka::ERR_RECORD_LIST_TOO_LARGE:
    case RdKafka::ERR_INVALID_MSG:
    case RdKafka::ERR_TOPIC_AUTHORIZATION_FAILED:
    case RdKafka::ERR_CLUSTER_AUTHORIZATION_FAILED:
    case RdKafka::ERR_INVALID_RECORD: return Error::rejected;
    default: return Error::engine_down;
  }
}

class KafkaBus final : public MessageBus, RdKafka::DeliveryReportCb, RdKafka::EventCb {
 public:
  explicit KafkaBus(const BusConfig& cfg)
      : cfg_(cfg),
        cache_(KafkaCacheLimits{cfg.history_size, cfg.history_ttl, cfg.kafka_history_cache_bytes}),
        dedupe_(cfg.dedupe_window, cfg.dedupe_max_ids) {
    if (cfg_.kafka_topic.empty()) throw std::invalid_argument("kafka bus: empty topic name");
    if (cfg_.kafka_partitions < 1 || cfg_.kafka_replication < 1)
      throw std::invalid_argument("kafka bus: partitions and replication must be at least 1");
    if (cfg_.node_id.empty()) cfg_.node_id = "pid" + std::to_string(::getpid());
  }
  ~KafkaBus() override { stop(); }

  KafkaBus(const KafkaBus&) = delete;
  KafkaBus& operator=(const KafkaBus&) = delete;

  void start(DeliverFn on_deliver) override {
    if (producer_) throw std::logic_error("kafka bus: start() called twice");
    deliver_ = std::move(on_deliver);
    make_producer();
    make_consumer();
    // One attempt now, so a reachable broker has the topic (with our partition count, not the
    // broker's auto-create default) before the first publish; the consumer thread retries.
    set_up_consumer();
    make_reader();
    producer_thread_ = log::named_thread("kafka-producer", [this] { run_producer_loop(); });
    consumer_thread_ = log::named_thread("kafka-consumer", [this] { run_consumer_loop(); });
    reader_thread_ = log::named_thread("kafka-history", [this] { run_reader_loop(); });
  }

  void publish(std::string room_id, std::string payload, PublishOptions opts, PublishedFn done) override {
    std::shared_lock lock(stop_mu_);
    if (stopped_ || !producer_) {
      lock.unlock();
      done(Error::stopped, 0, {});
      return;
    }
    std::unique_ptr<RdKafka::Headers> headers;
    if (!opts.client_id.empty()) {
      // A retry of an id this node has seen in the stream (from any node) gets the first seq;
      // one whose first is still on its way here waits for that first's answer.
      if (auto seq = dedupe_.find(room_id, opts.client_id, now_ms())) {
        lock.unlock();
        done({}, *seq, room_epoch(room_id));
        return;
      }
      {
        std::lock_guard in_flight_lock(in_flight_mu_);
        auto [it, first] = in_flight_.try_emplace(in_flight_key(room_id, opts.client_id));
        if (!first) {
          it->second.push_back(std::move(done));
          return;
        }
      }
      headers.reset(RdKafka::Headers::create());
      headers->add(kClientIdHeader, opts.client_id);
    }
    auto* opaque = new Pending{std::move(done), room_id, std::move(opts.client_id)};
    const RdKafka::ErrorCode err =
        produce_or_hold(RdKafka::Topic::PARTITION_UA, room_id, true, payload, headers, opaque);
    if (err == RdKafka::ERR_NO_ERROR) return;
    lock.unlock();
    std::unique_ptr<Pending> failed(opaque);
    // A full local queue means the broker has been away for a while: refuse rather than block.
    answer(*failed, err == RdKafka::ERR__QUEUE_FULL ? Error::rejected : final_error(err, up()), 0, {});
  }

  // With stop_mu_ held shared: hands one record to the producer, or holds it while a replaced
  // producer still has requests in flight (see the top of this file). On success the record,
  // its headers and `opaque` belong to librdkafka or held_; otherwise they stay the caller's.
  RdKafka::ErrorCode produce_or_hold(std::int32_t partition, std::string_view key, bool keyed,
                                     std::string_view payload, std::unique_ptr<RdKafka::Headers>& headers,
                                     Pending* opaque) {
    if (holding_.load(std::memory_order_acquire)) {
      std::lock_guard lock(held_mu_);
      if (holding_.load(std::memory_order_relaxed)) {  // release_held() may have just ended it
        if (held_.size() >= kMaxHeld) return RdKafka::ERR__QUEUE_FULL;
        held_.push_back(Held{partition, keyed, std::string(key), std::string(payload), std::move(headers), opaque});
        return RdKafka::ERR_NO_ERROR;
      }
    }
    return produce_now(Held{partition, keyed, {}, {}, nullptr, opaque}, key, payload, headers);
  }

  // RK_MSG_COPY: librdkafka keeps its own copy of key and payload; it frees the headers with
  // the message once it has taken them.
  RdKafka::ErrorCode produce_now(const Held& h, std::string_view key, std::string_view payload,
                                 std::unique_ptr<RdKafka::Headers>& headers) {
    const RdKafka::ErrorCode err = producer_->produce(
        cfg_.kafka_topic, h.partition, RdKafka::Producer::RK_MSG_COPY, const_cast<char*>(payload.data()),
        payload.size(), h.keyed ? key.data() : nullptr, h.keyed ? key.size() : 0, 0, headers.get(), h.opaque);
    if (err == RdKafka::ERR_NO_ERROR) (void)headers.release();
    return err;
  }

  // On the producer thread, once every replaced producer has answered what it had in flight:
  // sends what was held meanwhile, in publish order. After stop() it leaves them to stop().
  void release_held() {
    std::shared_lock stop_lock(stop_mu_);
    if (stopped_) return;
    std::vector<std::pair<Pending*, RdKafka::ErrorCode>> refused;
    std::size_t released = 0;
    {
      std::lock_guard lock(held_mu_);
      released = held_.size();
      for (auto& h : held_) {
        const RdKafka::ErrorCode err = produce_now(h, h.key, h.payload, h.headers);
        if (err != RdKafka::ERR_NO_ERROR) refused.emplace_back(h.opaque, err);
      }
      held_.clear();
      holding_.store(false, std::memory_order_release);
    }
    stop_lock.unlock();
    if (released > 0)
      say( "kafka bus %s: the replaced producer has answered everything: %zu message(s) held "
                   "meanwhile go out now", cfg_.node_id.c_str(), released);
    for (auto [opaque, err] : refused) {
      std::unique_ptr<Pending> failed(opaque);
      answer(*failed, err == RdKafka::ERR__QUEUE_FULL ? Error::rejected : final_error(err, up()), 0, {});
    }
  }

  void on_control(ControlFn fn) override { control_ = std::move(fn); }

  void publish_control(ControlMessage m, DoneFn done) override {
    if (!valid_control_type(m.type) || m.body.size() > kMaxControlBody) return done(Error::rejected);
    std::shared_lock lock(stop_mu_);
    if (stopped_ || !producer_) {
      lock.unlock();
      return done(Error::stopped);
    }
    std::unique_ptr<RdKafka::Headers> headers(RdKafka::Headers::create());
    headers->add(kControlHeader, m.type);
    headers->add(kOriginHeader, cfg_.node_id);
    auto* opaque = new Pending{[done](std::error_code ec, std::uint64_t, std::string_view) { done(ec); }, {}, {}};
    const RdKafka::ErrorCode err = produce_or_hold(0, {}, false, m.body, headers, opaque);
    if (err == RdKafka::ERR_NO_ERROR) return;
    lock.unlock();
    std::unique_ptr<Pending> failed(opaque);
    answer(*failed, err == RdKafka::ERR__QUEUE_FULL ? Error::rejected : final_error(err, up()), 0, {});
  }

  // A topic keeps records until its retention: nothing to delete here (see message_bus.h).
  void delete_history(const std::string&, DoneFn done) override { done({}); }

  void history(HistoryRequest req, HistoryFn done) override {
    {
      std::lock_guard lock(reads_mu_);
      if (!reads_stopped_ && reads_.size() < kMaxQueuedReads) {
        reads_.emplace_back(std::move(req), std::move(done));
        reads_cv_.notify_one();
        return;
      }
    }
    done(reads_stopped_ ? Error::stopped : Error::rejected, {});
  }

  void subscribe(const std::string&, DoneFn ready) override {
    {
      std::lock_guard lock(ready_mu_);
      if (!stopped_) {
        pending_ready_.push_back(std::move(ready));
        wake_consumer();  // under the lock: stop() cannot free the queue meanwhile
        return;
      }
    }
    ready(Error::stopped);
  }

  // Every partition is always assigned, so there is nothing to leave.
  void unsubscribe(const std::string&) override {}

  bool up() const override { return up_.load(std::memory_order_acquire); }
  std::uint64_t control_gaps() const override { return control_gaps_.load(std::memory_order_relaxed); }

  std::string describe() const override {
    std::string s = "kafka " + cfg_.kafka_brokers + " topic '" + cfg_.kafka_topic + "': ";
    s += up() ? "up" : "down";
    int parts = assigned_partitions_.load(std::memory_order_acquire);
    s += parts > 0 ? ", " + std::to_string(parts) + " partitions assigned" : ", not assigned yet";
    if (int n = replacements_.load(std::memory_order_relaxed); n > 0)
      s += ", producer replaced " + std::to_string(n) + "x after fatal errors";
    if (!up()) {
      std::lock_guard lock(state_mu_);
      if (!last_error_.empty()) s += " (last error: " + last_error_ + ")";
    }
    return s;
  }

  // Testing only (inject_kafka_fatal_error): a fabricated fatal error on the current producer,
  // as librdkafka raises for an idempotence failure. Returns false once stopped.
  bool inject_fatal_error(const std::string& reason) {
    std::shared_lock lock(stop_mu_);
    if (stopped_ || !producer_) return false;
    return rd_kafka_test_fatal_error(producer_->c_ptr(), RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER,
                                     reason.c_str()) == RD_KAFKA_RESP_ERR_NO_ERROR;
  }

  void stop() override {
    {
      std::unique_lock lock(stop_mu_);
      if (stopped_) return;
      std::lock_guard ready_lock(ready_mu_);
      stopped_ = true;  // no publish() or subscribe() gets past this point any more
    }
    quit_.store(true, std::memory_order_release);
    wake_consumer();
    if (consumer_thread_.joinable()) consumer_thread_.join();
    std::deque<std::pair<HistoryRequest, HistoryFn>> reads;
    {
      std::lock_guard lock(reads_mu_);
      reads_stopped_ = true;
      reads_.swap(reads);
    }
    reads_cv_.notify_all();
    for (auto& [req, done] : reads) done(Error::stopped, {});
    if (reader_thread_.joinable()) reader_thread_.join();
    if (reader_) reader_->close();
    if (consumer_queue_) rd_kafka_queue_destroy(consumer_queue_);
    consumer_queue_ = nullptr;
    if (consumer_) consumer_->close();

    std::vector<DoneFn> ready;
    {
      std::lock_guard lock(ready_mu_);
      ready.swap(pending_ready_);
    }
    for (auto& fn : ready) fn(Error::stopped);

    if (producer_) {
      // Give accepted messages a bounded chance to land (none if the broker is away: a node
      // shutting down during an outage should not wait on it), then fail the rest with `stopped`.
      producer_->flush(up() ? cfg_.kafka_timing.flush_on_stop_ms : 0);
      producer_->purge(RdKafka::Producer::PURGE_QUEUE | RdKafka::Producer::PURGE_INFLIGHT);
    }
    if (producer_thread_.joinable()) producer_thread_.join();
    for (auto& p : retired_) p->purge(RdKafka::Producer::PURGE_QUEUE | RdKafka::Producer::PURGE_INFLIGHT);
    if (producer_) {
      auto deadline = Clock::now() + kPurgeWait;
      while (producer_->outq_len() > 0 && Clock::now() < deadline) producer_->poll(50);
      while (!retired_.empty() && Clock::now() < deadline) drain_retired(50);
    }
    std::deque<Held> held;
    {
      std::lock_guard lock(held_mu_);
      held.swap(held_);
      holding_.store(false, std::memory_order_release);
    }
    for (auto& h : held) {
      std::unique_ptr<Pending> failed(h.opaque);
      answer(*failed, Error::stopped, 0, {});
    }
  }

 private:
  // RdKafka::DeliveryReportCb, on the producer thread (or stop()'s): the final word on a message.
  void dr_cb(RdKafka::Message& msg) override {
    std::unique_ptr<Pending> pending(static_cast<Pending*>(msg.msg_opaque()));
    if (msg.err() == RdKafka::ERR_NO_ERROR) mark_up();
    else note_error("delivery: " + msg.errstr());
    if (!pending) return;
    std::error_code ec = final_error(msg.err(), up());
    // Purged by a producer's replacement, not by stop(): the engine failed, the node goes on.
    if (ec == Error::stopped && replacing_.load(std::memory_order_acquire)) ec = Error::engine_down;
    // Sent and never answered (the connection died under it, then the broker stayed away): it may
    // be in the log and delivered later, so "not delivered" would invite a second copy.
    if (ec == Error::engine_down && msg.status() == RdKafka::Message::MSG_STATUS_POSSIBLY_PERSISTED)
      ec = Error::timed_out;
    std::uint64_t seq = 0;
    if (!ec) {
      seq = static_cast<std::uint64_t>(msg.offset()) + 1;
      // A retry that reached the topic because its first was not yet seen here: consumers drop
      // it, and its sender gets the first's seq if this node knows it by now.
      if (!pending->client_id.empty())
        if (auto first = dedupe_.first_or_remember(pending->room, pending->client_id, seq, msg.timestamp().timestamp))
          seq = *first;
    }
    answer(*pending, ec, seq, ec ? std::string() : answer_epoch(msg.partition()));
  }

  static std::string in_flight_key(const std::string& room, const std::string& client_id) {
    std::string k = room;
    k.push_back('\0');
    return k.append(client_id);
  }

  // Answers a publish and every retry of its client id that waited for it.
  void answer(Pending& p, std::error_code ec, std::uint64_t seq, std::string_view epoch) {
    std::vector<PublishedFn> waiters;
    if (!p.client_id.empty()) {
      std::lock_guard lock(in_flight_mu_);
      auto it = in_flight_.find(in_flight_key(p.room, p.client_id));
      if (it != in_flight_.end()) {
        waiters = std::move(it->second);
        in_flight_.erase(it);
      }
    }
    if (p.done) p.done(ec, seq, epoch);
    for (auto& w : waiters) w(ec, seq, epoch);
  }

  // RdKafka::EventCb, on the producer or consumer thread: errors and librdkafka's own log lines
  // (which this callback replaces, so warnings are passed on to stderr here).
  void event_cb(RdKafka::Event& ev) override {
    if (ev.type() == RdKafka::Event::EVENT_LOG && ev.severity() <= RdKafka::Event::EVENT_SEVERITY_WARNING) {
      say( "kafka bus %s: %s: %s", cfg_.node_id.c_str(), ev.fac().c_str(), ev.str().c_str());
      return;
    }
    if (ev.type() != RdKafka::Event::EVENT_ERROR) return;
    std::string what = RdKafka::err2str(ev.err()) + (ev.str().empty() ? "" : ": " + ev.str());
    if (ev.err() == RdKafka::ERR__ALL_BROKERS_DOWN || ev.fatal()) set_up(false, what);
    // Before the purge's delivery reports, which follow on the same queue (see dr_cb).
    if (ev.fatal()) replacing_.store(true, std::memory_order_release);
    note_error(std::move(what));
  }

  void mark_up() { set_up(true, "broker reachable"); }

  // Records reachability; a change is worth a line in the node's log.
  void set_up(bool now, const std::string& why) {
    if (up_.exchange(now, std::memory_order_acq_rel) == now) return;
    say( "kafka bus %s: %s %s: %s", cfg_.node_id.c_str(),
                 cfg_.kafka_brokers.c_str(), now ? "up" : "down", why.c_str());
    // Back after an outage: a control record this node sent in it may have expired unsent (a
    // room.deleted after 30 s), so every node looks again at what one could have changed.
    if (now && ever_up_.exchange(true, std::memory_order_acq_rel)) control_gaps_.fetch_add(1, std::memory_order_relaxed);
  }

  void note_error(std::string what) {
    std::lock_guard lock(state_mu_);
    last_error_ = std::move(what);
  }

  // Common to both handles: where the broker is, and quick reconnects after it returns.
  std::unique_ptr<RdKafka::Conf> base_conf() {
    std::unique_ptr<RdKafka::Conf> conf(RdKafka::Conf::create(RdKafka::Conf::CONF_GLOBAL));
    set(*conf, "bootstrap.servers", cfg_.kafka_brokers);
    set(*conf, "client.id", "chatd-" + cfg_.node_id);
    set(*conf, "socket.nagle.disable", "true");     // chat lines are small: send them now
    set(*conf, "reconnect.backoff.ms", "50");
    set(*conf, "reconnect.backoff.max.ms", "1000");  // back within a second of the broker
    set(*conf, "log.connection.close", "false");     // idle closes are normal, not news
    std::string why;
    if (conf->set("event_cb", static_cast<RdKafka::EventCb*>(this), why) != RdKafka::Conf::CONF_OK)
      throw std::runtime_error("kafka bus: event_cb: " + why);
    return conf;
  }

  void make_producer() {
    auto conf = base_conf();
    set(*conf, "acks", "all");
    set(*conf, "enable.idempotence", "true");  // retries after a broker bounce never duplicate
    set(*conf, "linger.ms", "1");              // a burst shares a request; a lone line waits 1 ms
    set(*conf, "batch.num.messages", "1000");
    set(*conf, "message.timeout.ms", "30000");  // rides out a broker restart, then fails `done`
    set(*conf, "queue.buffering.max.messages", "100000");
    set(*conf, "queue.buffering.max.kbytes", "65536");  // 64 MiB bound on what waits locally
    set(*conf, "partitioner", "murmur2_random");  // same room -> partition map as Java clients
    // Partitions added to the topic move rooms once the producer knows of them: its own
    // metadata refresh, as often as the consumer looks (librdkafka's default is 5 minutes; the
    // metadata request the consumer's finding triggers is not always taken as the count).
    set(*conf, "topic.metadata.refresh.interval.ms",
        std::to_string(std::max(1000, cfg_.kafka_timing.partition_check_ms)));
    std::string why;
    if (conf->set("dr_cb", static_cast<RdKafka::DeliveryReportCb*>(this), why) !=
        RdKafka::Conf::CONF_OK)
      throw std::runtime_error("kafka bus: dr_cb: " + why);
    producer_.reset(RdKafka::Producer::create(conf.get(), why));
    if (!producer_) throw std::runtime_error("kafka bus: producer: " + why);
  }

  void make_consumer() {
    auto conf = base_conf();
    set(*conf, "group.id", "chatd-" + cfg_.node_id);  // a label only: never joined or committed
    set(*conf, "enable.auto.commit", "false");
    set(*conf, "enable.auto.offset.store", "false");
    // An offset that vanished most likely means the topic was deleted and created again: then
    // "latest" would skip what the new topic already holds. librdkafka 2.0.2 knows no topic ids,
    // so the loop takes the error as a cue to read the id at once (see run_consumer_loop).
    set(*conf, "auto.offset.reset", "error");
    set(*conf, "enable.partition.eof", "false");
    set(*conf, "fetch.wait.max.ms", "10");  // the broker answers a fetch within 10 ms...
    set(*conf, "fetch.min.bytes", "1");     // ...or as soon as one message is there
    set(*conf, "fetch.error.backoff.ms", "50");
    set(*conf, "queued.min.messages", "10000");
    std::string why;
    consumer_.reset(RdKafka::KafkaConsumer::create(conf.get(), why));
    if (!consumer_) throw std::runtime_error("kafka bus: consumer: " + why);
    consumer_queue_ = rd_kafka_queue_get_consumer(consumer_->c_ptr());
  }

  void wake_consumer() {
    if (consumer_queue_) rd_kafka_queue_yield(consumer_queue_);
  }

  // Creates the topic if missing. Returns false (and notes why) if the broker did not answer.
  bool create_topic() {
    char why[512] = {};
    // The consumer's handle (any client can send admin requests): the producer thread may be
    // replacing the producer meanwhile.
    rd_kafka_t* rk = consumer_->c_ptr();
    rd_kafka_NewTopic_t* topic = rd_kafka_NewTopic_new(
        cfg_.kafka_topic.c_str(), cfg_.kafka_partitions, cfg_.kafka_replication, why, sizeof why);
    if (!topic) throw std::runtime_error(std::string("kafka bus: topic: ") + why);
    // With acks=all a RECEIPT means "on min.insync.replicas brokers", and brokers default it to
    // 1: a replicated topic would then lose what only a dying leader had. 2 of 3 (or more)
    // keeps an acknowledged message on two brokers while chat goes on with one down. Only on
    // creation: an existing topic's settings are its operator's.
    if (cfg_.kafka_replication >= 3 &&
        rd_kafka_NewTopic_set_config(topic, "min.insync.replicas", "2") != RD_KAFKA_RESP_ERR_NO_ERROR)
      throw std::runtime_error("kafka bus: topic: min.insync.replicas");
    rd_kafka_AdminOptions_t* options = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
    rd_kafka_AdminOptions_set_request_timeout(options, cfg_.kafka_timing.request_timeout_ms, why, sizeof why);
    rd_kafka_AdminOptions_set_operation_timeout(options, cfg_.kafka_timing.request_timeout_ms, why, sizeof why);
    rd_kafka_queue_t* queue = rd_kafka_queue_new(rk);
    rd_kafka_CreateTopics(rk, &topic, 1, options, queue);
    // Waits in slices so stop() need not sit out the request timeout.
    rd_kafka_event_t* ev = nullptr;
    auto deadline = Clock::now() + milliseconds(cfg_.kafka_timing.request_timeout_ms + 1000);
    while (!ev && Clock::now() < deadline && !quit_.load(std::memory_order_acquire))
      ev = rd_kafka_queue_poll(queue, kConsumeTimeoutMs);

    bool ok = false;
    std::string error = "no answer to CreateTopics";
    if (ev && rd_kafka_event_error(ev)) {
      error = rd_kafka_event_error_string(ev);
    } else if (ev) {
      size_t n = 0;
      const rd_kafka_topic_result_t** results =
          rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(ev), &n);
      rd_kafka_resp_err_t err = n == 1 ? rd_kafka_topic_result_error(results[0])
                                       : RD_KAFKA_RESP_ERR__BAD_MSG;
      ok = err == RD_KAFKA_RESP_ERR_NO_ERROR || err == RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS;
      if (!ok) error = std::string("create topic: ") + rd_kafka_err2str(err);
    }
    if (ev) rd_kafka_event_destroy(ev);
    rd_kafka_queue_destroy(queue);
    rd_kafka_AdminOptions_destroy(options);
    rd_kafka_NewTopic_destroy(topic);
    if (!ok) note_error(error);
    return ok;
  }

  // Returns the topic's partition count as the broker sees it, or 0 if unknown or leaderless.
  int partition_count() {
    std::string why;
    std::unique_ptr<RdKafka::Topic> topic(
        RdKafka::Topic::create(consumer_.get(), cfg_.kafka_topic, nullptr, why));
    if (!topic) {
      note_error("topic handle: " + why);
      return 0;
    }
    RdKafka::Metadata* raw = nullptr;
    RdKafka::ErrorCode err = consumer_->metadata(false, topic.get(), &raw, cfg_.kafka_timing.request_timeout_ms);
    std::unique_ptr<RdKafka::Metadata> md(raw);
    if (err != RdKafka::ERR_NO_ERROR || !md || md->topics()->size() != 1) {
      note_error("metadata: " + RdKafka::err2str(err));
      return 0;
    }
    const RdKafka::TopicMetadata* t = md->topics()->at(0);
    if (t->err() != RdKafka::ERR_NO_ERROR) {
      note_error("metadata: " + RdKafka::err2str(t->err()));
      return 0;
    }
    for (const RdKafka::PartitionMetadata* p : *t->partitions())
      if (p->leader() < 0) return 0;  // still electing: offsets cannot be asked yet
    return static_cast<int>(t->partitions()->size());
  }

  // Assigns partitions [from, to): at their current end offsets (looked up here, so the start
  // position is a known number before `ready` fires), or with `whole` at their beginning, for
  // partitions whose every record is new to this node (added ones, a recreated topic's).
  // Returns false if the broker did not answer.
  bool assign(int from, int to, bool whole) {
    std::vector<RdKafka::TopicPartition*> parts;
    bool ok = true;
    for (int p = from; p < to && ok; ++p) {
      if (whole) {
        parts.push_back(RdKafka::TopicPartition::create(cfg_.kafka_topic, p, RdKafka::Topic::OFFSET_BEGINNING));
        cache_.start_partition(p, 1);
        continue;
      }
      int64_t low = 0, high = 0;
      RdKafka::ErrorCode err = consumer_->query_watermark_offsets(cfg_.kafka_topic, p, &low, &high,
                                                                 cfg_.kafka_timing.request_timeout_ms);
      if (err != RdKafka::ERR_NO_ERROR) {
        note_error("watermarks: " + RdKafka::err2str(err));
        ok = false;
      } else {
        parts.push_back(RdKafka::TopicPartition::create(cfg_.kafka_topic, p, high));
        cache_.start_partition(p, static_cast<std::uint64_t>(high) + 1);
      }
    }
    if (ok) {
      std::unique_ptr<RdKafka::Error> err(consumer_->incremental_assign(parts));
      if (err) {
        note_error("assign: " + err->str());
        ok = false;
      }
    }
    RdKafka::TopicPartition::destroy(parts);
    return ok;
  }

  // Creates the topic if needed and assigns every partition: at its end, or from its beginning
  // after the topic was recreated under this node. Returns true once done.
  bool set_up_consumer() {
    if (!create_topic()) return false;
    std::string why;
    auto id = kafka_meta::fetch_topic_id(cfg_.kafka_brokers, cfg_.kafka_topic, milliseconds(cfg_.kafka_timing.request_timeout_ms), why);
    if (!id) {
      note_error("topic id: " + why);
      return false;
    }
    set_epoch(*id);
    // A topic created a moment ago may not be in the metadata yet: ask again briefly.
    int n = partition_count();
    for (int i = 0; i < kNewTopicChecks && n <= 0 && !quit_.load(std::memory_order_acquire); ++i) {
      std::this_thread::sleep_for(milliseconds(kConsumeTimeoutMs));
      n = partition_count();
    }
    if (n <= 0 || !assign(0, n, recreated_)) return false;
    recreated_ = false;
    assigned_partitions_.store(n, std::memory_order_release);
    warm_producer();
    mark_up();
    return true;
  }

  // A producer's first record for a topic it has no metadata for waits for librdkafka's next
  // metadata refresh: every SEND in a node's first second after a start arrived about a second
  // late (a probe every 20 ms: 930 ms, then 5 ms once warmed). Asking for the topic's metadata
  // before the node says it is up makes the first SENDs leave at once. Best effort: if the
  // broker does not answer within the probe timeout, publishing still works, only slower.
  void warm_producer() {
    std::shared_lock lock(stop_mu_);  // the producer thread may swap producer_ (replace_producer)
    if (stopped_) return;
    std::string why;
    std::unique_ptr<RdKafka::Topic> topic(RdKafka::Topic::create(producer_.get(), cfg_.kafka_topic, nullptr, why));
    if (!topic) return note_error("producer topic handle: " + why);
    RdKafka::Metadata* raw = nullptr;
    const RdKafka::ErrorCode err = producer_->metadata(false, topic.get(), &raw, kProbeTimeoutMs);
    delete raw;
    if (err != RdKafka::ERR_NO_ERROR) note_error("producer metadata: " + RdKafka::err2str(err));
  }

  // Partitions added to the topic later start at their beginning: everything in them is new.
  // The producer is told at once (its own metadata refresh comes only every 5 minutes), so this
  // node's SENDs follow a moved room to its new partition within a check, like the other nodes'.
  void assign_new_partitions() {
    int have = assigned_partitions_.load(std::memory_order_acquire);
    int now = partition_count();
    if (now > have && assign(have, now, true)) {
      assigned_partitions_.store(now, std::memory_order_release);
      warm_producer();
    }
  }

  void fire_ready() {
    std::vector<DoneFn> ready;
    {
      std::lock_guard lock(ready_mu_);
      ready.swap(pending_ready_);
    }
    for (auto& fn : ready) fn({});
  }

  // The consumer thread: set up (retrying while the broker is away), then deliver.
  void run_consumer_loop() {
    while (!quit_.load(std::memory_order_acquire) && assigned_partitions_.load() == 0) {
      if (set_up_consumer()) break;
      // Nothing is assigned, so this only serves the consumer's events (an outage's stale
      // "all brokers down" must not land after set-up has said up); stop() wakes it.
      std::unique_ptr<RdKafka::Message>(consumer_->consume(static_cast<int>(kSetupRetry.count())));
    }
    auto next_check = Clock::now() + milliseconds(cfg_.kafka_timing.partition_check_ms);
    auto next_id_check = Clock::now() + milliseconds(cfg_.kafka_timing.topic_check_ms);
    // The topic id is asked beside the loop: a broker that takes the connection and never
    // answers (frozen, or dropping packets) would hold live delivery for the request timeout.
    std::future<std::optional<std::string>> id_check;
    Clock::time_point id_check_started;
    // Set when the consumer hints that the topic went away: from then on nothing is consumed
    // until an id read begun after the hint answers, so no record of a new topic is delivered
    // under the old epoch (librdkafka 2.0.2 fetches by name and would hand it over).
    bool doubt = false;
    Clock::time_point doubt_since;
    std::vector<int> stopped;  // partitions auto.offset.reset=error stopped, while in doubt
    while (!quit_.load(std::memory_order_acquire)) {
      if (!id_check.valid() && Clock::now() >= next_id_check) {
        id_check_started = Clock::now();
        id_check = std::async(std::launch::async, [brokers = cfg_.kafka_brokers, topic = cfg_.kafka_topic,
                                                   timeout = milliseconds(cfg_.kafka_timing.request_timeout_ms)] {
          std::string why;
          return kafka_meta::fetch_topic_id(brokers, topic, timeout, why);
        });
      }
      // In doubt the answer is all the loop waits for; otherwise it is only picked up.
      const auto wait = doubt ? milliseconds(kConsumeTimeoutMs) : milliseconds(0);
      if (id_check.valid() && id_check.wait_for(wait) == std::future_status::ready) {
        const std::optional<std::string> id = id_check.get();
        next_id_check = Clock::now() + milliseconds(cfg_.kafka_timing.topic_check_ms);
        if (check_topic_id(id)) {
          doubt = false;  // everything is assigned again below
          stopped.clear();
        } else if (doubt && id && id_check_started >= doubt_since && resume_partitions(stopped)) {
          doubt = false;  // the same topic: a false alarm, a stale error, or a log that lost the offset
          stopped.clear();
        } else if (doubt) {
          // Asked before the hint, or no answer (the topic is gone for now): ask again soon.
          next_id_check = id && id_check_started < doubt_since ? Clock::now() : Clock::now() + kSetupRetry;
        }
      }
      if (assigned_partitions_.load(std::memory_order_acquire) == 0 && !set_up_consumer()) {
        std::unique_ptr<RdKafka::Message>(consumer_->consume(static_cast<int>(kSetupRetry.count())));
        continue;
      }
      // Assignment and start offsets are fixed, so whatever is published from here on arrives.
      fire_ready();
      if (doubt) {  // held: the id read above waits for its answer, or it is asked again soon
        const auto until = std::min(next_id_check, Clock::now() + milliseconds(kConsumeTimeoutMs));
        if (!id_check.valid()) std::this_thread::sleep_until(until);
        continue;
      }
      std::unique_ptr<RdKafka::Message> msg(consumer_->consume(kConsumeTimeoutMs));
      if (msg->err() == RdKafka::ERR_NO_ERROR) {
        mark_up();
        deliver(*msg);
      } else if (msg->err() != RdKafka::ERR__TIMED_OUT) {
        note_error("consume: " + msg->errstr());
        if (hints_topic_gone(msg->err())) {
          if (!doubt) doubt_since = Clock::now();
          doubt = true;
          const bool out_of_range =
              msg->err() == RdKafka::ERR__AUTO_OFFSET_RESET || msg->err() == RdKafka::ERR_OFFSET_OUT_OF_RANGE;
          if (out_of_range && std::find(stopped.begin(), stopped.end(), msg->partition()) == stopped.end())
            stopped.push_back(msg->partition());
          if (!id_check.valid()) next_id_check = Clock::now();
        }
      }
      if (Clock::now() >= next_check) {
        assign_new_partitions();
        next_check = Clock::now() + milliseconds(cfg_.kafka_timing.partition_check_ms);
      }
    }
  }

  // Caches the record, drops a retried client id, and delivers the rest.
  void deliver(RdKafka::Message& msg) {
    const int p = msg.partition();
    // The offset: strictly increasing per room (one room, one partition), identical on every
    // node, but not contiguous (other rooms share the partition). +1 so that 0 means "none".
    const auto seq = static_cast<std::uint64_t>(msg.offset()) + 1;
    if (!msg.key_pointer()) {  // a keyless record is a control message or not one of ours
      cache_.advance(p, seq);
      deliver_control(msg);
      return;
    }
    std::string room(static_cast<const char*>(msg.key_pointer()), msg.key_len());
    const std::int64_t ts = msg.timestamp().timestamp;
    if (RdKafka::Headers* headers = msg.headers()) {
      const RdKafka::Headers::Header cid = headers->get_last(kClientIdHeader);
      if (cid.err() == RdKafka::ERR_NO_ERROR && cid.value() &&
          dedupe_.first_or_remember(room, std::string_view(static_cast<const char*>(cid.value()), cid.value_size()),
                                    seq, ts)) {
        cache_.advance(p, seq);
        return;
      }
    }
    std::string payload(static_cast<const char*>(msg.payload()), msg.len());
    if (cfg_.history_size > 0) cache_.add(p, room, seq, ts, payload);
    else cache_.advance(p, seq);
    if (deliver_) deliver_(Delivery{std::move(room), seq, partition_epoch(consumer_epoch_, p), std::move(payload)});
  }

  // Hands a control record to the control handler; other keyless records are ignored.
  void deliver_control(RdKafka::Message& msg) {
    RdKafka::Headers* headers = msg.headers();
    if (!headers || !control_) return;
    const RdKafka::Headers::Header type = headers->get_last(kControlHeader);
    const RdKafka::Headers::Header origin = headers->get_last(kOriginHeader);
    if (type.err() != RdKafka::ERR_NO_ERROR || !type.value()) return;
    ControlMessage m{std::string(static_cast<const char*>(type.value()), type.value_size()), {},
                     std::string(static_cast<const char*>(msg.payload()), msg.len())};
    if (!valid_control_type(m.type)) return;
    if (origin.err() == RdKafka::ERR_NO_ERROR && origin.value())
      m.origin.assign(static_cast<const char*>(origin.value()), origin.value_size());
    control_(std::move(m));
  }

  // A room's seqs are its partition's offsets, so its epoch names the topic (its id) and the
  // partition. Partitions added to the topic move some rooms to a new one, whose offsets start
  // again at 0: those rooms start a new epoch (a resume from before is told `reset`), the others
  // keep theirs.
  static std::string partition_epoch(const std::string& topic_id, int p) {
    return topic_id + '.' + std::to_string(p);
  }

  // A publish answer's epoch: partition p's as this node knows the topic, or empty while it
  // does not know the topic's id yet.
  std::string answer_epoch(int p) const {
    auto id = epoch();
    return id.empty() || p < 0 ? std::string() : partition_epoch(id, p);
  }

  // The partition a room's records go to (the producer's murmur2_random over the partitions this
  // node has), or -1 before the first assignment.
  int room_partition(std::string_view room) const {
    const int parts = assigned_partitions_.load(std::memory_order_acquire);
    if (parts <= 0) return -1;
    return rd_kafka_msg_partitioner_murmur2_random(nullptr, room.data(), room.size(), parts, nullptr, nullptr);
  }

  // The epoch of a room's seqs now, for a retry answered from the dedupe window.
  std::string room_epoch(std::string_view room) const { return answer_epoch(room_partition(room)); }

  void set_epoch(const std::string& id) {
    consumer_epoch_ = id;
    std::lock_guard lock(state_mu_);
    epoch_ = id;
  }

  std::string epoch() const {
    std::lock_guard lock(state_mu_);
    return epoch_;
  }

  // Returns whether a consumer error says the topic may have been deleted (and created again).
  static bool hints_topic_gone(RdKafka::ErrorCode err) {
    return err == RdKafka::ERR__AUTO_OFFSET_RESET || err == RdKafka::ERR_OFFSET_OUT_OF_RANGE ||
           err == RdKafka::ERR__UNKNOWN_PARTITION || err == RdKafka::ERR__UNKNOWN_TOPIC ||
           err == RdKafka::ERR_UNKNOWN_TOPIC_OR_PART;
  }

  // On the consumer thread, once the topic id showed the topic unchanged: partitions that
  // auto.offset.reset=error may have stopped go on from the first record not delivered yet.
  // The error may also be stale, from fetches begun before the partitions were assigned again
  // (librdkafka queues it unversioned, and a late one can stop the new fetch), so the
  // offset it names says nothing; only an offset the log no longer has (truncated, or past
  // retention) moves to the nearest one it has, leaving a hole the cache is told about.
  // Returns false if the broker did not answer (try again).
  bool resume_partitions(const std::vector<int>& parts) {
    for (int p : parts) {
      std::int64_t low = 0, high = 0;
      RdKafka::ErrorCode qerr = consumer_->query_watermark_offsets(cfg_.kafka_topic, p, &low, &high,
                                                                  cfg_.kafka_timing.request_timeout_ms);
      if (qerr != RdKafka::ERR_NO_ERROR) {
        note_error("watermarks: " + RdKafka::err2str(qerr));
        return false;
      }
      const std::optional<std::uint64_t> next = cache_.position(p);
      std::int64_t at = next ? static_cast<std::int64_t>(*next) : high;
      if (at < low || at > high) {
        say( "kafka bus %s: topic '%s' [%d]: offset %lld is gone (log holds %lld..%lld): "
                     "going on from %lld", cfg_.node_id.c_str(), cfg_.kafka_topic.c_str(), p,
                     static_cast<long long>(at), static_cast<long long>(low), static_cast<long long>(high),
                     static_cast<long long>(std::clamp(at, low, high)));
        at = std::clamp(at, low, high);
        cache_.start_partition(p, static_cast<std::uint64_t>(at) + 1);
      }
      std::vector<RdKafka::TopicPartition*> one{RdKafka::TopicPartition::create(cfg_.kafka_topic, p)};
      // Fails only if an earlier attempt got this far: the partition is unassigned already.
      std::unique_ptr<RdKafka::Error> gone(consumer_->incremental_unassign(one));
      one[0]->set_offset(at);
      std::unique_ptr<RdKafka::Error> err(consumer_->incremental_assign(one));
      RdKafka::TopicPartition::destroy(one);
      if (err) {
        note_error("assign: " + err->str());
        return false;
      }
    }
    return true;
  }

  // On the consumer thread, with the id just read: a new one means the topic was deleted and
  // created again. Everything remembered of the old one goes, and the new one is read from its
  // beginning (set_up_consumer): all it holds was published after the old one's end. Returns
  // whether the id was new.
  bool check_topic_id(const std::optional<std::string>& id) {
    if (!id || *id == consumer_epoch_) return false;
    say( "kafka bus %s: topic '%s' was recreated (id %s, was %s): read again from its start",
                 cfg_.node_id.c_str(), cfg_.kafka_topic.c_str(), id->c_str(), consumer_epoch_.c_str());
    std::vector<RdKafka::TopicPartition*> current;
    consumer_->assignment(current);
    std::unique_ptr<RdKafka::Error> err(consumer_->incremental_unassign(current));
    RdKafka::TopicPartition::destroy(current);
    if (err) note_error("unassign: " + err->str());
    cache_.clear();
    dedupe_.clear();
    recreated_ = true;
    assigned_partitions_.store(0, std::memory_order_release);  // the loop sets up again
    return true;
  }

  // ---- history reads (the reader thread) ------------------------------------------------

  void make_reader() {
    auto conf = base_conf();
    set(*conf, "group.id", "chatd-" + cfg_.node_id + "-history");  // a label only, as above
    set(*conf, "enable.auto.commit", "false");
    set(*conf, "enable.auto.offset.store", "false");
    set(*conf, "auto.offset.reset", "earliest");  // a start offset retention removed: go on from there
    set(*conf, "enable.partition.eof", "true");   // the end of the log ends a read
    set(*conf, "fetch.wait.max.ms", "10");
    set(*conf, "queued.min.messages", "1000");
    std::string why;
    // The reader serves its events only inside a read, so an outage's "all brokers down" would
    // wait there and mark the bus down at the first read after the broker is back.
    if (conf->set("event_cb", static_cast<RdKafka::EventCb*>(&reader_events_), why) != RdKafka::Conf::CONF_OK)
      throw std::runtime_error("kafka bus: event_cb: " + why);
    reader_.reset(RdKafka::KafkaConsumer::create(conf.get(), why));
    if (!reader_) throw std::runtime_error("kafka bus: history reader: " + why);
  }

  void run_reader_loop() {
    for (;;) {
      std::vector<std::pair<HistoryRequest, HistoryFn>> jobs;
      {
        std::unique_lock lock(reads_mu_);
        reads_cv_.wait(lock, [&] { return reads_stopped_ || !reads_.empty(); });
        if (reads_stopped_) return;
        // Everything waiting is answered together: after a restart resumes come as a herd, and
        // one scan of a partition serves all of theirs (read_batch).
        const std::size_t n = std::min(reads_.size(), kReadBatch);
        for (std::size_t i = 0; i < n; ++i) {
          jobs.push_back(std::move(reads_.front()));
          reads_.pop_front();
        }
      }
      read_batch(jobs);
    }
  }

  // A record found by a topic read.
  struct Found {
    Delivery d;
    std::int64_t ts_ms;
  };

  // Reads the records of `rooms` with offsets in [from, to) of partition `p` into `out`
  // (ascending), at most `max_found`, skipping those past the ttl and retried client ids.
  // `budget` counts the records this read may still scan. Returns timed_out when the budget or
  // `deadline` ran out before `to`, engine_down when the broker failed.
  std::error_code scan(int p, const std::unordered_set<std::string_view>& rooms, std::int64_t from, std::int64_t to,
                       std::size_t max_found, const std::string& epoch, std::size_t& budget,
                       Clock::time_point deadline, std::vector<Found>& out) {
    std::vector<RdKafka::TopicPartition*> parts{RdKafka::TopicPartition::create(cfg_.kafka_topic, p, from)};
    RdKafka::ErrorCode err = reader_->assign(parts);
    RdKafka::TopicPartition::destroy(parts);
    if (err != RdKafka::ERR_NO_ERROR) return Error::engine_down;
    const std::int64_t cutoff = cfg_.history_ttl.count() > 0 ? now_ms() - milliseconds(cfg_.history_ttl).count() : INT64_MIN;
    const std::int64_t window = milliseconds(cfg_.dedupe_window).count();
    std::unordered_map<std::string, std::int64_t> first_of_id;  // room '\0' client id -> first ts
    std::error_code ec;
    for (;;) {
      if (Clock::now() >= deadline || quit_.load(std::memory_order_acquire)) {
        ec = Error::timed_out;
        break;
      }
      std::unique_ptr<RdKafka::Message> m(reader_->consume(kConsumeTimeoutMs));
      if (m->err() == RdKafka::ERR__TIMED_OUT) continue;
      if (m->err() == RdKafka::ERR__PARTITION_EOF) break;  // the end of the log
      if (m->err() != RdKafka::ERR_NO_ERROR) {
        note_error("history read: " + m->errstr());
        ec = Error::engine_down;
        break;
      }
      if (m->partition() != p || m->offset() < from) continue;  // left from an earlier read
      if (m->offset() >= to) break;
      if (budget == 0) {
        ec = Error::timed_out;
        break;
      }
      --budget;
      if (!m->key_pointer()) continue;
      const std::string_view room(static_cast<const char*>(m->key_pointer()), m->key_len());
      if (!rooms.contains(room)) continue;
      const std::int64_t ts = m->timestamp().timestamp;
      if (ts < cutoff) continue;
      if (RdKafka::Headers* headers = m->headers()) {
        const RdKafka::Headers::Header cid = headers->get_last(kClientIdHeader);
        if (cid.err() == RdKafka::ERR_NO_ERROR && cid.value()) {
          std::string key(room);
          key += '\0';
          key.append(static_cast<const char*>(cid.value()), cid.value_size());
          auto [it, first] = first_of_id.try_emplace(std::move(key), ts);
          if (!first && ts - it->second <= window) continue;  // consumers dropped it too
          it->second = first ? ts : it->second;
        }
      }
      out.push_back(Found{Delivery{std::string(room), static_cast<std::uint64_t>(m->offset()) + 1, epoch,
                                   std::string(static_cast<const char*>(m->payload()), m->len())},
                          ts});
      if (out.size() >= max_found) break;
    }
    reader_->unassign();
    return ec;
  }

  // One history request on its way: what the cache and the partition's bounds say, and for a
  // read forwards, the part of the topic still to scan.
  struct Read {
    int p = 0;
    std::size_t limit = 0;
    KafkaHistoryCache::Answer cached;
    std::int64_t retained = 0;    // the oldest offset the topic still holds for the request
    std::int64_t cache_from = 0;  // the cache holds every message of the room from this offset on
    bool complete = false;        // h is the whole answer: nothing to read
    std::int64_t from = 0, to = 0;  // forwards: the offsets [from, to) to scan first
    History h;
  };
  // A partition's offsets: the log's [low, high), and the oldest within the ttl.
  struct Bounds {
    std::int64_t low = 0, high = 0, retained = 0;
  };

  // Answers `jobs` (each called once). Reads forwards (resumes) of one partition share one scan
  // of the union of their ranges when it fits one request's budget: a herd of resumes after a
  // restart then costs one pass over the topic, not one per client.
  void read_batch(std::vector<std::pair<HistoryRequest, HistoryFn>>& jobs) {
    std::vector<Read> reads(jobs.size());
    std::vector<std::error_code> errors(jobs.size());
    std::unordered_map<int, std::vector<std::size_t>> scans;  // partition -> reads that need one
    std::unordered_map<int, Bounds> bounds;
    for (std::size_t i = 0; i < jobs.size(); ++i) {
      errors[i] = begin_read(jobs[i].first, reads[i], bounds);
      if (errors[i] || reads[i].complete) continue;
      if (jobs[i].first.after_seq == 0) {
        errors[i] = read_backwards(jobs[i].first, reads[i]);
        continue;
      }
      if (reads[i].from < reads[i].to) scans[reads[i].p].push_back(i);
      else finish_forwards(reads[i], {});
    }
    for (auto& [p, ids] : scans) {
      std::int64_t from = INT64_MAX, to = 0;
      std::unordered_set<std::string_view> rooms;
      for (std::size_t i : ids) {
        from = std::min(from, reads[i].from);
        to = std::max(to, reads[i].to);
        rooms.insert(jobs[i].first.room_id);
      }
      const bool shared = ids.size() > 1 && static_cast<std::uint64_t>(to - from) <= cfg_.kafka_history_scan;
      if (!shared) {
        for (std::size_t i : ids) {
          Read& r = reads[i];
          std::size_t budget = cfg_.kafka_history_scan;
          std::vector<Found> found;
          // A gap between the topic's part and the cache would be silent: a read that cannot
          // finish is an error, never a shorter answer.
          errors[i] = scan(p, {jobs[i].first.room_id}, r.from, r.to, r.limit, r.h.epoch, budget,
                           Clock::now() + milliseconds(cfg_.kafka_history_read_ms), found);
          if (!errors[i]) finish_forwards(r, std::move(found));
        }
        continue;
      }
      std::size_t budget = cfg_.kafka_history_scan;
      std::vector<Found> found;
      const std::error_code ec = scan(p, rooms, from, to, SIZE_MAX, reads[ids.front()].h.epoch, budget,
                                      Clock::now() + milliseconds(cfg_.kafka_history_read_ms), found);
      std::unordered_map<std::string_view, std::vector<const Found*>> by_room;  // each ascending
      for (const Found& f : found) by_room[f.d.room_id].push_back(&f);
      for (std::size_t i : ids) {
        Read& r = reads[i];
        errors[i] = ec;
        if (ec) continue;
        std::vector<Found> mine;
        for (const Found* f : by_room[jobs[i].first.room_id]) {
          const auto offset = static_cast<std::int64_t>(f->d.seq) - 1;
          if (offset >= r.to || mine.size() >= r.limit) break;
          if (offset >= r.from) mine.push_back(*f);
        }
        finish_forwards(r, std::move(mine));
      }
    }
    for (std::size_t i = 0; i < jobs.size(); ++i)
      jobs[i].second(errors[i], errors[i] ? History{} : std::move(reads[i].h));
  }

  // What a request needs from the node's cache and the partition's bounds; sets r.complete when
  // that is the whole answer, else what is left to read (older than this node's start or than
  // its cache's bounds).
  std::error_code begin_read(const HistoryRequest& req, Read& r, std::unordered_map<int, Bounds>& bounds) {
    r.p = room_partition(req.room_id);
    if (r.p < 0) return Error::engine_down;
    const std::int64_t now = now_ms();
    r.limit = std::min(req.limit, cfg_.history_size);
    HistoryRequest capped = req;
    capped.limit = r.limit;
    r.cached = cache_.read(r.p, capped, now);
    if (!r.cached.known) return Error::engine_down;
    History& h = r.h;
    h.epoch = partition_epoch(epoch(), r.p);

    // What the topic still holds for this request: offsets [retained, high), asked once per
    // partition and batch.
    auto [known, fresh] = bounds.try_emplace(r.p);
    Bounds& b = known->second;
    if (fresh) {
      if (reader_->query_watermark_offsets(cfg_.kafka_topic, r.p, &b.low, &b.high,
                                           cfg_.kafka_timing.request_timeout_ms) != RdKafka::ERR_NO_ERROR) {
        bounds.erase(known);
        return Error::engine_down;
      }
      b.retained = b.low;
      if (cfg_.history_ttl.count() > 0) {
        std::vector<RdKafka::TopicPartition*> at{RdKafka::TopicPartition::create(
            cfg_.kafka_topic, r.p, now - milliseconds(cfg_.history_ttl).count())};
        RdKafka::ErrorCode err = reader_->offsetsForTimes(at, cfg_.kafka_timing.request_timeout_ms);
        const std::int64_t young = at[0]->offset();
        RdKafka::TopicPartition::destroy(at);
        if (err != RdKafka::ERR_NO_ERROR) {
          bounds.erase(known);
          return Error::engine_down;
        }
        b.retained = young < 0 ? b.high : std::max(b.low, young);  // -1: every record is older
      }
    }
    const std::int64_t high = b.high;
    // The newest seq any node can have delivered: a client coming from a node whose consumer is
    // ahead of this one's is not "ahead of history"; what this node has not consumed yet (above
    // cached.position) reaches the subscriber live.
    h.last_seq = std::max(r.cached.position, static_cast<std::uint64_t>(std::max<std::int64_t>(high, 0)));
    // History off (--history-size 0): nothing is retained as far as clients are told, so a
    // resume hears that instead of getting nothing and no notice.
    r.complete = cfg_.history_size == 0;
    if (r.complete) return {};
    r.retained = b.retained;
    h.first_seq = r.retained < high ? static_cast<std::uint64_t>(r.retained) + 1 : 0;
    r.complete = r.limit == 0;
    if (r.complete) return {};
    r.cache_from = static_cast<std::int64_t>(r.cached.complete_from) - 1;
    if (req.after_seq != 0) {
      // The oldest `limit` after after_seq: the topic's part first, then the cache's.
      r.from = std::max(static_cast<std::int64_t>(req.after_seq), r.retained);
      r.to = r.cache_from;
      if (req.before_seq != 0) r.to = std::min(r.to, static_cast<std::int64_t>(req.before_seq) - 1);
    }
    return {};
  }

  // Completes a read forwards with what the topic gave (ascending, at most r.limit), then the cache's.
  static void finish_forwards(Read& r, std::vector<Found> found) {
    for (auto& f : found) r.h.messages.push_back(std::move(f.d));
    for (auto& d : r.cached.messages) {
      if (r.h.messages.size() >= r.limit) break;
      d.epoch = r.h.epoch;
      r.h.messages.push_back(std::move(d));
    }
  }

  // The newest `limit` before before_seq: the cache's, then older ones from the topic, read in
  // windows backwards from where the cache starts (growing 4x each time).
  std::error_code read_backwards(const HistoryRequest& req, Read& r) {
    History& h = r.h;
    std::int64_t end = r.cache_from;
    if (req.before_seq != 0) end = std::min(end, static_cast<std::int64_t>(req.before_seq) - 1);
    const std::size_t need = r.limit - std::min(r.limit, r.cached.messages.size());
    std::size_t budget = cfg_.kafka_history_scan;
    const auto deadline = Clock::now() + milliseconds(cfg_.kafka_history_read_ms);
    std::vector<Found> older;
    std::int64_t window = std::max<std::int64_t>(kFirstReadWindow, static_cast<std::int64_t>(need) * kReadWindowPerMessage);
    while (need > 0 && older.size() < need && end > r.retained) {
      const std::int64_t start = std::max(r.retained, end - window);
      std::vector<Found> part;
      // Out of budget or time: what was read is the newest part and has no hole; stop there.
      const std::error_code ec = scan(r.p, {req.room_id}, start, end, SIZE_MAX, h.epoch, budget, deadline, part);
      if (ec == Error::engine_down) return ec;
      part.insert(part.end(), std::make_move_iterator(older.begin()), std::make_move_iterator(older.end()));
      older = std::move(part);
      if (ec) {
        h.first_seq = std::max<std::uint64_t>(h.first_seq, static_cast<std::uint64_t>(start) + 1);
        break;
      }
      end = start;
      window *= kReadWindowGrowth;
    }
    const std::size_t skip = older.size() > need ? older.size() - need : 0;
    for (std::size_t i = skip; i < older.size(); ++i) h.messages.push_back(std::move(older[i].d));
    for (auto& d : r.cached.messages) {
      d.epoch = h.epoch;
      h.messages.push_back(std::move(d));
    }
    return {};
  }

  // The producer thread: serves delivery reports, notices the broker coming back, and replaces
  // a producer that hit a fatal error.
  void run_producer_loop() {
    auto next_probe = Clock::now();
    while (!quit_.load(std::memory_order_acquire)) {
      producer_->poll(kConsumeTimeoutMs);
      std::string fatal;
      if (producer_->fatal_error(fatal) != RdKafka::ERR_NO_ERROR) replace_producer(fatal);
      drain_retired(0);
      if (!up() && Clock::now() >= next_probe) {
        RdKafka::Metadata* raw = nullptr;
        if (producer_->metadata(false, nullptr, &raw, kProbeTimeoutMs) == RdKafka::ERR_NO_ERROR) mark_up();
        delete raw;
        next_probe = Clock::now() + milliseconds(cfg_.kafka_timing.probe_ms);
      }
    }
  }

  // On the producer thread: swaps in a new producer for one that hit a fatal error. The old one
  // fails what it had queued (engine_down, see dr_cb) and stays in retired_, polled, until its
  // requests in flight are answered too.
  void replace_producer(const std::string& why) {
    std::unique_ptr<RdKafka::Producer> old;
    {
      std::unique_lock lock(stop_mu_);  // no publish() between the two handles
      if (stopped_) return;             // stop() purges it and answers everything
      old = std::move(producer_);
      replacing_.store(true, std::memory_order_release);
      try {
        make_producer();
      } catch (const std::exception& e) {  // the same settings worked at start: not expected
        say( "kafka bus %s: cannot replace the producer: %s", cfg_.node_id.c_str(), e.what());
        producer_ = std::move(old);
        return;
      }
      holding_.store(true, std::memory_order_release);  // until `old` has answered (drain_retired)
    }
    const int held = old->outq_len();
    replacements_.fetch_add(1, std::memory_order_relaxed);
    say(
                 "kafka bus %s: producer fatal error (%s): replaced by a new producer; %d message(s) were still "
                 "with the old one (unsent ones fail, those in flight get the broker's answer)",
                 cfg_.node_id.c_str(), why.c_str(), held);
    note_error("producer fatal error: " + why);
    old->purge(RdKafka::Producer::PURGE_QUEUE);  // librdkafka did already; a late produce() may not be
    retired_.push_back(std::move(old));
    drain_retired(50);
  }

  // Serves the delivery reports of retired producers (waiting up to `wait_ms` each) and drops
  // those that have nothing left. On the producer thread, or in stop() after it ended.
  void drain_retired(int wait_ms) {
    if (retired_.empty()) return;
    for (auto& p : retired_) p->poll(wait_ms);
    std::erase_if(retired_, [](const auto& p) { return p->outq_len() == 0; });
    if (!retired_.empty()) return;
    replacing_.store(false, std::memory_order_release);
    if (holding_.load(std::memory_order_acquire)) release_held();
  }

  BusConfig cfg_;
  DeliverFn deliver_;
  ControlFn control_;  // set before start
  KafkaHistoryCache cache_;
  KafkaDedupeWindow dedupe_;
  std::string consumer_epoch_;  // consumer thread only; epoch_ is the shared copy
  bool recreated_ = false;      // consumer thread only: the next set-up reads the topic whole

  std::mutex in_flight_mu_;
  std::unordered_map<std::string, std::vector<PublishedFn>> in_flight_;  // room\0id -> retries waiting

  // The history reader's events: logged, never taken as the bus's state (see make_reader).
  struct ReaderEvents final : RdKafka::EventCb {
    explicit ReaderEvents(KafkaBus& b) : bus(b) {}
    void event_cb(RdKafka::Event& ev) override {
      if (ev.type() == RdKafka::Event::EVENT_LOG && ev.severity() <= RdKafka::Event::EVENT_SEVERITY_WARNING)
        say( "kafka bus %s: history reader: %s: %s", bus.cfg_.node_id.c_str(), ev.fac().c_str(),
                     ev.str().c_str());
      else if (ev.type() == RdKafka::Event::EVENT_ERROR)
        bus.note_error("history reader: " + RdKafka::err2str(ev.err()) + (ev.str().empty() ? "" : ": " + ev.str()));
    }
    KafkaBus& bus;
  };
  ReaderEvents reader_events_{*this};
  std::unique_ptr<RdKafka::KafkaConsumer> reader_;  // history reads from the topic
  std::thread reader_thread_;
  std::mutex reads_mu_;
  std::condition_variable reads_cv_;
  std::deque<std::pair<HistoryRequest, HistoryFn>> reads_;
  bool reads_stopped_ = false;
  std::unique_ptr<RdKafka::Producer> producer_;
  std::unique_ptr<RdKafka::KafkaConsumer> consumer_;
  rd_kafka_queue_t* consumer_queue_ = nullptr;  // only to wake consume() early
  std::thread producer_thread_;
  std::thread consumer_thread_;
  // Producers replaced after a fatal error, until they answered what they held (producer thread).
  std::vector<std::unique_ptr<RdKafka::Producer>> retired_;
  std::atomic<bool> replacing_{false};  // from a fatal error until its producer answered everything
  // Published while a replaced producer still had requests in flight (produce_or_hold).
  std::mutex held_mu_;
  std::deque<Held> held_;
  std::atomic<bool> holding_{false};
  std::atomic<int> replacements_{0};

  std::atomic<bool> up_{false};
  std::atomic<bool> ever_up_{false};
  std::atomic<std::uint64_t> control_gaps_{0};  // outages ended (see set_up)
  std::atomic<int> assigned_partitions_{0};
  std::atomic<bool> quit_{false};

  std::shared_mutex stop_mu_;  // publish() shares it; stop() takes it alone to flip stopped_
  bool stopped_ = false;       // under stop_mu_ (writes also under ready_mu_)

  std::mutex ready_mu_;
  std::vector<DoneFn> pending_ready_;  // subscribe() callbacks waiting for the assignment

  mutable std::mutex state_mu_;
  std::string last_error_;
  std::string epoch_;
};

}  // namespace

std::unique_ptr<MessageBus> make_kafka_bus(const BusConfig& cfg, boost::asio::io_context&) {
  return std::make_unique<KafkaBus>(cfg);
}

bool inject_kafka_fatal_error(MessageBus& bus, const std::string& reason) {
  auto* kafka = dynamic_cast<KafkaBus*>(&bus);
  return kafka && kafka->inject_fatal_error(reason);
}

}  // namespace chatd::bus
