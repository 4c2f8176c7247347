// The bounds the chat core enforces: STOMP input, chat messages, send rates, heart-beats and a
// session's outbound queue. The transports' bounds (connections, HTTP, sockets) are net::Limits.
// Each default says why it is what it is; all of them are settable from the command line and
// CHATD_* variables (app/options.cpp).
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <string>

namespace chatd::chat {

struct Limits {
  // STOMP input
  std::size_t max_frame_bytes = 64 * 1024;  // Spring's default message size limit
  std::size_t max_headers = 32;             // real clients send fewer than ten
  std::size_t max_header_line = 8 * 1024;   // a token header fits with room to spare
  std::size_t max_subscriptions = 64;       // per connection: a person is in a few rooms
  std::size_t max_replay = 1000;            // messages one SUBSCRIBE replays (x-history, resume)
                                            // and one REST page holds: a day of a busy room
  std::size_t max_client_id_bytes = 128;    // x-client-id: a UUID with room to spare

  // Chat messages
  std::size_t max_message_bytes = 4000;  // ~1000 Korean characters in UTF-8
  std::size_t max_sender_bytes = 64;     // a nickname, not an essay
  std::size_t max_room_name_bytes = 100;
  std::size_t max_rooms = 100000;        // per store; 100k rooms are ~10 MiB of JSON
  std::size_t max_member_list = 1000;    // names one members answer lists; the count is always exact
  std::size_t max_room_members = 1000;   // a restricted room's member list: a big group, ~30 KiB of JSON
  std::size_t max_room_members_total = 200000;  // all restricted rooms' lists: ~6 MiB of JSON, ~13 MiB per node

  // Memory
  std::size_t max_outbound_bytes = 1024 * 1024;  // per session; past it the reader is too slow
  // Node-wide: history replays past their sessions' max_outbound_bytes and large REST answers
  // (history pages) waiting for their clients. Each client may hold ~5 MB of replay, so without
  // it clients that ask and never read could hold gigabytes.
  std::size_t max_history_memory = 256 * 1024 * 1024;

  // Flooding (issue 13). A SEND over the bound gets 429 on /user/queue/errors; a connection
  // that keeps sending at more than twice its rate is disconnected.
  std::size_t send_rate = 50;         // SENDs a second per connection; fast typists manage 2-3
  std::size_t send_burst = 1000;      // a client replaying its outbox after a reconnect fits
  std::size_t room_send_rate = 500;   // SENDs a second into one room through this node: many
                                      // senders cannot drown that room's readers either
  std::size_t room_send_burst = 2000;

  // Time
  std::chrono::milliseconds heartbeat_send{10000};     // what the server offers to send
  std::chrono::milliseconds heartbeat_receive{10000};  // what the server asks the client for
  std::chrono::milliseconds connect_timeout{10000};    // upgrade to CONNECT
};

// How far history replays may take a connection past max_outbound_bytes: one whole replay of
// max_replay messages at the largest text (a frame's head and JSON take the 1 KiB). Replays
// are sent whole, but one client subscribing to many rooms with history and not reading must
// not hold max_subscriptions replays' worth of memory.
inline std::size_t max_replay_bytes(const Limits& l) { return l.max_replay * (l.max_message_bytes + 1024); }

// History bytes held in write queues node-wide, past what each connection may hold anyway
// (Limits::max_history_memory). Any thread.
class HistoryMemory {
 public:
  explicit HistoryMemory(std::size_t limit) : limit_(limit) {}
  // Takes up to `want` bytes of what is left; returns how many it took.
  std::size_t take(std::size_t want) {
    auto used = used_.load(std::memory_order_relaxed);
    for (;;) {
      const std::size_t grant = std::min(want, used < limit_ ? limit_ - used : 0);
      if (grant == 0) return 0;
      if (used_.compare_exchange_weak(used, used + grant, std::memory_order_relaxed)) return grant;
    }
  }
  void give_back(std::size_t n) { used_.fetch_sub(n, std::memory_order_relaxed); }
  std::size_t used() const { return used_.load(std::memory_order_relaxed); }

 private:
  std::atomic<std::size_t> used_{0};
  const std::size_t limit_;
};

// Chat wording that an operator may localize.
struct Texts {
  std::string enter = "{sender}님 등장!";  // "{sender} has entered"
  std::string quit = "{sender}님 퇴장!";   // "{sender} has left"
  std::string room_closed = "방이 닫혔습니다";  // "this room was closed": a deleted room's last notice
};

}  // namespace chatd::chat
