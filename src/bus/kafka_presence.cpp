// Presence over Kafka. Kafka keeps no shared state to ask, so every node keeps the whole
// picture itself, built from one ordered log: the topic <kafka-topic>-presence with ONE
// partition, so every node applies the same records in the same order and reaches the same
// state. Each node reads it from the end (its own start), like the chat topic.
//
// Records (value, tab-separated; names cannot hold tabs: check_name refuses control characters):
//   J <run> <token> <room> <member>   this run of a node holds the member (its first connection)
//   L <run> <token> <room> <member>   ... no longer (its last, after any grace period)
//   S <run> 0 <room> <member>         a snapshot line: the run holds the member (answers W)
//   W <run>                           a new run asks every node for a snapshot of what it holds
//   R <run> <held run> <room> <member> answers W too: a run of the asker's node that is not
//                                     declared dead yet (the asker's crashed predecessor) holds
//                                     the member, so a member coming back is not news
//   H <run>                           heartbeat, every PresenceConfig::heartbeat
//   D <run> <dead run>                <run> saw nothing from <dead run> for node_timeout
// State: per room, member -> the runs holding them. A node learns whether its own J or L was
// news ("first run" / "last run") when it reads that record back: the log's order decides, the
// same on every node. A D is applied by everyone where it stands in the log; the node that wrote
// the first D for a run reports the members that run alone held (GoneFn), so each is announced
// once. A run that reads a D for itself (it was cut off) writes its snapshot again.
//
// Bounds: a dead node's members leave within node_timeout + heartbeat (+ the log's latency).
// A new node knows the others' members once their snapshots arrive (a round trip after its
// start); counts it answers before that may be low. If every node stops, nobody is left to
// announce the leaves of the last run's members.
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafkacpp.h>

#include <boost/asio/io_context.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <stdexcept>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "bus/presence.h"
#include "log/log.h"
#include "log/thread_name.h"

namespace chatd::bus {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// A join or leave whose record did not come back within this long is answered engine_down.
constexpr milliseconds kAnswerTimeout{10000};
constexpr int kRequestTimeoutMs = 3000;

void set(RdKafka::Conf& conf, const std::string& name, const std::string& value) {
  std::string why;
  if (conf.set(name, value, why) != RdKafka::Conf::CONF_OK)
    throw std::runtime_error("kafka presence: " + name + ": " + why);
}

std::vector<std::string> split_tabs(std::string_view s) {
  std::vector<std::string> out;
  std::size_t pos = 0;
  for (;;) {
    auto tab = s.find('\t', pos);
    out.emplace_back(s.substr(pos, tab == std::string_view::npos ? std::string_view::npos : tab - pos));
    if (tab == std::string_view::npos) return out;
    pos = tab + 1;
  }
}

class KafkaPresence final : public Presence {
 public:
  KafkaPresence(const BusConfig& cfg, const PresenceConfig& pcfg)
      : cfg_(cfg), pcfg_(pcfg), topic_(cfg.kafka_topic + "-presence") {
    std::random_device rd;
    char nonce[17];
    std::snprintf(nonce, sizeof nonce, "%08x%08x", rd(), rd());
    run_ = cfg.node_id + ":" + nonce;

    std::unique_ptr<RdKafka::Conf> p(RdKafka::Conf::create(RdKafka::Conf::CONF_GLOBAL));
    set(*p, "bootstrap.servers", cfg.kafka_brokers);
    set(*p, "client.id", "chatd-presence-" + cfg.node_id);
    set(*p, "acks", "all");
    set(*p, "enable.idempotence", "true");  // one order per producer, no duplicates on retry
    set(*p, "linger.ms", "1");
    set(*p, "message.timeout.ms", "10000");
    set(*p, "socket.nagle.disable", "true");
    set(*p, "log.connection.close", "false");
    std::string why;
    producer_.reset(RdKafka::Producer::create(p.get(), why));
    if (!producer_) throw std::runtime_error("kafka presence: producer: " + why);

    std::unique_ptr<RdKafka::Conf> c(RdKafka::Conf::create(RdKafka::Conf::CONF_GLOBAL));
    set(*c, "bootstrap.servers", cfg.kafka_brokers);
    set(*c, "client.id", "chatd-presence-" + cfg.node_id);
    set(*c, "group.id", "chatd-presence-" + cfg.node_id);  // a label: assigned by hand, never joined
    set(*c, "enable.auto.commit", "false");
    set(*c, "auto.offset.reset", "latest");
    set(*c, "fetch.wait.max.ms", "10");
    set(*c, "fetch.min.bytes", "1");
    set(*c, "log.connection.close", "false");
    consumer_.reset(RdKafka::KafkaConsumer::create(c.get(), why));
    if (!consumer_) throw std::runtime_error("kafka presence: consumer: " + why);
  }

