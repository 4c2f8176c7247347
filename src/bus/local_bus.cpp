// The in-process bus: one node, no engine. Publishing hops onto the engine thread, which
// numbers the message and delivers it, so concurrent publishers get one order per room.
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>

#include <atomic>
#include <unordered_map>

#include "bus/message_bus.h"

namespace chatd::bus {
namespace {

class LocalBus final : public MessageBus {
 public:
  explicit LocalBus(boost::asio::io_context& engine) : engine_(engine) {}

  void start(DeliverFn on_deliver) override { deliver_ = std::move(on_deliver); }

  void publish(std::string room_id, std::string payload, DoneFn done) override {
    if (stopped_.load(std::memory_order_relaxed)) {
      done(Error::stopped);
      return;
    }
    boost::asio::post(engine_, [this, room = std::move(room_id), body = std::move(payload),
                                done = std::move(done)]() mutable {
      Delivery d{room, ++seq_[room], std::move(body)};
      if (deliver_) deliver_(std::move(d));
      done({});
    });
  }

  void subscribe(const std::string&, DoneFn ready) override {
    boost::asio::post(engine_, [ready = std::move(ready)] { ready({}); });
  }
  void unsubscribe(const std::string&) override {}

  bool up() const override { return true; }
  std::string describe() const override { return "local (in-process)"; }
  void stop() override { stopped_ = true; }

 private:
  boost::asio::io_context& engine_;
  DeliverFn deliver_;
  std::unordered_map<std::string, std::uint64_t> seq_;  // engine thread only
  std::atomic<bool> stopped_{false};
};

}  // namespace

std::unique_ptr<MessageBus> make_local_bus(boost::asio::io_context& engine) {
  return std::make_unique<LocalBus>(engine);
}

}  // namespace chatd::bus
