// Placeholder until the redis engine lands.
#include "store/room_store.h"
#include <stdexcept>
namespace chatd::store {
std::unique_ptr<RoomStore> make_redis_store(const StoreConfig&, boost::asio::io_context&) {
  throw std::runtime_error("the redis store is not built into this chatd yet");
}
}  // namespace chatd::store
