#include "net/client_address.h"

#include <charconv>
#include <stdexcept>

namespace chatd::net {
namespace {

namespace ip = boost::asio::ip;

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// Returns `a` with an IPv4-mapped IPv6 address turned into IPv4.
ip::address unmapped(const ip::address& a) {
  if (a.is_v6() && a.to_v6().is_v4_mapped()) return ip::make_address_v4(ip::v4_mapped, a.to_v6());
  return a;
}

// Returns whether the first `prefix` bits of `a` and `b` (same family) are equal.
template <class Bytes>
bool same_prefix(const Bytes& a, const Bytes& b, unsigned prefix) {
  for (std::size_t i = 0; i < a.size() && prefix > 0; ++i, prefix = prefix >= 8 ? prefix - 8 : 0) {
    unsigned bits = prefix >= 8 ? 8 : prefix;
    auto mask = static_cast<unsigned char>(0xFF << (8 - bits));
    if ((a[i] & mask) != (b[i] & mask)) return false;
  }
  return true;
}

}  // namespace

ProxyList ProxyList::parse(std::string_view spec) {
  ProxyList out;
  while (!spec.empty()) {
    auto comma = spec.find(',');
    auto item = trim(spec.substr(0, comma));
    spec = comma == std::string_view::npos ? std::string_view() : spec.substr(comma + 1);
    if (item.empty()) continue;
    auto slash = item.find('/');
    boost::system::error_code ec;
    auto base = unmapped(ip::make_address(std::string(item.substr(0, slash)), ec));
    unsigned max = base.is_v4() ? 32 : 128, prefix = max;
    bool ok = !ec;
    if (ok && slash != std::string_view::npos) {
      auto bits = item.substr(slash + 1);
      auto r = std::from_chars(bits.data(), bits.data() + bits.size(), prefix);
      ok = !bits.empty() && r.ec == std::errc() && r.ptr == bits.data() + bits.size() && prefix <= max;
    }
    if (!ok) throw std::invalid_argument("--trusted-proxies: '" + std::string(item) + "' is not an address or address/bits");
    out.blocks_.push_back({base, prefix});
  }
  return out;
}

bool ProxyList::contains(const ip::address& raw) const {
  auto a = unmapped(raw);
  for (auto& b : blocks_) {
    if (a.is_v4() && b.base.is_v4() && same_prefix(a.to_v4().to_bytes(), b.base.to_v4().to_bytes(), b.prefix)) return true;
    if (a.is_v6() && b.base.is_v6() && same_prefix(a.to_v6().to_bytes(), b.base.to_v6().to_bytes(), b.prefix)) return true;
  }
  return false;
}

ip::address client_address(const ip::address& peer, std::string_view forwarded_for, const ProxyList& trusted) {
  auto hop = unmapped(peer);
  // Walk from the right: each trusted hop vouches for the entry before it.
  while (trusted.contains(hop) && !forwarded_for.empty()) {
    auto comma = forwarded_for.rfind(',');
    auto item = trim(comma == std::string_view::npos ? forwarded_for : forwarded_for.substr(comma + 1));
    forwarded_for = comma == std::string_view::npos ? std::string_view() : forwarded_for.substr(0, comma);
    boost::system::error_code ec;
    auto next = ip::make_address(std::string(item), ec);
    if (ec) break;
    hop = unmapped(next);
  }
  return hop;
}

}  // namespace chatd::net