  ~KafkaPresence() override { stop(); }

  void start(GoneFn gone) override {
    gone_ = std::move(gone);
    thread_ = log::named_thread("kafka-presence", [this] { run(); });
  }

  void join(const std::string& room, const std::string& member, ChangedFn done) override {
    request('J', room, member, std::move(done));
  }
  void leave(const std::string& room, const std::string& member, ChangedFn done) override {
    request('L', room, member, std::move(done));
  }

  void members(const std::string& room, std::size_t limit, MembersFn done) override {
    MemberList out;
    {
      std::lock_guard lock(mu_);
      if (auto it = rooms_.find(room); it != rooms_.end()) {
        out.count = it->second.size();
        for (const auto& [m, runs] : it->second) {
          if (out.names.size() >= limit) break;
          out.names.push_back(m);
        }
      }
    }
    done({}, std::move(out));
  }

  void counts(std::vector<std::string> rooms, CountsFn done) override {
    std::vector<std::size_t> out(rooms.size(), 0);
    {
      std::lock_guard lock(mu_);
      for (std::size_t i = 0; i < rooms.size(); ++i)
        if (auto it = rooms_.find(rooms[i]); it != rooms_.end()) out[i] = it->second.size();
    }
    done({}, std::move(out));
  }

  bool up() const override { return up_.load(std::memory_order_relaxed); }

  void stop() override {
    if (stopped_.exchange(true)) return;
    if (thread_.joinable()) thread_.join();
    std::vector<ChangedFn> left;
    {
      std::lock_guard lock(mu_);
      for (auto& [t, p] : pending_) left.push_back(std::move(p.done));
      pending_.clear();
    }
    for (auto& d : left) d(Error::stopped, false, 0);
    if (consumer_) consumer_->close();
  }

 private:
  using Key = std::pair<std::string, std::string>;  // room, member
  struct Pending {
    ChangedFn done;
    Clock::time_point deadline;
    Key key;
    char kind;
  };

  void request(char kind, const std::string& room, const std::string& member, ChangedFn done) {
    std::uint64_t token;
    {
      std::lock_guard lock(mu_);
      token = ++next_token_;
      pending_[token] = {std::move(done), Clock::now() + kAnswerTimeout, {room, member}, kind};
      if (kind == 'J') mine_.insert({room, member});
      else mine_.erase({room, member});
      if (!assigned_) {  // produced once the consumer reads from where this node started, and the others answered its W
        early_.emplace_back(room, std::string(1, kind) + '\t' + run_ + '\t' + std::to_string(token) + '\t' + room + '\t' + member);
        return;
      }
    }
    produce(room, std::string(1, kind) + '\t' + run_ + '\t' + std::to_string(token) + '\t' + room + '\t' + member);
  }

  void produce(const std::string& key, const std::string& value) {
    auto err = producer_->produce(topic_, 0, RdKafka::Producer::RK_MSG_COPY, const_cast<char*>(value.data()), value.size(),
                                  key.data(), key.size(), 0, nullptr);
    if (err != RdKafka::ERR_NO_ERROR) log::event("presence_produce_failed", {{"error", RdKafka::err2str(err)}});
  }

