#include "net/rest.h"

#include <boost/json.hpp>
#include <boost/url.hpp>

#include <algorithm>
#include <charconv>
#include <limits>

#include "chat/rules.h"

namespace chatd::net {
namespace http = boost::beast::http;

namespace {

// Returns the query parameter `name` as a number in [0, max], `fallback` when absent, or
// nullopt when it is not such a number.
std::optional<std::size_t> number_param(const boost::urls::url_view& url, std::string_view name, std::size_t fallback,
                                        std::size_t max) {
  auto it = url.params().find(name);
  if (it == url.params().end()) return fallback;
  std::string v = (*it).value;
  std::size_t out = 0;
  auto res = std::from_chars(v.data(), v.data() + v.size(), out);
  if (v.empty() || res.ec != std::errc() || res.ptr != v.data() + v.size() || out > max) return std::nullopt;
  return out;
}

}  // namespace

void list_rooms(chat::Rooms& rooms, const chat::Limits& limits, const boost::urls::url_view& url, ResponderPtr r) {
  auto offset = number_param(url, "offset", 0, std::numeric_limits<std::uint32_t>::max());
  auto limit = number_param(url, "limit", limits.room_list_max, limits.room_list_max);
  if (!offset || !limit)
    return r->respond(json_error(r->request(), http::status::bad_request,
                                 "offset and limit must be whole numbers; limit at most " + std::to_string(limits.room_list_max)));
  rooms.list_rooms([&rooms, r, from = *offset, n = *limit](std::error_code ec, std::vector<store::Room> all) {
    if (ec) return r->respond(json_error(r->request(), http::status::service_unavailable, ec.message()));
    const std::size_t first = std::min(from, all.size()), last = std::min(all.size(), first + n);
    std::vector<std::string> ids;
    ids.reserve(last - first);
    for (std::size_t i = first; i < last; ++i) ids.push_back(all[i].id);
    // Counts only for this page's rooms: one cheap read per room, never a member list.
    rooms.member_counts(ids, [r, all = std::move(all), first, last, n](std::error_code cec, std::vector<std::size_t> counts) {
      const bool counted = !cec && counts.size() == last - first;
      boost::json::array a;
      a.reserve(last - first);
      for (std::size_t i = first; i < last; ++i) {
        boost::json::object o{{"roomId", all[i].id}, {"name", all[i].name}};
        if (counted) o["memberCount"] = counts[i - first];
        a.push_back(std::move(o));
      }
      auto res = make_response(r->request(), http::status::ok, boost::json::serialize(a), kJson);
      res.set("X-Total-Count", std::to_string(all.size()));
      if (last < all.size())
        res.set(http::field::link, "</chat/rooms?offset=" + std::to_string(last) + "&limit=" + std::to_string(n) + ">; rel=\"next\"");
      r->respond(std::move(res));
    });
  });
}

void find_room(chat::Rooms& rooms, std::string_view id, ResponderPtr r) {
  if (!chat::is_room_id(id)) return r->respond(json_error(r->request(), http::status::not_found, "no such room"));
  rooms.find_room(id, [r](std::error_code ec, std::optional<store::Room> room) {
    if (ec) return r->respond(json_error(r->request(), http::status::service_unavailable, ec.message()));
    if (!room) return r->respond(json_error(r->request(), http::status::not_found, "no such room"));
    r->respond(make_response(r->request(), http::status::ok, store::to_json(*room), kJson));
  });
}

void create_room(chat::Rooms& rooms, const chat::Limits& limits, const boost::urls::url_view& url, ResponderPtr r) {
  const Request& req = r->request();
  std::optional<std::string> name;
  if (auto it = url.params().find("name"); it != url.params().end()) name = (*it).value;
  auto type = req[http::field::content_type];
  if (!name && type.rfind("application/x-www-form-urlencoded", 0) == 0) {
    // Forms encode spaces as '+'; make them %20 so the URL parser decodes them.
    std::string form = "/?";
    for (char c : req.body()) form += c == '+' ? std::string("%20") : std::string(1, c);
    if (auto u = boost::urls::parse_origin_form(form))
      if (auto it = u->params().find("name"); it != u->params().end()) name = (*it).value;
  }
  if (!name && type.rfind("application/json", 0) == 0) {
    boost::system::error_code jec;
    auto v = boost::json::parse(req.body(), jec);
    if (!jec && v.is_object())
      if (auto n = v.get_object().if_contains("name"); n && n->is_string()) name = std::string(n->get_string());
  }
  if (!name) return r->respond(json_error(req, http::status::bad_request, "name is required (query parameter or form field)"));
  std::string why;
  auto ok = chat::check_room_name(*name, limits.max_room_name_bytes, why);
  if (!ok) return r->respond(json_error(req, http::status::bad_request, why));
  rooms.create_room(std::move(*ok), [r](std::error_code ec, store::Room room) {
    if (ec == store::Error::full) return r->respond(json_error(r->request(), http::status::insufficient_storage, ec.message()));
    if (ec) return r->respond(json_error(r->request(), http::status::service_unavailable, ec.message()));
    r->respond(make_response(r->request(), http::status::ok, store::to_json(room), kJson));
  });
}

void room_messages(chat::Rooms& rooms, const chat::Limits& limits, std::string_view id, const boost::urls::url_view& url,
                   ResponderPtr r) {
  const Request& req = r->request();
  if (!chat::is_room_id(id)) return r->respond(json_error(req, http::status::not_found, "no such room"));
  auto before = number_param(url, "before", 0, std::numeric_limits<std::size_t>::max());
  if (!before) return r->respond(json_error(req, http::status::bad_request, "before must be a seq, a whole number"));
  auto limit = number_param(url, "limit", std::min<std::size_t>(50, limits.max_replay), limits.max_replay);
  if (!limit || *limit == 0)
    return r->respond(json_error(req, http::status::bad_request,
                                 "limit must be a number from 1 to " + std::to_string(limits.max_replay)));
  rooms.room_messages(id, *before, *limit, [r](std::error_code ec, chat::Rooms::Page page) {
    if (ec == chat::Error::unknown_room) return r->respond(json_error(r->request(), http::status::not_found, ec.message()));
    if (ec) return r->respond(json_error(r->request(), http::status::service_unavailable, ec.message()));
    // The bodies are JSON objects already: join them rather than parse and print them again.
    std::string body = "[";
    for (auto& b : page.bodies) {
      if (body.size() > 1) body += ',';
      body += b;
    }
    body += ']';
    auto res = make_response(r->request(), http::status::ok, std::move(body), kJson);
    res.set("x-epoch", page.epoch);
    res.set("x-first-seq", std::to_string(page.first_seq));
    res.set("x-last-seq", std::to_string(page.last_seq));
    r->respond(std::move(res));
  });
}

std::string members_json(std::string_view room_id, const bus::MemberList& l) {
  boost::json::array names;
  names.reserve(l.names.size());
  for (const auto& m : l.names) names.emplace_back(m);
  return boost::json::serialize(boost::json::object{{"roomId", room_id}, {"count", l.count}, {"members", std::move(names)}});
}

void room_members(chat::Rooms& rooms, std::string_view id, ResponderPtr r) {
  if (!chat::is_room_id(id)) return r->respond(json_error(r->request(), http::status::not_found, "no such room"));
  rooms.room_members(id, [r, room = chat::canonical_room_id(id)](std::error_code ec, bus::MemberList l) {
    if (ec == chat::Error::unknown_room || ec == chat::Error::presence_off)
      return r->respond(json_error(r->request(), http::status::not_found, ec.message()));
    if (ec) return r->respond(json_error(r->request(), http::status::service_unavailable, ec.message()));
    auto res = make_response(r->request(), http::status::ok, members_json(room, l), kJson);
    res.set(http::field::cache_control, "no-store");
    r->respond(std::move(res));
  });
}

}  // namespace chatd::net
