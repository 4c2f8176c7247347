// The chat rules without sockets or engines.
#include <gtest/gtest.h>

#include <boost/json.hpp>

#include <set>

#include "chat/identity.h"
#include "chat/rules.h"

using namespace chatd::chat;

namespace {

const char* kRoom = "0b7a4c2e-1f3d-4e5a-8b9c-0d1e2f3a4b5c";

std::string body(std::string_view type, std::string_view sender, std::string_view message) {
  return boost::json::serialize(boost::json::object{{"type", type}, {"roomId", kRoom}, {"sender", sender}, {"message", message}});
}

std::error_code rejection(const std::string& b, Limits lim = {}) {
  std::error_code ec;
  auto m = parse_chat_message(b, lim, ec);
  EXPECT_EQ(m.has_value(), !ec);
  return ec;
}

}  // namespace

TEST(ChatRules, AcceptsTheThreeTypes) {
  for (auto [type, want] : {std::pair{"ENTER", MessageType::enter}, {"TALK", MessageType::talk}, {"QUIT", MessageType::quit}}) {
    std::error_code ec;
    auto m = parse_chat_message(body(type, "짱구", "hi"), {}, ec);
    ASSERT_TRUE(m) << type << ": " << ec.message();
    EXPECT_EQ(m->type, want);
    EXPECT_EQ(m->room_id, kRoom);
    EXPECT_EQ(m->sender, "짱구");
    EXPECT_EQ(m->message, "hi");
  }
}

TEST(ChatRules, EnterNeedsNoText) {
  EXPECT_FALSE(rejection(R"({"type":"ENTER","roomId":")" + std::string(kRoom) + R"(","sender":"a"})"));
}

TEST(ChatRules, RejectsWhatBreaksARule) {
  EXPECT_EQ(rejection("{not json"), Error::bad_json);
  EXPECT_EQ(rejection("[1,2]"), Error::bad_json);
  EXPECT_EQ(rejection(R"({"type":7,"roomId":"x","sender":"a"})"), Error::bad_field);
  EXPECT_EQ(rejection(body("SHOUT", "a", "b")), Error::unknown_type);
  EXPECT_EQ(rejection(R"({"roomId":")" + std::string(kRoom) + R"(","sender":"a","message":"b"})"), Error::unknown_type);
  EXPECT_EQ(rejection(R"({"type":"TALK","roomId":"room-1","sender":"a","message":"b"})"), Error::bad_room_id);
  EXPECT_EQ(rejection(body("TALK", "", "b")), Error::bad_sender);
  EXPECT_EQ(rejection(body("TALK", std::string(65, 'a'), "b")), Error::bad_sender);
  EXPECT_EQ(rejection(body("TALK", "a", "")), Error::empty_message);
  EXPECT_EQ(rejection(body("TALK", "a", std::string(4001, 'x'))), Error::message_too_long);
  Limits small;
  small.max_message_bytes = 3;
  EXPECT_FALSE(rejection(body("TALK", "a", "한"), small));  // 3 bytes
  EXPECT_EQ(rejection(body("TALK", "a", "한a"), small), Error::message_too_long);
  EXPECT_EQ(rejection("{\"type\":\"TALK\",\"roomId\":\"" + std::string(kRoom) + "\",\"sender\":\"\xff\",\"message\":\"b\"}"),
            Error::bad_json);  // invalid UTF-8 never parses
}

TEST(ChatRules, RoomIdsAreCanonicalUuidsAndLowerCased) {
  EXPECT_TRUE(is_room_id(kRoom));
  EXPECT_FALSE(is_room_id("0b7a4c2e1f3d4e5a8b9c0d1e2f3a4b5c"));
  EXPECT_FALSE(is_room_id("0b7a4c2e-1f3d-4e5a-8b9c-0d1e2f3a4b5g"));
  std::error_code ec;
  auto m = parse_chat_message(R"({"type":"TALK","roomId":"0B7A4C2E-1F3D-4E5A-8B9C-0D1E2F3A4B5C","sender":"a","message":"b"})", {}, ec);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->room_id, kRoom);
}

