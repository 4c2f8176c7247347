#include <gtest/gtest.h>

#include <string>

#include "net/ws_handshake.h"

using chatd::net::ws_accept_key;

// RFC 6455 §1.3 (checked against Python hashlib + base64 as well).
TEST(WsHandshake, AcceptKeyRfcExample) {
  EXPECT_EQ(ws_accept_key("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
  // SHA-1 padding into a second block, and three blocks (values from Python's hashlib).
  EXPECT_EQ(ws_accept_key(""), "Kfh9QIsMVZcl6xEPYxPHzW8SZ8w=");
  EXPECT_EQ(ws_accept_key("abcabcabcabcabcabcabc"), "xh21D/feI62nRmcHddgU5aNYTgQ=");
  EXPECT_EQ(ws_accept_key(std::string(100, 'x')), "DJTE+uYDnPxiT+W6VvIG/iPUxv8=");
}
