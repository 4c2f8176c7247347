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
// Threads: start() spawns two. The consumer thread sets up the topic and assignment, then
// consumes and calls on_deliver in partition order, and fires subscribe() callbacks. The producer
// thread serves delivery reports (publish's `done`) and probes the broker while it is down.
// publish() never blocks: a full local queue answers Error::rejected at once.
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafkacpp.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

#include "bus/message_bus.h"

namespace chatd::bus {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// How long the consumer thread may sleep in consume(); stop() and subscribe() wake it earlier.
constexpr int kConsumeTimeoutMs = 100;
// Pause between set-up attempts (create topic, find partitions, assign) while the broker is away.
constexpr milliseconds kSetupRetry{500};
// Each set-up request waits at most this long; start() makes one attempt before returning.
constexpr int kSetupRequestTimeoutMs = 3000;
// While down, the producer thread asks the broker for metadata this often to notice it is back.
constexpr milliseconds kProbeInterval{1000};
// How often the consumer looks for partitions added to the topic after start.
constexpr milliseconds kPartitionCheckInterval{30000};
// Until Kafka history exists (issue 9, history-engines): one fixed epoch.
constexpr const char* kEpoch = "0";
// stop() waits this long for accepted messages to reach the broker before purging them.
constexpr int kFlushOnStopMs = 5000;

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
  explicit KafkaBus(const BusConfig& cfg) : cfg_(cfg) {
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
    producer_thread_ = std::thread([this] { run_producer_loop(); });
    consumer_thread_ = std::thread([this] { run_consumer_loop(); });
  }

  // x-client-id de-duplication is not done here yet (history-engines).
  void publish(std::string room_id, std::string payload, PublishOptions, PublishedFn done) override {
    std::shared_lock lock(stop_mu_);
    if (stopped_ || !producer_) {
      lock.unlock();
      done(Error::stopped, 0);
      return;
    }
    auto* opaque = new PublishedFn(std::move(done));
    // RK_MSG_COPY: librdkafka keeps its own copy, so publish() owns nothing past this call.
    RdKafka::ErrorCode err = producer_->produce(
        cfg_.kafka_topic, RdKafka::Topic::PARTITION_UA, RdKafka::Producer::RK_MSG_COPY,
        payload.data(), payload.size(), room_id.data(), room_id.size(), 0, opaque);
    if (err == RdKafka::ERR_NO_ERROR) return;
    lock.unlock();
    std::unique_ptr<PublishedFn> failed(opaque);
    // A full local queue means the broker has been away for a while: refuse rather than block.
    (*failed)(err == RdKafka::ERR__QUEUE_FULL ? Error::rejected : final_error(err, up()), 0);
  }

  // Nothing is kept yet (history-engines): the epoch and no messages.
  void history(HistoryRequest, HistoryFn done) override { done({}, History{std::string(kEpoch), 0, 0, {}}); }

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

