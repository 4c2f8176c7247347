// The redis bus. Per room, all under one hash tag so a room stays on one Redis Cluster slot:
//   chatd:{<room>}:seq         the room's sequence counter (INCR)
//   chatd:{<room>}:epoch       the room's history epoch, created when missing
//   chatd:{<room>}:hist        the room's history, a stream with ids "<seq>-0", fields t (ms), p
//   chatd:{<room>}:cid:<id>    a SEND's x-client-id within the dedupe window -> its seq
//   chatd:{<room>}:live        the channel; each message is "<seq> <epoch> <payload>"
// and one channel for the control channel (MessageBus::publish_control), a plain PUBLISH that
// every node subscribes to for its whole life:
//   chatd:control              "<type> <origin length> <origin><body>"
// One Lua function (a Redis 7 function library, FUNCTION LOAD in each connection's setup, then
// FCALL) does the dedupe check, INCR, XADD (trimmed by count and age) and PUBLISH in one step;
// Redis runs functions one at a time, so seq order, history order and delivery order are the
// same on every node, and a message is in history exactly when it was published.
//
// Three connections on the engine thread: "publish" (pipelined FCALL, never waits for one reply
// before sending the next), "history" (reads, so a long replay never delays a publish behind it
// on the socket) and "subscribe" (pub/sub mode). Redis pub/sub keeps nothing: a node that is not
// subscribed when a message is published never sees it live; history is how it catches up.
//
// On a Redis Cluster (redis+cluster://) each of the three is one connection per primary
// (redis::Shards), a room's keys and channel share its slot through the hash tag, the function
// publishes with SPUBLISH and the node subscribes with SSUBSCRIBE on the primary that owns the
// room's slot, so a message crosses only its shard. A room whose shard changes (failover, slot
// move) is subscribed again on the new owner; its SUBSCRIBE is confirmed only once that shard
// confirmed.
//
// Gap repair: a room's seqs are contiguous (one INCR per message), so a live message more than
// one past the last delivered here, or a subscription confirmed again after it was lost (a
// reconnect, a slot move), means messages were published while this node was not listening.
// The bus then reads them from the room's history, holding the live ones meanwhile, and
// delivers both in order: the hub sees every seq once, as if the channel had never dropped.
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

#include <hiredis/hiredis.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <optional>
#include <random>
#include <unordered_map>

#include "bus/message_bus.h"
#include "log/log.h"
#include "redis/endpoint.h"
#include "redis/loop.h"
#include "redis/shards.h"
#include "redis/slot.h"

namespace chatd::bus {
namespace {

constexpr std::string_view kKeyPrefix = "chatd:{";
constexpr std::string_view kChannelSuffix = "}:live";
constexpr std::string_view kControlChannel = "chatd:control";
// Before the hash tag, the counter was chatd:seq:<room>; a room's first publish since then
// carries it over, so seq continues. One Redis only: that key is in another Cluster slot, so on
// a cluster (always newer than the hash tag) the functions get kNoOldSeq, a key never written.
constexpr std::string_view kOldSeqPrefix = "chatd:seq:";
constexpr std::string_view kNoOldSeq = "no-old-seq";

// Both functions' helpers, defined once when the library loads. sq: the seq of a stream id.
// young: the seq of the oldest entry of stream k with seq in [lo, hi] whose t is >= cut, or 0;
// a binary search (t grows with seq), so an age bound costs O(log n) lookups however many
// entries expired.
constexpr std::string_view kLuaHelpers = R"lua(
local function sq(id) return tonumber(string.match(id,'^%d+')) end
local function young(k,lo,hi,cut)
 local a=0
 while lo<=hi do
  local m=math.floor((lo+hi)/2)
  local x=redis.call('XRANGE',k,string.format('%d',m),'+','COUNT',1)[1]
  if not x then hi=m-1
  elseif tonumber(x[2][2])>=cut then a=sq(x[1]) hi=m-1
  else lo=sq(x[1])+1 end
 end
 return a
end
local function now() local t=redis.call('TIME') return t[1]*1000+math.floor(t[2]/1000) end
local function epoch(k,candidate)
 local e=redis.call('GET',k)
 if not e then e=candidate redis.call('SET',k,e) end
 return e
end
)lua";

// KEYS: seq, epoch, hist, old seq key[, dedupe key]. ARGV: channel, payload, history size,
// history ttl ms, dedupe window s, epoch candidate, PUBLISH or SPUBLISH (cluster), the time in
// this Redis's clock (ms) as the node reckons it, or 0 for "ask TIME", and the stream's new
// expiry (ms) or 0 to leave it, and the newest seq this node delivered of the room (0: none)
// with its epoch. Returns {seq, epoch, 1 if a retry}.
// A seq at or below one already delivered in the same epoch means the counter went back (Redis
// restarted from an older snapshot, or a failover lost writes): every node would drop the
// message as one it had, so the room starts a new epoch (ARGV[6]) and clients resume with a reset.
// A counter that INCR just created (1) continues from the old key or the stream's newest id,
// whichever is larger, so a lost (evicted) counter can never make XADD refuse the room's next
// id. Every redis.call costs about a microsecond of Redis's one thread (a profile under
// bench/history.mjs: Lua's argument and reply conversion, not the commands), so history adds
// only XADD per message:
// - a message's time t comes from the node (ARGV[8]) instead of a TIME per message: Redis's own
//   clock, read with TIME every few seconds and carried forward on the node's steady clock
//   (Core::redis_time_ms), never the node's wall clock. So nodes whose clocks disagree still
//   write one clock: each node's t is within half a TIME round trip (kClockMaxRtt / 2) of
//   Redis's, so t grows with seq to within kClockMaxRtt, all the precision `young` and the
//   ttl need; until a node's first TIME answer it passes 0 and the function reads TIME;
// - the stream's PEXPIRE (ttl + slack) is renewed only when the node asks (ARGV[9]): each node
//   renews a room's once per half slack (Core::renew_expiry), so no key is read to decide it
//   (reading a "renewed until" key with the epoch was 43-47 % of history's Redis time);
// - the stream is trimmed every 64th publish (every 16th was 0.6 µs a message: the oldest
//   entry's read converts its payload), by count (XTRIM MAXLEN ~) and, when its oldest
//   entry expired, by age; reads never answer past either bound, so trimming only bounds memory;
// - numbers go to redis.call as strings: Lua formats a number argument with "%.14g", which was
//   6 % of Redis's time.
constexpr std::string_view kPublishBody = R"lua(
local n=tonumber(ARGV[3]) local a=tonumber(ARGV[4])
local e=redis.call('GET',KEYS[2])
if not e then e=ARGV[6] redis.call('SET',KEYS[2],e) end
if KEYS[5] then local f=redis.call('GET',KEYS[5]) if f then return {tonumber(f),e,1} end end
local s=redis.call('INCR',KEYS[1])
if s==1 then
 local b=tonumber(redis.call('GET',KEYS[4]) or '0')
 local l=redis.call('XREVRANGE',KEYS[3],'+','-','COUNT',1)[1]
 if l then b=math.max(b,sq(l[1])) end
 if b>0 then s=b+1 redis.call('SET',KEYS[1],string.format('%d',s)) end
 redis.call('DEL',KEYS[4])
end
if ARGV[10]~='0' and e==ARGV[11] and s<=tonumber(ARGV[10]) then e=ARGV[6] redis.call('SET',KEYS[2],e) end
if n>0 then
 local t=tonumber(ARGV[8]) local ts=ARGV[8]
 if t==0 then t=now() ts=string.format('%d',t) end
 redis.call('XADD',KEYS[3],string.format('%d-0',s),'t',ts,'p',ARGV[2])
 if ARGV[9]~='0' then redis.call('PEXPIRE',KEYS[3],ARGV[9]) end
 if s%64==0 then
  redis.call('XTRIM',KEYS[3],'MAXLEN','~',ARGV[3])
  if a>0 then
   local o=redis.call('XRANGE',KEYS[3],'-','+','COUNT',1)[1]
   if tonumber(o[2][2])<t-a then
    redis.call('XTRIM',KEYS[3],'MINID',string.format('%d',young(KEYS[3],sq(o[1]),s,t-a)))
   end
  end
 end
end
redis.call(ARGV[7],ARGV[1],string.format('%d ',s)..e..' '..ARGV[2])
if KEYS[5] then redis.call('SET',KEYS[5],string.format('%d',s),'EX',ARGV[5]) end
return {s,e,0}
)lua";

