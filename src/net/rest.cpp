#include "net/rest.h"

#include <boost/json.hpp>
#include <boost/url.hpp>

#include <algorithm>
#include <cctype>
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

// 504 when the store may have made the room without saying so (as for a SEND): a retry makes a
// second room, so a client should look in the list first.
void answer_created(const ResponderPtr& r, std::error_code ec, const store::Room& room) {
  if (ec == store::Error::full || ec == store::Error::members_full) return r->respond(json_error(r->request(), http::status::insufficient_storage, ec.message()));
  if (ec == store::Error::unsettled) return r->respond(json_error(r->request(), http::status::gateway_timeout, ec.message()));
  if (ec) return r->respond(json_error(r->request(), http::status::service_unavailable, ec.message()));
  r->respond(make_response(r->request(), http::status::ok, store::to_json(room), kJson));
}

// Answers with the page of room `id`'s history (room_messages, after the checks).
void room_page(chat::Rooms& rooms, const std::string& id, std::size_t before, std::size_t limit, ResponderPtr r);

}  // namespace

void list_rooms(chat::Rooms& rooms, const Limits& limits, const boost::urls::url_view& url, ResponderPtr r,
                chat::IdentityPtr who) {
  auto offset = number_param(url, "offset", 0, std::numeric_limits<std::uint32_t>::max());
  auto limit = number_param(url, "limit", limits.room_list_max, limits.room_list_max);
  // limit=0 would answer an empty page whose "next" link is itself.
  if (!offset || !limit || *limit == 0)
    return r->respond(json_error(r->request(), http::status::bad_request,
                                 "offset must be a whole number and limit one from 1 to " + std::to_string(limits.room_list_max)));
  rooms.list_rooms([&rooms, r, from = *offset, n = *limit, who](std::error_code ec, std::vector<store::Room> all) {
    if (ec) return r->respond(json_error(r->request(), http::status::service_unavailable, ec.message()));
    // Only what the caller may enter is listed; the page counts those.
    if (who) std::erase_if(all, [&](const store::Room& room) { return !chat::may_enter(who.get(), room); });
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
        if (all[i].restricted) o["restricted"] = true;
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

void find_room(chat::Rooms& rooms, std::string_view id, ResponderPtr r, chat::IdentityPtr who) {
  if (!chat::is_room_id(id)) return r->respond(json_error(r->request(), http::status::not_found, "no such room"));
  rooms.find_room(id, [r, who](std::error_code ec, std::optional<store::Room> room) {
    if (ec) return r->respond(json_error(r->request(), http::status::service_unavailable, ec.message()));
    if (!room) return r->respond(json_error(r->request(), http::status::not_found, "no such room"));
    if (!chat::may_enter(who.get(), *room)) return r->respond(json_error(r->request(), http::status::forbidden, "you may not enter this room"));
    r->respond(make_response(r->request(), http::status::ok, store::to_json(*room), kJson));
  });
}

void create_room(chat::Rooms& rooms, const chat::Limits& limits, const boost::urls::url_view& url, ResponderPtr r,
                 chat::IdentityPtr who) {
  const Request& req = r->request();
  // The media type, lower case (RFC 9110 §8.3.1: case-insensitive), without its parameters.
  std::string type(req[http::field::content_type].substr(0, req[http::field::content_type].find(';')));
  std::transform(type.begin(), type.end(), type.begin(), [](unsigned char c) { return std::tolower(c); });
  while (!type.empty() && (type.back() == ' ' || type.back() == '\t')) type.pop_back();
  std::optional<boost::urls::url> form;  // a form body, as a query the URL parser decodes
  if (type == "application/x-www-form-urlencoded") {
    // Forms encode spaces as '+'; make them %20 so the URL parser decodes them.
    std::string f = "/?";
    for (char c : req.body()) f += c == '+' ? std::string("%20") : std::string(1, c);
    if (auto u = boost::urls::parse_origin_form(f)) form.emplace(*u);
  }
  boost::json::object json;
  if (type == "application/json") {
    boost::system::error_code jec;
    auto v = boost::json::parse(req.body(), jec);
    if (jec || !v.is_object())
      return r->respond(json_error(req, http::status::bad_request,
                                   jec ? "the body is not valid JSON: " + jec.message() : std::string("the body must be a JSON object")));
    json = std::move(v.get_object());
    if (auto n = json.if_contains("name"); n && !n->is_string())
      return r->respond(json_error(req, http::status::bad_request, "name must be a string"));
  }
  // Returns field `key` from the query, else the form, else a JSON string member.
  auto field = [&](std::string_view key) -> std::optional<std::string> {
    if (auto it = url.params().find(key); it != url.params().end()) return std::string((*it).value);
    if (form)
      if (auto it = form->params().find(key); it != form->params().end()) return std::string((*it).value);
    if (auto v = json.if_contains(key); v && v->is_string()) return std::string(v->get_string());
    return std::nullopt;
  };
  auto name = field("name");
  if (!name) return r->respond(json_error(req, http::status::bad_request, "name is required (query parameter or form field)"));
  std::string why;
  auto ok = chat::check_room_name(*name, limits.max_room_name_bytes, why);
  if (!ok) return r->respond(json_error(req, http::status::bad_request, why));

  // A restricted room: `members` (comma-separated, or a JSON array of token subs) and/or
  // `restricted=true` (then only the creator and tokens whose `rooms` claim names it).
  std::vector<std::string> members;
  bool restricted = false;
  if (auto m = json.if_contains("members"); m && m->is_array()) {
    restricted = true;
    for (const auto& u : m->get_array()) {
      if (!u.is_string()) return r->respond(json_error(req, http::status::bad_request, "members must be token subs (strings)"));
      members.emplace_back(u.get_string());
    }
  } else if (auto list = field("members")) {
    restricted = true;
    for (std::string_view rest = *list; !rest.empty();) {
      auto comma = rest.find(',');
      if (auto one = rest.substr(0, comma); !one.empty()) members.emplace_back(one);
      if (comma == std::string_view::npos) break;
      rest.remove_prefix(comma + 1);
    }
  }
  if (auto x = json.if_contains("restricted"); x && x->is_bool()) restricted = restricted || x->get_bool();
  else if (auto f = field("restricted")) restricted = restricted || *f == "true" || *f == "1";
  if (!restricted) {
    return rooms.create_room(std::move(*ok), [r](std::error_code ec, store::Room room) { answer_created(r, ec, room); });
  }
  if (!who) return r->respond(json_error(req, http::status::bad_request, "restricted rooms need --auth jwt: without it nobody is proven a member"));
  if (std::find(members.begin(), members.end(), who->user) == members.end()) members.push_back(who->user);
  if (members.size() > limits.max_room_members)
    return r->respond(json_error(req, http::status::bad_request, "at most " + std::to_string(limits.max_room_members) + " members (--max-room-members)"));
  for (const auto& u : members)
    if (u.size() > 256) return r->respond(json_error(req, http::status::bad_request, "a member (token sub) is at most 256 bytes"));
  rooms.create_restricted_room(std::move(*ok), std::move(members),
                               [r](std::error_code ec, store::Room room) { answer_created(r, ec, room); });
}

void room_messages(chat::Rooms& rooms, const chat::Limits& limits, std::string_view id, const boost::urls::url_view& url,
                   ResponderPtr r, chat::IdentityPtr who) {
  const Request& req = r->request();
  if (!chat::is_room_id(id)) return r->respond(json_error(req, http::status::not_found, "no such room"));
  // Absent: the newest page. Seqs start at 1, so an explicit 0 would ask for nothing older than nothing.
  auto before = number_param(url, "before", 0, std::numeric_limits<std::size_t>::max());
  if (!before || (*before == 0 && url.params().contains("before")))
    return r->respond(json_error(req, http::status::bad_request, "before must be a seq, a whole number from 1"));
  auto limit = number_param(url, "limit", std::min<std::size_t>(50, limits.max_replay), limits.max_replay);
  if (!limit || *limit == 0)
    return r->respond(json_error(req, http::status::bad_request,
                                 "limit must be a number from 1 to " + std::to_string(limits.max_replay)));
  if (who) {
    // A restricted room's history is for those who may enter it: look first.
    auto ask = [&rooms, id = std::string(id), before = *before, limit = *limit, r](std::error_code ec, std::optional<store::Room> room) mutable {
      if (ec == chat::Error::room_forbidden) return r->respond(json_error(r->request(), http::status::forbidden, ec.message()));
      if (ec) return r->respond(json_error(r->request(), http::status::service_unavailable, ec.message()));
      if (!room) return r->respond(json_error(r->request(), http::status::not_found, "no such room"));
      room_page(rooms, id, before, limit, std::move(r));
    };
    return rooms.find_room(id, [who, ask = std::move(ask)](std::error_code ec, std::optional<store::Room> room) mutable {
      if (!ec && room && !chat::may_enter(who.get(), *room)) ec = chat::Error::room_forbidden;
      ask(ec, std::move(room));
    });
  }
  room_page(rooms, std::string(id), *before, *limit, std::move(r));
}

namespace {

void room_page(chat::Rooms& rooms, const std::string& id, std::size_t before, std::size_t limit, ResponderPtr r) {
  rooms.room_messages(id, before, limit, [r](std::error_code ec, chat::Rooms::Page page) {
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

}  // namespace

std::string members_json(std::string_view room_id, const bus::MemberList& l) {
  boost::json::array names;
  names.reserve(l.names.size());
  for (const auto& m : l.names) names.emplace_back(m);
  return boost::json::serialize(boost::json::object{{"roomId", room_id}, {"count", l.count}, {"members", std::move(names)}});
}

void room_members(chat::Rooms& rooms, std::string_view id, ResponderPtr r, chat::IdentityPtr who) {
  if (!chat::is_room_id(id)) return r->respond(json_error(r->request(), http::status::not_found, "no such room"));
  if (who) {
    // Who is in a restricted room is for those who may enter it.
    return rooms.find_room(id, [&rooms, id = std::string(id), r, who](std::error_code ec, std::optional<store::Room> room) {
      if (ec) return r->respond(json_error(r->request(), http::status::service_unavailable, ec.message()));
      if (!room) return r->respond(json_error(r->request(), http::status::not_found, "no such room"));
      if (!chat::may_enter(who.get(), *room))
        return r->respond(json_error(r->request(), http::status::forbidden, "you may not enter this room"));
      room_members(rooms, id, r, nullptr);
    });
  }
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
