#include "net/api.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include <boost/json.hpp>

#include <sstream>

#include "chat/rules.h"

namespace chatd::net {
namespace {

namespace http = boost::beast::http;

std::array<unsigned char, 32> digest(std::string_view s) {
  std::array<unsigned char, 32> out{};
  SHA256(reinterpret_cast<const unsigned char*>(s.data()), s.size(), out.data());
  return out;
}

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
    if (req.method() != http::verb::get) return answer(r, bad_request, method_not_allowed(req, "GET"));
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
      if (pec) return answer(r, failed, json_error(rq, http::status::service_unavailable, pec.message()));
      answer(r, ok, make_response(rq, http::status::ok, std::move(message), kJson));
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
