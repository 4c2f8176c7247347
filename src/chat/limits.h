// Every bound chatd enforces, in one place. Each default says why it is what it is; all of
// them are settable from the command line and CHATD_* variables (app/options.cpp).
#pragma once

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
  std::size_t room_list_max = 1000;      // one GET /chat/rooms page: ~60 KiB, and the seed's page lists them all

  // Connections and memory
  std::size_t max_connections = 18000;  // a process may hold 20,000 files; keep headroom
  // Per client address (the TCP peer, or X-Forwarded-For from a trusted proxy), so one
  // address cannot take the node for itself. Rates are a second (rooms: a minute); 0: off.
  std::size_t max_connections_per_address = 500;  // an office behind one NAT; 1/36 of the node
  std::size_t sockjs_session_rate = 10;     // new SockJS sessions a second; a page opens one
  std::size_t sockjs_session_burst = 100;   // ... tabs reconnecting after a network change
  std::size_t room_create_per_minute = 60;  // people make a few rooms a day; a script is not a person
  std::size_t room_create_burst = 60;
  std::size_t max_outbound_bytes = 1024 * 1024;  // per session; past it the reader is too slow
  std::size_t max_http_body = 16 * 1024;         // POST /chat/room carries one name
  std::size_t max_http_header = 8 * 1024;        // Beast's default; cookies fit
  std::size_t max_http_target = 2 * 1024;        // longer URLs get 414

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
  std::chrono::milliseconds drain_timeout{5000};       // SIGTERM to exit
  // A client that takes no byte of a pending write for this long is gone or stuck: its socket
  // is reset, which also frees what the kernel holds for it. Spring's sendTimeLimit default.
  std::chrono::milliseconds write_timeout{10000};
  // A peer that vanished without a FIN (power cut, NAT entry dropped) and declined STOMP
  // heart-beats is found by TCP keepalive within idle + interval x probes (45 s); 0 idle: off.
  std::chrono::milliseconds tcp_keepalive_idle{30000};
  std::chrono::milliseconds tcp_keepalive_interval{5000};
  std::size_t tcp_keepalive_probes = 3;
};

// Chat wording that an operator may localize.
struct Texts {
  std::string enter = "{sender}님 등장!";  // "{sender} has entered"
  std::string quit = "{sender}님 퇴장!";   // "{sender} has left"
  std::string room_closed = "방이 닫혔습니다";  // "this room was closed": a deleted room's last notice
};

}  // namespace chatd::chat
