// The in-process bus: one node, no engine. A mutex makes "number the message, hand it to the
// shards' queues" one step, so concurrent publishers on different workers still give every
// shard one order per room; delivery runs on the publisher's thread with no extra hop.
#include <atomic>
#include <mutex>
#include <unordered_map>

#include "bus/message_bus.h"

namespace chatd::bus {
namespace {

class LocalBus final : public MessageBus {
 public:
  void start(DeliverFn on_deliver) override {
    std::lock_guard lock(mu_);
    deliver_ = std::move(on_deliver);
  }

  void publish(std::string room_id, std::string payload, DoneFn done) override {
    if (stopped_.load(std::memory_order_relaxed)) {
      done(Error::stopped);
      return;
    }
    {
      std::lock_guard lock(mu_);
      auto seq = ++seq_[room_id];
      if (deliver_) deliver_(Delivery{std::move(room_id), seq, std::move(payload)});
    }
    done({});
  }

  void subscribe(const std::string&, DoneFn ready) override { ready({}); }
  void unsubscribe(const std::string&) override {}

  bool up() const override { return true; }
  std::string describe() const override { return "local (in-process)"; }
  void stop() override { stopped_ = true; }

 private:
  std::mutex mu_;
  DeliverFn deliver_;
  std::unordered_map<std::string, std::uint64_t> seq_;
  std::atomic<bool> stopped_{false};
};

}  // namespace

std::unique_ptr<MessageBus> make_local_bus(boost::asio::io_context&) { return std::make_unique<LocalBus>(); }

}  // namespace chatd::bus