// KEYS: seq, epoch, hist, old seq key. ARGV: after, before, limit, history size, history ttl
// ms, epoch candidate. Returns {epoch, first retained seq, last seq, entries}: entries ascending
// after `after`, else descending before `before`. Entries past the count bound (MAXLEN ~ keeps
// a few more) or older than the ttl (trimmed lazily) are never returned.
constexpr std::string_view kHistoryBody = R"lua(
local e=epoch(KEYS[2],ARGV[6])
local last=tonumber(redis.call('GET',KEYS[1]) or redis.call('GET',KEYS[4]) or '0')
local l=redis.call('XREVRANGE',KEYS[3],'+','-','COUNT',1)[1]
if l then last=math.max(last,sq(l[1])) end
local n=tonumber(ARGV[4]) local a=tonumber(ARGV[5])
local first=0
if n>0 and last>0 then
 local lo=math.max(1,last-n+1)
 if a>0 then first=young(KEYS[3],lo,last,now()-a)
 else
  local x=redis.call('XRANGE',KEYS[3],string.format('%d',lo),'+','COUNT',1)[1]
  if x then first=sq(x[1]) end
 end
end
local m={}
local af=tonumber(ARGV[1]) local bf=tonumber(ARGV[2]) local lim=tonumber(ARGV[3])
if first>0 and lim>0 then
 local hi='+'
 if bf>0 then hi=string.format('(%d-0',bf) end
 if af>0 then m=redis.call('XRANGE',KEYS[3],string.format('%d',math.max(af+1,first)),hi,'COUNT',lim)
 else m=redis.call('XREVRANGE',KEYS[3],hi,string.format('%d',first),'COUNT',lim) end
end
return {e,first,last,m}
)lua";

// The function library, named after a hash of its text so that nodes of two chatd versions
// sharing one Redis (a rolling upgrade) each call their own functions.
struct Library {
  std::string code, publish, history;
};
Library make_library() {
  std::string body;
  body.append(kLuaHelpers)
      .append("redis.register_function('@P', function(KEYS, ARGV)\n")
      .append(kPublishBody)
      .append("end)\nredis.register_function('@H', function(KEYS, ARGV)\n")
      .append(kHistoryBody)
      .append("end)\n");
  std::uint64_t h = 14695981039346656037ull;  // FNV-1a: stable across builds and platforms
  for (unsigned char c : body) h = (h ^ c) * 1099511628211ull;
  char tag[17];
  std::snprintf(tag, sizeof tag, "%016" PRIx64, h);
  Library lib{"#!lua name=chatd_" + std::string(tag) + "\n", std::string("chatd_publish_") + tag,
              std::string("chatd_history_") + tag};
  for (std::size_t at = 0; (at = body.find('@', at)) != std::string::npos;) {
    const std::string& name = body[at + 1] == 'P' ? lib.publish : lib.history;
    body.replace(at, 2, name);
    at += name.size();
  }
  lib.code += body;
  return lib;
}

std::string key_of(std::string_view room, std::string_view what) {
  std::string k;
  k.reserve(kKeyPrefix.size() + room.size() + 2 + what.size());
  k.append(kKeyPrefix).append(room).append("}:").append(what);
  return k;
}
std::string channel_of(std::string_view room) {
  return std::string(kKeyPrefix).append(room).append(kChannelSuffix);
}

std::string_view str(const redisReply* r) {
  return r && r->type == REDIS_REPLY_STRING ? std::string_view(r->str, r->len) : std::string_view{};
}

// Returns the unsigned number at the start of `s` up to `stop` (or its end), or nullopt.
std::optional<std::uint64_t> leading_number(std::string_view s, char stop) {
  std::uint64_t v = 0;
  const char* end = s.data() + s.size();
  auto [p, ec] = std::from_chars(s.data(), end, v);
  if (ec != std::errc{} || p == s.data() || (p != end && *p != stop)) return std::nullopt;
  return v;
}

