#include "net/origins.h"

#include <algorithm>
#include <cctype>
#include <stdexcept>

namespace chatd::net {
namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && s.front() == ' ') s.remove_prefix(1);
  while (!s.empty() && s.back() == ' ') s.remove_suffix(1);
  return s;
}

// Returns the host[:port] part of an origin "scheme://host[:port]", or "" when it is not one.
std::string_view authority_of(std::string_view origin) {
  auto p = origin.find("://");
  if (p == std::string_view::npos || p == 0) return {};
  auto scheme = origin.substr(0, p);
  if (scheme != "http" && scheme != "https") return {};
  auto rest = origin.substr(p + 3);
  if (rest.empty() || rest.find_first_of("/?#@ ") != std::string_view::npos) return {};
  return rest;
}

// Returns the host of host[:port] (IPv6 literals keep their brackets).
std::string_view host_of(std::string_view authority) {
  if (authority.starts_with("[")) return authority.substr(0, authority.find(']') + 1);
  return authority.substr(0, authority.find(':'));
}

}  // namespace

AllowedOrigins AllowedOrigins::parse(std::string_view spec) {
  AllowedOrigins a;
  a.spec_ = std::string(spec);
  spec = trim(spec);
  if (spec == "*") {
    a.any_ = true;
    return a;
  }
  if (spec == "default" || spec.empty()) return a;
  a.localhost_ = false;
  while (!spec.empty()) {
    auto comma = spec.find(',');
    auto item = trim(spec.substr(0, comma));
    if (item.ends_with("/")) item.remove_suffix(1);
    if (item == "localhost") a.localhost_ = true;
    else if (authority_of(item).empty())
      throw std::invalid_argument("--allowed-origins: '" + std::string(item) + "' is not an origin like https://app.example.com");
    else a.listed_.push_back(lower(item));
    if (comma == std::string_view::npos) break;
    spec.remove_prefix(comma + 1);
  }
  return a;
}

bool AllowedOrigins::allows(std::string_view origin, std::string_view host) const {
  if (origin.empty() || any_) return true;
  auto o = lower(origin);
  auto authority = authority_of(o);
  if (authority.empty()) return false;  // "null" (file:, sandboxed frames) and anything odd
  if (!host.empty() && authority == lower(host)) return true;  // same origin
  if (localhost_) {
    auto h = host_of(authority);
    if (h == "localhost" || h == "127.0.0.1" || h == "[::1]") return true;
  }
  return std::find(listed_.begin(), listed_.end(), o) != listed_.end();
}

}  // namespace chatd::net