  bool create_topic() {
    char why[512] = {};
    rd_kafka_t* rk = producer_->c_ptr();
    rd_kafka_NewTopic_t* topic = rd_kafka_NewTopic_new(topic_.c_str(), 1, cfg_.kafka_replication, why, sizeof why);
    if (!topic) throw std::runtime_error(std::string("kafka presence: topic: ") + why);
    // Nodes read it from their start only: an hour of records is plenty.
    rd_kafka_NewTopic_set_config(topic, "retention.ms", "3600000");
    rd_kafka_AdminOptions_t* options = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
    rd_kafka_AdminOptions_set_request_timeout(options, kRequestTimeoutMs, why, sizeof why);
    rd_kafka_queue_t* queue = rd_kafka_queue_new(rk);
    rd_kafka_CreateTopics(rk, &topic, 1, options, queue);
    rd_kafka_event_t* ev = nullptr;
    auto deadline = Clock::now() + milliseconds(kRequestTimeoutMs + 1000);
    while (!ev && Clock::now() < deadline && !stopped_.load()) ev = rd_kafka_queue_poll(queue, 100);
    bool ok = false;
    if (ev && !rd_kafka_event_error(ev)) {
      size_t n = 0;
      auto** results = rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(ev), &n);
      auto err = n == 1 ? rd_kafka_topic_result_error(results[0]) : RD_KAFKA_RESP_ERR__BAD_MSG;
      ok = err == RD_KAFKA_RESP_ERR_NO_ERROR || err == RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS;
    }
    if (ev) rd_kafka_event_destroy(ev);
    rd_kafka_queue_destroy(queue);
    rd_kafka_AdminOptions_destroy(options);
    rd_kafka_NewTopic_destroy(topic);
    return ok;
  }

  // Assigns the partition at its end. Returns false while the broker is away.
  bool assign() {
    if (!create_topic()) return false;
    std::int64_t low = 0, high = 0;
    if (consumer_->query_watermark_offsets(topic_, 0, &low, &high, kRequestTimeoutMs) != RdKafka::ERR_NO_ERROR) return false;
    std::vector<RdKafka::TopicPartition*> parts{RdKafka::TopicPartition::create(topic_, 0, high)};
    auto err = consumer_->assign(parts);
    RdKafka::TopicPartition::destroy(parts);
    return err == RdKafka::ERR_NO_ERROR;
  }

  void run() {
    while (!stopped_.load() && !assign()) std::this_thread::sleep_for(milliseconds(500));
    if (stopped_.load()) return;
    up_.store(true);
    {
      std::lock_guard lock(mu_);
      heard_self_ = Clock::now();
    }
    produce("", "W\t" + run_);
    // The live nodes answer W with what this node's crashed predecessor held (R lines): a join
    // that reached the log before those would be news, a second ENTER for someone who never
    // left. Joins and leaves asked for until then wait (in order) until this node has read its
    // own W back and the others had a moment to answer it (their producers are warm; this new
    // one's first record can take a while), or a few seconds at most.
    const auto margin = std::min<milliseconds>(pcfg_.heartbeat, milliseconds(500));
    const auto give_up = Clock::now() + milliseconds(5000);
    bool released = false;
    auto next_beat = Clock::now();
    while (!stopped_.load()) {
      if (!released && (Clock::now() >= give_up || ([&] {
                          std::lock_guard lock(mu_);
                          return w_read_ && Clock::now() >= *w_read_ + margin;
                        }()))) {
        std::vector<std::pair<std::string, std::string>> early;
        {
          std::lock_guard lock(mu_);
          assigned_ = true;
          early.swap(early_);
        }
        for (auto& [key, value] : early) produce(key, value);
        released = true;
      }
      std::unique_ptr<RdKafka::Message> msg(consumer_->consume(50));
      if (msg->err() == RdKafka::ERR_NO_ERROR) {
        up_.store(true);
        apply(std::string_view(static_cast<const char*>(msg->payload()), msg->len()));
      } else if (msg->err() != RdKafka::ERR__TIMED_OUT && msg->err() != RdKafka::ERR__PARTITION_EOF) {
        up_.store(false);
      }
      producer_->poll(0);
      auto now = Clock::now();
      if (now >= next_beat) {
        next_beat = now + pcfg_.heartbeat;
        produce("", "H\t" + run_);
        claim_dead(now);
        time_out(now);
      }
    }
    producer_->flush(1000);
  }

