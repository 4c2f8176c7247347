#include "net/api.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include <boost/json.hpp>

#include <optional>
#include <sstream>

#include "chat/rules.h"
#include "net/rest.h"

namespace chatd::net {
namespace {

namespace http = boost::beast::http;

std::array<unsigned char, 32> digest(std::string_view s) {
  std::array<unsigned char, 32> out{};
  SHA256(reinterpret_cast<const unsigned char*>(s.data()), s.size(), out.data());
  return out;
}

// Bounds of /api/disconnect's fields: a user name or session id, and a sentence for the ERROR.
constexpr std::size_t kMaxTargetBytes = 256;
constexpr std::size_t kMaxReasonBytes = 1000;
constexpr std::string_view kRoomsPath = "/api/rooms/";

constexpr const char* kOutcomeNames[] = {"ok", "unauthorized", "forbidden", "rate_limited", "bad_request", "not_found", "failed"};

}  // namespace

ServerApi::ServerApi(ApiConfig cfg) : cfg_(std::move(cfg)), key_digest_(digest(cfg_.key)) {}

// Compares digests, so neither the key's length nor its bytes leak through timing.
bool ServerApi::key_matches(std::string_view given) const {
  auto d = digest(given);
  return CRYPTO_memcmp(d.data(), key_digest_.data(), d.size()) == 0;
}

void ServerApi::answer(const ResponderPtr& r, Outcome o, Response res) {
  outcomes_[o].fetch_add(1, std::memory_order_relaxed);
  r->respond(std::move(res));
}

void ServerApi::handle(std::string_view path, chat::Rooms& rooms, const chat::NodeView& node,
                       const chat::Limits& limits, const ConnectionCounts& conns, ResponderPtr r) {
  const auto& req = r->request();
  if (cfg_.key.empty()) return answer(r, not_found, json_error(req, http::status::not_found, "the server API is off (no --api-key-file)"));
  auto given = req.find("X-API-Key");
  if (given == req.end()) return answer(r, unauthorized, json_error(req, http::status::unauthorized, "X-API-Key header required"));
  if (!key_matches(given->value())) return answer(r, forbidden, json_error(req, http::status::forbidden, "wrong API key"));
  {
    std::lock_guard lock(rate_mu_);
    if (!bucket_.take(chat::TokenBucket::Clock::now(), cfg_.rate, cfg_.burst))
      return answer(r, rate_limited, json_error(req, http::status::too_many_requests, "API rate limit reached"));
  }

  if (path == "/api/stats") {
    if (!reads(req)) return answer(r, bad_request, method_not_allowed(req, "GET, HEAD"));
    auto c = node.counters();
    boost::json::object o{{"node", node.node_id()},
                          {"connections", conns.open},
                          {"sessions", c.sessions},
                          {"messagesPublished", c.published},
                          {"messagesReceived", c.delivered_from_bus},
                          {"deliveries", c.deliveries},
                          {"bus", {{"up", node.bus_health().up}, {"detail", node.bus_health().detail}}},
                          {"store", {{"up", node.store_health().up}, {"detail", node.store_health().detail}}}};
    return answer(r, ok, make_response(req, http::status::ok, boost::json::serialize(o), kJson));
  }

  if (path == "/api/publish") {
    if (req.method() != http::verb::post) return answer(r, bad_request, method_not_allowed(req, "POST"));
    boost::system::error_code ec;
    auto v = boost::json::parse(req.body(), ec);  // Boost.JSON refuses invalid UTF-8
    if (ec || !v.is_object()) return answer(r, bad_request, json_error(req, http::status::bad_request, "body must be a JSON object"));
    auto& o = v.as_object();
    auto str = [&](const char* k) -> const boost::json::string* {
      auto* f = o.if_contains(k);
      return f && f->is_string() ? &f->as_string() : nullptr;
    };
    chat::ChatMessage m;
    auto* room = str("roomId");
    if (!room || !chat::is_room_id(*room)) return answer(r, bad_request, json_error(req, http::status::bad_request, "roomId must be a room id"));
    m.room_id = std::string(*room);
    auto* text = str("message");
    if (!text || text->empty()) return answer(r, bad_request, json_error(req, http::status::bad_request, "message must be a non-empty string"));
    if (text->size() > limits.max_message_bytes)
      return answer(r, bad_request, json_error(req, http::status::bad_request, "message is longer than --max-message-bytes"));
    m.message = std::string(*text);
    m.type = chat::MessageType::system;
    if (auto* f = o.if_contains("sender"); f && !f->is_null()) {
      std::string why;
      auto name = f->is_string() ? chat::check_name(f->as_string(), limits.max_sender_bytes, why) : std::nullopt;
      if (!name) return answer(r, bad_request, json_error(req, http::status::bad_request, "sender: name " + (why.empty() ? "must be a string" : why)));
      m.sender = std::move(*name);
      m.type = chat::MessageType::talk;
    }
    return rooms.publish_from_api(std::move(m), [this, r](std::error_code pec, std::string message) {
      const auto& rq = r->request();
      if (pec == chat::Error::unknown_room) return answer(r, not_found, json_error(rq, http::status::not_found, "no such room"));
      if (pec == chat::Error::publish_unconfirmed)
        return answer(r, failed, json_error(rq, http::status::gateway_timeout, pec.message()));
      if (pec) return answer(r, failed, json_error(rq, http::status::service_unavailable, pec.message()));
      answer(r, ok, make_response(rq, http::status::ok, std::move(message), kJson));
    });
  }
  if (path == "/api/disconnect") {
    if (req.method() != http::verb::post) return answer(r, bad_request, method_not_allowed(req, "POST"));
    boost::system::error_code ec;
    auto v = boost::json::parse(req.body(), ec);
    if (ec || !v.is_object()) return answer(r, bad_request, json_error(req, http::status::bad_request, "body must be a JSON object"));
    auto& o = v.as_object();
    // Returns the field `k`: nullopt when absent, "" (refused below) when not a usable string.
    auto field = [&](const char* k, std::size_t max) -> std::optional<std::string> {
      auto* f = o.if_contains(k);
      if (!f) return std::nullopt;
      if (!f->is_string() || f->as_string().empty() || f->as_string().size() > max) return std::string();
      return std::string(f->as_string());
    };
    auto user = field("user", kMaxTargetBytes), session = field("session", kMaxTargetBytes);
    auto reason = field("reason", kMaxReasonBytes);
    if (user.has_value() == session.has_value() || (user && user->empty()) || (session && session->empty()))
      return answer(r, bad_request, json_error(req, http::status::bad_request,
                                               "give exactly one of user or session, a string of 1 to " +
                                                   std::to_string(kMaxTargetBytes) + " bytes"));
    if (reason && reason->empty())
      return answer(r, bad_request, json_error(req, http::status::bad_request,
                                               "reason must be a string of 1 to " + std::to_string(kMaxReasonBytes) + " bytes"));
    boost::json::object accepted;
    if (user) accepted["user"] = *user;
    else accepted["session"] = *session;
    return rooms.disconnect(user.value_or(""), session.value_or(""), reason.value_or(""),
                            [this, r, body = boost::json::serialize(accepted)](std::error_code dec) {
                              const auto& rq = r->request();
                              if (dec) return answer(r, failed, json_error(rq, http::status::service_unavailable, dec.message()));
                              // Accepted: each node closes its sessions when the request reaches it.
                              answer(r, ok, make_response(rq, http::status::accepted, body, kJson));
                            });
  }

  if (path.starts_with(kRoomsPath) && path.find('/', kRoomsPath.size()) == std::string_view::npos) {
    if (req.method() != http::verb::delete_) return answer(r, bad_request, method_not_allowed(req, "DELETE"));
    auto id = path.substr(kRoomsPath.size());
    if (!chat::is_room_id(id)) return answer(r, bad_request, json_error(req, http::status::bad_request, "not a room id"));
    return rooms.delete_room(id, [this, r](std::error_code dec, store::Room room) {
      const auto& rq = r->request();
      if (dec == chat::Error::unknown_room) return answer(r, not_found, json_error(rq, http::status::not_found, "no such room"));
      if (dec) return answer(r, failed, json_error(rq, http::status::service_unavailable, dec.message()));
      boost::json::object o{{"roomId", room.id}, {"name", room.name}, {"deleted", true}};
      answer(r, ok, make_response(rq, http::status::ok, boost::json::serialize(o), kJson));
    });
  }

  // GET /api/rooms/{roomId}/members: the same answer as /chat/room/{roomId}/members.
  static constexpr std::string_view kMembers = "/members";
  if (path.starts_with(kRoomsPath) && path.size() > kRoomsPath.size() + kMembers.size() &&
      path.substr(path.size() - kMembers.size()) == kMembers) {
    if (!reads(req)) return answer(r, bad_request, method_not_allowed(req, "GET, HEAD"));
    auto id = path.substr(kRoomsPath.size(), path.size() - kRoomsPath.size() - kMembers.size());
    if (!chat::is_room_id(id)) return answer(r, not_found, json_error(req, http::status::not_found, "no such room"));
    return rooms.room_members(id, [this, r, room = chat::canonical_room_id(id)](std::error_code ec, bus::MemberList l) {
      const auto& rq = r->request();
      if (ec == chat::Error::unknown_room || ec == chat::Error::presence_off)
        return answer(r, not_found, json_error(rq, http::status::not_found, ec.message()));
      if (ec) return answer(r, failed, json_error(rq, http::status::service_unavailable, ec.message()));
      answer(r, ok, make_response(rq, http::status::ok, members_json(room, l), kJson));
    });
  }
  answer(r, not_found, json_error(req, http::status::not_found, "no API call " + std::string(path)));
}

std::string ServerApi::metrics_text() const {
  std::ostringstream out;
  out << "# HELP chatd_api_requests_total Server API calls by outcome.\n# TYPE chatd_api_requests_total counter\n";
  for (int i = 0; i < outcome_count; ++i)
    out << "chatd_api_requests_total{outcome=\"" << kOutcomeNames[i] << "\"} " << outcomes_[i].load() << '\n';
  return out.str();
}

}  // namespace chatd::net
