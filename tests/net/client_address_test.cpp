#include "net/client_address.h"

#include <gtest/gtest.h>

#include <stdexcept>

using chatd::net::client_address;
using chatd::net::ProxyList;
namespace ip = boost::asio::ip;

TEST(ClientAddress, ProxyListBlocks) {
  auto l = ProxyList::parse(" 10.0.0.0/8, 192.168.1.7 ,fd00::/8,");
  EXPECT_TRUE(l.contains(ip::make_address("10.200.3.4")));
  EXPECT_FALSE(l.contains(ip::make_address("11.0.0.1")));
  EXPECT_TRUE(l.contains(ip::make_address("192.168.1.7")));
  EXPECT_FALSE(l.contains(ip::make_address("192.168.1.8")));
  EXPECT_TRUE(l.contains(ip::make_address("::ffff:10.1.2.3"))) << "IPv4-mapped counts as IPv4";
  EXPECT_TRUE(l.contains(ip::make_address("fd12::1")));
  EXPECT_FALSE(l.contains(ip::make_address("fe80::1")));
  EXPECT_TRUE(ProxyList::parse("").empty());
  for (auto bad : {"10.0.0.0/33", "10.0.0.0/", "example.com", "1.2.3.4/8x", "::/129"})
    EXPECT_THROW(ProxyList::parse(bad), std::invalid_argument) << bad;
}

TEST(ClientAddress, ForwardedForIsBelievedOnlyFromTrustedProxies) {
  auto proxies = ProxyList::parse("10.0.0.1,10.0.0.2");
  auto peer = ip::make_address("10.0.0.1");
  auto stranger = ip::make_address("203.0.113.9");
  EXPECT_EQ(client_address(stranger, "1.2.3.4", proxies), stranger) << "anyone can write the header";
  EXPECT_EQ(client_address(peer, "", proxies), peer);
  EXPECT_EQ(client_address(peer, "198.51.100.7", proxies), ip::make_address("198.51.100.7"));
  // The client forged the left-most entry; the right-most untrusted one is what the proxy saw.
  EXPECT_EQ(client_address(peer, "6.6.6.6, 198.51.100.7", proxies), ip::make_address("198.51.100.7"));
  EXPECT_EQ(client_address(peer, "6.6.6.6, 198.51.100.7, 10.0.0.2", proxies), ip::make_address("198.51.100.7"));
  EXPECT_EQ(client_address(peer, "garbage", proxies), peer) << "a malformed entry stops at the last trusted hop";
  EXPECT_EQ(client_address(peer, "1.2.3.4", ProxyList{}), peer) << "no trusted proxies: the header is ignored";
}
