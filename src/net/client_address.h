// Who a request comes from, for per-address limits and SockJS session binding. Behind a
// reverse proxy every connection comes from the proxy, so X-Forwarded-For is believed, but
// only from proxies the operator named (--trusted-proxies): anyone else could write it.
#pragma once

#include <boost/asio/ip/address.hpp>

#include <string>
#include <string_view>
#include <vector>

namespace chatd::net {

// A set of addresses and CIDR blocks ("10.0.0.0/8,127.0.0.1,::1").
class ProxyList {
 public:
  // Returns the list in `spec` (comma-separated, blanks ignored, empty: none). Throws
  // std::invalid_argument naming the bad entry.
  static ProxyList parse(std::string_view spec);

  // Returns whether `a` is in one of the blocks (an IPv4-mapped IPv6 address counts as IPv4).
  bool contains(const boost::asio::ip::address& a) const;
  bool empty() const { return blocks_.empty(); }

 private:
  struct Block {
    boost::asio::ip::address base;
    unsigned prefix = 0;
  };
  std::vector<Block> blocks_;
};

// Returns the client's address: `peer` itself, unless `peer` is a trusted proxy; then the
// right-most X-Forwarded-For entry that is not a trusted proxy (each proxy appends the
// address it saw, so that entry is the first one no trusted party vouches for). A malformed
// entry stops the walk at the last trusted hop, which is then the answer.
boost::asio::ip::address client_address(const boost::asio::ip::address& peer, std::string_view forwarded_for,
                                        const ProxyList& trusted);

}  // namespace chatd::net
