// Presence in Redis. Keys (the room's key shares the bus's hash tag, so a room stays on one
// Redis Cluster slot; every script touches one key):
//   chatd:{<room>}:members            hash: member -> how many nodes hold that member
//   chatd:{<room>}:holders            hash: "<run>\n<member>" -> 1, whose joins the count holds
//   chatd:presence:node:<node>:<run>  hash: "<room>\n<member>" -> 1, what this run of a node holds
//                                     (the index a reaper walks), and "v" -> 2 (its joins are in
//                                     holders; a run of an older chatd has no "v")
//   chatd:presence:nodes              sorted set: "<node>:<run>" -> last heartbeat (Redis time, ms),
//                                     "reaping:<node>:<run>" -> claim time, "!resumed" -> when
//                                     a heartbeat last found Redis back after an outage
// A node HINCRBYs a member on its first connection and decrements on its last, so the reply
// says whether the join or leave is news for the whole cluster; HLEN is the room's count. The
// room's holders decide whether a run's join or leave still has to be counted, in the room's
// own slot: on a Redis Cluster the run's index lives on another shard, and one shard can lose
// its data alone, so the index cannot say what the count holds.
//
// Every heartbeat (PresenceConfig::heartbeat) a node stamps its entry in the sorted set and
// claims the entries older than node_timeout inside one script, so exactly one node claims a
// dead run: its entry becomes "reaping:<run>", stamped with the claim time. The claimant takes
// that run's members out of their rooms one by one (leave, then forget the field), reports
// those now held by no node, and removes the claim only when every member is out. A claimant
// that dies midway leaves its claim to go stale like a heartbeat: another node claims it again
// and finishes from the fields left. So a dead node's members leave within node_timeout +
// heartbeat (a dead reaper adds one more timeout). A restarted node is a new run; its previous
// run is a dead node like any other.
//
// A claimed run never stamps its entry again: a node that finds its entry gone (claimed while it
// was cut off, or lost with Redis's data) starts a new run, puts everything it holds back under
// the new run, without announcing anything, and leaves the old run to be reaped like a dead
// node's (it claims the old run itself if nobody has). Each run's joins are undone by its own
// leaves or by its one reap, so a reap that is late (a claim sent before an outage and run by
// Redis after it) or concurrent with the put-back can never take out what the new run holds.
// A node that reconnects to a Redis (or a shard) that may have restarted empty also puts back
// what its run holds: joins again, which the holders make count once.
//
// A heartbeat whose own previous stamp is older than half the timeout means Redis (or this
// node's link) was away, so every other run's silence says nothing yet: it marks the resumption
// ("!resumed") and no node claims anything for one timeout after it, which gives every live
// node the time to reconnect and stamp.
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

#include <hiredis/hiredis.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <map>
#include <optional>
#include <random>
#include <set>

#include "bus/presence.h"
#include "log/log.h"
#include "redis/endpoint.h"
#include "redis/loop.h"
#include "redis/shards.h"

namespace chatd::bus {
namespace {

std::string members_key(const std::string& room) { return "chatd:{" + room + "}:members"; }
std::string holders_key(const std::string& room) { return "chatd:{" + room + "}:holders"; }
constexpr std::string_view kNodes = "chatd:presence:nodes";
constexpr std::string_view kNodePrefix = "chatd:presence:node:";

// KEYS: members, holders. ARGV: member, run. Returns {1 if the member was on no node, count}.
// A join the run already made counts once (a put-back after a shard lost other keys).
constexpr std::string_view kJoin = R"lua(
if redis.call('HSETNX',KEYS[2],ARGV[2]..'\n'..ARGV[1],1)==0 then return {0, redis.call('HLEN',KEYS[1])} end
local n=redis.call('HINCRBY',KEYS[1],ARGV[1],1)
if n<1 then redis.call('HSET',KEYS[1],ARGV[1],1) n=1 end
return {n==1 and 1 or 0, redis.call('HLEN',KEYS[1])}
)lua";

// KEYS: members, holders. ARGV: member, run, "1" unless the run is an older chatd's (its joins
// are not in holders). Returns {1 if no node holds the member any more, count}. A leave whose
// join is not counted, or a member the hash does not have (Redis lost it), is no news.
constexpr std::string_view kLeave = R"lua(
if redis.call('HDEL',KEYS[2],ARGV[2]..'\n'..ARGV[1])==0 and ARGV[3]=='1' then return {0, redis.call('HLEN',KEYS[1])} end
if redis.call('HEXISTS',KEYS[1],ARGV[1])==0 then return {0, redis.call('HLEN',KEYS[1])} end
local n=redis.call('HINCRBY',KEYS[1],ARGV[1],-1)
if n<=0 then redis.call('HDEL',KEYS[1],ARGV[1]) end
return {n<=0 and 1 or 0, redis.call('HLEN',KEYS[1])}
)lua";

