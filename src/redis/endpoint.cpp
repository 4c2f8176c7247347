#include "redis/endpoint.h"

#include <hiredis/hiredis.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/url/parse.hpp>

#include <charconv>
#include <memory>
#include <stdexcept>
#include <vector>

namespace chatd::redis {

std::string Endpoint::display() const {
  return host + ":" + std::to_string(port) + "/" + std::to_string(db);
}

Endpoint parse_url(std::string_view url) {
  auto bad = [&](const std::string& why) {
    return std::runtime_error("bad Redis URL '" + std::string(url) + "': " + why +
                              " (expected redis://[[user]:password@]host[:port][/db])");
  };
  auto parsed = boost::urls::parse_uri(url);
  if (!parsed) throw bad(parsed.error().message());
  const auto& u = *parsed;
  if (u.scheme() != "redis") throw bad("scheme must be redis");
  if (!u.has_authority() || u.host_address().empty()) throw bad("no host");
  Endpoint ep;
  ep.host = u.host_address();
  if (u.has_port()) {
    // port_number() wraps large numbers silently; read the text.
    const std::string_view text = u.port();
    unsigned long port = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), port);
    if (ec != std::errc{} || end != text.data() + text.size() || port == 0 || port > 65535)
      throw bad("port must be 1-65535");
    ep.port = static_cast<std::uint16_t>(port);
  }
  if (u.has_userinfo()) {
    ep.user = u.user();
    if (u.has_password()) ep.password = u.password();
    // redis://secret@host: a lone userinfo is the password, as redis-cli reads it.
    if (!u.has_password()) std::swap(ep.user, ep.password);
  }
  std::string path = u.path();
  if (!path.empty() && path != "/") {
    std::string_view digits = std::string_view(path).substr(1);
    auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), ep.db);
    if (ec != std::errc{} || end != digits.data() + digits.size() || ep.db < 0)
      throw bad("path must be a database number");
  }
  if (u.has_query() || u.has_fragment()) throw bad("no query or fragment allowed");
  return ep;
}

namespace {

struct ContextFree {
  void operator()(redisContext* c) const { redisFree(c); }
};
struct ReplyFree {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using ReplyPtr = std::unique_ptr<redisReply, ReplyFree>;

}  // namespace

void resolve_and_verify(Endpoint& ep, std::chrono::milliseconds timeout) {
  const std::string where = "Redis at " + ep.display();
  {
    boost::asio::io_context io;
    boost::asio::ip::tcp::resolver resolver(io);
    boost::system::error_code ec;
    auto results = resolver.resolve(ep.host, std::to_string(ep.port), ec);
    if (ec || results.empty()) throw std::runtime_error("cannot resolve " + where + ": " + ec.message());
    ep.address = results.begin()->endpoint().address().to_string();
  }
  timeval tv{};
  tv.tv_sec = static_cast<long>(timeout.count() / 1000);
  tv.tv_usec = static_cast<long>((timeout.count() % 1000) * 1000);
  std::unique_ptr<redisContext, ContextFree> c(redisConnectWithTimeout(ep.address.c_str(), ep.port, tv));
  if (!c) throw std::runtime_error("cannot reach " + where + ": out of memory");
  if (c->err) throw std::runtime_error("cannot reach " + where + ": " + c->errstr);
  redisSetTimeout(c.get(), tv);

  // Returns the reply to argv, or throws naming `step` and what Redis said.
  auto call = [&](const char* step, std::vector<std::string> argv) {
    std::vector<const char*> ptrs;
    std::vector<std::size_t> lens;
    for (const auto& a : argv) {
      ptrs.push_back(a.data());
      lens.push_back(a.size());
    }
    ReplyPtr r(static_cast<redisReply*>(
        redisCommandArgv(c.get(), static_cast<int>(ptrs.size()), ptrs.data(), lens.data())));
    if (!r) throw std::runtime_error(where + " did not answer " + step + ": " + c->errstr);
    if (r->type == REDIS_REPLY_ERROR)
      throw std::runtime_error(where + " refused " + step + ": " + std::string(r->str, r->len));
  };
  if (!ep.password.empty()) {
    if (ep.user.empty()) call("the password (AUTH)", {"AUTH", ep.password});
    else call("the user and password (AUTH)", {"AUTH", ep.user, ep.password});
  }
  if (ep.db != 0) call("SELECT", {"SELECT", std::to_string(ep.db)});
  call("PING", {"PING"});
}

Endpoint verified_endpoint(std::string_view url) {
  Endpoint ep = parse_url(url);
  resolve_and_verify(ep, std::chrono::seconds(3));
  return ep;
}

}  // namespace chatd::redis