TEST(ChatRules, NewRoomIdsAreUniqueV4) {
  std::set<std::string> seen;
  for (int i = 0; i < 1000; ++i) {
    auto id = new_room_id();
    ASSERT_TRUE(is_room_id(id)) << id;
    EXPECT_EQ(id[14], '4');
    EXPECT_NE(std::string("89ab").find(id[19]), std::string::npos);
    seen.insert(id);
  }
  EXPECT_EQ(seen.size(), 1000u);
}

TEST(ChatRules, StampReplacesEnterAndQuitTextAndAddsIdAndTs) {
  ChatMessage m{MessageType::enter, kRoom, "짱구", "ignored"};
  Texts texts;
  auto v = boost::json::parse(stamp(m, "n1-7", 1700000000000, texts)).as_object();
  EXPECT_EQ(v["type"], "ENTER");
  EXPECT_EQ(v["message"], "짱구님 등장!");
  EXPECT_EQ(v["id"], "n1-7");
  EXPECT_EQ(v["ts"], 1700000000000);
  EXPECT_EQ(v["roomId"], kRoom);
  texts.quit = "{sender} left ({sender})";
  m.type = MessageType::quit;
  EXPECT_EQ(boost::json::parse(stamp(m, "x", 1, texts)).as_object()["message"], "짱구 left (짱구)");
  m.type = MessageType::talk;
  m.message = "<b>\"quoted\"</b>";
  EXPECT_EQ(boost::json::parse(stamp(m, "x", 1, texts)).as_object()["message"], "<b>\"quoted\"</b>");
}

TEST(ChatRules, WithSeqAppendsSeqAndEpoch) {
  auto out = with_seq(R"({"a":1})", 42, "e1");
  EXPECT_EQ(out, R"({"a":1,"seq":42,"epoch":"e1"})");
  EXPECT_EQ(with_seq("{}", 1, "x"), R"({"seq":1,"epoch":"x"})");
}

TEST(ChatRules, ErrorJson) {
  auto v = boost::json::parse(error_json(404, "no such \"room\"")).as_object();
  EXPECT_EQ(v["status"], 404);
  EXPECT_EQ(v["error"], "no such \"room\"");
}

TEST(ChatRules, RoomName) {
  std::string why;
  EXPECT_EQ(check_room_name("  lobby\t", 100, why), "lobby");
  EXPECT_FALSE(check_room_name(" \t ", 100, why));
  EXPECT_EQ(why, "name is required and must show something, not only blanks or invisible characters");
  EXPECT_FALSE(check_room_name("abcd", 3, why));
  EXPECT_EQ(why, "name is longer than 3 bytes");
  EXPECT_FALSE(check_room_name("\xc0\xaf", 100, why));
  EXPECT_EQ(why, "name must be valid UTF-8");
  EXPECT_FALSE(check_room_name("a\x01b", 100, why));
  EXPECT_EQ(why, "name must not contain control characters, line breaks or bidirectional formatting characters");
  EXPECT_EQ(check_room_name("한글 😀", 100, why), "한글 😀");
}

TEST(ChatRules, CanonicalRoomIdIsLowerCase) {
  EXPECT_EQ(canonical_room_id("0A1B2C3D-4E5F-4A6B-8C7D-9E0F1A2B3C4D"), "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d");
  EXPECT_EQ(canonical_room_id("0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"), "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d");
}

