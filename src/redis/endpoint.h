// chatd::redis — where a Redis server is and how to log in, read from a redis:// URL.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

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

// Returns parse_url(url), resolved and verified with a 3 s bound per step: what the store and
// the bus do at start-up. Throws std::runtime_error saying why Redis cannot be used.
Endpoint verified_endpoint(std::string_view url);

}  // namespace chatd::redis
