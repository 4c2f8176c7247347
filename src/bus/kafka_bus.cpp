// Placeholder until the kafka engine lands.
#include "bus/message_bus.h"
#include <stdexcept>
namespace chatd::bus {
std::unique_ptr<MessageBus> make_kafka_bus(const BusConfig&, boost::asio::io_context&) {
  throw std::runtime_error("the kafka bus is not built into this chatd yet");
}
}  // namespace chatd::bus