// Redis's clock as one shard's TIME told it: redis ms = steady ms + offset_ms.
struct RedisClock {
  bool known = false;
  bool asking = false;
  std::int64_t offset_ms = 0;
  std::chrono::steady_clock::time_point asked_at{};
};
// How often the offset is read again (steady clocks drift by parts per million), and the longest
// TIME round trip whose answer is used: the estimate is off by at most half of it.
constexpr auto kClockResync = std::chrono::seconds(5);
constexpr auto kClockMaxRtt = std::chrono::milliseconds(20);
constexpr std::size_t kMaxClocks = 64;  // shard ids are not reused; forget old ones past this

std::int64_t steady_ms(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}

// One room this node wants. `pending` counts (UN)SUBSCRIBEs sent to `shard` whose reply has not
// come back: Redis answers in order, so when it reaches 0 that shard's state is our last command.
struct RoomSub {
  bool wanted = false;
  bool confirmed = false;
  int pending = 0;
  redis::Shards::ShardId shard = 0;  // where the last (UN)SUBSCRIBE went; 0: nowhere yet
  std::vector<DoneFn> waiters;       // subscribe() calls waiting for the confirmation
  // Gap repair: the newest seq delivered here since the room was wanted (0: none yet) and its
  // epoch; while a history read fills a gap, the live messages that arrive wait in `held`.
  std::uint64_t last_seq = 0;
  std::string epoch;
  bool repairing = false;
  int repair_rounds = 0;
  std::uint64_t repair_id = 0;  // the read out now (0: none); answers to others are ignored
  std::vector<Delivery> held;
  // The room's newest seq and epoch read just after it was first subscribed here: a subscription
  // lost before any message came (last_seq 0) is repaired from there, or its gap went unseen.
  std::uint64_t floor_seq = 0;
  std::string floor_epoch;
  bool floor_known = false;
  std::uint64_t floor_id = 0;  // the floor read out now (0: none)
};

// Gap repair reads at most this many messages at a time, and this many times in a row: a gap
// the room's whole history (--history-size, 10,000 by default) cannot fill is not filled.
constexpr std::size_t kRepairBatch = 1000;
constexpr int kRepairRounds = 10;
// Live messages held per room while a read is out. Past this the read is given up (and the gap
// logged) rather than hold without bound: only a room flooding faster than Redis answers.
constexpr std::size_t kMaxHeld = 2000;
// A read refused because the history connection is down is asked again after this (within the
// same kRepairRounds): the three connections reconnect independently after an outage.
constexpr std::chrono::milliseconds kRepairRetry{100};
// A room's stream expires ttl + slack after its last renewal (PEXPIRE), the slack an eighth of
// the ttl and at most a minute: a quiet room's stream outlives its newest message by that. A
// node renews a room's expiry when half the slack has passed since it last did, so a message
// still queued on the connection up to half a slack keeps its whole ttl. The rooms a node
// remembers are bounded; past the bound it forgets them all and renews each once more.
std::chrono::milliseconds expiry_slack(std::chrono::seconds ttl) {
  return std::min<std::chrono::milliseconds>(std::chrono::minutes(1), std::chrono::milliseconds(ttl) / 8);
}
constexpr std::size_t kMaxRenewedRooms = 100'000;

class Core : public std::enable_shared_from_this<Core> {
 public:
  Core(boost::asio::io_context& io, const redis::Target& target, const BusConfig& cfg)
      : io_(io),
        display_(target.display()),
        cluster_(target.cluster),
        publish_verb_(cluster_ ? "SPUBLISH" : "PUBLISH"),
        subscribe_verb_(cluster_ ? "SSUBSCRIBE" : "SUBSCRIBE"),
        unsubscribe_verb_(cluster_ ? "SUNSUBSCRIBE" : "UNSUBSCRIBE"),
        history_size_(std::to_string(cfg.history_size)),
        history_ttl_ms_(std::to_string(std::chrono::milliseconds(cfg.history_ttl).count())),
        dedupe_window_s_(std::to_string(std::max<std::int64_t>(1, cfg.dedupe_window.count()))),
        expiry_ms_(std::to_string((std::chrono::milliseconds(cfg.history_ttl) + expiry_slack(cfg.history_ttl)).count())),
        renew_every_(expiry_slack(cfg.history_ttl) / 2),
        node_id_(cfg.node_id),
        timing_(cfg.redis_timing),
        rng_(std::random_device{}()) {}

  // Separate from the constructor: the hooks need a finished object.
  void init(const redis::Target& target) {
    // A Redis back from a restart may have lost the streams' expiries (or the streams, which a
    // publish then makes anew): every room's next publish renews it again.
    pub_ = redis::Shards::create(io_, target, {.name = "publish", .timing = timing_},
                                 {.on_up = [this](redis::Shards::ShardId) { renewed_.clear(); },
                                  .on_down = nullptr,
                                  .on_push = nullptr,
                                  .on_map_read = nullptr});
    pub_->set_function_library(library_.code);
    hist_ = redis::Shards::create(io_, target, {.name = "history", .timing = timing_}, {});
    hist_->set_function_library(library_.code);
    sub_ = redis::Shards::create(
        io_, target, {.name = "subscribe", .push_only = true, .timing = timing_},
        {.on_up = [this](redis::Shards::ShardId id) { on_sub_up_in_loop(id); },
         .on_down = [this](redis::Shards::ShardId id) { on_sub_down_in_loop(id); },
         .on_push = [this](redis::Shards::ShardId id, const redisReply& r) { on_push_in_loop(id, r); },
         .on_map_read = [this] { follow_map_in_loop(); }});
  }

  void start_in_loop(DeliverFn deliver) {
    deliver_ = std::move(deliver);
    if (!control_) control_ = [](ControlMessage&&) {};
    pub_->start_in_loop();
    hist_->start_in_loop();
    sub_->start_in_loop();
  }

  // Returns a fresh epoch token: 64 random bits in hex. Used only if the room has none, so a
  // Redis that lost the room's keys gives it one nobody has seen before.
  std::string epoch_candidate() {
    char buf[17];
    std::snprintf(buf, sizeof buf, "%016" PRIx64, static_cast<std::uint64_t>(rng_()));
    return buf;
  }

  static std::error_code failure(redis::Status st) {
    if (st == redis::Status::lost) return Error::timed_out;  // sent, unanswered: it may have run
    return st == redis::Status::stopped ? Error::stopped : Error::engine_down;
  }