// KEYS: nodes. ARGV: this run, timeout ms, "1" if this run has stamped before. Stamps this run,
// claims silent runs and stale claims; returns {1 if this run's entry was gone, runs claimed}.
// A run whose entry is gone was claimed (or Redis lost it): it is not stamped again, and it is
// claimed here if nobody has, so its fields are reaped; the caller moves to a new run.
// Nothing is claimed while a resumption after an outage is younger than the timeout.
constexpr std::string_view kBeat = R"lua(
local t=redis.call('TIME') local now=t[1]*1000+math.floor(t[2]/1000)
local timeout=tonumber(ARGV[2])
local prev=redis.call('ZSCORE',KEYS[1],ARGV[1])
if not prev and ARGV[3]=='1' then
  redis.call('ZADD',KEYS[1],'NX',now,'reaping:'..ARGV[1])
  return {1, {}}
end
redis.call('ZADD',KEYS[1],now,ARGV[1])
if prev and now-tonumber(prev)>timeout/2 then redis.call('ZADD',KEYS[1],now,'!resumed') end
local resumed=redis.call('ZSCORE',KEYS[1],'!resumed')
local runs={}
if resumed and now-tonumber(resumed)<=timeout then return {0, runs} end
local stale=redis.call('ZRANGEBYSCORE',KEYS[1],'-inf',now-timeout)
for _,d in ipairs(stale) do
  if d=='!resumed' then redis.call('ZREM',KEYS[1],d) else
    local run=d
    if string.sub(d,1,8)=='reaping:' then run=string.sub(d,9) else redis.call('ZREM',KEYS[1],d) end
    redis.call('ZADD',KEYS[1],now,'reaping:'..run)
    runs[#runs+1]=run
  end
end
return {0, runs}
)lua";

// KEYS: room hash. ARGV: member, limit. Returns {count, up to limit names}.
constexpr std::string_view kMembers = R"lua(
local n=redis.call('HLEN',KEYS[1])
if n<=tonumber(ARGV[2]) then return {n, redis.call('HKEYS',KEYS[1])} end
return {n, redis.call('HRANDFIELD',KEYS[1],tonumber(ARGV[2]))}
)lua";

std::string run_nonce() {
  std::random_device rd;
  char buf[17];
  std::snprintf(buf, sizeof buf, "%08x%08x", rd(), rd());
  return buf;
}

// Returns {flag, count} from a script's two-integer reply, or nullopt.
std::optional<std::pair<bool, std::size_t>> flag_and_count(const redisReply* r) {
  if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2 || r->element[0]->type != REDIS_REPLY_INTEGER ||
      r->element[1]->type != REDIS_REPLY_INTEGER)
    return std::nullopt;
  return std::make_pair(r->element[0]->integer == 1, static_cast<std::size_t>(r->element[1]->integer));
}

class Core : public std::enable_shared_from_this<Core> {
 public:
  Core(boost::asio::io_context& io, const BusConfig& cfg, const PresenceConfig& pcfg)
      : io_(io), pcfg_(pcfg), node_id_(cfg.node_id), run_(node_id_ + ":" + run_nonce()), node_key_(std::string(kNodePrefix) + run_),
        timer_(io) {}

