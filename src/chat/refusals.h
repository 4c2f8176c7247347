// What chatd refuses to protect itself and other clients, counted by reason for /metrics
// (chatd_refusals_total{reason=...}). Counted from any thread.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "log/log.h"

namespace chatd::chat {

enum class Refusal : std::size_t {
  http_framing,            // a request whose length cannot be known (Transfer-Encoding not ending in chunked)
  subscribe_unknown_room,  // a SUBSCRIBE to a room that does not exist
  send_rate,               // a SEND over the connection's rate (429)
  send_flood,              // a connection closed for sending at more than twice its rate
  room_rate,               // a SEND over the room's rate on this node (429)
  connections_per_address, // a connection or SockJS session over net::Limits::max_connections_per_address (503)
  sockjs_session_rate,     // a new SockJS session over the address's rate (429)
  room_create_rate,        // a room creation over the address's rate (429)
  sockjs_foreign_address,  // a SockJS request from an address other than the session's (404)
  auth_failed,             // --auth jwt: a missing, bad or expired token (ERROR or 401)
  room_forbidden,          // --auth jwt: a SUBSCRIBE or SEND to a restricted room (403)
  foreign_origin,          // an Origin not in --allowed-origins (403)
  history_memory,          // a replay cut short or a large REST answer refused (503): --max-history-memory is held
  count_,
};

// Returns the metric label of `r`.
constexpr std::string_view to_string(Refusal r) {
  switch (r) {
    case Refusal::http_framing: return "http_framing";
    case Refusal::subscribe_unknown_room: return "subscribe_unknown_room";
    case Refusal::send_rate: return "send_rate";
    case Refusal::send_flood: return "send_flood";
    case Refusal::room_rate: return "room_rate";
    case Refusal::connections_per_address: return "connections_per_address";
    case Refusal::sockjs_session_rate: return "sockjs_session_rate";
    case Refusal::room_create_rate: return "room_create_rate";
    case Refusal::sockjs_foreign_address: return "sockjs_foreign_address";
    case Refusal::auth_failed: return "auth_failed";
    case Refusal::room_forbidden: return "room_forbidden";
    case Refusal::foreign_origin: return "foreign_origin";
    case Refusal::history_memory: return "history_memory";
    case Refusal::count_: break;
  }
  return "unknown";
}

class Refusals {
 public:
  // Counts `r` and logs it (rate-limited), with `who` (the client address) and the STOMP
  // `session` when known.
  void count(Refusal r, std::string_view who = {}, std::string_view session = {}) {
    count_only(r);
    const auto reason = to_string(r);
    if (session.empty() && who.empty()) log::event("refused", {{"reason", reason}});
    else if (session.empty()) log::event("refused", {{"reason", reason}, {"client", who}});
    else if (who.empty()) log::event("refused", {{"reason", reason}, {"session", session}});
    else log::event("refused", {{"reason", reason}, {"client", who}, {"session", session}});
  }
  // Counts `r` and logs it with the client address and the request's Origin header.
  void count_origin(Refusal r, std::string_view who, std::string_view origin) {
    count_only(r);
    log::event("refused", {{"reason", to_string(r)}, {"client", who}, {"origin", origin}});
  }
  std::uint64_t get(Refusal r) const { return counts_[static_cast<std::size_t>(r)].load(std::memory_order_relaxed); }

 private:
  void count_only(Refusal r) {
    counts_[static_cast<std::size_t>(r)].fetch_add(1, std::memory_order_relaxed);
  }

  std::array<std::atomic<std::uint64_t>, static_cast<std::size_t>(Refusal::count_)> counts_{};
};

}  // namespace chatd::chat
