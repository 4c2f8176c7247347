#include "sockjs/sockjs.h"
#include "utf8/utf8.h"

#include <gtest/gtest.h>

#include <boost/json.hpp>

#include <string>
#include <vector>

namespace sj = chatd::sockjs;
using sj::Error;
using sj::Route;
using sj::Transport;

namespace {

std::string utf8(std::uint32_t cp) {
  std::string s;
  chatd::utf8::append(s, cp);
  return s;
}

std::string escaped(std::string_view s) {
  std::string out;
  sj::append_escaped(out, s);
  return out;
}

// Returns the string a JSON parser reads back from a SockJS-escaped string.
std::string json_unquote(const std::string& escaped_body) {
  return std::string(boost::json::parse("\"" + escaped_body + "\"").as_string());
}

Route parse_ok(std::string_view target) {
  Route r;
  const auto ec = sj::parse_path(target, "/ws-stomp", r);
  EXPECT_FALSE(ec) << target << ": " << ec.message();
  return r;
}

std::error_code parse_err(std::string_view target) {
  Route r;
  return sj::parse_path(target, "/ws-stomp", r);
}

}  // namespace

// ---- routing ----

TEST(SockJsPath, InfoGreetingAndRawWebSocket) {
  EXPECT_EQ(parse_ok("/ws-stomp/info").kind, Route::Kind::info);
  EXPECT_EQ(parse_ok("/ws-stomp/info?t=1700000000000").kind, Route::Kind::info);
  EXPECT_EQ(parse_ok("/ws-stomp").kind, Route::Kind::greeting);
  EXPECT_EQ(parse_ok("/ws-stomp/").kind, Route::Kind::greeting);
  EXPECT_EQ(parse_ok("/ws-stomp/websocket").kind, Route::Kind::raw_websocket);
}

TEST(SockJsPath, SessionTransports) {
  const Route r = parse_ok("/ws-stomp/123/abcdefgh/xhr_streaming?t=1");
  EXPECT_EQ(r.kind, Route::Kind::session);
  EXPECT_EQ(r.server, "123");
  EXPECT_EQ(r.session, "abcdefgh");
  EXPECT_EQ(r.transport, Transport::xhr_streaming);
  for (auto t : {Transport::websocket, Transport::xhr, Transport::xhr_send, Transport::xhr_streaming}) {
    const std::string target = "/ws-stomp/000/s1/" + std::string(sj::to_string(t));
    EXPECT_EQ(parse_ok(target).transport, t) << target;
  }
}

TEST(SockJsPath, BaseWithTrailingSlashMatchesTheSame) {
  Route r;
  EXPECT_FALSE(sj::parse_path("/ws-stomp/1/2/xhr", "/ws-stomp/", r));
  EXPECT_EQ(r.transport, Transport::xhr);
}

TEST(SockJsPath, OtherPathsAreNotSockJs) {
  EXPECT_EQ(parse_err("/chat/rooms"), Error::not_sockjs);
  EXPECT_EQ(parse_err("/ws-stompx/info"), Error::not_sockjs);
  EXPECT_EQ(parse_err("/ws-stom"), Error::not_sockjs);
  EXPECT_EQ(parse_err(""), Error::not_sockjs);
}

TEST(SockJsPath, ShapesThatAreNotFound) {
  EXPECT_EQ(parse_err("/ws-stomp/nope"), Error::not_found);
  EXPECT_EQ(parse_err("/ws-stomp/iframe.html"), Error::not_found);
  EXPECT_EQ(parse_err("/ws-stomp/info/"), Error::not_found);
  EXPECT_EQ(parse_err("/ws-stomp/1/2"), Error::not_found);
  EXPECT_EQ(parse_err("/ws-stomp/1/2/xhr/"), Error::not_found);
  EXPECT_EQ(parse_err("/ws-stomp/1/2/xhr/extra"), Error::not_found);
}