  // Writes a D for every run silent for node_timeout (once per run), while this node hears its
  // own records come back: when it does not (the broker is away, or this node is cut off), every
  // run looks silent, and that says nothing about them. The Ds would wait in the producer and
  // declare live nodes dead once the log works again (s18: a QUIT for members who never left).
  void claim_dead(Clock::time_point now) {
    std::vector<std::string> dead;
    {
      std::lock_guard lock(mu_);
      if (now - heard_self_ > 2 * pcfg_.heartbeat) return;
      for (auto& [run, seen] : heard_)
        if (run != run_ && now - seen > pcfg_.node_timeout && claimed_.insert(run).second) dead.push_back(run);
    }
    for (auto& r : dead) produce("", "D\t" + run_ + "\t" + r);
  }

  void time_out(Clock::time_point now) {
    std::vector<ChangedFn> late;
    {
      std::lock_guard lock(mu_);
      for (auto it = pending_.begin(); it != pending_.end();) {
        if (it->second.deadline > now) { ++it; continue; }
        late.push_back(std::move(it->second.done));
        it = pending_.erase(it);
      }
    }
    for (auto& d : late) d(Error::engine_down, false, 0);
  }

  // What this run holds, for an S snapshot: less the members whose J is not in the log yet
  // (held at start, or in flight). An S line before it would make the J no news: no ENTER.
  std::vector<Key> snapshot_locked() const {
    std::vector<Key> out;
    out.reserve(mine_.size());
    for (const auto& k : mine_) {
      const bool joining = std::any_of(pending_.begin(), pending_.end(),
                                       [&](const auto& p) { return p.second.kind == 'J' && p.second.key == k; });
      if (!joining) out.push_back(k);
    }
    return out;
  }

  // Runs are <node id>:<nonce>, and node ids hold no ':'.
  static bool same_node(std::string_view a, std::string_view b) {
    return a.substr(0, a.rfind(':')) == b.substr(0, b.rfind(':'));
  }

  // Adds `run` to the member's runs; returns whether none held them before.
  bool add_locked(const std::string& run, const std::string& room, const std::string& member) {
    auto& runs = rooms_[room][member];
    const bool first = runs.empty();
    if (std::find(runs.begin(), runs.end(), run) == runs.end()) runs.push_back(run);
    held_by_[run].insert({room, member});
    return first;
  }

  // Removes `run` from the member's runs; returns whether it held them and none does now.
  bool remove_locked(const std::string& run, const std::string& room, const std::string& member) {
    auto r = rooms_.find(room);
    if (r == rooms_.end()) return false;
    auto m = r->second.find(member);
    if (m == r->second.end()) return false;
    auto it = std::find(m->second.begin(), m->second.end(), run);
    if (it == m->second.end()) return false;
    m->second.erase(it);
    if (auto h = held_by_.find(run); h != held_by_.end()) h->second.erase({room, member});
    if (!m->second.empty()) return false;
    r->second.erase(m);
    if (r->second.empty()) rooms_.erase(r);
    return true;
  }

  std::size_t count_locked(const std::string& room) const {
    auto r = rooms_.find(room);
    return r == rooms_.end() ? 0 : r->second.size();
  }

