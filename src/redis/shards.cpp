#include "redis/shards.h"

#include <hiredis/hiredis.h>

#include <boost/asio/post.hpp>

#include <algorithm>
#include <chrono>

#include "redis/slot.h"

namespace chatd::redis {
namespace {

constexpr int kMaxHops = 5;  // redirects followed per command; more means the map is in flux
// While a slot migrates, a command over a room's keys that are split between the two nodes (or
// that names a key neither has yet) is answered TRYAGAIN, and while its new owner is announced
// node by node, two nodes may redirect to each other. Moving one room's few keys takes
// milliseconds, so it is sent again a little later, for up to kTryAgainDelay * kMaxTryAgain.
constexpr std::chrono::milliseconds kTryAgainDelay{50};
constexpr int kMaxTryAgain = 40;
constexpr std::chrono::milliseconds kRefreshEvery{500};  // while a slot or a primary is missing
// A slot-map read connects for one CLUSTER SLOTS; a node that does not answer within this is
// left for the next one (the read is retried every kRefreshEvery) rather than waited on for
// the full Timing::connect_timeout while a failover is under way.
constexpr std::chrono::milliseconds kMapConnectTimeout{1000};
// Reads asked for again and again (a subscription redirected by a node whose map is newer than
// the one asked) are this far apart at least, so a map in flux is followed without a busy loop.
constexpr std::chrono::milliseconds kMinReadGap{50};

}  // namespace

std::shared_ptr<Shards> Shards::create(boost::asio::io_context& io, Target target, ConnectionOptions opts,
                                       Hooks hooks) {
  return std::shared_ptr<Shards>(new Shards(io, std::move(target), std::move(opts), std::move(hooks)));
}

Shards::Shards(boost::asio::io_context& io, Target target, ConnectionOptions opts, Hooks hooks)
    : io_(io), target_(std::move(target)), opts_(std::move(opts)), hooks_(std::move(hooks)), refresh_timer_(io) {
  if (target_.seeds.empty()) throw std::invalid_argument("redis::Shards needs a server");
}

void Shards::set_function_library(std::string code) { function_library_ = std::move(code); }

// Returns the primary at host:port, connecting to it (and starting it) when it is new.
std::shared_ptr<Shards::Node> Shards::node_for(const std::string& host, std::uint16_t port) {
  const std::string addr = host + ":" + std::to_string(port);
  if (auto it = nodes_.find(addr); it != nodes_.end()) return it->second;
  auto node = std::make_shared<Node>();
  node->id = ++next_id_;
  node->addr = addr;
  Endpoint ep = target_.seeds.front();  // the credentials; db 0 in a cluster
  if (target_.cluster) {
    ep.host = ep.address = host;
    ep.port = port;
    ep.db = 0;
  }
  ConnectionOptions o = opts_;
  if (target_.cluster) o.name += " " + addr;
  std::weak_ptr<Shards> weak = weak_from_this();
  const ShardId id = node->id;
  node->conn = Connection::create(
      io_, std::move(ep), std::move(o),
      {.on_up =
           [weak, id] {
             auto s = weak.lock();
             if (!s || s->stopped_) return;
             if (s->hooks_.on_up) s->hooks_.on_up(id);
           },
       .on_down =
           [weak, id](const std::string&) {
             auto s = weak.lock();
             if (!s || s->stopped_) return;
             if (s->target_.cluster) s->schedule_refresh_in_loop(std::chrono::milliseconds(0));
             if (s->hooks_.on_down) s->hooks_.on_down(id);
           },
       .on_push =
           [weak, id](const redisReply& r) {
             auto s = weak.lock();
             if (!s || s->stopped_ || !s->hooks_.on_push) return;
             s->hooks_.on_push(id, r);
           }});
  if (!function_library_.empty()) node->conn->set_function_library(function_library_);
  nodes_.emplace(addr, node);
  node->conn->start_in_loop();
  return node;
}

void Shards::start_in_loop() {
  if (stopped_ || !nodes_.empty() || single_) return;
  if (!target_.cluster) {
    const Endpoint& ep = target_.seeds.front();
    single_ = node_for(ep.address.empty() ? ep.host : ep.address, ep.port);
    publish_view_in_loop();
    return;
  }
  slots_.assign(kSlots, nullptr);
  apply_map_in_loop(target_.slots);
}

void Shards::stop_in_loop() {
  if (stopped_) return;
  stopped_ = true;
  refresh_timer_.cancel();
  if (auto c = std::exchange(map_conn_, nullptr)) c->stop_in_loop();
  auto nodes = std::move(nodes_);
  nodes_.clear();
  slots_.clear();
  single_.reset();
  for (auto& [addr, node] : nodes) node->conn->stop_in_loop();
  hooks_ = {};
  publish_view_in_loop();
}

// Points every slot at the primary the map names; connects to new primaries and closes the
// connections of nodes that serve nothing now (a demoted primary, a removed node).
void Shards::apply_map_in_loop(const std::vector<SlotRange>& map) {
  std::vector<std::shared_ptr<Node>> next(kSlots);
  for (const auto& range : map) {
    auto node = node_for(range.host, range.port);
    for (unsigned slot = range.first; slot <= range.last; ++slot) next[slot] = node;
  }
  slots_ = std::move(next);
  std::vector<std::shared_ptr<Node>> gone;
  for (auto it = nodes_.begin(); it != nodes_.end();) {
    const bool serves = std::any_of(slots_.begin(), slots_.end(), [&](const auto& n) { return n == it->second; });
    if (serves) {
      ++it;
    } else {
      gone.push_back(it->second);
      it = nodes_.erase(it);
    }
  }
  publish_view_in_loop();
  for (auto& node : gone) {
    node->conn->stop_in_loop();  // its pending commands get Status::stopped: reported as down
    if (hooks_.on_down) hooks_.on_down(node->id);
  }
  if (hooks_.on_map_read) hooks_.on_map_read();
  bool all_up = complete_in_loop();
  for (auto& [addr, node] : nodes_) all_up = all_up && node->conn->up();
  if (!all_up) schedule_refresh_in_loop(kRefreshEvery);
}

bool Shards::complete_in_loop() const {
  if (single_) return true;
  return !slots_.empty() && std::all_of(slots_.begin(), slots_.end(), [](const auto& n) { return n != nullptr; });
}

void Shards::publish_view_in_loop() {
  std::vector<std::shared_ptr<Connection>> view;
  for (auto& [addr, node] : nodes_) view.push_back(node->conn);
  const bool complete = !stopped_ && complete_in_loop();
  std::lock_guard lock(view_mu_);
  view_ = std::move(view);
  view_complete_ = complete;
}

void Shards::refresh_in_loop() { schedule_refresh_in_loop(std::chrono::milliseconds(0)); }

void Shards::schedule_refresh_in_loop(std::chrono::milliseconds after) {
  if (stopped_ || !target_.cluster) return;
  if (map_conn_) {  // one read at a time; read again right after it
    refresh_again_ = true;
    return;
  }
  if (refresh_scheduled_) return;
  refresh_scheduled_ = true;
  const auto gap = last_read_ + kMinReadGap - std::chrono::steady_clock::now();
  refresh_timer_.expires_after(std::max<std::chrono::steady_clock::duration>(after, gap));
  refresh_timer_.async_wait([weak = weak_from_this()](const boost::system::error_code& ec) {
    auto s = weak.lock();
    if (ec || !s || s->stopped_) return;
    s->refresh_scheduled_ = false;
    s->read_map_in_loop();
  });
}

// Asks a primary that is up (else the URL's nodes in turn) for CLUSTER SLOTS, on a connection
// of its own: the role's connections may be subscribers, which cannot ask.
void Shards::read_map_in_loop() {
  if (stopped_ || map_conn_) return;
  Endpoint ep = target_.seeds.front();
  ep.db = 0;
  bool chosen = false;
  for (auto& [addr, node] : nodes_) {
    if (!node->conn->up()) continue;
    const auto colon = addr.rfind(':');
    ep.host = ep.address = addr.substr(0, colon);
    ep.port = static_cast<std::uint16_t>(std::stoul(addr.substr(colon + 1)));
    chosen = true;
    break;
  }
  if (!chosen) {
    const Endpoint& seed = target_.seeds[next_seed_++ % target_.seeds.size()];
    ep.host = seed.host;
    ep.address = seed.address.empty() ? seed.host : seed.address;
    ep.port = seed.port;
  }
  const std::string asked = ep.address;
  ConnectionOptions o{.name = opts_.name + " slot map", .health_ping = false, .timing = opts_.timing};
  o.timing.connect_timeout = kMapConnectTimeout;
  map_conn_ = Connection::create(io_, std::move(ep), std::move(o), {});
  map_conn_->start_in_loop();
  map_conn_->command_in_loop({"CLUSTER", "SLOTS"}, [weak = weak_from_this(), asked](Status st, const redisReply* r) {
    auto s = weak.lock();
    if (!s || s->stopped_) return;
    std::optional<std::vector<SlotRange>> map;
    if (st == Status::ok) map = parse_cluster_slots(*r, asked);
    // Never destroy a connection inside its own callback.
    boost::asio::post(s->io_, [c = std::move(s->map_conn_)] {
      if (c) c->stop_in_loop();
    });
    s->map_conn_.reset();
    s->last_read_ = std::chrono::steady_clock::now();
    const bool again = std::exchange(s->refresh_again_, false);
    if (map && !map->empty()) s->apply_map_in_loop(*map);
    else s->schedule_refresh_in_loop(kRefreshEvery);
    if (again) s->schedule_refresh_in_loop(std::chrono::milliseconds(0));
  });
}

bool Shards::up() const {
  std::lock_guard lock(view_mu_);
  if (!view_complete_ || view_.empty()) return false;
  return std::all_of(view_.begin(), view_.end(), [](const auto& c) { return c->up(); });
}

std::string Shards::describe() const {
  std::lock_guard lock(view_mu_);
  if (!target_.cluster) return view_.empty() ? opts_.name + " stopped" : view_.front()->describe();
  std::string out = opts_.name + ": " + std::to_string(view_.size()) + " primaries";
  if (!view_complete_) out += ", some slots unserved";
  for (const auto& c : view_) out += "; " + c->describe();
  return out;
}

void Shards::command_in_loop(std::string_view key, std::vector<std::string> argv, ReplyFn done) {
  const std::uint16_t slot = target_.cluster ? key_slot(key) : 0;
  route_in_loop(std::make_shared<const std::vector<std::string>>(std::move(argv)), slot, nullptr, false, 0,
                std::move(done));
}

void Shards::fcall_in_loop(std::string_view function, std::vector<std::string> keys, std::vector<std::string> args,
                           ReplyFn done) {
  call_in_loop("FCALL", function, std::move(keys), std::move(args), std::move(done));
}

void Shards::eval_in_loop(std::string_view script, std::vector<std::string> keys, std::vector<std::string> args,
                          ReplyFn done) {
  call_in_loop("EVAL", script, std::move(keys), std::move(args), std::move(done));
}

// Sends `verb what numkeys keys... args...`, routed by the first key.
void Shards::call_in_loop(std::string_view verb, std::string_view what, std::vector<std::string> keys,
                          std::vector<std::string> args, ReplyFn done) {
  const std::string key = keys.empty() ? std::string() : keys.front();
  command_in_loop(key, script_call_argv(verb, what, std::move(keys), std::move(args)), std::move(done));
}

// Sends argv to `node` (else the slot's primary). A MOVED points the slot at the node named and
// resends there; an ASK resends there once, behind ASKING; a TRYAGAIN, or kMaxHops redirects in
// a row, starts over from the slot's primary after kTryAgainDelay. The reply is the last node's.
void Shards::route_in_loop(std::shared_ptr<const std::vector<std::string>> argv, std::uint16_t slot,
                           std::shared_ptr<Node> node, bool asking, int hops, ReplyFn done, int tries) {
  if (stopped_) return done(Status::stopped, nullptr);
  if (!node) node = single_ ? single_ : slots_[slot];
  if (!node) {
    schedule_refresh_in_loop(std::chrono::milliseconds(0));
    return done(Status::down, nullptr);
  }
  if (asking) node->conn->command_in_loop({"ASKING"}, [](Status, const redisReply*) {});
  const std::string answering_host = node->addr.substr(0, node->addr.rfind(':'));
  node->conn->command_in_loop(
      *argv, [weak = weak_from_this(), argv, slot, hops, tries, answering_host, done = std::move(done)](
                 Status st, const redisReply* r) mutable {
        auto s = weak.lock();
        if (!s || s->stopped_) return done(Status::stopped, nullptr);
        // Stopped while the Shards is not: its node was closed, serving nothing any more.
        if (st == Status::stopped) return done(Status::lost, nullptr);
        if (st != Status::ok || !s->target_.cluster || r->type != REDIS_REPLY_ERROR) return done(st, r);
        const std::string_view error(r->str, r->len);
        auto rd = parse_redirect(error);
        // TRYAGAIN, or redirects going round: mid-move the old owner already names the new one
        // while the new one, still importing, names the old. Neither is an answer yet.
        if ((error.starts_with("TRYAGAIN") || (rd && hops >= kMaxHops)) && tries < kMaxTryAgain) {
          auto wait = std::make_shared<boost::asio::steady_timer>(s->io_, kTryAgainDelay);
          wait->async_wait([weak, wait, argv = std::move(argv), slot, tries, done = std::move(done)](
                               boost::system::error_code) mutable {
            auto s2 = weak.lock();
            if (!s2 || s2->stopped_) return done(Status::stopped, nullptr);
            s2->route_in_loop(std::move(argv), slot, nullptr, false, 0, std::move(done), tries + 1);
          });
          return;
        }
        if (!rd || hops >= kMaxHops) return done(st, r);
        auto target = s->node_for(rd->host.empty() ? answering_host : rd->host, rd->port);
        if (rd->moved) {
          s->slots_[rd->slot] = target;
          s->schedule_refresh_in_loop(std::chrono::milliseconds(0));
        }
        s->route_in_loop(std::move(argv), slot, std::move(target), !rd->moved, hops + 1, std::move(done), tries);
      });
}

Shards::ShardId Shards::shard_of(std::string_view key) const {
  if (single_) return single_->id;
  if (slots_.empty()) return 0;
  const auto& node = slots_[key_slot(key)];
  return node ? node->id : 0;
}

Shards::ShardId Shards::any_up_shard() const {
  for (const auto& [addr, node] : nodes_)
    if (node->conn->up()) return node->id;
  return 0;
}

bool Shards::send_push_in_loop(ShardId shard, const std::vector<std::string>& argv) {
  for (const auto& [addr, node] : nodes_)
    if (node->id == shard) return node->conn->send_push_in_loop(argv);
  return false;
}

}  // namespace chatd::redis
