#include "bus/message_bus.h"
#include "bus/presence.h"

#include <stdexcept>

namespace chatd::bus {
namespace {

class Category final : public std::error_category {
 public:
  const char* name() const noexcept override { return "chatd.bus"; }
  std::string message(int ev) const override {
    switch (static_cast<Error>(ev)) {
      case Error::ok: return "ok";
      case Error::engine_down: return "message engine unavailable";
      case Error::timed_out: return "message engine did not confirm in time";
      case Error::rejected: return "message engine rejected the message";
      case Error::stopped: return "message bus stopped";
    }
    return "unknown bus error";
  }
};

}  // namespace

const std::error_category& error_category() noexcept {
  static const Category category;
  return category;
}

std::error_code make_error_code(Error e) noexcept { return {static_cast<int>(e), error_category()}; }

bool valid_control_type(std::string_view type) noexcept {
  if (type.empty() || type.size() > kMaxControlType) return false;
  for (char c : type)
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-')) return false;
  return true;
}

std::unique_ptr<MessageBus> make_bus(const BusConfig& cfg, boost::asio::io_context& engine) {
  if (cfg.kind == "local") return make_local_bus(cfg, engine);
  if (cfg.kind == "redis") return make_redis_bus(cfg, engine);
  if (cfg.kind == "kafka") return make_kafka_bus(cfg, engine);
  throw std::invalid_argument("unknown bus '" + cfg.kind + "' (expected local, redis or kafka)");
}

std::unique_ptr<Presence> make_presence(const BusConfig& cfg, const PresenceConfig& pcfg, boost::asio::io_context& engine) {
  if (cfg.kind == "redis") return make_redis_presence(cfg, pcfg, engine);
  if (cfg.kind == "kafka") return make_kafka_presence(cfg, pcfg);
  return make_local_presence(engine);
}

}  // namespace chatd::bus
