#include "hooks/webhooks.h"

#include <gtest/gtest.h>

#include <stdexcept>

namespace chatd::hooks {
namespace {

using Kind = chat::ChatEvent::Kind;
constexpr unsigned bit(Kind k) { return 1u << static_cast<unsigned>(k); }

TEST(Webhooks, SignatureIsHmacSha256InHex) {
  // RFC 4231, test case 2.
  EXPECT_EQ(signature("Jefe", "what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
  EXPECT_NE(signature("Jefe", "what do ya want for nothing!"), signature("Jefe", "what do ya want for nothing?"));
}

TEST(Webhooks, EventKindsParse) {
  EXPECT_EQ(parse_event_kinds("message"), bit(Kind::message));
  EXPECT_EQ(parse_event_kinds(" join , leave "), bit(Kind::join) | bit(Kind::leave));
  EXPECT_EQ(parse_event_kinds("all"), bit(Kind::message) | bit(Kind::join) | bit(Kind::leave) | bit(Kind::room));
  EXPECT_EQ(parse_event_kinds(""), 0u);
  EXPECT_THROW(parse_event_kinds("message,typing"), std::invalid_argument);
}

}  // namespace
}  // namespace chatd::hooks
