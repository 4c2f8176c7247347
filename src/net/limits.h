// The transports' bounds and timings (connections, HTTP, sockets, WebSocket, SockJS), each
// default with its reason; all settable from the command line and CHATD_* variables
// (app/options.cpp). What the chat core enforces (STOMP frames, messages, send rates, the
// outbound queue) is chat::Limits.
#pragma once

#include <chrono>
#include <cstddef>

namespace chatd::net {

struct Limits {
  // Connections
  std::size_t max_connections = 18000;  // a process may hold 20,000 files; keep headroom
  // Per client address (the TCP peer, or X-Forwarded-For from a trusted proxy), so one
  // address cannot take the node for itself. Rates are a second (rooms: a minute); 0: off.
  std::size_t max_connections_per_address = 500;  // an office behind one NAT; 1/36 of the node
  std::size_t sockjs_session_rate = 10;     // new SockJS sessions a second; a page opens one
  std::size_t sockjs_session_burst = 100;   // ... tabs reconnecting after a network change
  std::size_t room_create_per_minute = 60;  // people make a few rooms a day; a script is not a person
  std::size_t room_create_burst = 60;

  // HTTP
  std::size_t max_http_body = 16 * 1024;    // POST /chat/room carries one name
  std::size_t max_http_header = 8 * 1024;   // Beast's default; cookies fit
  std::size_t max_http_target = 2 * 1024;   // longer URLs get 414
  std::size_t room_list_max = 1000;  // one GET /chat/rooms page: ~60 KiB, and the seed's page lists them all

  // Sockets
  std::chrono::milliseconds drain_timeout{5000};  // SIGTERM to exit
  // A client that takes no byte of a pending write for this long is gone or stuck: its socket
  // is reset, which also frees what the kernel holds for it. Spring's sendTimeLimit default.
  std::chrono::milliseconds write_timeout{10000};
  // A peer that vanished without a FIN (power cut, NAT entry dropped) and declined STOMP
  // heart-beats is found by TCP keepalive within idle + interval x probes (45 s); 0 idle: off.
  std::chrono::milliseconds tcp_keepalive_idle{30000};
  std::chrono::milliseconds tcp_keepalive_interval{5000};
  std::size_t tcp_keepalive_probes = 3;

  // HTTP and WebSocket sessions
  // A keep-alive connection with no request (or a request arriving this slowly) is closed:
  // browsers reuse idle connections within seconds, and an idle one costs a file.
  std::chrono::milliseconds http_idle_timeout{30000};
  // STOMP frames written as one WebSocket message: a fan-out burst leaves in one syscall, and a
  // write stays short enough not to hold the loop.
  std::size_t ws_max_batch_bytes = 64 * 1024;
  // How a loop turn's writes reach the kernel: one io_uring_enter for up to 256 sockets'
  // sendmsgs (true), or one sendmsg(2) each. Falls back to sendmsg where io_uring is refused.
  // io_uring by measurement: more fan-out deliveries per second and per CPU-second (issue 15).
  bool ws_write_uring = true;
  // The read buffer each worker loop shares among its connections: a few full frames per read.
  std::size_t ws_read_chunk_bytes = 64 * 1024;
  // Reads of one readable socket before the loop serves others: fairness under a flood.
  std::size_t ws_reads_per_wakeup = 4;
  // After our close frame, how long the client has to answer before the socket is dropped.
  std::chrono::milliseconds ws_close_linger{5000};
  // SockJS "h" after this much silence: the protocol's default; proxies drop idle connections.
  std::chrono::milliseconds sockjs_heartbeat{25000};
  // An xhr session with no receiving request ends after this: sockjs-client polls at once.
  std::chrono::milliseconds sockjs_disconnect_delay{5000};
  // An xhr_streaming response ends after this many bytes, so the browser frees what it buffered.
  std::size_t sockjs_streaming_bytes = 128 * 1024;
};

}  // namespace chatd::net
