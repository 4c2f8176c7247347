// The transports' bounds and timings (HTTP, WebSocket, SockJS), each default with its reason;
// all settable from the command line and CHATD_* variables (app/options.cpp). The bounds every
// layer shares (frame sizes, connections, HTTP sizes) stay in chat::Limits.
#pragma once

#include <chrono>
#include <cstddef>

namespace chatd::net {

struct Limits {
  // A keep-alive connection with no request (or a request arriving this slowly) is closed:
  // browsers reuse idle connections within seconds, and an idle one costs a file.
  std::chrono::milliseconds http_idle_timeout{30000};
  // STOMP frames written as one WebSocket message: a fan-out burst leaves in one syscall, and a
  // write stays short enough not to hold the loop.
  std::size_t ws_max_batch_bytes = 64 * 1024;
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
