#include "app/options.h"

#include <charconv>
#include <filesystem>
#include <functional>
#include <map>
#include <sstream>
#include <stdexcept>
#include <type_traits>

namespace chatd::app {
namespace {

struct Spec {
  std::string name;
  std::string help;
  std::function<std::string(const Options&)> show;            // the default, for --help
  std::function<void(Options&, const std::string&)> set;      // throws on a bad value
};

template <class T>
T parse_number(const std::string& name, const std::string& v, T min, T max) {
  T out{};
  auto r = std::from_chars(v.data(), v.data() + v.size(), out);
  if (v.empty() || r.ec != std::errc() || r.ptr != v.data() + v.size() || out < min || out > max)
    throw std::invalid_argument("--" + name + ": '" + v + "' is not a number between " + std::to_string(min) +
                                " and " + std::to_string(max));
  return out;
}

// Returns the limits struct of `o` that L names: one per layer (chat::Limits, net::Limits).
template <class L, class O>
auto& limits_in(O& o) {
  if constexpr (std::is_same_v<L, chat::Limits>) return o.hub.limits;
  else return o.server.limits;
}

template <class L>
Spec size_opt(std::string name, std::string help, std::size_t L::*field, std::size_t min, std::size_t max) {
  return {name, std::move(help), [field](const Options& o) { return std::to_string(limits_in<L>(o).*field); },
          [name, field, min, max](Options& o, const std::string& v) { limits_in<L>(o).*field = parse_number(name, v, min, max); }};
}

template <class L>
Spec ms_opt(std::string name, std::string help, std::chrono::milliseconds L::*field, std::int64_t min,
            std::int64_t max = 86'400'000) {
  return {name, std::move(help), [field](const Options& o) { return std::to_string((limits_in<L>(o).*field).count()); },
          [name, field, min, max](Options& o, const std::string& v) {
            limits_in<L>(o).*field = std::chrono::milliseconds(parse_number<std::int64_t>(name, v, min, max));
          }};
}

// Parses a duration: seconds, or a number with a unit s, m, h or d ("7d").
std::chrono::seconds parse_duration(const std::string& name, const std::string& v, std::int64_t min_s, std::int64_t max_s) {
  std::int64_t unit = 1;
  std::string digits = v;
  if (!v.empty()) {
    switch (v.back()) {
      case 's': unit = 1; break;
      case 'm': unit = 60; break;
      case 'h': unit = 3600; break;
      case 'd': unit = 86400; break;
      default: unit = 0;
    }
    if (unit) digits.pop_back();
    else unit = 1;
  }
  std::int64_t n = 0;
  auto r = std::from_chars(digits.data(), digits.data() + digits.size(), n);
  if (digits.empty() || r.ec != std::errc() || r.ptr != digits.data() + digits.size() || n < 0 ||
      n > max_s / unit || n * unit < min_s)
    throw std::invalid_argument("--" + name + ": '" + v + "' is not a duration between " + std::to_string(min_s) +
                                " s and " + std::to_string(max_s / 86400) + " d (e.g. 300, 5m, 7d)");
  return std::chrono::seconds(n * unit);
}

// A Redis timing: the store's and the bus's connections share it.
Spec redis_ms_opt(std::string name, std::string help, std::chrono::milliseconds redis::Timing::*field, std::int64_t min) {
  return {name, std::move(help), [field](const Options& o) { return std::to_string((o.bus.redis_timing.*field).count()); },
          [name, field, min](Options& o, const std::string& v) {
            o.bus.redis_timing.*field = o.store.redis_timing.*field =
                std::chrono::milliseconds(parse_number<std::int64_t>(name, v, min, 3'600'000));
          }};
}

Spec kafka_ms_opt(std::string name, std::string help, int bus::KafkaTiming::*field, int min) {
  return {name, std::move(help), [field](const Options& o) { return std::to_string(o.bus.kafka_timing.*field); },
          [name, field, min](Options& o, const std::string& v) {
            o.bus.kafka_timing.*field = parse_number<int>(name, v, min, 3'600'000);
          }};
}

Spec duration_opt(std::string name, std::string help, std::chrono::seconds bus::BusConfig::*field, std::int64_t min_s,
                  std::int64_t max_s) {
  return {name, std::move(help), [field](const Options& o) { return std::to_string((o.bus.*field).count()) + "s"; },
          [name, field, min_s, max_s](Options& o, const std::string& v) { o.bus.*field = parse_duration(name, v, min_s, max_s); }};
}

// A choice of two words, `yes` setting the bool and `no` clearing it; `flag` is a generic
// lambda naming the bool in a (const or not) Options.
template <typename Flag>
Spec choice_opt(std::string name, std::string help, std::string yes, std::string no, Flag flag) {
  return {name, std::move(help), [flag, yes, no](const Options& o) { return flag(o) ? yes : no; },
          [name, flag, yes, no](Options& o, const std::string& v) {
            if (v != yes && v != no) throw std::invalid_argument("--" + name + " must be " + yes + " or " + no);
            flag(o) = v == yes;
          }};
}

template <typename Flag>
Spec switch_opt(std::string name, std::string help, Flag flag) {
  return choice_opt(std::move(name), std::move(help), "on", "off", flag);
}

Spec string_opt(std::string name, std::string help, std::string Options::*field) {
  return {name, std::move(help), [field](const Options& o) { return o.*field; },
          [field](Options& o, const std::string& v) { o.*field = v; }};
}

const std::vector<Spec>& specs() {
  using L = chat::Limits;
  using N = net::Limits;
  static const std::vector<Spec> all = {
      {"port", "TCP port for HTTP, WebSocket and SockJS", [](const Options& o) { return std::to_string(o.server.port); },
       [](Options& o, const std::string& v) { o.server.port = parse_number<std::uint16_t>("port", v, 0, 65535); }},
      {"address", "address to listen on", [](const Options& o) { return o.server.address; },
       [](Options& o, const std::string& v) { o.server.address = v; }},
      string_opt("data-dir", "folder for the embedded room store, the embedded history and the node id", &Options::data_dir),
      {"web-root", "folder of the browser pages", [](const Options& o) { return o.server.web_root; },
       [](Options& o, const std::string& v) { o.server.web_root = v; }},
      {"threads", "worker threads (0: one per core)", [](const Options& o) { return std::to_string(o.threads); },
       [](Options& o, const std::string& v) { o.threads = parse_number<unsigned>("threads", v, 0, 256); }},
      choice_opt("engine-thread",
                 "yes: the engines' I/O (Redis connections, webhooks) gets a thread of its own; no: it runs on the "
                 "first worker's loop (lower latency and CPU at moderate rates on one core, fewer deliveries at saturation)",
                 "yes", "no", [](auto& o) -> auto& { return o.engine_thread; }),
      {"node-id", "this node's name; names its Kafka consumer group (default: generated, kept in the data dir)",
       [](const Options& o) { return o.bus.node_id.empty() ? std::string("(generated)") : o.bus.node_id; },
       [](Options& o, const std::string& v) {
         // It goes into JSON, HTTP headers, Kafka client ids and ':'-separated Redis keys unescaped.
         const bool plain = !v.empty() && v.size() <= 64 && v.find_first_not_of(
             "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") == std::string::npos;
         if (!plain) throw std::invalid_argument("--node-id must be 1 to 64 of A-Z a-z 0-9 . _ -");
         o.bus.node_id = v;
       }},
      {"bus", "message bus: local | redis | kafka", [](const Options& o) { return o.bus.kind; },
       [](Options& o, const std::string& v) {
         if (v != "local" && v != "redis" && v != "kafka") throw std::invalid_argument("--bus must be local, redis or kafka");
         o.bus.kind = v;
       }},
      {"store", "room store: embedded | redis", [](const Options& o) { return o.store.kind; },
       [](Options& o, const std::string& v) {
         if (v != "embedded" && v != "redis") throw std::invalid_argument("--store must be embedded or redis");
         o.store.kind = v;
       }},
      {"redis", "Redis URL redis://[:password@]host:port[/db]", [](const Options& o) { return o.bus.redis_url; },
       [](Options& o, const std::string& v) { o.bus.redis_url = o.store.redis_url = v; }},
      {"kafka", "Kafka bootstrap servers host:port[,host:port]", [](const Options& o) { return o.bus.kafka_brokers; },
       [](Options& o, const std::string& v) { o.bus.kafka_brokers = v; }},
      {"kafka-topic", "Kafka topic for chat messages", [](const Options& o) { return o.bus.kafka_topic; },
       [](Options& o, const std::string& v) { o.bus.kafka_topic = v; }},
      {"kafka-partitions", "partitions when chatd creates the topic", [](const Options& o) { return std::to_string(o.bus.kafka_partitions); },
       [](Options& o, const std::string& v) { o.bus.kafka_partitions = parse_number("kafka-partitions", v, 1, 1000); }},
      {"kafka-replication", "replication factor when chatd creates the topic",
       [](const Options& o) { return std::to_string(o.bus.kafka_replication); },
       [](Options& o, const std::string& v) { o.bus.kafka_replication = parse_number("kafka-replication", v, 1, 16); }},
      {"history-size", "messages kept per room for x-history, resume and paging (0: history off)",
       [](const Options& o) { return std::to_string(o.bus.history_size); },
       [](Options& o, const std::string& v) { o.bus.history_size = parse_number<std::size_t>("history-size", v, 0, 10'000'000); }},
      duration_opt("history-ttl", "how long a message is kept (seconds, or 30m, 12h, 7d)", &bus::BusConfig::history_ttl, 1,
                   3650LL * 86400),
      {"history-memory-messages", "embedded history: messages written but not yet folded into their rooms' rows that "
       "are kept in memory for readers; past it, the oldest rooms' are folded, a slice per writer turn",
       [](const Options& o) { return std::to_string(o.bus.history_memory_messages); },
       [](Options& o, const std::string& v) {
         o.bus.history_memory_messages = parse_number<std::size_t>("history-memory-messages", v, 1000, 10'000'000);
       }},
      duration_opt("dedupe-window", "how long a SEND's x-client-id is remembered (seconds, or 5m)",
                   &bus::BusConfig::dedupe_window, 1, 86400),
      {"dedupe-max-ids", "x-client-ids remembered per node (local, kafka); past it the oldest are forgotten early",
       [](const Options& o) { return std::to_string(o.bus.dedupe_max_ids); },
       [](Options& o, const std::string& v) { o.bus.dedupe_max_ids = parse_number<std::size_t>("dedupe-max-ids", v, 1, 100'000'000); }},
      {"kafka-history-cache-mb", "kafka: MiB of recent messages each node keeps for history (all rooms)",
       [](const Options& o) { return std::to_string(o.bus.kafka_history_cache_bytes >> 20); },
       [](Options& o, const std::string& v) {
         o.bus.kafka_history_cache_bytes = parse_number<std::size_t>("kafka-history-cache-mb", v, 1, 1'000'000) << 20;
       }},
      {"kafka-history-scan", "kafka: records one history read may scan in the topic beyond the cache",
       [](const Options& o) { return std::to_string(o.bus.kafka_history_scan); },
       [](Options& o, const std::string& v) { o.bus.kafka_history_scan = parse_number<std::size_t>("kafka-history-scan", v, 1, 100'000'000); }},
      {"kafka-history-read-ms", "kafka: time one history read may spend reading the topic",
       [](const Options& o) { return std::to_string(o.bus.kafka_history_read_ms); },
       [](Options& o, const std::string& v) { o.bus.kafka_history_read_ms = parse_number("kafka-history-read-ms", v, 100, 60000); }},
      choice_opt("auth", "who may speak: none (the body's sender is trusted) | jwt (a token proves it)", "jwt", "none",
                 [](auto& o) -> auto& { return o.auth_jwt; }),
      {"jwt-secret-file", "--auth jwt: file holding the HS256 secret (at least 32 bytes)",
       [](const Options& o) { return o.jwt.secret_file; }, [](Options& o, const std::string& v) { o.jwt.secret_file = v; }},
      {"jwt-public-key-file", "--auth jwt: PEM public key for RS256 (RSA) or ES256 (EC P-256) tokens",
       [](const Options& o) { return o.jwt.public_key_file; }, [](Options& o, const std::string& v) { o.jwt.public_key_file = v; }},
      {"jwt-jwks-file", "--auth jwt: JWKS file, keys chosen by kid; reread on SIGHUP",
       [](const Options& o) { return o.jwt.jwks_file; }, [](Options& o, const std::string& v) { o.jwt.jwks_file = v; }},
      {"jwt-issuer", "--auth jwt: required iss claim (empty: not checked)", [](const Options& o) { return o.jwt.issuer; },
       [](Options& o, const std::string& v) { o.jwt.issuer = v; }},
      {"jwt-audience", "--auth jwt: required aud claim (empty: not checked)", [](const Options& o) { return o.jwt.audience; },
       [](Options& o, const std::string& v) { o.jwt.audience = v; }},
      {"jwt-clock-skew", "--auth jwt: seconds of clock difference allowed on exp and nbf",
       [](const Options& o) { return std::to_string(o.jwt.clock_skew.count()); },
       [](Options& o, const std::string& v) { o.jwt.clock_skew = std::chrono::seconds(parse_number<std::int64_t>("jwt-clock-skew", v, 0, 600)); }},
      switch_opt("jwt-require-exp", "--auth jwt: refuse tokens without an exp claim: on | off",
                 [](auto& o) -> auto& { return o.jwt.require_exp; }),
      {"allowed-origins", "web origins that may use WebSocket, SockJS and REST: default (same origin + localhost) | * | list",
       [](const Options& o) { return o.server.allowed_origins.spec(); },
       [](Options& o, const std::string& v) { o.server.allowed_origins = net::AllowedOrigins::parse(v); }},
      switch_opt("auth-dev-mint", "DEV ONLY: POST /auth/dev-token mints a token for any nickname with --jwt-secret-file: on | off",
                 [](auto& o) -> auto& { return o.auth_dev_mint; }),
      redis_ms_opt("redis-start-timeout-ms", "start-up check of Redis (connect, AUTH, PING), per step", &redis::Timing::start_timeout, 100),
      redis_ms_opt("redis-connect-timeout-ms", "one reconnect attempt to Redis, connect and setup", &redis::Timing::connect_timeout, 100),
      redis_ms_opt("redis-ping-ms", "PING an idle Redis connection this often", &redis::Timing::ping_every, 100),
      redis_ms_opt("redis-ping-timeout-ms", "a Redis that answers no PING for this long is dropped and retried", &redis::Timing::ping_timeout, 100),
      redis_ms_opt("redis-backoff-max-ms", "longest pause between Redis reconnect attempts", &redis::Timing::backoff_max, 100),
      kafka_ms_opt("kafka-request-timeout-ms", "kafka: one set-up request (topic, partitions, id); start-up waits one", &bus::KafkaTiming::request_timeout_ms, 100),
      kafka_ms_opt("kafka-probe-ms", "kafka: while the broker is down, ask it for metadata this often", &bus::KafkaTiming::probe_ms, 100),
      kafka_ms_opt("kafka-partition-check-ms", "kafka: look for partitions added to the topic this often", &bus::KafkaTiming::partition_check_ms, 1000),
      kafka_ms_opt("kafka-topic-check-ms", "kafka: read the topic id this often, to notice a recreated topic", &bus::KafkaTiming::topic_check_ms, 100),
      kafka_ms_opt("kafka-flush-on-stop-ms", "kafka: at stop, time accepted messages get to reach the broker", &bus::KafkaTiming::flush_on_stop_ms, 0),
      string_opt("api-key-file", "file whose first line is the X-API-Key of the server API under /api/ (absent: API off)",
                 &Options::api_key_file),
      {"api-rate", "server API calls per second, all callers together", [](const Options& o) { return std::to_string(static_cast<int>(o.server.api.rate)); },
       [](Options& o, const std::string& v) { o.server.api.rate = parse_number<int>("api-rate", v, 1, 1'000'000); }},
      {"api-burst", "server API calls allowed at once above the rate", [](const Options& o) { return std::to_string(static_cast<int>(o.server.api.burst)); },
       [](Options& o, const std::string& v) { o.server.api.burst = parse_number<int>("api-burst", v, 1, 1'000'000); }},
      {"webhook-url", "POST batched chat events to this http:// URL (empty: no webhooks)",
       [](const Options& o) { return o.webhooks.url; }, [](Options& o, const std::string& v) { o.webhooks.url = v; }},
      {"webhook-events", "which events: message,join,leave,room or all", [](const Options&) { return std::string("all"); },
       [](Options& o, const std::string& v) { o.webhooks.events = hooks::parse_event_kinds(v); }},
      string_opt("webhook-secret-file", "file holding the HMAC-SHA256 key that signs webhook POSTs (X-Chatd-Signature)",
                 &Options::webhook_secret_file),
      {"webhook-queue", "webhook events held while the backend is away; then the oldest are dropped",
       [](const Options& o) { return std::to_string(o.webhooks.max_queue); },
       [](Options& o, const std::string& v) { o.webhooks.max_queue = parse_number<std::size_t>("webhook-queue", v, 1, 10'000'000); }},
      {"webhook-queue-bytes", "bytes of webhook events held while the backend is away; then the oldest are dropped",
       [](const Options& o) { return std::to_string(o.webhooks.max_queue_bytes); },
       [](Options& o, const std::string& v) {
         o.webhooks.max_queue_bytes = parse_number<std::size_t>("webhook-queue-bytes", v, 65'536, std::size_t{16} << 30);
       }},
      {"webhook-batch", "webhook events per POST", [](const Options& o) { return std::to_string(o.webhooks.max_batch); },
       [](Options& o, const std::string& v) { o.webhooks.max_batch = parse_number<std::size_t>("webhook-batch", v, 1, 10'000); }},
      {"room-idle-expiry", "delete rooms with no subscriber and no message for this long (0: never; seconds, or 30m, 12h, 30d)",
       [](const Options& o) { return std::to_string(o.hub.room_idle_expiry.count()) + "s"; },
       [](Options& o, const std::string& v) { o.hub.room_idle_expiry = parse_duration("room-idle-expiry", v, 0, 3650LL * 86400); }},
      {"room-closed-text", "the last notice subscribers of a deleted room get", [](const Options& o) { return o.hub.texts.room_closed; },
       [](Options& o, const std::string& v) { o.hub.texts.room_closed = v; }},
      {"webhook-drain-ms", "SIGTERM: time to send the webhook events still queued before exiting",
       [](const Options& o) { return std::to_string(o.webhooks.drain.count()); },
       [](Options& o, const std::string& v) { o.webhooks.drain = std::chrono::milliseconds(parse_number<std::int64_t>("webhook-drain-ms", v, 0, 600'000)); }},
      switch_opt("presence", "on: who is in each room, joins and leaves announced by the server (README Presence); off: ENTER "
                             "and QUIT are published as sent",
                 [](auto& o) -> auto& { return o.presence; }),
      {"presence-grace", "how long a member whose connection dropped without goodbye stays in (seconds, or 1m)",
       [](const Options& o) { return std::to_string(o.hub.presence_grace.count() / 1000) + "s"; },
       [](Options& o, const std::string& v) { o.hub.presence_grace = parse_duration("presence-grace", v, 0, 3600); }},
      {"presence-node-timeout", "a node silent this long is dead and its members leave (seconds; heartbeats every fifth of it)",
       [](const Options& o) { return std::to_string(o.presence_cfg.node_timeout.count() / 1000) + "s"; },
       [](Options& o, const std::string& v) {
         o.presence_cfg.node_timeout = parse_duration("presence-node-timeout", v, 2, 3600);
         o.presence_cfg.heartbeat = o.presence_cfg.node_timeout / 5;
       }},
      {"presence-announce-max", "rooms with more members announce no single join or leave",
       [](const Options& o) { return std::to_string(o.hub.presence_announce_max); },
       [](Options& o, const std::string& v) {
         o.hub.presence_announce_max = parse_number<std::size_t>("presence-announce-max", v, 0, 100'000'000);
       }},
      size_opt("max-member-list", "names one members answer lists (the count is always exact)", &L::max_member_list, 1, 1'000'000),
      {"enter-text", "announcement replacing an ENTER message's text", [](const Options& o) { return o.hub.texts.enter; },
       [](Options& o, const std::string& v) { o.hub.texts.enter = v; }},
      {"quit-text", "announcement replacing a QUIT message's text", [](const Options& o) { return o.hub.texts.quit; },
       [](Options& o, const std::string& v) { o.hub.texts.quit = v; }},
      size_opt("max-frame-bytes", "largest STOMP frame, like Spring's message size limit", &L::max_frame_bytes, 1024, 16 << 20),
      size_opt("max-headers", "most headers in one STOMP frame", &L::max_headers, 4, 1024),
      size_opt("max-header-line", "longest STOMP header line in bytes", &L::max_header_line, 64, 1 << 20),
      size_opt("max-subscriptions", "subscriptions per connection", &L::max_subscriptions, 1, 100000),
      size_opt("max-replay", "messages one SUBSCRIBE replays (x-history, x-since-seq) and one REST page holds",
               &L::max_replay, 1, 100000),
      size_opt("max-client-id-bytes", "longest SEND x-client-id", &L::max_client_id_bytes, 8, 1024),
      size_opt("max-message-bytes", "longest chat message text in bytes", &L::max_message_bytes, 1, 16 << 20),
      size_opt("max-sender-bytes", "longest sender nickname in bytes", &L::max_sender_bytes, 1, 4096),
      size_opt("max-room-name-bytes", "longest room name in bytes", &L::max_room_name_bytes, 1, 4096),
      size_opt("room-list-max", "rooms in one GET /chat/rooms page (default and largest ?limit)", &N::room_list_max, 1, 1000000),
      size_opt("max-rooms", "rooms the store accepts", &L::max_rooms, 1, 100000000),
      size_opt("max-room-members", "members a restricted room may list (POST /chat/room members=)", &L::max_room_members, 1, 1000000),
      size_opt("max-room-members-total", "members all restricted rooms of the store may list together", &L::max_room_members_total, 1, 100000000),
      size_opt("max-connections", "open connections per node (lowered at start to fit the open-file limit)", &N::max_connections, 1, 10000000),
      size_opt("max-outbound-bytes", "bytes queued to one slow reader before it is disconnected", &L::max_outbound_bytes, 4096, 1 << 30),
      size_opt("max-history-memory", "bytes of history (replays past --max-outbound-bytes, large REST answers) the node holds for clients at once",
               &L::max_history_memory, 0, std::size_t{1} << 40),
      size_opt("max-http-body", "largest HTTP request body", &N::max_http_body, 256, 16 << 20),
      size_opt("max-connections-per-address", "open connections (and SockJS sessions) per client address (0: no limit)",
               &N::max_connections_per_address, 0, 10000000),
      size_opt("sockjs-session-rate", "new SockJS sessions a second per client address (0: no limit)", &N::sockjs_session_rate, 0, 1000000),
      size_opt("sockjs-session-burst", "new SockJS sessions per client address at once above the rate", &N::sockjs_session_burst, 1, 10000000),
      size_opt("room-create-per-minute", "rooms a minute one client address may create (0: no limit)", &N::room_create_per_minute, 0, 1000000),
      size_opt("room-create-burst", "rooms one client address may create at once above the rate", &N::room_create_burst, 1, 10000000),
      {"trusted-proxies", "addresses/CIDRs whose X-Forwarded-For names the client (empty: none)",
       [](const Options& o) { return o.trusted_proxies_spec; },
       [](Options& o, const std::string& v) {
         o.server.trusted_proxies = net::ProxyList::parse(v);
         o.trusted_proxies_spec = v;
       }},
      choice_opt("sockjs-bind", "a SockJS session answers only: address (the client that opened it) | none (any client)",
                 "address", "none", [](auto& o) -> auto& { return o.server.sockjs_bind_address; }),
      choice_opt("log-format", "event lines on stderr: text | json", "json", "text", [](auto& o) -> auto& { return o.log_json; }),
      size_opt("send-rate", "SENDs a second one connection may make (0: no limit)", &L::send_rate, 0, 1000000),
      size_opt("send-burst", "SENDs one connection may make at once above its rate", &L::send_burst, 1, 10000000),
      size_opt("room-send-rate", "SENDs a second one room takes through this node (0: no limit)", &L::room_send_rate, 0, 10000000),
      size_opt("room-send-burst", "SENDs one room takes at once above its rate", &L::room_send_burst, 1, 100000000),
      size_opt("max-http-header", "largest HTTP request head (request line and headers); larger gets 431", &N::max_http_header, 1024, 1 << 20),
      size_opt("max-http-target", "longest HTTP request target; longer gets 414", &N::max_http_target, 64, 1 << 20),
      ms_opt("http-idle-timeout-ms", "an HTTP connection with no request for this long is closed", &N::http_idle_timeout, 100),
      size_opt("ws-max-batch-bytes", "STOMP frames written as one WebSocket message", &N::ws_max_batch_bytes, 1024, 16 << 20),
      choice_opt("ws-write-backend", "how a loop turn's socket writes reach the kernel: io_uring (one system call for many) | sendmsg (one each)",
                 "io_uring", "sendmsg", [](auto& o) -> auto& { return o.server.limits.ws_write_uring; }),
      size_opt("ws-read-chunk-bytes", "read buffer each worker loop shares among its connections", &N::ws_read_chunk_bytes, 4096, 16 << 20),
      size_opt("ws-reads-per-wakeup", "reads of one socket before the loop serves others", &N::ws_reads_per_wakeup, 1, 1024),
      ms_opt("ws-close-linger-ms", "time a client has to answer our close frame", &N::ws_close_linger, 0),
      ms_opt("sockjs-heartbeat-ms", "SockJS \"h\" after this much silence", &N::sockjs_heartbeat, 100),
      ms_opt("sockjs-disconnect-delay-ms", "an xhr session without a receiving request ends after this", &N::sockjs_disconnect_delay, 100),
      size_opt("sockjs-streaming-bytes", "an xhr_streaming response ends after this many bytes", &N::sockjs_streaming_bytes, 4096, 1 << 30),
      ms_opt("heartbeat-send-ms", "heart-beat the server offers to send (0: none)", &L::heartbeat_send, 0),
      ms_opt("heartbeat-receive-ms", "heart-beat the server asks of clients (0: none)", &L::heartbeat_receive, 0),
      ms_opt("connect-timeout-ms", "time from WebSocket upgrade to CONNECT", &L::connect_timeout, 100),
      // Linux takes at most 32767 s for either (MAX_TCP_KEEPIDLE, MAX_TCP_KEEPINTVL).
      ms_opt("tcp-keepalive-idle-ms", "idle time before TCP keepalive probes a silent peer (0: off)", &N::tcp_keepalive_idle, 0, 32'767'000),
      ms_opt("tcp-keepalive-interval-ms", "time between TCP keepalive probes", &N::tcp_keepalive_interval, 1000, 32'767'000),
      size_opt("tcp-keepalive-probes", "unanswered keepalive probes before the connection is dropped", &N::tcp_keepalive_probes, 1, 100),
      ms_opt("drain-timeout-ms", "time SIGTERM waits for connections to close", &N::drain_timeout, 0),
      ms_opt("write-timeout-ms", "time a client may take no byte of a pending write before it is reset", &N::write_timeout, 100),
  };
  return all;
}

const Spec* find_spec(const std::string& name) {
  for (auto& s : specs())
    if (s.name == name) return &s;
  return nullptr;
}

std::string env_name(const std::string& opt) {
  std::string e = "CHATD_";
  for (char c : opt) e.push_back(c == '-' ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(c))));
  return e;
}

}  // namespace

Options parse_options(const std::vector<std::string>& args, const std::vector<std::string>& env) {
  Options o;
  o.server.web_root = default_web_root();
  o.webhooks.events = hooks::parse_event_kinds("all");
  std::map<std::string, std::string> from_env;
  for (auto& kv : env) {
    auto eq = kv.find('=');
    if (eq != std::string::npos && kv.rfind("CHATD_", 0) == 0) from_env[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  for (auto& s : specs())
    if (auto it = from_env.find(env_name(s.name)); it != from_env.end()) s.set(o, it->second);

  for (std::size_t i = 0; i < args.size(); ++i) {
    const auto& a = args[i];
    if (a == "-h" || a == "--help") {
      o.help = true;
      continue;
    }
    if (a == "--version") {
      o.version = true;
      continue;
    }
    if (a == "--check-config") {
      o.check_config = true;
      continue;
    }
    if (a.rfind("--", 0) != 0) throw std::invalid_argument("unexpected argument '" + a + "' (try --help)");
    auto eq = a.find('=');
    std::string name = a.substr(2, eq == std::string::npos ? std::string::npos : eq - 2);
    auto* spec = find_spec(name);
    if (!spec) throw std::invalid_argument("unknown option --" + name + " (try --help)");
    std::string value;
    if (eq != std::string::npos) {
      value = a.substr(eq + 1);
    } else {
      if (i + 1 >= args.size()) throw std::invalid_argument("--" + name + " needs a value");
      value = args[++i];
    }
    spec->set(o, value);
  }
  auto& l = o.hub.limits;
  if (l.heartbeat_send.count() && l.heartbeat_send < std::chrono::milliseconds(1000))
    throw std::invalid_argument("--heartbeat-send-ms must be 0 or at least 1000");
  if (l.max_message_bytes + 1024 > l.max_frame_bytes)
    throw std::invalid_argument("--max-frame-bytes must exceed --max-message-bytes by at least 1024");
  if (o.webhooks.max_queue < o.webhooks.max_batch)
    throw std::invalid_argument("--webhook-queue must hold at least --webhook-batch events");
  if (o.auth_dev_mint && (!o.auth_jwt || o.jwt.secret_file.empty()))
    throw std::invalid_argument("--auth-dev-mint needs --auth jwt and --jwt-secret-file (it signs with that secret)");
  if (!o.auth_jwt && !(o.jwt.secret_file.empty() && o.jwt.public_key_file.empty() && o.jwt.jwks_file.empty()))
    throw std::invalid_argument("--jwt-* key files are used with --auth jwt only");
  o.store.data_dir = o.data_dir;
  o.bus.data_dir = o.data_dir;
  o.store.max_rooms = l.max_rooms;
  o.store.max_members_total = l.max_room_members_total;
  return o;
}

std::string help_text() {
  std::ostringstream out;
  Options defaults;
  defaults.server.web_root = default_web_root();
  out << "usage: chatd [--option value]...\n\n"
         "A STOMP-over-WebSocket chat server. With no options it serves http://0.0.0.0:8080 with\n"
         "the in-process bus and rooms kept in ./data. Every option can also be set as an\n"
         "environment variable: --max-frame-bytes is CHATD_MAX_FRAME_BYTES.\n\n";
  for (auto& s : specs()) {
    std::string left = "  --" + s.name + " <v>";
    out << left << std::string(left.size() < 28 ? 28 - left.size() : 1, ' ') << s.help << " [" << s.show(defaults) << "]\n";
  }
  out << "  --check-config             check the options, reach the engines, exit 0 (ok) or 1\n"
         "  --version                  print the version\n"
         "  -h, --help                 this text\n";
  return out.str();
}

std::string version_text() { return std::string("chatd ") + CHATD_VERSION; }

std::string default_web_root() {
  namespace fs = std::filesystem;
  std::error_code ec;
  auto exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    auto installed = exe.parent_path().parent_path() / "share" / "chatd" / "web";
    if (fs::exists(installed / "index.html", ec)) return installed.string();
  }
  return CHATD_DEFAULT_WEB_ROOT;
}

}  // namespace chatd::app