  std::string old_seq_key(std::string_view room) const {
    return cluster_ ? key_of(room, kNoOldSeq) : std::string(kOldSeqPrefix).append(room);
  }

  void publish_in_loop(std::string room, std::string payload, PublishOptions opts, PublishedFn done) {
    std::vector<std::string> keys{key_of(room, "seq"), key_of(room, "epoch"), key_of(room, "hist"), old_seq_key(room)};
    if (!opts.client_id.empty()) keys.push_back(key_of(room, "cid:" + opts.client_id));
    const bool history = history_size_ != "0";
    std::string now = history ? redis_time_ms(keys[0]) : std::string("0");
    const bool renew = history && renew_expiry(room);
    std::string expiry = renew ? expiry_ms_ : std::string("0");  // ttl is >= 1 s
    std::string delivered = "0", delivered_epoch;
    if (auto it = rooms_.find(room); it != rooms_.end() && it->second.last_seq != 0) {
      delivered = std::to_string(it->second.last_seq);
      delivered_epoch = it->second.epoch;
    }
    pub_->fcall_in_loop(library_.publish, std::move(keys),
                        {channel_of(room), std::move(payload), history_size_, history_ttl_ms_, dedupe_window_s_,
                         epoch_candidate(), publish_verb_, std::move(now), std::move(expiry), std::move(delivered),
                         std::move(delivered_epoch)},
                        // Only a renewing publish (one per room per half slack) carries what undoing it needs.
                        [w = renew ? weak_from_this() : std::weak_ptr<Core>(), renewed = renew ? room : std::string(),
                         done = std::move(done)](redis::Status st, const redisReply* r) {
                          // A publish that failed renewed nothing: the room's next one renews instead.
                          auto fail = [&](std::error_code ec) {
                            if (auto self = w.lock()) self->renewed_.erase(renewed);
                            done(ec, 0, {});
                          };
                          if (st != redis::Status::ok) return fail(failure(st));
                          // CLUSTERDOWN, TRYAGAIN, a failover in progress: not an answer yet.
                          if (r->type == REDIS_REPLY_ERROR && is_transient(str_of(r))) return fail(Error::engine_down);
                          if (r->type != REDIS_REPLY_ARRAY || r->elements != 3 ||
                              r->element[0]->type != REDIS_REPLY_INTEGER || r->element[1]->type != REDIS_REPLY_STRING)
                            return fail(Error::rejected);
                          done({}, static_cast<std::uint64_t>(r->element[0]->integer), str_of(r->element[1]));
                        });
  }

  // Returns whether this publish should renew the room's stream expiry, and notes it if so.
  bool renew_expiry(const std::string& room) {
    const auto now = std::chrono::steady_clock::now();
    auto it = renewed_.find(room);
    if (it != renewed_.end()) {
      if (now - it->second < renew_every_) return false;
      it->second = now;
      return true;
    }
    if (renewed_.size() >= kMaxRenewedRooms) renewed_.clear();
    renewed_.emplace(room, now);
    return true;
  }

  // Returns Redis's clock now (ms, decimal) on the shard serving `key`, as this node reckons it
  // from that shard's last TIME, or "0" (the function reads TIME itself) until one answered in
  // time. Asks again every kClockResync, and on every publish until an answer is usable.
  std::string redis_time_ms(const std::string& key) {
    const auto shard = pub_->shard_of(key);
    if (shard == 0) return "0";
    if (clocks_.size() >= kMaxClocks && !clocks_.contains(shard)) clocks_.clear();
    RedisClock& c = clocks_[shard];
    const auto now = std::chrono::steady_clock::now();
    if (!c.asking && (!c.known || now - c.asked_at >= kClockResync)) {
      c.asking = true;
      c.asked_at = now;
      pub_->command_in_loop(key, {"TIME"}, [w = weak_from_this(), shard, now](redis::Status st, const redisReply* r) {
        auto self = w.lock();
        if (!self) return;
        auto it = self->clocks_.find(shard);
        if (it == self->clocks_.end()) return;
        it->second.asking = false;
        const auto back = std::chrono::steady_clock::now();
        if (st != redis::Status::ok || back - now > kClockMaxRtt || r->type != REDIS_REPLY_ARRAY || r->elements != 2)
          return;
        const auto sec = leading_number(str(r->element[0]), '\0');
        const auto usec = leading_number(str(r->element[1]), '\0');
        if (!sec || !usec) return;
        const auto redis_ms = static_cast<std::int64_t>(*sec * 1000 + *usec / 1000);
        it->second.offset_ms = redis_ms - steady_ms(now + (back - now) / 2);
        it->second.known = true;
      });
    }
    return c.known ? std::to_string(c.offset_ms + steady_ms(now)) : std::string("0");
  }

  static std::string_view str_of(const redisReply* r) {
    return r && (r->type == REDIS_REPLY_ERROR || r->type == REDIS_REPLY_STRING) ? std::string_view(r->str, r->len)
                                                                                 : std::string_view{};
  }
  // Returns whether a Redis error means "ask again later" rather than "never".
  static bool is_transient(std::string_view error) {
    return error.starts_with("CLUSTERDOWN") || error.starts_with("TRYAGAIN") || error.starts_with("MOVED") ||
           error.starts_with("ASK") || error.starts_with("LOADING") || error.starts_with("READONLY");
  }

  void publish_control_in_loop(ControlMessage m, DoneFn done) {
    std::string data = std::move(m.type);
    data.append(" ").append(std::to_string(node_id_.size())).append(" ").append(node_id_).append(m.body);
    pub_->command_in_loop(kControlChannel, {"PUBLISH", std::string(kControlChannel), std::move(data)},
                          [done = std::move(done)](redis::Status st, const redisReply* r) {
                            if (st != redis::Status::ok) return done(failure(st));
                            done(r->type == REDIS_REPLY_INTEGER ? std::error_code{} : Error::rejected);
                          });
  }