  std::string describe() const override {
    std::string s = "kafka " + cfg_.kafka_brokers + " topic '" + cfg_.kafka_topic + "': ";
    s += up() ? "up" : "down";
    int parts = assigned_partitions_.load(std::memory_order_acquire);
    s += parts > 0 ? ", " + std::to_string(parts) + " partitions assigned" : ", not assigned yet";
    if (!up()) {
      std::lock_guard lock(state_mu_);
      if (!last_error_.empty()) s += " (last error: " + last_error_ + ")";
    }
    return s;
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
      producer_->flush(up() ? kFlushOnStopMs : 0);
      producer_->purge(RdKafka::Producer::PURGE_QUEUE | RdKafka::Producer::PURGE_INFLIGHT);
    }
    if (producer_thread_.joinable()) producer_thread_.join();
    if (producer_) {
      auto deadline = Clock::now() + milliseconds(2000);
      while (producer_->outq_len() > 0 && Clock::now() < deadline) producer_->poll(50);
    }
  }

 private:
  // RdKafka::DeliveryReportCb, on the producer thread (or stop()'s): the final word on a message.
  void dr_cb(RdKafka::Message& msg) override {
    std::unique_ptr<PublishedFn> done(static_cast<PublishedFn*>(msg.msg_opaque()));
    if (msg.err() == RdKafka::ERR_NO_ERROR) mark_up();
    else note_error("delivery: " + msg.errstr());
    // seq = offset + 1, as deliver() numbers it.
    auto seq = msg.err() == RdKafka::ERR_NO_ERROR && msg.offset() >= 0 ? static_cast<std::uint64_t>(msg.offset()) + 1 : 0;
    if (done && *done) (*done)(final_error(msg.err(), up()), seq);
  }

  // RdKafka::EventCb, on the producer or consumer thread: errors and librdkafka's own log lines
  // (which this callback replaces, so warnings are passed on to stderr here).
  void event_cb(RdKafka::Event& ev) override {
    if (ev.type() == RdKafka::Event::EVENT_LOG && ev.severity() <= RdKafka::Event::EVENT_SEVERITY_WARNING) {
      std::fprintf(stderr, "kafka bus %s: %s: %s\n", cfg_.node_id.c_str(), ev.fac().c_str(), ev.str().c_str());
      return;
    }
    if (ev.type() != RdKafka::Event::EVENT_ERROR) return;
    std::string what = RdKafka::err2str(ev.err()) + (ev.str().empty() ? "" : ": " + ev.str());
    if (ev.err() == RdKafka::ERR__ALL_BROKERS_DOWN || ev.fatal()) set_up(false, what);
    note_error(std::move(what));
  }

  void mark_up() { set_up(true, "broker reachable"); }

  // Records reachability; a change is worth a line in the node's log.
  void set_up(bool now, const std::string& why) {
    if (up_.exchange(now, std::memory_order_acq_rel) != now)
      std::fprintf(stderr, "kafka bus %s: %s %s: %s\n", cfg_.node_id.c_str(),
                   cfg_.kafka_brokers.c_str(), now ? "up" : "down", why.c_str());
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
    set(*conf, "auto.offset.reset", "latest");  // if an offset vanishes, go live, never replay
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
    rd_kafka_t* rk = producer_->c_ptr();
    rd_kafka_NewTopic_t* topic = rd_kafka_NewTopic_new(
        cfg_.kafka_topic.c_str(), cfg_.kafka_partitions, cfg_.kafka_replication, why, sizeof why);
    if (!topic) throw std::runtime_error(std::string("kafka bus: topic: ") + why);
    rd_kafka_AdminOptions_t* options = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
    rd_kafka_AdminOptions_set_request_timeout(options, kSetupRequestTimeoutMs, why, sizeof why);
    rd_kafka_AdminOptions_set_operation_timeout(options, kSetupRequestTimeoutMs, why, sizeof why);
    rd_kafka_queue_t* queue = rd_kafka_queue_new(rk);
    rd_kafka_CreateTopics(rk, &topic, 1, options, queue);
    // Waits in slices so stop() need not sit out the request timeout.
    rd_kafka_event_t* ev = nullptr;
    auto deadline = Clock::now() + milliseconds(kSetupRequestTimeoutMs + 1000);
    while (!ev && Clock::now() < deadline && !quit_.load(std::memory_order_acquire))
      ev = rd_kafka_queue_poll(queue, 100);

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
    RdKafka::ErrorCode err = consumer_->metadata(false, topic.get(), &raw, kSetupRequestTimeoutMs);
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

  // Assigns partitions [from, to) at their current end offsets (looked up here, so the start
  // position is a known number before `ready` fires). Returns false if the broker did not answer.
  bool assign_at_end(int from, int to) {
    std::vector<RdKafka::TopicPartition*> parts;
    bool ok = true;
    for (int p = from; p < to && ok; ++p) {
      int64_t low = 0, high = 0;
      RdKafka::ErrorCode err = consumer_->query_watermark_offsets(cfg_.kafka_topic, p, &low, &high,
                                                                 kSetupRequestTimeoutMs);
      if (err != RdKafka::ERR_NO_ERROR) {
        note_error("watermarks: " + RdKafka::err2str(err));
        ok = false;
      } else {
        parts.push_back(RdKafka::TopicPartition::create(cfg_.kafka_topic, p, high));
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

  // Creates the topic if needed and assigns every partition at its end. Returns true once done.
  bool set_up_consumer() {
    if (!create_topic()) return false;
    // A topic created a moment ago may not be in the metadata yet: ask again briefly.
    int n = partition_count();
    for (int i = 0; i < 20 && n <= 0 && !quit_.load(std::memory_order_acquire); ++i) {
      std::this_thread::sleep_for(milliseconds(100));
      n = partition_count();
    }
    if (n <= 0 || !assign_at_end(0, n)) return false;
    assigned_partitions_.store(n, std::memory_order_release);
    mark_up();
    return true;
  }

  // Partitions added to the topic later start at their beginning: everything in them is new.
  void assign_new_partitions() {
    int have = assigned_partitions_.load(std::memory_order_acquire);
    int now = partition_count();
    if (now <= have) return;
    std::vector<RdKafka::TopicPartition*> parts;
    for (int p = have; p < now; ++p)
      parts.push_back(RdKafka::TopicPartition::create(cfg_.kafka_topic, p,
                                                      RdKafka::Topic::OFFSET_BEGINNING));
    std::unique_ptr<RdKafka::Error> err(consumer_->incremental_assign(parts));
    RdKafka::TopicPartition::destroy(parts);
    if (err) note_error("assign: " + err->str());
    else assigned_partitions_.store(now, std::memory_order_release);
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
    auto next_check = Clock::now() + kPartitionCheckInterval;
    while (!quit_.load(std::memory_order_acquire)) {
      // Assignment and start offsets are fixed, so whatever is published from here on arrives.
      fire_ready();
      std::unique_ptr<RdKafka::Message> msg(consumer_->consume(kConsumeTimeoutMs));
      if (msg->err() == RdKafka::ERR_NO_ERROR) {
        mark_up();
        deliver(*msg);
      } else if (msg->err() != RdKafka::ERR__TIMED_OUT) {
        note_error("consume: " + msg->errstr());
      }
      if (Clock::now() >= next_check) {
        assign_new_partitions();
        next_check = Clock::now() + kPartitionCheckInterval;
      }
    }
  }

  void deliver(const RdKafka::Message& msg) {
    if (!deliver_ || !msg.key_pointer()) return;  // a keyless record is not one of ours
    Delivery d;
    d.room_id.assign(static_cast<const char*>(msg.key_pointer()), msg.key_len());
    // The offset: strictly increasing per room (one room, one partition), identical on every
    // node, but not contiguous (other rooms share the partition). +1 so that 0 means "none".
    d.seq = static_cast<std::uint64_t>(msg.offset()) + 1;
    d.epoch = kEpoch;
    d.payload.assign(static_cast<const char*>(msg.payload()), msg.len());
    deliver_(std::move(d));
  }

  // The producer thread: serves delivery reports and notices the broker coming back.
  void run_producer_loop() {
    auto next_probe = Clock::now();
    while (!quit_.load(std::memory_order_acquire)) {
      producer_->poll(100);
      if (!up() && Clock::now() >= next_probe) {
        RdKafka::Metadata* raw = nullptr;
        if (producer_->metadata(false, nullptr, &raw, 1000) == RdKafka::ERR_NO_ERROR) mark_up();
        delete raw;
        next_probe = Clock::now() + kProbeInterval;
      }
    }
  }

  BusConfig cfg_;
  DeliverFn deliver_;
  std::unique_ptr<RdKafka::Producer> producer_;
  std::unique_ptr<RdKafka::KafkaConsumer> consumer_;
  rd_kafka_queue_t* consumer_queue_ = nullptr;  // only to wake consume() early
  std::thread producer_thread_;
  std::thread consumer_thread_;

  std::atomic<bool> up_{false};
  std::atomic<int> assigned_partitions_{0};
  std::atomic<bool> quit_{false};

  std::shared_mutex stop_mu_;  // publish() shares it; stop() takes it alone to flip stopped_
  bool stopped_ = false;       // under stop_mu_ (writes also under ready_mu_)

  std::mutex ready_mu_;
  std::vector<DoneFn> pending_ready_;  // subscribe() callbacks waiting for the assignment

  mutable std::mutex state_mu_;
  std::string last_error_;
};

}  // namespace

std::unique_ptr<MessageBus> make_kafka_bus(const BusConfig& cfg, boost::asio::io_context&) {
  return std::make_unique<KafkaBus>(cfg);
}

}  // namespace chatd::bus
