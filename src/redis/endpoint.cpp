#include "redis/endpoint.h"

#include <hiredis/hiredis.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/url/parse.hpp>

#include <charconv>
#include <memory>
#include <stdexcept>
#include <vector>

namespace chatd::redis {

std::string Endpoint::display() const {
  return host + ":" + std::to_string(port) + "/" + std::to_string(db);
}

Endpoint parse_url(std::string_view url) {
  auto bad = [&](const std::string& why) {
    return std::runtime_error("bad Redis URL '" + std::string(url) + "': " + why +
                              " (expected redis://[[user]:password@]host[:port][/db])");
  };
  auto parsed = boost::urls::parse_uri(url);
  if (!parsed) throw bad(parsed.error().message());
  const auto& u = *parsed;
  if (u.scheme() != "redis") throw bad("scheme must be redis");
  if (!u.has_authority() || u.host_address().empty()) throw bad("no host");
  Endpoint ep;
  ep.host = u.host_address();
  if (u.has_port()) {
    // port_number() wraps large numbers silently; read the text.
    const std::string_view text = u.port();
    unsigned long port = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), port);
    if (ec != std::errc{} || end != text.data() + text.size() || port == 0 || port > 65535)
      throw bad("port must be 1-65535");
    ep.port = static_cast<std::uint16_t>(port);
  }
  if (u.has_userinfo()) {
    ep.user = u.user();
    if (u.has_password()) ep.password = u.password();
    // redis://secret@host: a lone userinfo is the password, as redis-cli reads it.
    if (!u.has_password()) std::swap(ep.user, ep.password);
  }
  std::string path = u.path();
  if (!path.empty() && path != "/") {
    std::string_view digits = std::string_view(path).substr(1);
    auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), ep.db);
    if (ec != std::errc{} || end != digits.data() + digits.size() || ep.db < 0)
      throw bad("path must be a database number");
  }
  if (u.has_query() || u.has_fragment()) throw bad("no query or fragment allowed");
  return ep;
}

namespace {

struct ContextFree {
  void operator()(redisContext* c) const { redisFree(c); }
};
struct ReplyFree {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using ReplyPtr = std::unique_ptr<redisReply, ReplyFree>;

// A blocking connection for start-up checks: resolved, connected, logged in, db selected.
class StartupClient {
 public:
  StartupClient(Endpoint& ep, std::chrono::milliseconds timeout) : where_("Redis at " + ep.display()) {
    {
      boost::asio::io_context io;
      boost::asio::ip::tcp::resolver resolver(io);
      boost::system::error_code ec;
      auto results = resolver.resolve(ep.host, std::to_string(ep.port), ec);
      if (ec || results.empty()) throw std::runtime_error("cannot resolve " + where_ + ": " + ec.message());
      ep.address = results.begin()->endpoint().address().to_string();
    }
    timeval tv{};
    tv.tv_sec = static_cast<long>(timeout.count() / 1000);
    tv.tv_usec = static_cast<long>((timeout.count() % 1000) * 1000);
    c_.reset(redisConnectWithTimeout(ep.address.c_str(), ep.port, tv));
    if (!c_) throw std::runtime_error("cannot reach " + where_ + ": out of memory");
    if (c_->err) throw std::runtime_error("cannot reach " + where_ + ": " + c_->errstr);
    redisSetTimeout(c_.get(), tv);
    if (!ep.password.empty()) {
      if (ep.user.empty()) call("the password (AUTH)", {"AUTH", ep.password});
      else call("the user and password (AUTH)", {"AUTH", ep.user, ep.password});
    }
    if (ep.db != 0) call("SELECT", {"SELECT", std::to_string(ep.db)});
  }

  // Returns the reply to argv, or throws naming `step` and what Redis said.
  ReplyPtr call(const std::string& step, const std::vector<std::string>& argv) {
    std::vector<const char*> ptrs;
    std::vector<std::size_t> lens;
    for (const auto& a : argv) {
      ptrs.push_back(a.data());
      lens.push_back(a.size());
    }
    ReplyPtr r(static_cast<redisReply*>(
        redisCommandArgv(c_.get(), static_cast<int>(ptrs.size()), ptrs.data(), lens.data())));
    if (!r) throw std::runtime_error(where_ + " did not answer " + step + ": " + c_->errstr);
    if (r->type == REDIS_REPLY_ERROR)
      throw std::runtime_error(where_ + " refused " + step + ": " + std::string(r->str, r->len));
    return r;
  }
  const std::string& where() const { return where_; }