  // The room's seq, epoch and history keys, in one slot (the hash tag); dedupe keys expire.
  // histexp: the key earlier versions kept beside the stream (a rolling upgrade may leave one).
  void delete_history_in_loop(const std::string& room, DoneFn done) {
    renewed_.erase(room);
    pub_->command_in_loop(key_of(room, "seq"), {"DEL", key_of(room, "seq"), key_of(room, "epoch"), key_of(room, "hist"),
                                                   key_of(room, "histexp")},
                          [done = std::move(done)](redis::Status st, const redisReply* r) {
                            if (st != redis::Status::ok) return done(failure(st));
                            done(r->type == REDIS_REPLY_INTEGER ? std::error_code{} : Error::rejected);
                          });
  }

  // Returns the control message in a "<type> <origin length> <origin><body>" publish, or nullopt.
  static std::optional<ControlMessage> parse_control(std::string_view data) {
    const auto space = data.find(' ');
    if (space == std::string_view::npos || !valid_control_type(data.substr(0, space))) return std::nullopt;
    const auto rest = data.substr(space + 1);
    const auto len = leading_number(rest, ' ');
    const auto at = rest.find(' ');
    if (!len || at == std::string_view::npos || rest.size() - at - 1 < *len) return std::nullopt;
    return ControlMessage{std::string(data.substr(0, space)), std::string(rest.substr(at + 1, *len)),
                          std::string(rest.substr(at + 1 + *len))};
  }

  void history_in_loop(HistoryRequest req, HistoryFn done) {
    const std::string& room = req.room_id;
    // Lua's numbers are doubles, and string.format('%d') of one past 2^63 is garbage that XRANGE
    // refuses; no seq comes near 2^53, so a bound past it means "beyond every message" all the same.
    auto bound = [](std::uint64_t seq) { return std::to_string(std::min<std::uint64_t>(seq, std::uint64_t{1} << 53)); };
    hist_->fcall_in_loop(
        library_.history, {key_of(room, "seq"), key_of(room, "epoch"), key_of(room, "hist"), old_seq_key(room)},
        {bound(req.after_seq), bound(req.before_seq), std::to_string(req.limit), history_size_,
         history_ttl_ms_, epoch_candidate()},
        [room, newest_first = req.after_seq == 0, done = std::move(done)](redis::Status st, const redisReply* r) {
          if (st != redis::Status::ok) return done(failure(st), {});
          if (r->type == REDIS_REPLY_ERROR && is_transient(str_of(r))) return done(Error::engine_down, {});
          History h;
          if (!parse_history(*r, room, h)) return done(Error::rejected, {});
          if (newest_first) std::reverse(h.messages.begin(), h.messages.end());
          done({}, std::move(h));
        });
  }