  // On a Redis Cluster: one connection per primary (redis::Shards); every script has one key,
  // so each runs on that key's shard. Any shard coming (back) up reasserts what this node holds.
  void init(const redis::Target& target, const redis::Timing& timing) {
    conn_ = redis::Shards::create(io_, target, {.name = "presence", .timing = timing},
                                  {.on_up = [w = weak_from_this()](redis::Shards::ShardId) {
                                    if (auto self = w.lock()) self->reassert_in_loop();
                                  },
                                   .on_down = nullptr,
                                   .on_push = nullptr,
                                   .on_map_read = nullptr});
  }

  void start_in_loop(GoneFn gone) {
    gone_ = std::move(gone);
    conn_->start_in_loop();
    beat_in_loop();
  }

  void stop_in_loop() {
    stopped_ = true;
    timer_.cancel();
    conn_->stop_in_loop();
  }

  static std::string field(const std::string& room, const std::string& member) { return room + "\n" + member; }

  void join_in_loop(const std::string& room, const std::string& member, ChangedFn done) {
    held_.insert(field(room, member));
    leaves_.erase(field(room, member));  // back before a failed leave went through: it must not
    index_in_loop(field(room, member));
    conn_->eval_in_loop(kJoin, {members_key(room), holders_key(room)}, {member, run_},
                        [done = std::move(done)](redis::Status st, const redisReply* r) {
      if (st != redis::Status::ok) return done(Error::engine_down, false, 0);
      auto fc = flag_and_count(r);
      if (!fc) return done(Error::rejected, false, 0);
      done({}, fc->first, fc->second);
    });
  }

  // A leave the room's shard did not take (down, or between primaries) is sent again until it
  // does, and one it took is sent again when that shard comes back within kLeaveMemory (a
  // failover can lose it): else the member stays listed on every node for ever. The run's
  // index keeps the member until the leave is taken, so a reap still finds it if this node dies.
  void leave_in_loop(const std::string& room, const std::string& member, ChangedFn done) {
    const auto f = field(room, member);
    held_.erase(f);
    leaves_[f] = Leave{std::chrono::steady_clock::now(), false};
    forget_old_leaves_in_loop();
    send_leave_in_loop(f, std::move(done));
  }

