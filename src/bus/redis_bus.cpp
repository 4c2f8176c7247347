// Placeholder until the redis engine lands.
#include "bus/message_bus.h"
#include <stdexcept>
namespace chatd::bus {
std::unique_ptr<MessageBus> make_redis_bus(const BusConfig&, boost::asio::io_context&) {
  throw std::runtime_error("the redis bus is not built into this chatd yet");
}
}  // namespace chatd::bus
