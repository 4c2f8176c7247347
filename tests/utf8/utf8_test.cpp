#include "utf8/utf8.h"

#include <gtest/gtest.h>

#include <string>
#include <string_view>

using namespace chatd::utf8;

TEST(Utf8, Valid) {
  EXPECT_TRUE(valid(""));
  EXPECT_TRUE(valid("plain ascii, longer than eight bytes"));
  EXPECT_TRUE(valid("plain 한글 😀"));
  EXPECT_TRUE(valid("\xed\x9f\xbf"));          // U+D7FF, just below the surrogates
  EXPECT_TRUE(valid("\xf4\x8f\xbf\xbf"));      // U+10FFFF
  EXPECT_FALSE(valid("\xc0\xaf"));             // overlong
  EXPECT_FALSE(valid("\xe0\x80\xaf"));         // overlong, 3 bytes
  EXPECT_FALSE(valid("\xed\xa0\x80"));         // surrogate
  EXPECT_FALSE(valid("\xf4\x90\x80\x80"));     // past U+10FFFF
  EXPECT_FALSE(valid("\xe2\x82"));             // truncated
  EXPECT_FALSE(valid("\x80"));                 // a lone continuation byte
  EXPECT_FALSE(valid("\xff"));
  EXPECT_FALSE(valid("12345678\xc3("));        // bad continuation after an ASCII run
}

// A code point split at every offset validates as the whole does.
TEST(Utf8, ValidatorAcrossPieces) {
  const std::string good = "ab 한글 😀 \xf4\x8f\xbf\xbf end of text";
  for (std::size_t cut = 0; cut <= good.size(); ++cut) {
    Validator v;
    EXPECT_TRUE(v.feed(std::string_view(good).substr(0, cut))) << cut;
    EXPECT_TRUE(v.feed(std::string_view(good).substr(cut))) << cut;
    EXPECT_TRUE(v.complete()) << cut;
  }
  Validator open;
  EXPECT_TRUE(open.feed("\xf0\x9f"));
  EXPECT_FALSE(open.complete());
  EXPECT_FALSE(open.feed("\x41"));  // the open code point needed a continuation byte
  open.reset();
  EXPECT_TRUE(open.complete());
  EXPECT_TRUE(open.feed("\xe0"));
  EXPECT_FALSE(open.complete());
  Validator split_overlong;
  EXPECT_TRUE(split_overlong.feed("\xe0"));
  EXPECT_FALSE(split_overlong.feed("\x80\x80"));  // E0 must be followed by A0-BF
}

TEST(Utf8, DecodeMultibyte) {
  std::uint32_t cp = 0;
  EXPECT_EQ(decode_multibyte("\xc3\xa9x", cp), 2u);
  EXPECT_EQ(cp, 0xE9u);
  EXPECT_EQ(decode_multibyte("\xe2\x80\xa8", cp), 3u);
  EXPECT_EQ(cp, 0x2028u);
  EXPECT_EQ(decode_multibyte("\xf0\x9f\x98\x80", cp), 4u);
  EXPECT_EQ(cp, 0x1F600u);
  EXPECT_EQ(decode_multibyte("a", cp), 0u);
  EXPECT_EQ(decode_multibyte("", cp), 0u);
  EXPECT_EQ(decode_multibyte("\xe2\x80", cp), 0u);
  EXPECT_EQ(decode_multibyte("\xed\xa0\x80", cp), 0u);
  EXPECT_EQ(decode_multibyte("\xe2\x28\xa1", cp), 0u);
}

TEST(Utf8, AppendRoundTrips) {
  for (std::uint32_t cp : {0x41u, 0x7Fu, 0x80u, 0x7FFu, 0x800u, 0xD7FFu, 0xE000u, 0xFFFFu, 0x10000u, 0x10FFFFu}) {
    std::string s;
    append(s, cp);
    EXPECT_TRUE(valid(s)) << cp;
    std::uint32_t back = 0;
    if (cp < 0x80) {
      EXPECT_EQ(s, std::string(1, static_cast<char>(cp)));
    } else {
      EXPECT_EQ(decode_multibyte(s, back), s.size()) << cp;
      EXPECT_EQ(back, cp);
    }
  }
}