TEST(SockJsPath, ServerAndSessionMustBeNonEmptyWithoutDots) {
  EXPECT_EQ(parse_err("/ws-stomp//abc/xhr"), Error::bad_session_path);
  EXPECT_EQ(parse_err("/ws-stomp/000//xhr"), Error::bad_session_path);
  EXPECT_EQ(parse_err("/ws-stomp/a.b/abc/xhr"), Error::bad_session_path);
  EXPECT_EQ(parse_err("/ws-stomp/000/ab.c/xhr"), Error::bad_session_path);
  const std::string long_id(sj::max_id_bytes + 1, 's');
  EXPECT_EQ(parse_err("/ws-stomp/000/" + long_id + "/xhr"), Error::bad_session_path);
  EXPECT_FALSE(parse_err("/ws-stomp/000/" + std::string(sj::max_id_bytes, 's') + "/xhr"));
}

TEST(SockJsPath, UnknownTransports) {
  for (const char* t : {"jsonp", "jsonp_send", "eventsource", "htmlfile", "XHR", ""}) {
    EXPECT_EQ(parse_err(std::string("/ws-stomp/000/abc/") + t), Error::unknown_transport) << t;
  }
}

TEST(SockJsPath, RouteOnErrorIsUntouched) {
  Route r = parse_ok("/ws-stomp/1/keep/xhr");
  EXPECT_TRUE(sj::parse_path("/ws-stomp/1/2/nope", "/ws-stomp", r));
  EXPECT_EQ(r.session, "keep");
}

// ---- frames ----

TEST(SockJsFrames, OpenHeartbeatClose) {
  std::string out;
  sj::append_open(out);
  EXPECT_EQ(out, "o");
  out.clear();
  sj::append_heartbeat(out);
  EXPECT_EQ(out, "h");
  out.clear();
  sj::append_close(out, sj::go_away);
  EXPECT_EQ(out, "c[3000,\"Go away!\"]");
  out.clear();
  sj::append_close(out, sj::another_connection_open);
  EXPECT_EQ(out, "c[2010,\"Another connection still open\"]");
  out.clear();
  sj::append_close(out, {4000, "say \"bye\""});
  EXPECT_EQ(out, R"(c[4000,"say \"bye\""])");
}

TEST(SockJsFrames, MessageArrays) {
  std::string out;
  sj::append_message(out, "hello");
  EXPECT_EQ(out, R"(a["hello"])");
  out.clear();
  const std::vector<std::string_view> ms{"a", "b\"c", "d\\e"};
  sj::append_messages(out, ms);
  EXPECT_EQ(out, R"(a["a","b\"c","d\\e"])");
  out.clear();
  sj::append_messages(out, {});
  EXPECT_EQ(out, "a[]");
}

TEST(SockJsFrames, StompFrameWithNulRoundTrips) {
  const std::string frame = std::string("MESSAGE\ndestination:/sub/chat/room/1\n\n{\"message\":\"안녕 😀\"}") + '\0';
  std::string out;
  sj::append_message(out, frame);
  EXPECT_EQ(out.find('\0'), std::string::npos);
  EXPECT_NE(out.find("\\u0000"), std::string::npos);
  EXPECT_NE(out.find("\\n"), std::string::npos);
  // Korean and emoji pass through as UTF-8.
  EXPECT_NE(out.find("안녕 😀"), std::string::npos);
  const auto v = boost::json::parse(out.substr(1));
  ASSERT_EQ(v.as_array().size(), 1u);
  EXPECT_EQ(std::string(v.as_array()[0].as_string()), frame);
}

TEST(SockJsEscape, JsonEscapes) {
  EXPECT_EQ(escaped("plain text"), "plain text");
  EXPECT_EQ(escaped("\"\\"), "\\\"\\\\");
  EXPECT_EQ(escaped("\n\r\t"), "\\n\\r\\t");
  EXPECT_EQ(escaped(std::string("\0\x01\x1f", 3)), "\\u0000\\u0001\\u001f");
  EXPECT_EQ(escaped("\x7f"), "\x7f");
  EXPECT_EQ(escaped("/"), "/");
}