// Finding 10: names (senders and rooms) with NUL, control characters, newlines, bidi
// overrides, or nothing visible are refused; invisible characters at the ends are trimmed.
TEST(ChatRules, NamesRefuseWhatHidesOrReordersText) {
  std::string why;
  for (std::string bad : {std::string("a\0b", 3), std::string("a\nb"), std::string("a\rb"), std::string("a\x1b[31mb"),
                          std::string("\xc2\x85x"),               // U+0085 NEL, a C1 control
                          std::string("abc\xe2\x80\xae" "gnp.exe"),  // U+202E RIGHT-TO-LEFT OVERRIDE
                          std::string("a\xe2\x81\xa6" "b"),          // U+2066 LEFT-TO-RIGHT ISOLATE
                          std::string("a\xe2\x80\x8f" "b"),          // U+200F RIGHT-TO-LEFT MARK
                          std::string("a\xe2\x80\xa8" "b")}) {       // U+2028 LINE SEPARATOR
    EXPECT_FALSE(check_name(bad, 100, why)) << bad;
    EXPECT_EQ(why, "must not contain control characters, line breaks or bidirectional formatting characters") << bad;
  }
  for (std::string blank : {std::string(""), std::string("   "), std::string("\xe2\x80\x8b\xe2\x80\x8b"),  // ZWSP only
                            std::string("\xe3\x85\xa4"),                                              // U+3164 HANGUL FILLER
                            std::string("\xe3\x80\x80\xef\xbb\xbf"),                                 // ideographic space, BOM
                            std::string("\xe2\x80\x8d")}) {                                            // ZWJ only
    EXPECT_FALSE(check_name(blank, 100, why)) << blank;
    EXPECT_EQ(why, "is required and must show something, not only blanks or invisible characters");
  }
  // Trimmed at the ends only; inside, a zero-width joiner builds an emoji and stays.
  EXPECT_EQ(check_name("\xe2\x80\x8b \xe3\x80\x80짱구\xc2\xa0", 100, why), "짱구");
  const std::string family = "\xf0\x9f\x91\xa8\xe2\x80\x8d\xf0\x9f\x91\xa9";  // man ZWJ woman
  EXPECT_EQ(check_name(family, 100, why), family);
  EXPECT_EQ(check_name("  ab  ", 2, why), "ab") << "the bound applies after trimming";
}

TEST(ChatRules, SenderIsCheckedAndTrimmedLikeAName) {
  std::error_code ec;
  EXPECT_EQ(rejection(body("TALK", "evil\u202Egnp", "b")), Error::bad_sender);
  EXPECT_EQ(rejection(body("TALK", std::string_view("a\0b", 3), "b")), Error::bad_sender);
  EXPECT_EQ(rejection(body("TALK", "two\nlines", "b")), Error::bad_sender);
  EXPECT_EQ(rejection(body("TALK", "\u200B\u200B", "b")), Error::bad_sender);
  EXPECT_EQ(rejection(body("TALK", "   ", "b")), Error::bad_sender);
  auto m = parse_chat_message(body("TALK", "  짱구\u3000", "multi\nline text is fine"), Limits{}, ec);
  ASSERT_TRUE(m) << ec.message();
  EXPECT_EQ(m->sender, "짱구");
  EXPECT_EQ(m->message, "multi\nline text is fine");
}

// RFC 9110 §11.1: the scheme is case-insensitive; RFC 6750 §2.1: one or more spaces after it.
TEST(BearerToken, SchemeInAnyCaseAndAnyBlanksBeforeTheToken) {
  using chatd::chat::bearer_token_of;
  EXPECT_EQ(bearer_token_of("Bearer abc.def"), "abc.def");
  EXPECT_EQ(bearer_token_of("BEARER abc"), "abc");
  EXPECT_EQ(bearer_token_of("bEaReR  \tabc "), "abc");
  EXPECT_EQ(bearer_token_of("Bearer"), "");
  EXPECT_EQ(bearer_token_of("Bearer   "), "");
  EXPECT_EQ(bearer_token_of("Bearerabc"), "");
  EXPECT_EQ(bearer_token_of("Basic abc"), "");
  EXPECT_EQ(bearer_token_of("Bearxr abc"), "");
}