  void members_in_loop(const std::string& room, std::size_t limit, MembersFn done) {
    conn_->eval_in_loop(kMembers, {members_key(room)}, {"", std::to_string(limit)},
                        [done = std::move(done)](redis::Status st, const redisReply* r) {
                          if (st != redis::Status::ok) return done(Error::engine_down, {});
                          if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 || r->element[0]->type != REDIS_REPLY_INTEGER ||
                              r->element[1]->type != REDIS_REPLY_ARRAY)
                            return done(Error::rejected, {});
                          MemberList l;
                          l.count = static_cast<std::size_t>(r->element[0]->integer);
                          for (std::size_t i = 0; i < r->element[1]->elements; ++i) {
                            auto* e = r->element[1]->element[i];
                            if (e->type == REDIS_REPLY_STRING) l.names.emplace_back(e->str, e->len);
                          }
                          done({}, std::move(l));
                        });
  }

  void counts_in_loop(std::vector<std::string> rooms, CountsFn done) {
    if (rooms.empty()) return boost::asio::post(io_, [done = std::move(done)] { done({}, {}); });
    // Pipelined HLENs: one round trip for the page however many rooms it holds.
    struct Gather {
      std::vector<std::size_t> counts;
      std::size_t left;
      bool failed = false;
      CountsFn done;
    };
    auto g = std::make_shared<Gather>(Gather{std::vector<std::size_t>(rooms.size(), 0), rooms.size(), false, std::move(done)});
    for (std::size_t i = 0; i < rooms.size(); ++i)
      conn_->command_in_loop(members_key(rooms[i]), {"HLEN", members_key(rooms[i])}, [g, i](redis::Status st, const redisReply* r) {
        if (st != redis::Status::ok || r->type != REDIS_REPLY_INTEGER) g->failed = true;
        else g->counts[i] = static_cast<std::size_t>(r->integer);
        if (--g->left == 0) g->done(g->failed ? make_error_code(Error::engine_down) : std::error_code(), std::move(g->counts));
      });
  }

  bool up() const { return conn_->up(); }

 private:
  void beat_in_loop() {
    if (stopped_) return;
    conn_->eval_in_loop(kBeat, {std::string(kNodes)}, {run_, std::to_string(pcfg_.node_timeout.count()), stamped_ ? "1" : "0"},
                        [w = weak_from_this(), run = run_](redis::Status st, const redisReply* r) {
                          auto self = w.lock();
                          if (!self || st != redis::Status::ok || r->type != REDIS_REPLY_ARRAY || r->elements != 2) return;
                          if (run != self->run_) return;  // a beat of a run this node has already left
                          if (r->element[0]->type == REDIS_REPLY_INTEGER && r->element[0]->integer == 1)
                            return self->renew_run_in_loop();  // claimed as dead while cut off
                          self->stamped_ = true;
                          self->resend_leaves_in_loop(false);
                          auto* dead = r->element[1];
                          for (std::size_t i = 0; dead->type == REDIS_REPLY_ARRAY && i < dead->elements; ++i)
                            if (dead->element[i]->type == REDIS_REPLY_STRING)
                              self->reap_in_loop(std::string(dead->element[i]->str, dead->element[i]->len));
                        });
    timer_.expires_after(pcfg_.heartbeat);
    timer_.async_wait([w = weak_from_this()](boost::system::error_code ec) {
      if (auto self = w.lock(); self && !ec) self->beat_in_loop();
    });
  }

  // This run was claimed as dead (or Redis lost its entry) while the node lives: its fields are
  // being reaped, or will be, by whoever holds the claim. Puts everything held back under a new
  // run, without announcing it, and stamps that run now. The joins of the new run and the
  // leaves of the old run's reap count apart, so whichever Redis runs first, each member ends
  // held once by this node.
  void renew_run_in_loop() {
    auto old = run_;
    run_ = node_id_ + ":" + run_nonce();
    node_key_ = std::string(kNodePrefix) + run_;
    stamped_ = false;
    leaves_.clear();  // the old run's joins, left or not, go with its reap
    log::event("presence_run_renewed", {{"old_run", old}, {"run", run_}, {"held", std::to_string(held_.size())}});
    put_back_in_loop();
    beat_in_loop();
  }

  // Takes the members of dead run `run` out of their rooms; reports those now nowhere. Each
  // field is forgotten only after its leave was applied, and the claim is released only when
  // the run's hash is empty: whatever is left when this node dies midway, or was written by the
  // run after HGETALL (it was alive and had not yet seen the claim), the next claimant finishes.
  void reap_in_loop(const std::string& run) {
    auto key = std::string(kNodePrefix) + run;
    log::event("presence_node_dead", {{"run", run}});
    conn_->command_in_loop(key, {"HGETALL", key}, [w = weak_from_this(), key, run](redis::Status st, const redisReply* r) {
      auto self = w.lock();
      if (!self || st != redis::Status::ok || r->type != REDIS_REPLY_ARRAY) return;
      struct Reap {
        std::size_t left = 1;  // one for the loop below, so the claim cannot be released inside it
        bool failed = false;
      };
      auto reap = std::make_shared<Reap>();
      bool in_holders = false;  // the run's joins are in its rooms' holders (not an older chatd's)
      for (std::size_t i = 0; i + 1 < r->elements; i += 2)
        if (r->element[i]->type == REDIS_REPLY_STRING && std::string_view(r->element[i]->str, r->element[i]->len) == "v")
          in_holders = true;
      auto finished = [w, key, run, reap](bool ok) {
        auto s = w.lock();
        reap->failed = reap->failed || !ok;
        if (--reap->left != 0 || reap->failed || !s) return;
        s->conn_->command_in_loop(key, {"HLEN", key}, [w, run](redis::Status hst, const redisReply* hlen) {
          auto s2 = w.lock();
          if (!s2 || hst != redis::Status::ok || hlen->type != REDIS_REPLY_INTEGER || hlen->integer != 0) return;
          s2->conn_->command_in_loop(std::string(kNodes), {"ZREM", std::string(kNodes), "reaping:" + run},
                                     [](redis::Status, const redisReply*) {});
        });
      };
      for (std::size_t i = 0; i + 1 < r->elements; i += 2) {
        auto* f = r->element[i];
        if (f->type != REDIS_REPLY_STRING) continue;
        std::string fv(f->str, f->len);
        auto nl = fv.find('\n');
        if (nl == std::string::npos) {  // not a member: forget it, so the hash can empty
          self->conn_->command_in_loop(key, {"HDEL", key, fv}, [](redis::Status, const redisReply*) {});
          continue;
        }
        auto room = fv.substr(0, nl), member = fv.substr(nl + 1);
        ++reap->left;
        self->conn_->eval_in_loop(kLeave, {members_key(room), holders_key(room)}, {member, run, in_holders ? "1" : "0"},
                                  [w, key, fv, room, member, finished](redis::Status st2, const redisReply* r2) {
                                    auto s2 = w.lock();
                                    std::optional<std::pair<bool, std::size_t>> fc;
                                    if (st2 == redis::Status::ok) fc = flag_and_count(r2);
                                    if (!s2 || !fc) return finished(false);
                                    if (fc->first && s2->gone_) s2->gone_(room, member, fc->second);
                                    s2->conn_->command_in_loop(key, {"HDEL", key, fv}, [finished](redis::Status st3, const redisReply*) {
                                      finished(st3 == redis::Status::ok);
                                    });
                                  });
      }
      finished(true);
    });
  }

  // A shard came (back) up, perhaps empty, perhaps a replica that missed the last writes: puts
  // back whatever this node holds that it lost, and sends its recent leaves again.
  void reassert_in_loop() {
    put_back_in_loop();
    resend_leaves_in_loop(true);
  }

  struct Leave {
    std::chrono::steady_clock::time_point at;
    bool taken = false;  // the room's shard answered it
  };
  static constexpr std::chrono::seconds kLeaveMemory{60};
  static constexpr std::size_t kMaxLeaves = 100000;

  // Sends the leave of "<room>\n<member>" under run_. `done` (the first send) hears the outcome;
  // a later send that is news (nobody holds the member now) announces the QUIT itself.
  void send_leave_in_loop(const std::string& f, ChangedFn done) {
    const auto nl = f.find('\n');
    const auto room = f.substr(0, nl), member = f.substr(nl + 1);
    conn_->eval_in_loop(kLeave, {members_key(room), holders_key(room)}, {member, run_, "1"},
                        [w = weak_from_this(), f, room, member, run = run_, done = std::move(done)](redis::Status st, const redisReply* r) {
      auto self = w.lock();
      std::optional<std::pair<bool, std::size_t>> fc;
      if (st == redis::Status::ok) fc = flag_and_count(r);
      if (!fc) {
        if (done) done(st == redis::Status::ok ? Error::rejected : Error::engine_down, false, 0);
        return;
      }
      if (self && run == self->run_) {
        if (auto it = self->leaves_.find(f); it != self->leaves_.end()) it->second.taken = true;
        self->conn_->command_in_loop(self->node_key_, {"HDEL", self->node_key_, f}, [](redis::Status, const redisReply*) {});
      }
      if (done) return done({}, fc->first, fc->second);
      if (fc->first && self && self->gone_) self->gone_(room, member, fc->second);
    });
  }

  // Sends again the leaves not yet taken, and with `all` (a shard came back) the recent ones too.
  void resend_leaves_in_loop(bool all) {
    forget_old_leaves_in_loop();
    for (const auto& [f, l] : leaves_)
      if (all || !l.taken) send_leave_in_loop(f, nullptr);
  }

  // Taken leaves are kept kLeaveMemory, pending ones until taken; at most kMaxLeaves in all.
  void forget_old_leaves_in_loop() {
    const auto cut = std::chrono::steady_clock::now() - kLeaveMemory;
    std::erase_if(leaves_, [&](const auto& kv) { return kv.second.taken && kv.second.at < cut; });
    while (leaves_.size() > kMaxLeaves) {
      auto oldest = std::min_element(leaves_.begin(), leaves_.end(), [](const auto& a, const auto& b) { return a.second.at < b.second.at; });
      leaves_.erase(oldest);
    }
  }

  // Joins every member held again under run_, and writes the run's index again: each join
  // counts only where the room's holders lack it, so whichever keys a shard lost come back
  // and nothing is counted twice. Announces nothing.
  void put_back_in_loop() {
    for (const auto& f : held_) {
      auto nl = f.find('\n');
      index_in_loop(f);
      const auto room = f.substr(0, nl);
      conn_->eval_in_loop(kJoin, {members_key(room), holders_key(room)}, {f.substr(nl + 1), run_},
                          [](redis::Status, const redisReply*) {});
    }
  }

  // Records "<room>\n<member>" in the run's index, marked as a run whose joins are in holders.
  void index_in_loop(const std::string& f) {
    conn_->command_in_loop(node_key_, {"HSET", node_key_, f, "1", "v", "2"}, [](redis::Status, const redisReply*) {});
  }

  boost::asio::io_context& io_;
  PresenceConfig pcfg_;
  std::string node_id_;
  std::string run_;       // this node's current run; a new one when the last was claimed
  std::string node_key_;  // what run_ holds
  boost::asio::steady_timer timer_;
  std::shared_ptr<redis::Shards> conn_;
  GoneFn gone_;
  std::set<std::string> held_;  // "<room>\n<member>" this node has joined
  std::map<std::string, Leave> leaves_;  // "<room>\n<member>" this run left lately (see leave_in_loop)
  bool stamped_ = false;        // a heartbeat of run_ was answered: its entry must be there
  bool stopped_ = false;

 public:
  boost::asio::io_context& io() { return io_; }
};