TEST(SockJsEscape, EscapesTheRangesSockJsRequires) {
  EXPECT_EQ(escaped(utf8(0x200C)), "\\u200c");
  EXPECT_EQ(escaped(utf8(0x200F)), "\\u200f");
  EXPECT_EQ(escaped(utf8(0x2028)), "\\u2028");
  EXPECT_EQ(escaped(utf8(0x2029)), "\\u2029");
  EXPECT_EQ(escaped(utf8(0x202F)), "\\u202f");
  EXPECT_EQ(escaped(utf8(0x2060)), "\\u2060");
  EXPECT_EQ(escaped(utf8(0x206F)), "\\u206f");
  EXPECT_EQ(escaped(utf8(0xFFF0)), "\\ufff0");
  EXPECT_EQ(escaped(utf8(0xFFFF)), "\\uffff");
  // Just outside the ranges: left as UTF-8.
  for (std::uint32_t cp : {0x200Bu, 0x2010u, 0x2027u, 0x2030u, 0x205Fu, 0x2070u, 0xFFEFu, 0x10000u}) {
    EXPECT_EQ(escaped(utf8(cp)), utf8(cp)) << std::hex << cp;
  }
}

TEST(SockJsEscape, InvalidUtf8BecomesReplacementCharacters) {
  EXPECT_EQ(escaped("a\xff" "b"), "a\\ufffdb");
  EXPECT_EQ(escaped("\xc0\xaf"), "\\ufffd\\ufffd");          // overlong '/'
  EXPECT_EQ(escaped("\xed\xa0\x80"), "\\ufffd\\ufffd\\ufffd");  // UTF-8-encoded surrogate
  EXPECT_EQ(escaped("\xf4\x90\x80\x80"), "\\ufffd\\ufffd\\ufffd\\ufffd");  // above U+10FFFF
  EXPECT_EQ(escaped("ok\xe2\x82"), "ok\\ufffd\\ufffd");       // truncated at the end
  EXPECT_EQ(escaped("\x80"), "\\ufffd");                      // lone continuation
}

// Every scalar value survives escape + JSON parse, and nothing SockJS must escape is left raw.
TEST(SockJsEscape, EveryCodePointRoundTrips) {
  std::string batch;
  std::uint32_t first = 0;
  auto check = [&](std::uint32_t last) {
    const std::string e = escaped(batch);
    ASSERT_EQ(json_unquote(e), batch) << "code points " << std::hex << first << ".." << last;
    for (std::uint32_t raw : {0x2028u, 0x200Cu, 0x2060u, 0xFFF0u, 0xFFFFu}) {
      ASSERT_EQ(e.find(utf8(raw)), std::string::npos) << std::hex << raw;
    }
    for (unsigned char c : e) ASSERT_GE(c, 0x20);
    batch.clear();
  };
  for (std::uint32_t cp = 0; cp <= 0x10FFFF; ++cp) {
    if (cp >= 0xD800 && cp <= 0xDFFF) continue;
    if (batch.empty()) first = cp;
    batch += utf8(cp);
    if (batch.size() >= 16 * 1024) check(cp);
  }
  check(0x10FFFF);
}

TEST(SockJsEscape, ConcatenatesAtCodePointBoundaries) {
  const std::string a = "MESSAGE\nsubscription:", b = "sub-0", c = "\n\n{\"m\":\"가\u2028😀\"}" + std::string(1, '\0');
  EXPECT_EQ(escaped(a) + escaped(b) + escaped(c), escaped(a + b + c));
}

// ---- client payloads ----

TEST(SockJsDecode, XhrSendArray) {
  std::vector<std::string> out;
  ASSERT_FALSE(sj::decode_messages(R"(["a","b\u0000c","\ud55c\uae00 😀"])", sj::Source::xhr_send, out));
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(out[0], "a");
  EXPECT_EQ(out[1], std::string("b\0c", 3));
  EXPECT_EQ(out[2], "한글 😀");
}

