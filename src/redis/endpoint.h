// chatd::redis — where a Redis server is and how to log in, read from a redis:// URL.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

struct redisReply;

namespace chatd::redis {

struct Endpoint {
  std::string host;        // as written in the URL
  std::string address;     // numeric address to connect to; filled by resolve()
  std::uint16_t port = 6379;
  std::string user;        // empty: AUTH <password> (Redis < 6 style)
  std::string password;    // empty: no AUTH
  int db = 0;

  // Returns "host:port/db" for logs and /healthz; never the password.
  std::string display() const;
};

// Returns the endpoint named by `url`: redis://[[user]:password@]host[:port][/db].
// Throws std::runtime_error saying what is wrong with it.
Endpoint parse_url(std::string_view url);

// Resolves ep.host once, so reconnects from the engine thread never block on DNS, then
// connects, authenticates, selects the db and pings, each step bounded by `timeout`.
// Blocks: for start-up only. Throws std::runtime_error saying why Redis cannot be used.
void resolve_and_verify(Endpoint& ep, std::chrono::milliseconds timeout);

// One range of a Redis Cluster's slot map: slots first..last (inclusive) are served by the
// primary at host:port, as CLUSTER SLOTS reports it.
struct SlotRange {
  std::uint16_t first = 0, last = 0;
  std::string host;
  std::uint16_t port = 0;
};

// The Redis a URL names: one server (redis://...) or a Redis Cluster (redis+cluster://...).
struct Target {
  bool cluster = false;
  std::vector<Endpoint> seeds;   // the one server, or the cluster nodes named in the URL
  std::vector<SlotRange> slots;  // cluster: the slot map read at start-up
  // Returns the URL's addresses for logs and /healthz; never the password.
  std::string display() const;
};

// Returns the target named by `url`: redis://... as parse_url reads it, or
// redis+cluster://[[user]:password@]host:port[,host:port...] (no db: a cluster has only db 0).
// Throws std::runtime_error saying what is wrong with it.
Target parse_target(std::string_view url);

// Returns parse_target(url) resolved and verified with `timeout` per step
// (Timing::start_timeout): a single server by resolve_and_verify; a cluster through the
// first seed that answers, which must be in cluster mode with every slot served, and whose
// CLUSTER SLOTS becomes the initial map. For start-up only (blocks). Throws std::runtime_error
// saying why Redis cannot be used.
Target verified_target(std::string_view url, std::chrono::milliseconds timeout);

// Returns the slot map in a CLUSTER SLOTS reply (primaries only), or nullopt when the reply is
// not one. A node announced without a host ("" or "?") is on `asked_host`, the node asked.
std::optional<std::vector<SlotRange>> parse_cluster_slots(const redisReply& r, const std::string& asked_host);

}  // namespace chatd::redis