class RedisPresence final : public Presence {
 public:
  RedisPresence(boost::asio::io_context& io, const redis::Target& target, const BusConfig& cfg,
                const PresenceConfig& pcfg)
      : core_(std::make_shared<Core>(io, cfg, pcfg)) {
    core_->init(target, cfg.redis_timing);
  }
  ~RedisPresence() override { stop(); }

  void start(GoneFn gone) override {
    boost::asio::post(core_->io(), [c = core_, gone = std::move(gone)]() mutable { c->start_in_loop(std::move(gone)); });
  }
  void join(const std::string& room, const std::string& member, ChangedFn done) override {
    boost::asio::post(core_->io(), [c = core_, room, member, done = std::move(done)]() mutable {
      c->join_in_loop(room, member, std::move(done));
    });
  }
  void leave(const std::string& room, const std::string& member, ChangedFn done) override {
    boost::asio::post(core_->io(), [c = core_, room, member, done = std::move(done)]() mutable {
      c->leave_in_loop(room, member, std::move(done));
    });
  }
  void members(const std::string& room, std::size_t limit, MembersFn done) override {
    boost::asio::post(core_->io(), [c = core_, room, limit, done = std::move(done)]() mutable {
      c->members_in_loop(room, limit, std::move(done));
    });
  }
  void counts(std::vector<std::string> rooms, CountsFn done) override {
    boost::asio::post(core_->io(), [c = core_, rooms = std::move(rooms), done = std::move(done)]() mutable {
      c->counts_in_loop(std::move(rooms), std::move(done));
    });
  }
  bool up() const override { return core_->up(); }
  void stop() override {
    if (stopped_.exchange(true)) return;
    redis::run_in_loop_and_wait(core_->io(), [c = core_] { c->stop_in_loop(); });
  }

 private:
  std::shared_ptr<Core> core_;
  std::atomic<bool> stopped_{false};
};

}  // namespace

std::unique_ptr<Presence> make_redis_presence(const BusConfig& cfg, const PresenceConfig& pcfg,
                                              boost::asio::io_context& engine) {
  return std::make_unique<RedisPresence>(engine, redis::verified_target(cfg.redis_url, cfg.redis_timing.start_timeout), cfg, pcfg);
}

}  // namespace chatd::bus