TEST(SockJsDecode, EmptyArrayIsNoMessages) {
  std::vector<std::string> out;
  EXPECT_FALSE(sj::decode_messages("[]", sj::Source::xhr_send, out));
  EXPECT_FALSE(sj::decode_messages(" [ ] ", sj::Source::websocket, out));
  EXPECT_TRUE(out.empty());
}

TEST(SockJsDecode, EmptyPayload) {
  std::vector<std::string> out;
  const auto ec = sj::decode_messages("", sj::Source::xhr_send, out);
  EXPECT_EQ(ec, Error::payload_expected);
  EXPECT_EQ(ec.message(), "Payload expected.");
  // The websocket transport ignores empty messages.
  EXPECT_FALSE(sj::decode_messages("", sj::Source::websocket, out));
  EXPECT_TRUE(out.empty());
}

TEST(SockJsDecode, WebSocketAcceptsASingleString) {
  std::vector<std::string> out;
  ASSERT_FALSE(sj::decode_messages(R"("one")", sj::Source::websocket, out));
  ASSERT_FALSE(sj::decode_messages(R"(["two","three"])", sj::Source::websocket, out));
  EXPECT_EQ(out, (std::vector<std::string>{"one", "two", "three"}));
  EXPECT_EQ(sj::decode_messages(R"("one")", sj::Source::xhr_send, out), Error::broken_json);
}

TEST(SockJsDecode, BrokenJsonLeavesOutputUnchanged) {
  for (const char* bad : {"[\"a\"", "[\"a\",1]", "{\"a\":1}", "[[\"a\"]]", "null", "1", "x",
                          "[\"a\"] [\"b\"]", "[\"\xff\"]", "[\"a\",]",
                          // A lone surrogate (JS strings allow it) has no UTF-8 form.
                          "[\"\\ud800x\"]"}) {
    std::vector<std::string> out{"kept"};
    const auto ec = sj::decode_messages(bad, sj::Source::xhr_send, out);
    EXPECT_EQ(ec, Error::broken_json) << bad;
    EXPECT_EQ(ec.message(), "Broken JSON encoding.");
    EXPECT_EQ(out, std::vector<std::string>{"kept"}) << bad;
  }
}

TEST(SockJsDecode, LargePayloadBeyondTheScratchBuffer) {
  std::string payload = "[";
  for (int i = 0; i < 500; ++i) payload += (i ? ",\"" : "\"") + std::string(100, 'x') + "\"";
  payload += "]";
  std::vector<std::string> out;
  ASSERT_FALSE(sj::decode_messages(payload, sj::Source::xhr_send, out));
  EXPECT_EQ(out.size(), 500u);
  EXPECT_EQ(out.back(), std::string(100, 'x'));
}

TEST(SockJsDecode, WhatTheEncoderWritesDecodes) {
  using namespace std::string_view_literals;
  const std::vector<std::string_view> ms{"SEND\ndestination:/pub/chat/message\n\n{}\0"sv, "\u2028", "é"};
  std::string frame;
  sj::append_messages(frame, ms);
  std::vector<std::string> out;
  ASSERT_FALSE(sj::decode_messages(frame.substr(1), sj::Source::xhr_send, out));
  ASSERT_EQ(out.size(), ms.size());
  for (std::size_t i = 0; i < ms.size(); ++i) EXPECT_EQ(out[i], ms[i]);
}