  void apply(std::string_view value) {
    auto f = split_tabs(value);
    if (f.size() < 2 || f[0].size() != 1) return;
    const char kind = f[0][0];
    const std::string& run = f[1];
    const bool mine = run == run_;
    ChangedFn answer;
    bool changed = false;
    std::size_t count = 0;
    std::vector<std::pair<Key, std::size_t>> gone;
    std::vector<Key> snapshot;
    std::vector<std::pair<std::string, Key>> relay;  // held run, what it holds
    {
      std::lock_guard lock(mu_);
      const auto now = Clock::now();
      heard_[run] = now;
      if (mine) {
        // Hearing itself again after a silence: the others were unheard for as long, through no
        // fault of theirs. Each gets a whole node_timeout from now.
        if (now - heard_self_ > 2 * pcfg_.heartbeat)
          for (auto& [other, seen] : heard_) seen = now;
        heard_self_ = now;
      } else {
        // A run declared dead speaks again (it was cut off): its snapshot will follow. A claim
        // that never reached the log (it expired in the producer) is dropped too.
        dead_.erase(run);
        claimed_.erase(run);
      }
      if ((kind == 'J' || kind == 'L' || kind == 'S') && f.size() == 5) {
        const auto& room = f[3];
        const auto& member = f[4];
        changed = kind == 'L' ? remove_locked(run, room, member) : add_locked(run, room, member);
        count = count_locked(room);
        if (mine && kind != 'S') {
          if (auto p = pending_.find(std::strtoull(f[2].c_str(), nullptr, 10)); p != pending_.end()) {
            answer = std::move(p->second.done);
            pending_.erase(p);
          }
        }
      } else if (kind == 'R' && f.size() == 5) {
        // Not a sign of life from the held run: only its holdings travel, and only while no D
        // has taken them out.
        if (f[2] != run_ && !dead_.contains(f[2])) add_locked(f[2], f[3], f[4]);
      } else if (kind == 'W' && mine) {
        if (!w_read_) w_read_ = now;
      } else if (kind == 'W' && !mine) {
        snapshot = snapshot_locked();
        for (const auto& [held, keys] : held_by_)
          if (held != run_ && held != run && same_node(held, run))
            for (const auto& k : keys) relay.push_back({held, k});
      } else if (kind == 'D' && f.size() == 3) {
        const auto& dead = f[2];
        if (dead == run_) {
          snapshot = snapshot_locked();  // we were cut off, not dead
        } else {
          dead_.insert(dead);
          heard_.erase(dead);
          if (auto h = held_by_.find(dead); h != held_by_.end()) {
            auto held = std::move(h->second);
            held_by_.erase(h);
            for (const auto& k : held)
              if (remove_locked(dead, k.first, k.second) && mine) gone.push_back({k, count_locked(k.first)});
            if (!held.empty()) log::event("presence_node_dead", {{"run", dead}, {"members", std::to_string(held.size())}});
          }
        }
      }
    }
    for (const auto& k : snapshot) produce(k.first, "S\t" + run_ + "\t0\t" + k.first + "\t" + k.second);
    for (const auto& [held, k] : relay) produce(k.first, "R\t" + run_ + "\t" + held + "\t" + k.first + "\t" + k.second);
    if (answer) answer({}, changed, count);
    if (gone_)
      for (auto& [k, c] : gone) gone_(k.first, k.second, c);
  }

  BusConfig cfg_;
  PresenceConfig pcfg_;
  std::string topic_;
  std::string run_;
  std::unique_ptr<RdKafka::Producer> producer_;
  std::unique_ptr<RdKafka::KafkaConsumer> consumer_;
  std::thread thread_;
  std::atomic<bool> stopped_{false};
  std::atomic<bool> up_{false};
  GoneFn gone_;

  std::mutex mu_;
  bool assigned_ = false;
  std::optional<Clock::time_point> w_read_;  // when this run read its own W back
  std::vector<std::pair<std::string, std::string>> early_;  // asked for before the consumer was assigned
  std::uint64_t next_token_ = 0;
  std::unordered_map<std::uint64_t, Pending> pending_;
  std::set<Key> mine_;  // what this run holds
  std::unordered_map<std::string, std::unordered_map<std::string, std::vector<std::string>>> rooms_;
  std::unordered_map<std::string, std::set<Key>> held_by_;  // run -> what it holds
  std::unordered_map<std::string, Clock::time_point> heard_;  // run -> last record read from it
  Clock::time_point heard_self_{};  // last record of this run read back
  std::unordered_set<std::string> claimed_;  // runs this node wrote a D for
  std::unordered_set<std::string> dead_;
};

}  // namespace

std::unique_ptr<Presence> make_kafka_presence(const BusConfig& cfg, const PresenceConfig& pcfg) {
  return std::make_unique<KafkaPresence>(cfg, pcfg);
}

}  // namespace chatd::bus