 private:
  std::string where_;
  std::unique_ptr<redisContext, ContextFree> c_;
};

}  // namespace

void resolve_and_verify(Endpoint& ep, std::chrono::milliseconds timeout) {
  StartupClient c(ep, timeout);
  c.call("PING", {"PING"});
}

std::string Target::display() const {
  std::string out = cluster ? "cluster " : "";
  for (std::size_t i = 0; i < seeds.size(); ++i) {
    if (i) out += ',';
    out += cluster ? seeds[i].host + ":" + std::to_string(seeds[i].port) : seeds[i].display();
  }
  return out;
}

Target parse_target(std::string_view url) {
  constexpr std::string_view kScheme = "redis+cluster://";
  Target t;
  if (!url.starts_with(kScheme)) {
    t.seeds.push_back(parse_url(url));
    return t;
  }
  t.cluster = true;
  auto bad = [&](const std::string& why) {
    return std::runtime_error("bad Redis Cluster URL '" + std::string(url) + "': " + why +
                              " (expected redis+cluster://[[user]:password@]host:port[,host:port...])");
  };
  std::string_view rest = url.substr(kScheme.size());
  std::string userinfo;
  if (const auto at = rest.rfind('@'); at != std::string_view::npos) {
    userinfo = std::string(rest.substr(0, at + 1));
    rest.remove_prefix(at + 1);
  }
  if (rest.empty()) throw bad("no host");
  while (!rest.empty()) {
    const auto comma = rest.find(',');
    const std::string_view one = rest.substr(0, comma);
    if (one.empty()) throw bad("empty host in the list");
    if (one.find('/') != std::string_view::npos || one.find('?') != std::string_view::npos)
      throw bad("no path (db) or query allowed: a cluster has only db 0");
    Endpoint ep;
    try {
      ep = parse_url("redis://" + userinfo + std::string(one));
    } catch (const std::runtime_error&) {
      throw bad("cannot read '" + std::string(one) + "'");
    }
    t.seeds.push_back(std::move(ep));
    rest = comma == std::string_view::npos ? std::string_view{} : rest.substr(comma + 1);
    if (comma != std::string_view::npos && rest.empty()) throw bad("trailing comma");
  }
  return t;
}

std::optional<std::vector<SlotRange>> parse_cluster_slots(const redisReply& r, const std::string& asked_host) {
  if (r.type != REDIS_REPLY_ARRAY) return std::nullopt;
  std::vector<SlotRange> out;
  for (std::size_t i = 0; i < r.elements; ++i) {
    const redisReply* e = r.element[i];
    // [first, last, [host, port, id, ...], replicas...]
    if (e->type != REDIS_REPLY_ARRAY || e->elements < 3 || e->element[0]->type != REDIS_REPLY_INTEGER ||
        e->element[1]->type != REDIS_REPLY_INTEGER || e->element[2]->type != REDIS_REPLY_ARRAY ||
        e->element[2]->elements < 2 || e->element[2]->element[0]->type != REDIS_REPLY_STRING ||
        e->element[2]->element[1]->type != REDIS_REPLY_INTEGER)
      return std::nullopt;
    const long long first = e->element[0]->integer, last = e->element[1]->integer;
    const long long port = e->element[2]->element[1]->integer;
    if (first < 0 || last < first || last >= 16384 || port <= 0 || port > 65535) return std::nullopt;
    SlotRange s;
    s.first = static_cast<std::uint16_t>(first);
    s.last = static_cast<std::uint16_t>(last);
    s.host.assign(e->element[2]->element[0]->str, e->element[2]->element[0]->len);
    if (s.host.empty() || s.host == "?") s.host = asked_host;
    s.port = static_cast<std::uint16_t>(port);
    out.push_back(std::move(s));
  }
  return out;
}

Target verified_target(std::string_view url, std::chrono::milliseconds timeout) {
  Target t = parse_target(url);
  if (!t.cluster) {
    resolve_and_verify(t.seeds.front(), timeout);
    return t;
  }
  std::string why;
  for (auto& seed : t.seeds) {
    try {
      StartupClient c(seed, timeout);
      ReplyPtr info = c.call("CLUSTER INFO (is it a cluster node, cluster-enabled yes?)", {"CLUSTER", "INFO"});
      const std::string_view text(info->str ? info->str : "", info->str ? info->len : 0);
      if (text.find("cluster_state:ok") == std::string_view::npos)
        throw std::runtime_error(c.where() + " says the cluster is not ok (some slots are not served)");
      ReplyPtr slots = c.call("CLUSTER SLOTS", {"CLUSTER", "SLOTS"});
      auto map = parse_cluster_slots(*slots, seed.address);
      if (!map || map->empty()) throw std::runtime_error(c.where() + " answered CLUSTER SLOTS with no slot map");
      t.slots = std::move(*map);
      return t;
    } catch (const std::runtime_error& e) {
      why += (why.empty() ? "" : "; ") + std::string(e.what());
    }
  }
  throw std::runtime_error("no node of the Redis Cluster can be used: " + why);
}

}  // namespace chatd::redis
