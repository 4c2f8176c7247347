// The server API under /api/ (--api-key-file): what an application backend may do without a
// STOMP connection. Every call needs the header X-API-Key equal to the key file's first line;
// without a key file the API is off and /api/ answers 404.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>

#include "chat/limits.h"
#include "chat/rate_limit.h"
#include "chat/rooms.h"
#include "net/health.h"
#include "net/http.h"

namespace chatd::net {

struct ApiConfig {
  std::string key;          // empty: the API is off
  double rate = 200;        // calls per second, all callers together
  double burst = 400;
};

class ServerApi {
 public:
  explicit ServerApi(ApiConfig cfg);

  // Answers `r`'s request for `path` (which starts with /api/), from any thread.
  void handle(std::string_view path, chat::Rooms& rooms, const chat::NodeView& node, const chat::Limits& limits,
              const ConnectionCounts& conns, ResponderPtr r);

  // Prometheus text: calls by outcome.
  std::string metrics_text() const;

 private:
  enum Outcome { ok, unauthorized, forbidden, rate_limited, bad_request, not_found, failed, outcome_count };
  void answer(const ResponderPtr& r, Outcome o, Response res);
  bool key_matches(std::string_view given) const;

  const ApiConfig cfg_;
  std::array<unsigned char, 32> key_digest_{};
  std::mutex rate_mu_;
  chat::TokenBucket bucket_;
  std::array<std::atomic<std::uint64_t>, outcome_count> outcomes_{};
};

}  // namespace chatd::net
