// GET /healthz and GET /metrics: the node's health and counters (chat::NodeView) beside the
// connection counts the server keeps.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "chat/rooms.h"

namespace chatd::net {

struct ConnectionCounts {
  std::size_t open = 0;
  std::uint64_t accepted = 0;
  std::uint64_t refused = 0;
  std::uint64_t socket_writes = 0;   // system calls writing to client sockets
  std::uint64_t write_timeouts = 0;  // connections reset past Limits::write_timeout
  std::uint64_t accept_failures = 0; // accept() out of files or memory
};

// Returns /healthz's JSON; `up` says whether the node is fully up (both engines, not draining).
std::string health_json(const chat::NodeView& node, const ConnectionCounts& conns, bool shutting_down, bool& up);

// Returns /metrics in the Prometheus text format.
std::string metrics_text(const chat::NodeView& node, const ConnectionCounts& conns);

}  // namespace chatd::net