  // Reads the history script's answer into `h`; returns false if it is not one.
  static bool parse_history(const redisReply& r, const std::string& room, History& h) {
    if (r.type != REDIS_REPLY_ARRAY || r.elements != 4 || r.element[0]->type != REDIS_REPLY_STRING ||
        r.element[1]->type != REDIS_REPLY_INTEGER || r.element[2]->type != REDIS_REPLY_INTEGER ||
        r.element[3]->type != REDIS_REPLY_ARRAY)
      return false;
    h.epoch.assign(str(r.element[0]));
    h.first_seq = static_cast<std::uint64_t>(r.element[1]->integer);
    h.last_seq = static_cast<std::uint64_t>(r.element[2]->integer);
    const redisReply& entries = *r.element[3];
    h.messages.reserve(entries.elements);
    for (std::size_t i = 0; i < entries.elements; ++i) {
      // [id, [t, <ms>, p, <payload>]]
      const redisReply* e = entries.element[i];
      if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 || e->element[1]->type != REDIS_REPLY_ARRAY ||
          e->element[1]->elements != 4)
        return false;
      auto seq = leading_number(str(e->element[0]), '-');
      if (!seq) return false;
      h.messages.push_back(Delivery{room, *seq, h.epoch, std::string(str(e->element[1]->element[3]))});
    }
    return true;
  }

  void subscribe_in_loop(const std::string& room, DoneFn ready) {
    if (stopped_in_loop_) return ready(Error::stopped);
    RoomSub& rs = rooms_[room];
    rs.waiters.push_back(std::move(ready));
    if (rs.wanted && rs.confirmed) return fire(rs, {});
    const bool was_wanted = std::exchange(rs.wanted, true);
    // A SUBSCRIBE already in flight to the room's shard will confirm; else send one (also
    // after an UNSUBSCRIBE in flight).
    if (was_wanted && rs.pending > 0 && rs.shard == sub_->shard_of(channel_of(room))) return;
    // Its shard is down: still wanted, so subscribed when that shard comes (back) up. During
    // the first connect the caller just waits for that.
    if (!send_subscribe(room, rs) && sub_ever_up_) fire(rs, Error::engine_down);
  }

  void unsubscribe_in_loop(const std::string& room) {
    auto it = rooms_.find(room);
    if (it == rooms_.end() || !it->second.wanted) return;
    RoomSub& rs = it->second;
    rs.wanted = false;
    rs.confirmed = false;
    forget_delivered(rs);  // wanted again later: from that subscription on, not from here
    fire(rs, std::make_error_code(std::errc::operation_canceled));
    if (rs.shard != 0 && sub_->send_push_in_loop(rs.shard, {unsubscribe_verb_, channel_of(room)})) ++rs.pending;
    if (rs.pending == 0) rooms_.erase(it);
  }

  void stop_in_loop() {
    if (stopped_in_loop_) return;
    stopped_in_loop_ = true;
    pub_->stop_in_loop();  // pending publishes get Error::stopped
    hist_->stop_in_loop();
    sub_->stop_in_loop();
    for (auto& [room, rs] : rooms_) fire(rs, Error::stopped);
    rooms_.clear();
    deliver_ = nullptr;
    control_ = nullptr;
  }

  // Sends (S)SUBSCRIBE for `room` to the shard that serves its channel now. Returns false when
  // that shard is not up (nothing sent).
  bool send_subscribe(const std::string& room, RoomSub& rs) {
    const std::string channel = channel_of(room);
    const auto shard = sub_->shard_of(channel);
    if (shard != rs.shard) {  // answers from the old shard no longer count
      rs.pending = 0;
      rs.confirmed = false;
      rs.shard = 0;
    }
    if (shard == 0 || !sub_->send_push_in_loop(shard, {subscribe_verb_, channel})) return false;
    rs.shard = shard;
    ++rs.pending;
    return true;
  }

  static void fire(RoomSub& rs, std::error_code ec) {
    auto waiters = std::move(rs.waiters);
    rs.waiters.clear();
    for (auto& w : waiters) w(ec);
  }

  // Every room wanted here whose channel that shard serves is subscribed again on each
  // (re)connect.
  void on_sub_up_in_loop(redis::Shards::ShardId id) {
    sub_ever_up_ = true;
    if (control_shard_ == 0 && sub_->send_push_in_loop(id, {"SUBSCRIBE", std::string(kControlChannel)})) {
      control_shard_ = id;
      note_control_back();
    }
    for (auto& [room, rs] : rooms_) {
      if (!rs.wanted || sub_->shard_of(channel_of(room)) != id) continue;
      if (rs.shard == id) rs.pending = 0;  // a new connection: nothing of the old one answers
      rs.confirmed = false;
      send_subscribe(room, rs);
    }
  }

  // The control channel is subscribed again after it was lost: what was published meanwhile
  // never reaches this node.
  void note_control_back() {
    if (!control_lost_) return;
    control_lost_ = false;
    control_gaps_.fetch_add(1, std::memory_order_relaxed);
  }

  void on_sub_down_in_loop(redis::Shards::ShardId id) {
    // The control channel is a plain PUBLISH, which reaches every node of a cluster: one
    // subscription on any shard that is up is enough.
    if (control_shard_ == id) {
      control_lost_ = true;
      control_shard_ = sub_->any_up_shard();
      if (control_shard_ != 0 && !sub_->send_push_in_loop(control_shard_, {"SUBSCRIBE", std::string(kControlChannel)}))
        control_shard_ = 0;
      if (control_shard_ != 0) note_control_back();
    }
    for (auto it = rooms_.begin(); it != rooms_.end();) {
      RoomSub& rs = it->second;
      if (rs.shard != id && !(rs.shard == 0 && sub_->shard_of(channel_of(it->first)) == id)) {
        ++it;
        continue;
      }
      rs.confirmed = false;
      rs.pending = 0;
      rs.shard = 0;
      fire(rs, Error::engine_down);
      it = rs.wanted ? std::next(it) : rooms_.erase(it);
    }
  }

  // The slot map was read again (after a failover, a slot move, a lost channel): rooms whose
  // channel has another shard now leave the old one and subscribe on the new one, and rooms
  // left without a shard subscribe where the map says.
  void follow_map_in_loop() {
    for (auto it = rooms_.begin(); it != rooms_.end();) {
      const std::string& room = it->first;
      RoomSub& rs = it->second;
      const auto now = sub_->shard_of(channel_of(room));
      if (now == rs.shard && (rs.shard != 0 || !rs.wanted)) {
        ++it;
        continue;
      }
      if (rs.shard != 0) sub_->send_push_in_loop(rs.shard, {unsubscribe_verb_, channel_of(room)});
      rs.shard = 0;
      rs.pending = 0;
      rs.confirmed = false;
      if (!rs.wanted) {
        it = rooms_.erase(it);
        continue;
      }
      send_subscribe(room, rs);
      ++it;
    }
  }

  // A redirect for a (S)SUBSCRIBE names the slot that moved: its rooms on that shard start
  // over once the map is read again.
  void on_redirect_in_loop(redis::Shards::ShardId id, std::string_view error) {
    auto rd = redis::parse_redirect(error);
    if (!rd) return;
    for (auto& [room, rs] : rooms_) {
      if (rs.shard != id || redis::key_slot(channel_of(room)) != rd->slot) continue;
      rs.shard = 0;
      rs.pending = 0;
      rs.confirmed = false;
    }
    sub_->refresh_in_loop();
  }

  void on_push_in_loop(redis::Shards::ShardId id, const redisReply& r) {
    if (r.type == REDIS_REPLY_ERROR) return on_redirect_in_loop(id, std::string_view(r.str, r.len));
    if (r.type != REDIS_REPLY_ARRAY || r.elements < 3) return;
    const std::string_view kind = str(r.element[0]);
    const std::string_view channel = str(r.element[1]);
    if (channel == kControlChannel) {
      if (kind != "message" || !control_ || id != control_shard_) return;
      if (auto m = parse_control(str(r.element[2]))) control_(std::move(*m));
      return;
    }
    if (!channel.starts_with(kKeyPrefix) || !channel.ends_with(kChannelSuffix)) return;
    const std::string room(channel.substr(kKeyPrefix.size(),
                                          channel.size() - kKeyPrefix.size() - kChannelSuffix.size()));
    auto it = rooms_.find(room);
    if (it == rooms_.end()) return;
    RoomSub& rs = it->second;
    if (rs.shard != id) return;  // from a shard this room has left
    if (kind == "message" || kind == "smessage") {
      if (!rs.wanted || !deliver_) return;
      // "<seq> <epoch> <payload>"
      const std::string_view data = str(r.element[2]);
      const auto seq = leading_number(data, ' ');
      const auto space = data.find(' ');
      const auto space2 = space == std::string_view::npos ? space : data.find(' ', space + 1);
      if (!seq || space2 == std::string_view::npos) return;  // not ours
      accept_in_loop(room, rs,
                     Delivery{room, *seq, std::string(data.substr(space + 1, space2 - space - 1)),
                              std::string(data.substr(space2 + 1))});
      return;
    }
    const bool subscribed = kind == "subscribe" || kind == "ssubscribe";
    if (!subscribed && kind != "unsubscribe" && kind != "sunsubscribe") return;
    if (rs.pending == 0) {
      // Not an answer to us: the shard dropped the channel (its slot moved away, the node
      // became a replica). Subscribe again where the map says, once it is read again.
      if (!subscribed && rs.wanted) {
        rs.confirmed = false;
        rs.shard = 0;
        sub_->refresh_in_loop();
      }
      return;
    }
    if (--rs.pending != 0) return;
    if (rs.wanted && subscribed) {
      rs.confirmed = true;
      // Subscribed again after the channel was lost: what was published meanwhile is read.
      if (!rs.repairing) {
        if (rs.last_seq != 0) {
          repair_in_loop(room, rs);
        } else if (rs.floor_known) {
          rs.last_seq = rs.floor_seq;
          rs.epoch = rs.floor_epoch;
          repair_in_loop(room, rs);
        } else if (rs.floor_id == 0) {
          read_floor_in_loop(room, rs);
        }
      }
      fire(rs, {});
    } else if (!rs.wanted) {
      rooms_.erase(it);
    }
  }

  static void forget_delivered(RoomSub& rs) {
    rs.last_seq = 0;
    rs.epoch.clear();
    rs.repairing = false;
    rs.repair_id = 0;
    rs.held.clear();
    rs.floor_seq = 0;
    rs.floor_epoch.clear();
    rs.floor_known = false;
    rs.floor_id = 0;
  }

  // Reads where the room stands (no messages, only its newest seq), after its subscription is
  // confirmed: messages published from then on come live, so a later gap starts above it.
  void read_floor_in_loop(const std::string& room, RoomSub& rs) {
    const std::uint64_t id = rs.floor_id = ++repairs_;
    history_in_loop({room, 0, 0, 0}, [this, self = shared_from_this(), room, id](std::error_code ec, History h) {
      auto it = rooms_.find(room);
      if (it == rooms_.end() || it->second.floor_id != id) return;
      RoomSub& sub = it->second;
      if (ec) {
        sub.floor_id = 0;  // asked again at the next confirmation
        return;
      }
      sub.floor_seq = h.last_seq;
      sub.floor_epoch = std::move(h.epoch);
      sub.floor_known = true;
    });
  }

  // Delivers a live message of a wanted room in seq order: a duplicate (already read from
  // history) is dropped, a message past a gap waits until the gap is read.
  void accept_in_loop(const std::string& room, RoomSub& rs, Delivery&& d) {
    if (rs.repairing) {
      if (rs.held.size() < kMaxHeld) return rs.held.push_back(std::move(d));
      log::event("bus_gap_unrepaired", {{"room", room}, {"why", "too many messages held while reading"}});
      rs.held.push_back(std::move(d));
      return end_repair_in_loop(room, rs);
    }
    if (d.epoch != rs.epoch) {  // the room's history was lost: its seqs start over
      rs.epoch = d.epoch;
      rs.last_seq = 0;
    }
    if (rs.last_seq != 0 && d.seq <= rs.last_seq) return;
    if (rs.last_seq != 0 && d.seq > rs.last_seq + 1) {
      rs.held.push_back(std::move(d));
      return repair_in_loop(room, rs);
    }
    rs.last_seq = d.seq;
    deliver_(std::move(d));
  }

  // Reads what this node missed of `room` after rs.last_seq (up to the first held message, or
  // the newest when none is held) and delivers it, then the held messages.
  void repair_in_loop(const std::string& room, RoomSub& sub) {
    if (!sub.repairing) sub.repair_rounds = 0;
    sub.repairing = true;
    ++sub.repair_rounds;
    const std::uint64_t id = sub.repair_id = ++repairs_;  // node-wide: a room wanted again starts no count over
    const std::uint64_t from = sub.last_seq;
    const std::size_t want = sub.held.empty()
        ? kRepairBatch
        : static_cast<std::size_t>(std::min<std::uint64_t>(kRepairBatch, sub.held.front().seq - from - 1));
    history_in_loop({room, from, 0, want}, [this, self = shared_from_this(), room, id, from, want](
                                               std::error_code ec, History h) {
      auto it = rooms_.find(room);
      if (it == rooms_.end() || it->second.repair_id != id || !deliver_) return;
      RoomSub& rs = it->second;
      const std::uint64_t until = rs.held.empty() ? UINT64_MAX : rs.held.front().seq;
      // The history connection reconnects on its own schedule: often a moment after the
      // subscription's; or it was lost under the read. Ask again a little later (the live
      // messages wait): a read is always safe to repeat.
      if ((ec == Error::engine_down || ec == Error::timed_out) && rs.repair_rounds < kRepairRounds)
        return retry_repair_in_loop(room, id);
      if (ec || h.epoch != rs.epoch) {
        // Down or wiped: the held messages go out as they are (a wiped room's clients see
        // the new epoch and resume).
        if (ec) log::event("bus_gap_unrepaired", {{"room", room}, {"why", ec.message()}});
        return end_repair_in_loop(room, rs);
      }
      if (h.last_seq < rs.last_seq) return new_epoch_in_loop(room, rs, h.last_seq);
      std::size_t filled = 0;
      for (auto& m : h.messages) {
        if (m.seq <= rs.last_seq) continue;
        if (m.seq >= until) break;
        rs.last_seq = m.seq;
        ++filled;
        deliver_(std::move(m));
      }
      if (filled > 0)
        log::event("bus_gap_repaired", {{"room", room},
                                        {"after", std::to_string(from)},
                                        {"messages", std::to_string(filled)}});
      const bool more = h.messages.size() == want && (until == UINT64_MAX ? h.last_seq > rs.last_seq
                                                                           : until > rs.last_seq + 1);
      if (more && rs.repair_rounds < kRepairRounds) return repair_in_loop(room, rs);
      if (until != UINT64_MAX && until > rs.last_seq + 1 && (h.first_seq == 0 || h.first_seq > rs.last_seq + 1))
        log::event("bus_gap_unrepaired", {{"room", room}, {"why", "older than the history kept"}});
      end_repair_in_loop(room, rs);
    });
  }

  // The room's seq went back within its epoch (Redis restarted from an older snapshot, or a
  // failover lost writes): the seqs this node delivered will be given to new messages, which
  // every node would drop as ones it had. Starts a new epoch unless another node did (one
  // script: the epoch is replaced only if it is still the one seen), so clients resume with a
  // reset; what was held goes out as the new epoch's, from the oldest held.
  void new_epoch_in_loop(const std::string& room, RoomSub& rs, std::uint64_t newest) {
    static constexpr std::string_view kRotate = R"lua(
local e=redis.call('GET',KEYS[1])
if not e or e==ARGV[1] then e=ARGV[2] redis.call('SET',KEYS[1],e) end
return e
)lua";
    const std::uint64_t id = rs.repair_id;
    log::event("bus_seq_went_back", {{"room", room}, {"delivered", std::to_string(rs.last_seq)}, {"newest", std::to_string(newest)}});
    pub_->eval_in_loop(kRotate, {key_of(room, "epoch")}, {rs.epoch, epoch_candidate()},
                       [this, self = shared_from_this(), room, id, newest](redis::Status st, const redisReply* r) {
                         auto it = rooms_.find(room);
                         if (it == rooms_.end() || it->second.repair_id != id || !deliver_) return;
                         RoomSub& sub = it->second;
                         if (st != redis::Status::ok || r->type != REDIS_REPLY_STRING) {
                           if (sub.repair_rounds < kRepairRounds) return retry_repair_in_loop(room, id);
                           return end_repair_in_loop(room, sub);
                         }
                         const std::string epoch(str(r));
                         for (auto& d : sub.held)
                           if (d.epoch == sub.epoch) d.epoch = epoch;  // published after the seq went back
                         sub.epoch = epoch;
                         sub.last_seq = sub.held.empty() ? newest : std::min(newest, sub.held.front().seq - 1);
                         end_repair_in_loop(room, sub);
                       });
  }

  void retry_repair_in_loop(const std::string& room, std::uint64_t id) {
    auto timer = std::make_shared<boost::asio::steady_timer>(io_, kRepairRetry);
    timer->async_wait([this, self = shared_from_this(), timer, room, id](boost::system::error_code) {
      auto it = rooms_.find(room);
      if (it == rooms_.end() || it->second.repair_id != id || stopped_in_loop_) return;
      repair_in_loop(room, it->second);
    });
  }

  // Delivers the held messages in order (one of them may start the next repair).
  void end_repair_in_loop(const std::string& room, RoomSub& rs) {
    rs.repairing = false;
    rs.repair_id = 0;
    auto held = std::move(rs.held);
    rs.held.clear();
    // Past a gap that cannot be filled, delivery goes on from the first held message.
    if (!held.empty() && held.front().epoch == rs.epoch && held.front().seq > rs.last_seq + 1)
      rs.last_seq = held.front().seq - 1;
    for (auto& d : held) accept_in_loop(room, rs, std::move(d));
  }

  boost::asio::io_context& io_;
  std::string display_;
  const bool cluster_;
  const std::string publish_verb_, subscribe_verb_, unsubscribe_verb_;
  const std::string history_size_, history_ttl_ms_, dedupe_window_s_, expiry_ms_;  // script arguments
  const std::chrono::milliseconds renew_every_;
  std::shared_ptr<redis::Shards> pub_, hist_, sub_;
  const Library library_ = make_library();
  const std::string node_id_;
  const redis::Timing timing_;
  std::mt19937_64 rng_;  // engine thread only
  std::atomic<bool> stopped_{false};
  ControlFn control_;  // set before start
  // Engine thread only:
  DeliverFn deliver_;
  std::unordered_map<std::string, RoomSub> rooms_;
  std::unordered_map<redis::Shards::ShardId, RedisClock> clocks_;  // by pub_ shard
  std::unordered_map<std::string, std::chrono::steady_clock::time_point> renewed_;  // room -> expiry renewed
  bool sub_ever_up_ = false;
  bool control_lost_ = false;  // the control subscription went down and is not back yet
  std::atomic<std::uint64_t> control_gaps_{0};
  std::uint64_t repairs_ = 0;  // gap repair reads sent (their ids)
  redis::Shards::ShardId control_shard_ = 0;  // where the control channel is subscribed
  bool stopped_in_loop_ = false;
};

