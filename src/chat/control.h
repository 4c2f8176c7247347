// The node-to-node control channel as the chat core uses it: typed handlers over
// bus::MessageBus::publish_control. One ControlChannel per node (the Hub's); each feature
// listens to its own types ("disconnect", "room.deleted", ...). See CONTROL-CHANNEL.md.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "bus/message_bus.h"

namespace chatd::chat {

class ControlChannel {
 public:
  // Runs on the bus's delivering thread (or the publisher's, on the local bus): must not block;
  // post to a shard's loop for anything that touches sessions.
  using Handler = std::function<void(const bus::ControlMessage&)>;

  // Registers with `bus` (bus::MessageBus::on_control), so it must be built before bus.start().
  explicit ControlChannel(bus::MessageBus& bus);

  // Sends `body` as a message of `type` to every node, this one included. `done` (any thread)
  // gets an empty code once the engine accepted it; bus::Error::rejected for a bad type or a
  // body over bus::kMaxControlBody.
  void send(std::string type, std::string body, bus::DoneFn done);

  // Calls `fn` with every control message of `type`. Call before the Hub starts (handlers are
  // read without a lock afterwards); one handler per type.
  void listen(std::string type, Handler fn);

  // Prometheus text: control messages sent, failed and received.
  std::string metrics_text() const;

 private:
  void on_message(bus::ControlMessage&& m);

  bus::MessageBus& bus_;
  std::unordered_map<std::string, Handler> handlers_;
  std::atomic<std::uint64_t> sent_{0};
  std::atomic<std::uint64_t> send_failed_{0};
  std::atomic<std::uint64_t> received_{0};
  std::atomic<std::uint64_t> unhandled_{0};
};

}  // namespace chatd::chat
