#include <boost/json.hpp>

#include <stdexcept>

#include "store/room_store.h"

namespace chatd::store {
namespace {

class Category final : public std::error_category {
 public:
  const char* name() const noexcept override { return "chatd.store"; }
  std::string message(int ev) const override {
    switch (static_cast<Error>(ev)) {
      case Error::ok: return "ok";
      case Error::engine_down: return "room store unavailable";
      case Error::corrupt: return "room store holds an unreadable room";
      case Error::full: return "room limit reached";
      case Error::members_full: return "the server holds as many restricted-room members as it may; a room with fewer members, or a public one, may still fit";
      case Error::stopped: return "room store stopped";
      case Error::unsettled: return "room store did not answer in time; the change may have been made";
    }
    return "unknown store error";
  }
};

}  // namespace

const std::error_category& error_category() noexcept {
  static const Category category;
  return category;
}

std::error_code make_error_code(Error e) noexcept { return {static_cast<int>(e), error_category()}; }

std::string to_json(const Room& r) {
  boost::json::object o{{"roomId", r.id}, {"name", r.name}};
  if (r.restricted) {
    o["restricted"] = true;
    boost::json::array m;
    for (const auto& u : r.members) m.emplace_back(u);
    o["members"] = std::move(m);
  }
  return boost::json::serialize(o);
}

std::optional<Room> room_from_json(std::string_view json) {
  boost::system::error_code ec;
  auto v = boost::json::parse(json, ec);
  if (ec || !v.is_object()) return std::nullopt;
  const auto& o = v.get_object();
  auto id = o.if_contains("roomId");
  auto name = o.if_contains("name");
  if (!id || !name || !id->is_string() || !name->is_string()) return std::nullopt;
  Room r;
  r.id = id->get_string();
  r.name = name->get_string();
  if (auto x = o.if_contains("restricted"); x && x->is_bool()) r.restricted = x->get_bool();
  if (auto m = o.if_contains("members"); m && m->is_array())
    for (const auto& u : m->get_array())
      if (u.is_string()) r.members.emplace_back(u.get_string());
  return r;
}

std::unique_ptr<RoomStore> make_store(const StoreConfig& cfg, boost::asio::io_context& engine) {
  if (cfg.kind == "embedded") return make_embedded_store(cfg);
  if (cfg.kind == "redis") return make_redis_store(cfg, engine);
  throw std::invalid_argument("unknown store '" + cfg.kind + "' (expected embedded or redis)");
}

}  // namespace chatd::store