class RedisBus final : public MessageBus {
 public:
  RedisBus(boost::asio::io_context& io, const redis::Target& target, const BusConfig& cfg)
      : core_(std::make_shared<Core>(io, target, cfg)) {
    core_->init(target);
  }
  ~RedisBus() override { stop(); }

  void start(DeliverFn on_deliver) override {
    boost::asio::post(core_->io_, [c = core_, d = std::move(on_deliver)]() mutable {
      c->start_in_loop(std::move(d));
    });
  }

  void publish(std::string room_id, std::string payload, PublishOptions opts, PublishedFn done) override {
    if (core_->stopped_) return done(Error::stopped, 0, {});
    // On the engine thread, run now: a one-thread io_context holds posts made from its own
    // thread until the running handler returns, so a post from a worker could overtake them
    // and reorder one sender's messages (the hub publishes from here after a room lookup).
    if (core_->io_.get_executor().running_in_this_thread())
      return core_->publish_in_loop(std::move(room_id), std::move(payload), std::move(opts), std::move(done));
    boost::asio::post(core_->io_, [c = core_, room = std::move(room_id), body = std::move(payload),
                                   opts = std::move(opts), done = std::move(done)]() mutable {
      c->publish_in_loop(std::move(room), std::move(body), std::move(opts), std::move(done));
    });
  }