// The hand-written decoder accepts and yields exactly what a JSON library does, for payloads
// glued from the pieces where decoders differ (escapes, surrogates, UTF-8, whitespace, nesting).
TEST(SockJsDecode, AgreesWithBoostJson) {
  const std::vector<std::string> pieces{
      "[", "]", ",", "\"", " ", "\n\t", "a", "\\n", "\\u00e9", "\\ud83d\\ude00", "\\ud800",
      "\\udc00", "\\u12", "\\x", "\\/", "\\\"", "\xc3\xa9", "\xc3", "\xed\xa0\x80", "\x01",
      "\xf0\x9f\x98\x80", "1", "null", "{", "}", ":", "\\", "\x7f", "\\uD83D\\uDE00", "\0"};
  const auto reference = [](std::string_view payload, sj::Source source, std::vector<std::string>& out) {
    boost::json::parse_options opts;
    opts.max_depth = 2;
    boost::system::error_code ec;
    const auto v = boost::json::parse(payload, ec, {}, opts);
    if (ec) return false;
    if (const auto* str = v.if_string()) {
      if (source != sj::Source::websocket) return false;
      out.emplace_back(*str);
      return true;
    }
    const auto* a = v.if_array();
    if (a == nullptr) return false;
    for (const auto& e : *a) {
      if (!e.is_string()) return false;
    }
    for (const auto& e : *a) out.emplace_back(e.get_string());
    return true;
  };
  std::size_t accepted = 0, rejected = 0;
  std::uint32_t seed = 12345;
  const auto next = [&seed] { return seed = seed * 1664525u + 1013904223u, seed >> 8; };
  for (int round = 0; round < 200'000; ++round) {
    std::string payload = round % 2 ? "[\"" : "\"";
    const std::size_t n = next() % 8;
    for (std::size_t k = 0; k < n; ++k) payload += pieces[next() % pieces.size()];
    if (next() % 4 != 0) payload += round % 2 ? "\"]" : "\"";
    for (const auto source : {sj::Source::xhr_send, sj::Source::websocket}) {
      std::vector<std::string> want, got;
      const bool ok = reference(payload, source, want);
      const auto ec = sj::decode_messages(payload, source, got);
      ASSERT_EQ(ok, !ec) << payload;
      ++(ok ? accepted : rejected);
      if (ok) ASSERT_EQ(got, want) << payload;
      else ASSERT_TRUE(got.empty()) << payload;
    }
  }
  // Both answers were exercised often.
  EXPECT_GT(accepted, 20'000u);
  EXPECT_GT(rejected, 20'000u);
}

// ---- info, prelude, misc ----

TEST(SockJsInfo, Body) {
  const auto v = boost::json::parse(sj::info_json(123456789u));
  const auto& o = v.as_object();
  EXPECT_EQ(o.at("websocket"), true);
  EXPECT_EQ(o.at("cookie_needed"), false);
  EXPECT_EQ(o.at("origins"), boost::json::parse(R"(["*:*"])"));
  EXPECT_EQ(o.at("entropy").to_number<std::uint32_t>(), 123456789u);
  EXPECT_EQ(boost::json::parse(sj::info_json(0, false)).as_object().at("websocket"), false);
}

TEST(SockJsPrelude, TwoKilobytesOfHThenNewline) {
  const auto p = sj::xhr_streaming_prelude();
  ASSERT_EQ(p.size(), 2049u);
  EXPECT_EQ(p.find_first_not_of('h'), 2048u);
  EXPECT_EQ(p.back(), '\n');
}

TEST(SockJsMisc, NewlineFramingAndNames) {
  EXPECT_FALSE(sj::frames_end_with_newline(Transport::websocket));
  EXPECT_TRUE(sj::frames_end_with_newline(Transport::xhr));
  EXPECT_TRUE(sj::frames_end_with_newline(Transport::xhr_streaming));
  EXPECT_EQ(sj::greeting_body, "Welcome to SockJS!\n");
  EXPECT_STREQ(sj::error_category().name(), "sockjs");
}

// ---- the xhr session state machine ----

namespace {
const std::string prelude(sj::xhr_streaming_prelude());
// net::Limits' defaults, as chatd runs the session.
constexpr sj::Session::Limits kLimits{.max_pending_bytes = 1024 * 1024, .streaming_bytes_limit = 128 * 1024};
}  // namespace

TEST(SockJsSession, PollingOpensThenWaitsThenTakesOneFramePerRequest) {
  sj::Session s(kLimits);
  auto w = s.attach(Transport::xhr);
  EXPECT_EQ(w.bytes, "o\n");
  EXPECT_TRUE(w.finish);
  EXPECT_FALSE(s.has_receiver());
  EXPECT_TRUE(s.opened());

  w = s.attach(Transport::xhr);  // nothing waits: the request is held open
  EXPECT_EQ(w.bytes, "");
  EXPECT_FALSE(w.finish);
  EXPECT_TRUE(s.has_receiver());

  ASSERT_TRUE(s.push("MESSAGE\n\n안녕 😀" + std::string(1, '\0')));
  w = s.flush();
  EXPECT_EQ(w.bytes, "a[\"MESSAGE\\n\\n안녕 😀\\u0000\"]\n");
  EXPECT_TRUE(w.finish);
  EXPECT_FALSE(s.has_receiver());
  EXPECT_EQ(s.pending_bytes(), 0u);
}

TEST(SockJsSession, MessagesWaitForTheNextPoll) {
  sj::Session s(kLimits);
  s.attach(Transport::xhr);
  ASSERT_TRUE(s.push("m1"));
  ASSERT_TRUE(s.push("m2"));
  EXPECT_EQ(s.flush().bytes, "");  // no receiver: they wait
  EXPECT_EQ(s.pending_bytes(), 4u);
  const auto w = s.attach(Transport::xhr);
  EXPECT_EQ(w.bytes, "a[\"m1\",\"m2\"]\n");
  EXPECT_TRUE(w.finish);
}

TEST(SockJsSession, StreamingKeepsTheResponseOpen) {
  sj::Session s(kLimits);
  auto w = s.attach(Transport::xhr_streaming);
  EXPECT_EQ(w.bytes, prelude + "o\n");
  EXPECT_FALSE(w.finish);
  ASSERT_TRUE(s.push("x"));
  w = s.flush();
  EXPECT_EQ(w.bytes, "a[\"x\"]\n");
  EXPECT_FALSE(w.finish);
  w = s.heartbeat();
  EXPECT_EQ(w.bytes, "h\n");
  EXPECT_FALSE(w.finish);
  EXPECT_TRUE(s.has_receiver());

  // A new streaming response after the first went away gets no second "o".
  s.detach();
  ASSERT_TRUE(s.push("y"));
  w = s.attach(Transport::xhr_streaming);
  EXPECT_EQ(w.bytes, prelude + "a[\"y\"]\n");
  EXPECT_FALSE(w.finish);
}

TEST(SockJsSession, StreamingResponseEndsAfterItsByteLimit) {
  sj::Session s({.max_pending_bytes = 1 << 20, .streaming_bytes_limit = 2100});
  ASSERT_FALSE(s.attach(Transport::xhr_streaming).finish);  // 2051 bytes so far
  ASSERT_TRUE(s.push(std::string(20, 'a')));
  EXPECT_FALSE(s.flush().finish);  // 2077
  ASSERT_TRUE(s.push(std::string(30, 'b')));
  const auto w = s.flush();  // 2112 >= 2100
  EXPECT_TRUE(w.finish);
  EXPECT_FALSE(s.has_receiver());
  EXPECT_EQ(s.heartbeat().bytes, "");
}

TEST(SockJsSession, ASecondReceiverIsTurnedAway) {
  sj::Session s(kLimits);
  s.attach(Transport::xhr_streaming);
  const auto w = s.attach(Transport::xhr);
  EXPECT_EQ(w.bytes, "c[2010,\"Another connection still open\"]\n");
  EXPECT_TRUE(w.finish);
  EXPECT_TRUE(s.has_receiver());  // the first one stays
  ASSERT_TRUE(s.push("still here"));
  EXPECT_EQ(s.flush().bytes, "a[\"still here\"]\n");
}

TEST(SockJsSession, CloseFlushesThenSendsTheCloseFrameToEveryLaterReceiver) {
  sj::Session s(kLimits);
  s.attach(Transport::xhr_streaming);
  ASSERT_TRUE(s.push("last words"));
  auto w = s.close(sj::go_away);
  EXPECT_EQ(w.bytes, "a[\"last words\"]\nc[3000,\"Go away!\"]\n");
  EXPECT_TRUE(w.finish);
  EXPECT_TRUE(s.closed());
  EXPECT_FALSE(s.push("too late"));
  w = s.attach(Transport::xhr);
  EXPECT_EQ(w.bytes, "c[3000,\"Go away!\"]\n");
  EXPECT_TRUE(w.finish);
  // A later close() keeps the first reason.
  s.close(sj::connection_interrupted);
  EXPECT_EQ(s.attach(Transport::xhr).bytes, "c[3000,\"Go away!\"]\n");
}

TEST(SockJsSession, CloseWithoutAReceiverWaitsForTheNextOne) {
  sj::Session s(kLimits);
  s.attach(Transport::xhr);  // "o"
  ASSERT_TRUE(s.push("m"));
  EXPECT_EQ(s.close({3000, "Go away!"}).bytes, "");
  const auto w = s.attach(Transport::xhr_streaming);
  EXPECT_EQ(w.bytes, prelude + "a[\"m\"]\nc[3000,\"Go away!\"]\n");
  EXPECT_TRUE(w.finish);
}

TEST(SockJsSession, PendingBytesAreBounded) {
  sj::Session s({.max_pending_bytes = 10, .streaming_bytes_limit = 128 * 1024});
  EXPECT_TRUE(s.push("12345"));
  EXPECT_TRUE(s.push("67890"));
  EXPECT_FALSE(s.push("x"));
  EXPECT_EQ(s.pending_bytes(), 10u);
  s.attach(Transport::xhr);  // "o" first
  EXPECT_EQ(s.attach(Transport::xhr).bytes, "a[\"12345\",\"67890\"]\n");
  EXPECT_TRUE(s.push("x"));  // room again once delivered
}

// A history replay is sent whole: it may pass the bound by its own size, and what follows it
// is measured against bound + replay until a receiver took them; then the plain bound again.
TEST(SockJsSession, AReplayPassesTheBoundUntilTaken) {
  sj::Session s({.max_pending_bytes = 10, .streaming_bytes_limit = 128 * 1024, .max_replay_bytes = 100});
  EXPECT_TRUE(s.push("12345"));
  EXPECT_TRUE(s.push("replay-678", true));
  EXPECT_TRUE(s.push("replay-901", true));
  EXPECT_EQ(s.pending_bytes(), 25u);
  EXPECT_TRUE(s.push("live5"));    // 30 of 10 + 20
  EXPECT_FALSE(s.push("x"));       // a reader that takes nothing is still cut off
  s.attach(Transport::xhr);  // "o" first
  EXPECT_EQ(s.attach(Transport::xhr).bytes, "a[\"12345\",\"replay-678\",\"replay-901\",\"live5\"]\n");
  EXPECT_TRUE(s.push("1234567890"));
  EXPECT_FALSE(s.push("x"));  // the allowance went with the replay
}

// Many rooms replaying to a client that does not read: the allowance stops at max_replay_bytes.
TEST(SockJsSession, ReplaysTogetherPassTheBoundByOneReplayAtMost) {
  sj::Session s({.max_pending_bytes = 10, .streaming_bytes_limit = 128 * 1024, .max_replay_bytes = 30});
  EXPECT_TRUE(s.push("replay-678", true));
  EXPECT_TRUE(s.push("replay-901", true));
  EXPECT_TRUE(s.push("replay-234", true));  // 30: the whole allowance
  EXPECT_TRUE(s.push("replay-5", true));    // 38 of 10 + 30
  EXPECT_FALSE(s.push("replay-67", true));  // 47 would pass 10 + 30
}

TEST(SockJsSession, NothingToWriteWithoutAReceiver) {
  sj::Session s(kLimits);
  EXPECT_EQ(s.heartbeat().bytes, "");
  EXPECT_EQ(s.flush().bytes, "");
  EXPECT_FALSE(s.opened());
}
