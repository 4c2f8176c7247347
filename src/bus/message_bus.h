// chatd::bus — how chat messages travel between nodes. One implementation per engine
// (local, redis, kafka), chosen at start-up. The bus also stamps each message with its
// per-room sequence number, because only the engine sees every node's messages in order.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <system_error>

namespace boost::asio { class io_context; }

namespace chatd::bus {

enum class Error {
  ok = 0,
  engine_down = 1,   // the engine is unreachable; the node keeps trying to reconnect
  timed_out,         // the engine did not confirm in time
  rejected,          // the engine refused the message (size, auth, ...)
  stopped,           // the bus is shutting down
};
const std::error_category& error_category() noexcept;
std::error_code make_error_code(Error e) noexcept;

struct Delivery {
  std::string room_id;
  std::uint64_t seq = 0;  // strictly increasing per room, identical on every node
  std::string payload;    // exactly the bytes given to publish()
};

// Called with every message of every room this node subscribed to, in per-room order, from
// the bus's own thread. It must not block.
using DeliverFn = std::function<void(Delivery&&)>;
// Called once, from any thread.
using DoneFn = std::function<void(std::error_code)>;

class MessageBus {
 public:
  virtual ~MessageBus() = default;

  // Connects to the engine and begins delivering to `on_deliver`. Throws std::runtime_error
  // for configuration that can never work (bad URL, auth refused). An engine lost later is
  // never fatal: the bus reports down and keeps retrying. (Redis is also checked once at
  // start-up and refuses to start unreachable; Kafka starts and retries.)
  virtual void start(DeliverFn on_deliver) = 0;

  // Sends `payload` to every node's subscribers of `room_id`. `done` gets an empty code once
  // the engine has accepted it, or the reason it never will.
  virtual void publish(std::string room_id, std::string payload, DoneFn done) = 0;

  // Declares that this node has local subscribers of `room_id`. `ready` is called once every
  // message published afterwards is sure to be delivered here. Called on 0 -> 1 local
  // subscribers; unsubscribe() on 1 -> 0. Engines that deliver everything may ignore both.
  virtual void subscribe(const std::string& room_id, DoneFn ready) = 0;
  virtual void unsubscribe(const std::string& room_id) = 0;

  // Whether the engine is reachable now, and a short human-readable state for /healthz.
  virtual bool up() const = 0;
  virtual std::string describe() const = 0;

  // Stops delivering and releases the engine; pending publishes get Error::stopped.
  virtual void stop() = 0;
};

struct BusConfig {
  std::string kind = "local";            // local | redis | kafka
  std::string redis_url = "redis://127.0.0.1:6379";
  std::string kafka_brokers = "127.0.0.1:9092";
  std::string kafka_topic = "chatroom";
  int kafka_partitions = 3;
  int kafka_replication = 1;
  std::string node_id;                   // unique per node; names its Kafka consumer group
};

// Returns the bus named by cfg.kind. Engines that need an event loop use `engine`, which the
// caller runs on its own thread. Throws std::invalid_argument for an unknown kind.
std::unique_ptr<MessageBus> make_bus(const BusConfig& cfg, boost::asio::io_context& engine);

std::unique_ptr<MessageBus> make_local_bus(boost::asio::io_context& engine);
std::unique_ptr<MessageBus> make_redis_bus(const BusConfig& cfg, boost::asio::io_context& engine);
std::unique_ptr<MessageBus> make_kafka_bus(const BusConfig& cfg, boost::asio::io_context& engine);

}  // namespace chatd::bus

namespace std {
template <>
struct is_error_code_enum<chatd::bus::Error> : true_type {};
}  // namespace std