  void on_control(ControlFn fn) override { core_->control_ = std::move(fn); }

  void publish_control(ControlMessage m, DoneFn done) override {
    if (core_->stopped_) return done(Error::stopped);
    if (!valid_control_type(m.type) || m.body.size() > kMaxControlBody) return done(Error::rejected);
    boost::asio::post(core_->io_, [c = core_, m = std::move(m), done = std::move(done)]() mutable {
      c->publish_control_in_loop(std::move(m), std::move(done));
    });
  }

  void delete_history(const std::string& room_id, DoneFn done) override {
    if (core_->stopped_) return done(Error::stopped);
    boost::asio::post(core_->io_, [c = core_, room = room_id, done = std::move(done)]() mutable {
      c->delete_history_in_loop(room, std::move(done));
    });
  }

  void history(HistoryRequest req, HistoryFn done) override {
    if (core_->stopped_) return done(Error::stopped, {});
    boost::asio::post(core_->io_, [c = core_, req = std::move(req), done = std::move(done)]() mutable {
      c->history_in_loop(std::move(req), std::move(done));
    });
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

  bool up() const override { return core_->pub_->up() && core_->hist_->up() && core_->sub_->up(); }
  std::uint64_t control_gaps() const override { return core_->control_gaps_.load(std::memory_order_relaxed); }
  std::string describe() const override {
    return "redis " + core_->display_ + ": " + core_->pub_->describe() + ", " + core_->hist_->describe() +
           ", " + core_->sub_->describe();
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
  return std::make_unique<RedisBus>(engine, redis::verified_target(cfg.redis_url, cfg.redis_timing.start_timeout), cfg);
}

}  // namespace chatd::bus
