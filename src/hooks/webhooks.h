// chatd::hooks — tells an application backend what happened, by HTTP POSTs of batched JSON
// events signed with HMAC-SHA256 (--webhook-url, --webhook-events, --webhook-secret-file).
// Delivery is at least once: a batch leaves the queue only when the backend answered 2xx, and
// every event keeps its id across retries so the backend can drop a repeat.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

#include "chat/events.h"

namespace boost::asio { class io_context; }

namespace chatd::hooks {

struct WebhookConfig {
  std::string url;       // http://host[:port][/path]; empty = webhooks off
  std::string secret;    // the HMAC key; empty = requests are not signed
  unsigned events = 0;   // bit (1 << Kind) per wanted kind; see parse_event_kinds
  std::string node_id;   // sent with every batch, and part of join/leave event ids
  std::size_t max_queue = 10000;                 // events held while the backend is away; then drop oldest
  std::size_t max_queue_bytes = 64 << 20;        // ... and their bytes: text escaped as \u00XX grows 6x
  std::size_t max_batch = 100;                   // events per POST
  std::chrono::milliseconds linger{20};          // a lone event waits this long for company
  std::chrono::milliseconds timeout{5000};       // per request, connect to answer
  std::chrono::milliseconds max_backoff{30000};  // retries double from 100 ms up to this
  std::chrono::milliseconds drain{5000};         // SIGTERM: time to send what is queued
};

// Returns the bit set for "message,join,leave,room" (any subset, comma-separated; "all").
// Throws std::invalid_argument naming an unknown kind.
unsigned parse_event_kinds(std::string_view list);

// Returns "sha256=" and the lower-case hex HMAC-SHA256 of `body` under `secret`: the value of
// X-Chatd-Signature.
std::string signature(std::string_view secret, std::string_view body);

// Throws std::invalid_argument, saying why, for a --webhook-url make_webhooks cannot use.
void check_url(const std::string& url);

// Returns the sink that POSTs to cfg.url from `io` (the engine loop). Throws
// std::invalid_argument for a URL it cannot use.
std::unique_ptr<chat::EventSink> make_webhooks(WebhookConfig cfg, boost::asio::io_context& io);

}  // namespace chatd::hooks
