// Unit tests for the STOMP codec: every command, escaping per version, every split offset,
// glued frames, heart-beats, bounds and each error code.
#include "stomp/stomp.h"

#include <gtest/gtest.h>

#include <cctype>
#include <cstdint>
#include <ostream>
#include <set>
#include <string>
#include <vector>

namespace chatd::stomp {

// Lets EXPECT_EQ compare and print frames.
bool operator==(const Header& a, const Header& b) { return a.name == b.name && a.value == b.value; }
bool operator==(const Frame& a, const Frame& b) {
  return a.command == b.command && a.headers == b.headers && a.body == b.body;
}
void PrintTo(const Frame& f, std::ostream* os) {
  *os << to_string(f.command) << " {";
  for (const Header& h : f.headers) *os << " [" << h.name << "]=[" << h.value << "]";
  *os << " } body(" << f.body.size() << ")=[" << f.body << "]";
}

namespace {

using namespace std::string_literals;
using Status = Parser::Status;

struct Parsed {
  std::vector<Frame> frames;
  std::error_code error;
  std::uint64_t heartbeats = 0;
};

// Feeds `chunks` one after another, as the loop in stomp.h shows, and collects what comes out.
Parsed feed(const std::vector<std::string_view>& chunks, Version v = Version::v1_2,
            Limits limits = {}) {
  Parser parser(limits);
  parser.set_version(v);
  Parsed out;
  for (std::string_view rest : chunks) {
    while (!rest.empty()) {
      const auto r = parser.consume(rest);
      EXPECT_LE(r.used, rest.size());
      rest.remove_prefix(r.used);
      if (r.status == Status::frame) {
        out.frames.push_back(parser.frame());
      } else if (r.status == Status::error) {
        out.error = parser.error();
        out.heartbeats = parser.heartbeats();
        return out;
      } else {
        EXPECT_TRUE(rest.empty()) << "need_more must use every byte";
        break;
      }
    }
  }
  out.heartbeats = parser.heartbeats();
  return out;
}

Parsed feed_all(std::string_view bytes, Version v = Version::v1_2, Limits limits = {}) {
  return feed({bytes}, v, limits);
}

// Returns the only frame `bytes` holds, failing the test otherwise.
Frame parse_one(std::string_view bytes, Version v = Version::v1_2) {
  Parsed p = feed_all(bytes, v);
  EXPECT_FALSE(p.error) << p.error.message();
  EXPECT_EQ(p.frames.size(), 1u);
  return p.frames.empty() ? Frame{} : p.frames.front();
}

Frame make_frame(Command c, std::vector<Header> headers, std::string body = {}) {
  Frame f;
  f.command = c;
  f.headers = std::move(headers);
  f.body = std::move(body);
  return f;
}

const Command kAllCommands[] = {
    Command::connect, Command::stomp,  Command::connected, Command::send,
    Command::subscribe, Command::unsubscribe, Command::ack, Command::nack,
    Command::begin,   Command::commit, Command::abort,     Command::disconnect,
    Command::message, Command::receipt, Command::error,
};

// Wire samples that every split test runs over; each is valid 1.2.
const std::vector<std::string> kSamples = {
    "CONNECT\naccept-version:1.1,1.2\nhost:localhost\nheart-beat:10000,10000\n\n\0"s,
    "CONNECTED\r\nversion:1.2\r\nheart-beat:0,0\r\n\r\n\0"s,
    "SUBSCRIBE\nid:sub-0\ndestination:/sub/chat/room/42\n\n\0"s,
    "SEND\ndestination:/pub/chat/message\ncontent-type:application/json\n\n"
    "{\"type\":\"TALK\",\"roomId\":\"42\",\"sender\":\"kim\",\"message\":\"hi\"}\0"s,
    "SEND\ndestination:/q\ncontent-length:5\n\na\0b\0c\0"s,
    "MESSAGE\nsubscription:s\\c1\nmessage-id:7\nx\\\\y:a\\nb\\rc\ndestination:/d\n\nbody\0"s,
    "\n\r\nDISCONNECT\nreceipt:77\n\n\0\n"s,
    "SEND\ndestination:/a\n\none\0SEND\ndestination:/b\n\ntwo\0\r\n\nACK\nid:1\n\n\0"s,
    "ERROR\nmessage:bad\ncontent-length:0\n\n\0"s,
};

// ---- commands -------------------------------------------------------------------------------

TEST(StompParse, EveryCommandParses) {
  for (const Command c : kAllCommands) {
    const std::string wire = std::string(to_string(c)) + "\n\n" + '\0';
    const Frame f = parse_one(wire);
    EXPECT_EQ(f.command, c) << wire;
    EXPECT_TRUE(f.headers.empty());
    EXPECT_TRUE(f.body.empty());
  }
}

TEST(StompParse, CommandNamesAreCaseSensitive) {
  EXPECT_EQ(feed_all("send\n\n\0"s).error, Error::unknown_command);
  EXPECT_EQ(feed_all("Send\n\n\0"s).error, Error::unknown_command);
  EXPECT_EQ(feed_all("SENDX\n\n\0"s).error, Error::unknown_command);
  EXPECT_EQ(feed_all(" SEND\n\n\0"s).error, Error::unknown_command);
}

TEST(StompParse, LongFirstLineIsRejectedBeforeItsEnd) {
  Parser p;
  const std::string junk(1000, 'X');  // no LF at all
  const auto r = p.consume(junk);
  EXPECT_EQ(r.status, Status::error);
  EXPECT_LT(r.used, 20u);
  EXPECT_EQ(p.error(), Error::unknown_command);
}

TEST(StompParse, VersionAndCommandNames) {
  EXPECT_EQ(to_string(Version::v1_0), "1.0");
  EXPECT_EQ(to_string(Version::v1_1), "1.1");
  EXPECT_EQ(to_string(Version::v1_2), "1.2");
  EXPECT_EQ(to_string(Command::unsubscribe), "UNSUBSCRIBE");
  EXPECT_EQ(to_string(Command::nack), "NACK");
}

TEST(StompParse, EmptyInputNeedsMore) {
  Parser p;
  const auto r = p.consume({});
  EXPECT_EQ(r.status, Status::need_more);
  EXPECT_EQ(r.used, 0u);
}

TEST(StompParse, HeadersAndBodyInWireOrder) {
  const Frame f = parse_one(kSamples[3]);
  EXPECT_EQ(f.command, Command::send);
  ASSERT_EQ(f.headers.size(), 2u);
  EXPECT_EQ(f.headers[0].name, "destination");
  EXPECT_EQ(f.headers[0].value, "/pub/chat/message");
  EXPECT_EQ(f.headers[1].name, "content-type");
  EXPECT_EQ(f.headers[1].value, "application/json");
  EXPECT_EQ(f.body, R"({"type":"TALK","roomId":"42","sender":"kim","message":"hi"})");
  EXPECT_EQ(f.header("missing"), nullptr);
}

TEST(StompParse, EmptyValueAndColonInValue) {
  const Frame f = parse_one("SEND\nempty:\nurl:http://x:80/\n\n\0"s);
  ASSERT_EQ(f.headers.size(), 2u);
  EXPECT_EQ(f.headers[0].value, "");
  // Only the first ':' splits; a raw ':' in a 1.2 value is tolerated as most brokers do.
  EXPECT_EQ(f.headers[1].value, "http://x:80/");
}

TEST(StompParse, RepeatedHeadersAreKeptAndTheFirstWins) {
  const Frame f = parse_one("MESSAGE\nfoo:World\nfoo:Hello\n\n\0"s);
  ASSERT_EQ(f.headers.size(), 2u);
  EXPECT_EQ(f.headers[1].value, "Hello");
  ASSERT_NE(f.header("foo"), nullptr);
  EXPECT_EQ(*f.header("foo"), "World");
}

TEST(StompParse, FirstContentLengthWins) {
  const Frame f = parse_one("SEND\ncontent-length:3\ncontent-length:1\n\nabc\0"s);
  EXPECT_EQ(f.body, "abc");
}

// ---- escaping -------------------------------------------------------------------------------

TEST(StompEscape, V12DecodesAllFour) {
  const Frame f = parse_one("SEND\na\\cb:x\\ny\\rz\\\\w\n\n\0"s, Version::v1_2);
  ASSERT_EQ(f.headers.size(), 1u);
  EXPECT_EQ(f.headers[0].name, "a:b");
  EXPECT_EQ(f.headers[0].value, "x\ny\rz\\w");
}

TEST(StompEscape, V11DecodesThreeAndRejectsCr) {
  const Frame f = parse_one("SEND\na\\cb:x\\nz\\\\w\n\n\0"s, Version::v1_1);
  ASSERT_EQ(f.headers.size(), 1u);
  EXPECT_EQ(f.headers[0].name, "a:b");
  EXPECT_EQ(f.headers[0].value, "x\nz\\w");
  EXPECT_EQ(feed_all("SEND\na:x\\ry\n\n\0"s, Version::v1_1).error, Error::bad_escape);
}

TEST(StompEscape, V10DecodesNothing) {
  const Frame f = parse_one("SEND\na:x\\ny\\cz\\t\\\n\n\0"s, Version::v1_0);
  ASSERT_EQ(f.headers.size(), 1u);
  EXPECT_EQ(f.headers[0].value, "x\\ny\\cz\\t\\");
}

TEST(StompEscape, UndefinedEscapesAreErrors) {
  for (const Version v : {Version::v1_1, Version::v1_2}) {
    EXPECT_EQ(feed_all("SEND\na:x\\ty\n\n\0"s, v).error, Error::bad_escape);
    EXPECT_EQ(feed_all("SEND\na:trailing\\\n\n\0"s, v).error, Error::bad_escape);
    EXPECT_EQ(feed_all("SEND\nna\\me:v\n\n\0"s, v).error, Error::bad_escape);
  }
}

TEST(StompEscape, HandshakeFramesAreNeverUnescaped) {
  for (const Command c : {Command::connect, Command::stomp, Command::connected}) {
    const std::string wire = std::string(to_string(c)) + "\nlogin:a\\cb\\t\n\n" + '\0';
    const Frame f = parse_one(wire, Version::v1_2);
    ASSERT_EQ(f.headers.size(), 1u);
    EXPECT_EQ(f.headers[0].value, "a\\cb\\t") << wire;
  }
}

TEST(StompEscape, EscapeHeaderKnownValues) {
  const std::string raw = "a:b\nc\rd\\e";
  EXPECT_EQ(escape_header(raw, Version::v1_2), "a\\cb\\nc\\rd\\\\e");
  EXPECT_EQ(escape_header(raw, Version::v1_1), "a\\cb\\nc\rd\\\\e");
  // Unescaped (1.0, CONNECTED): a LF would end the header, so it becomes a space.
  EXPECT_EQ(escape_header(raw, Version::v1_0), "a:b c\rd\\e");
  EXPECT_EQ(escape_header(raw, Version::v1_2, Command::connected), "a:b c\rd\\e");
  EXPECT_EQ(escape_header("plain", Version::v1_2), "plain");
}

TEST(StompEscape, RoundTripPerVersion) {
  struct Case {
    Version v;
    std::string value;  // what this version can carry
  };
  const Case cases[] = {
      {Version::v1_2, "colon:newline\ncr\rbackslash\\end"},
      {Version::v1_1, "colon:newline\ncr\rmid backslash\\end"},
      {Version::v1_0, "back\\slash and \\n literally"},
  };
  for (const Case& c : cases) {
    const std::string name = c.v == Version::v1_0 ? "k" : "k:ey\\";
    const Frame f = make_frame(Command::message, {{name, c.value}, {"destination", "/d"}}, "b");
    const std::string wire = encode(f, c.v);
    Frame expected = f;
    expected.headers.push_back({"content-length", "1"});
    EXPECT_EQ(parse_one(wire, c.v), expected) << to_string(c.v);
  }
}

// ---- encoding -------------------------------------------------------------------------------

TEST(StompEncode, KnownWireBytes) {
  const Frame f = make_frame(Command::send, {{"destination", "/pub/chat/message"}}, "hi");
  EXPECT_EQ(encode(f, Version::v1_2), "SEND\ndestination:/pub/chat/message\ncontent-length:2\n\nhi\0"s);
}

TEST(StompEncode, ContentLengthOnlyWhenBodyAndAbsent) {
  EXPECT_EQ(encode(make_frame(Command::receipt, {{"receipt-id", "1"}}), Version::v1_2),
            "RECEIPT\nreceipt-id:1\n\n\0"s);
  EXPECT_EQ(encode(make_frame(Command::send, {{"content-length", "3"}}, "abc"), Version::v1_2),
            "SEND\ncontent-length:3\n\nabc\0"s);
}

TEST(StompEncode, HandshakeHeadersAreWrittenRaw) {
  const Frame f = make_frame(Command::connected, {{"server", "chatd:1"}, {"version", "1.2"}});
  EXPECT_EQ(encode(f, Version::v1_2), "CONNECTED\nserver:chatd:1\nversion:1.2\n\n\0"s);
}

TEST(StompEncode, BodyWithNulRoundTrips) {
  const Frame f = make_frame(Command::message, {{"destination", "/d"}}, "a\0b\0"s);
  Frame expected = f;
  expected.headers.push_back({"content-length", "4"});
  EXPECT_EQ(parse_one(encode(f, Version::v1_2)), expected);
}

TEST(StompEncode, EncodeMessageParsesBackWithSubscription) {
  const std::string body = R"({"type":"TALK","message":"a\u0000b"})"s + '\0' + "tail";
  const SplitMessage m = encode_message("/sub/chat/room/42", "m-1", "application/json", body);
  EXPECT_EQ(m.head.substr(m.head.size() - 13), "subscription:");
  EXPECT_EQ(m.tail, "\n\n"s + body + '\0');
  EXPECT_EQ(m.message_id(), "m-1");
  EXPECT_EQ(encode_message("/d", "room-closed", "text/plain", "x").message_id(), "room-closed");

  for (const Version v : {Version::v1_1, Version::v1_2}) {
    const std::string sub = "sub:0";  // needs escaping: the caller escapes it
    const std::string wire = m.head + escape_header(sub, v) + m.tail;
    const Frame expected = make_frame(Command::message,
                                      {{"destination", "/sub/chat/room/42"},
                                       {"message-id", "m-1"},
                                       {"content-type", "application/json"},
                                       {"content-length", std::to_string(body.size())},
                                       {"subscription", sub}},
                                      body);
    EXPECT_EQ(parse_one(wire, v), expected);
  }
}

TEST(StompEncode, EncodeMessageEmptyBody) {
  const SplitMessage m = encode_message("/d", "1", "text/plain", "");
  const Frame f = parse_one(m.head + "s" + m.tail);
  ASSERT_NE(f.header("content-length"), nullptr);
  EXPECT_EQ(*f.header("content-length"), "0");
  EXPECT_EQ(*f.header("subscription"), "s");
  EXPECT_TRUE(f.body.empty());
}

// ---- incremental parsing --------------------------------------------------------------------

TEST(StompIncremental, EverySampleSplitAtEveryOffset) {
  for (const std::string& s : kSamples) {
    const Parsed whole = feed_all(s);
    ASSERT_FALSE(whole.error) << whole.error.message() << " in " << s;
    ASSERT_FALSE(whole.frames.empty());
    for (std::size_t cut = 0; cut <= s.size(); ++cut) {
      const std::string_view all(s);
      const Parsed split = feed({all.substr(0, cut), all.substr(cut)});
      EXPECT_FALSE(split.error) << "cut " << cut;
      EXPECT_EQ(split.frames, whole.frames) << "cut " << cut << " of " << s;
      EXPECT_EQ(split.heartbeats, whole.heartbeats) << "cut " << cut;
    }
  }
}

TEST(StompIncremental, EverySampleByteByByte) {
  for (const std::string& s : kSamples) {
    std::vector<std::string_view> bytes;
    for (std::size_t i = 0; i < s.size(); ++i) bytes.push_back(std::string_view(s).substr(i, 1));
    const Parsed whole = feed_all(s);
    const Parsed one = feed(bytes);
    EXPECT_FALSE(one.error);
    EXPECT_EQ(one.frames, whole.frames) << s;
    EXPECT_EQ(one.heartbeats, whole.heartbeats);
  }
}

TEST(StompIncremental, AllSamplesGluedInOneBuffer) {
  std::string glued;
  std::vector<Frame> expected;
  for (const std::string& s : kSamples) {
    glued += s;
    for (Frame& f : feed_all(s).frames) expected.push_back(std::move(f));
  }
  const Parsed p = feed_all(glued);
  EXPECT_FALSE(p.error);
  EXPECT_EQ(p.frames, expected);
}

TEST(StompIncremental, GluedFramesComeOneAtATime) {
  const std::string one = "SEND\ndestination:/a\n\none\0"s;
  const std::string two = "SEND\ndestination:/b\ncontent-length:3\n\ntwo\0"s;
  Parser p;
  const std::string both = one + two;
  auto r = p.consume(both);
  EXPECT_EQ(r.status, Status::frame);
  EXPECT_EQ(r.used, one.size());
  EXPECT_EQ(p.frame().body, "one");
  r = p.consume(std::string_view(both).substr(one.size()));
  EXPECT_EQ(r.status, Status::frame);
  EXPECT_EQ(r.used, two.size());
  EXPECT_EQ(p.frame().body, "two");
  ASSERT_EQ(p.frame().headers.size(), 2u);  // nothing left from the first frame
  EXPECT_EQ(p.frame().headers[0].value, "/b");
}

TEST(StompIncremental, FrameSurvivesFollowingHeartbeats) {
  Parser p;
  ASSERT_EQ(p.consume("SEND\n\nx\0"s).status, Status::frame);
  const auto r = p.consume("\n\r\n");
  EXPECT_EQ(r.status, Status::need_more);
  EXPECT_EQ(r.used, 3u);
  EXPECT_EQ(p.frame().body, "x");
  EXPECT_EQ(p.heartbeats(), 2u);
}

TEST(StompIncremental, ReusedParserGivesFreshFrames) {
  Parser p;
  for (int i = 0; i < 50; ++i) {
    const std::string wire = "SEND\nn:" + std::to_string(i) + "\n\nbody" + std::to_string(i) + '\0';
    ASSERT_EQ(p.consume(wire).status, Status::frame);
    ASSERT_EQ(p.frame().headers.size(), 1u);
    EXPECT_EQ(p.frame().headers[0].value, std::to_string(i));
    EXPECT_EQ(p.frame().body, "body" + std::to_string(i));
  }
}

TEST(StompIncremental, MovedOutFrameDoesNotBreakTheParser) {
  Parser p;
  ASSERT_EQ(p.consume("SEND\na:1\nb:2\n\nx\0"s).status, Status::frame);
  const Frame taken = std::move(p.frame());
  ASSERT_EQ(p.consume("SEND\nc:3\n\ny\0"s).status, Status::frame);
  EXPECT_EQ(p.frame(), make_frame(Command::send, {{"c", "3"}}, "y"));
  EXPECT_EQ(taken, make_frame(Command::send, {{"a", "1"}, {"b", "2"}}, "x"));
}

// ---- heart-beats and line endings ------------------------------------------------------------

TEST(StompHeartbeat, LfAndCrlfBetweenFramesAreCounted) {
  const Parsed p = feed_all("\n\n\r\nSEND\n\na\0\r\n\nSEND\n\nb\0\n"s);
  EXPECT_FALSE(p.error);
  ASSERT_EQ(p.frames.size(), 2u);
  EXPECT_EQ(p.frames[0].body, "a");
  EXPECT_EQ(p.frames[1].body, "b");
  EXPECT_EQ(p.heartbeats, 6u);
}

TEST(StompHeartbeat, OnlyHeartbeats) {
  Parser p;
  for (int i = 0; i < 10; ++i) {
    const auto r = p.consume(i % 2 ? "\n" : "\r\n");
    EXPECT_EQ(r.status, Status::need_more);
  }
  EXPECT_EQ(p.heartbeats(), 10u);
}

TEST(StompHeartbeat, CrNotFollowedByLfIsAnError) {
  EXPECT_EQ(feed_all("\rSEND\n\n\0"s).error, Error::unknown_command);
}

TEST(StompLines, CrlfLineEndings) {
  const Frame f = parse_one("SEND\r\ndestination:/a\r\nreceipt:9\r\n\r\nbody\0"s);
  EXPECT_EQ(f, make_frame(Command::send, {{"destination", "/a"}, {"receipt", "9"}}, "body"));
}

TEST(StompLines, CrlfLineEndingsInOlderVersions) {
  for (const Version v : {Version::v1_0, Version::v1_1}) {
    const Frame f = parse_one("SEND\r\ndestination:/a\r\n\r\n\0"s, v);
    EXPECT_EQ(f, make_frame(Command::send, {{"destination", "/a"}}));
  }
}

// ---- bodies ---------------------------------------------------------------------------------

TEST(StompBody, NulInsideContentLengthBody) {
  const Frame f = parse_one("SEND\ncontent-length:5\n\na\0b\0c\0"s);
  EXPECT_EQ(f.body, "a\0b\0c"s);
}

TEST(StompBody, ZeroContentLength) {
  const Frame f = parse_one("SEND\ncontent-length:0\n\n\0"s);
  EXPECT_TRUE(f.body.empty());
}

TEST(StompBody, WithoutContentLengthEndsAtFirstNul) {
  Parser p;
  const std::string wire = "SEND\n\nab\0cd"s;
  const auto r = p.consume(wire);
  EXPECT_EQ(r.status, Status::frame);
  EXPECT_EQ(r.used, wire.size() - 2);
  EXPECT_EQ(p.frame().body, "ab");
}

TEST(StompBody, MissingNulAfterContentLengthBody) {
  const Parsed p = feed_all("SEND\ncontent-length:2\n\nabc\0"s);
  EXPECT_TRUE(p.frames.empty());
  EXPECT_EQ(p.error, Error::missing_nul);
}

TEST(StompBody, MissingNulDetectedAcrossSplit) {
  const Parsed p = feed({"SEND\ncontent-length:2\n\nab", "X"});
  EXPECT_EQ(p.error, Error::missing_nul);
}

// ---- bounds and errors ----------------------------------------------------------------------

TEST(StompBounds, FrameOfExactlyTheLimitIsAccepted) {
  const std::string wire = "SEND\n\n"s + std::string(100, 'x') + '\0';
  Limits limits;
  limits.max_frame_bytes = wire.size();
  EXPECT_EQ(feed_all(wire, Version::v1_2, limits).frames.size(), 1u);
  limits.max_frame_bytes = wire.size() - 1;
  EXPECT_EQ(feed_all(wire, Version::v1_2, limits).error, Error::frame_too_large);
}

TEST(StompBounds, OversizedBodyIsRejectedWithoutBufferingIt) {
  Limits limits;
  limits.max_frame_bytes = 1024;
  Parser p(limits);
  ASSERT_EQ(p.consume("SEND\n\n").status, Status::need_more);
  const std::string chunk(100, 'x');
  std::size_t fed = 6;
  Status status = Status::need_more;
  for (int i = 0; i < 1000 && status == Status::need_more; ++i) {
    const auto r = p.consume(chunk);
    fed += r.used;
    status = r.status;
  }
  EXPECT_EQ(status, Status::error);
  EXPECT_EQ(p.error(), Error::frame_too_large);
  EXPECT_LE(fed, limits.max_frame_bytes + 1);
}

TEST(StompBounds, OversizedHeadersAreRejected) {
  Limits limits;
  limits.max_frame_bytes = 256;
  limits.max_header_line = 1000;
  std::string wire = "SEND\n";
  for (int i = 0; i < 20; ++i) wire += "header" + std::to_string(i) + ":some value\n";
  EXPECT_EQ(feed_all(wire, Version::v1_2, limits).error, Error::frame_too_large);
}

TEST(StompBounds, ContentLengthBeyondFrameIsRejectedBeforeTheBody) {
  Limits limits;
  limits.max_frame_bytes = 100;
  Parser p(limits);
  // 90 fits the limit on its own, but not with the head and the NUL.
  const auto r = p.consume("SEND\ncontent-length:90\n\n");
  EXPECT_EQ(r.status, Status::error);
  EXPECT_EQ(p.error(), Error::frame_too_large);
}

TEST(StompBounds, MaxHeaders) {
  Limits limits;
  limits.max_headers = 3;
  const std::string three = "SEND\na:1\nb:2\nc:3\n\n\0"s;
  EXPECT_EQ(feed_all(three, Version::v1_2, limits).frames.size(), 1u);
  const std::string four = "SEND\na:1\nb:2\nc:3\nd:4\n\n\0"s;
  EXPECT_EQ(feed_all(four, Version::v1_2, limits).error, Error::too_many_headers);
}

TEST(StompBounds, MaxHeaderLine) {
  Limits limits;
  limits.max_header_line = 20;
  const std::string line20 = "name:" + std::string(15, 'v');
  EXPECT_EQ(feed_all("SEND\n" + line20 + "\n\n" + '\0', Version::v1_2, limits).frames.size(), 1u);
  // The CR of a CRLF is not part of the line.
  EXPECT_EQ(feed_all("SEND\n" + line20 + "\r\n\n" + '\0', Version::v1_2, limits).frames.size(), 1u);
  const std::string line21 = line20 + "v";
  EXPECT_EQ(feed_all("SEND\n" + line21 + "\n\n" + '\0', Version::v1_2, limits).error,
            Error::header_too_long);
  EXPECT_EQ(feed_all("SEND\n" + line21 + "\r\n\n" + '\0', Version::v1_2, limits).error,
            Error::header_too_long);
}

TEST(StompBounds, LongHeaderLineIsRejectedBeforeItsEnd) {
  Limits limits;
  limits.max_header_line = 64;
  limits.max_frame_bytes = 1 << 20;
  Parser p(limits);
  ASSERT_EQ(p.consume("SEND\n").status, Status::need_more);
  const auto r = p.consume(std::string(1000, 'h'));
  EXPECT_EQ(r.status, Status::error);
  EXPECT_EQ(p.error(), Error::header_too_long);
}

TEST(StompBounds, BadContentLength) {
  Limits limits;
  limits.max_frame_bytes = 1000;
  for (const char* value : {"", "abc", "-1", "+1", " 5", "5 ", "1e3", "0x10", "1001",
                            "99999999999999999999999999999999"}) {
    const std::string wire = "SEND\ncontent-length:" + std::string(value) + "\n\n" + '\0';
    EXPECT_EQ(feed_all(wire, Version::v1_2, limits).error, Error::bad_content_length) << value;
  }
  // Leading zeros are still a plain decimal.
  EXPECT_EQ(feed_all("SEND\ncontent-length:003\n\nabc\0"s, Version::v1_2, limits).frames.size(), 1u);
}

TEST(StompBounds, UnlimitedLimitsDoNotOverflow) {
  Limits none;
  none.max_frame_bytes = SIZE_MAX;
  none.max_headers = SIZE_MAX;
  none.max_header_line = SIZE_MAX;
  for (const std::string& s : kSamples) {
    EXPECT_FALSE(feed_all(s, Version::v1_2, none).error) << s;
  }
  // 2^64 + 3 would wrap to 3 with unchecked arithmetic.
  EXPECT_EQ(feed_all("SEND\ncontent-length:18446744073709551619\n\nabc\0"s, Version::v1_2, none).error,
            Error::bad_content_length);
  EXPECT_EQ(feed_all("SEND\ncontent-length:18446744073709551615\n\n"s, Version::v1_2, none).error,
            Error::frame_too_large);
}

TEST(StompErrors, MalformedHeader) {
  EXPECT_EQ(feed_all("SEND\nno colon here\n\n\0"s).error, Error::malformed_header);
  EXPECT_EQ(feed_all("SEND\n:empty name\n\n\0"s).error, Error::malformed_header);
}

// Header values are sent back in text frames (receipt-id, subscription), so they must be UTF-8;
// a binary WebSocket message could carry any byte. Bodies may hold anything.
TEST(StompErrors, HeaderLinesMustBeUtf8) {
  EXPECT_EQ(feed_all("SEND\nreceipt:r\xfe\xff\n\n\0"s).error, Error::header_not_utf8);
  EXPECT_EQ(feed_all("SEND\nid\xc3:x\n\n\0"s).error, Error::header_not_utf8);
  EXPECT_EQ(parse_one("SEND\nreceipt:\xeb\xb0\xa5\n\n\xff\xfe\0"s).header("receipt")->size(), 3u) << "UTF-8 headers and any body pass";
}

// Nothing is escaped in 1.0 (and in CONNECTED): a line break in a value would end the header
// and start another, so it goes out as a space.
TEST(StompEncode, NoLineBreakInAnUnescapedHeader) {
  const auto wire = encode(make_frame(Command::error, {{"message", "a\nINJ:1\r\n"}}), Version::v1_0);
  EXPECT_EQ(wire, "ERROR\nmessage:a INJ:1\r \n\n\0"s);
}

TEST(StompErrors, ParserStaysFailed) {
  Parser p;
  const auto r = p.consume("BOGUS\n\n\0"s);
  ASSERT_EQ(r.status, Status::error);
  const std::error_code first = p.error();
  for (int i = 0; i < 3; ++i) {
    const auto again = p.consume("SEND\n\nok\0"s);
    EXPECT_EQ(again.status, Status::error);
    EXPECT_EQ(again.used, 0u);
    EXPECT_EQ(p.error(), first);
  }
}

TEST(StompErrors, CategoryAndMessages) {
  EXPECT_STREQ(error_category().name(), "chatd.stomp");
  std::set<std::string> seen;
  for (int e = static_cast<int>(Error::unknown_command); e <= static_cast<int>(Error::missing_nul);
       ++e) {
    const std::error_code ec = make_error_code(static_cast<Error>(e));
    EXPECT_EQ(&ec.category(), &error_category());
    const std::string msg = ec.message();
    ASSERT_GT(msg.size(), 10u);
    EXPECT_TRUE(std::isupper(static_cast<unsigned char>(msg.front()))) << msg;
    EXPECT_EQ(msg.back(), '.') << msg;
    EXPECT_TRUE(seen.insert(msg).second) << "duplicate message " << msg;
  }
  const std::error_code ec = Error::bad_escape;  // is_error_code_enum lets this convert
  EXPECT_EQ(ec, Error::bad_escape);
  EXPECT_FALSE(make_error_code(Error::ok));
}

// ---- negotiation ----------------------------------------------------------------------------

TEST(StompNegotiate, Version) {
  EXPECT_EQ(negotiate_version("1.0,1.1,1.2"), Version::v1_2);
  EXPECT_EQ(negotiate_version("1.2,1.0"), Version::v1_2);
  EXPECT_EQ(negotiate_version("1.1"), Version::v1_1);
  EXPECT_EQ(negotiate_version("1.0,1.1,2.0"), Version::v1_1);
  EXPECT_EQ(negotiate_version(std::nullopt), Version::v1_0);  // no accept-version: a 1.0 client
  EXPECT_EQ(negotiate_version(""), std::nullopt);             // present, but names nothing
  EXPECT_EQ(negotiate_version("2.0"), std::nullopt);
  EXPECT_EQ(negotiate_version("1.0, 1.2 "), Version::v1_2);   // blanks around items are ignored
  EXPECT_EQ(negotiate_version("1 .2"), std::nullopt);
}

TEST(StompNegotiate, ParseHeartBeat) {
  const auto hb = parse_heart_beat("10000,5000");
  ASSERT_TRUE(hb.has_value());
  EXPECT_EQ(hb->send_ms, 10000u);
  EXPECT_EQ(hb->receive_ms, 5000u);
  EXPECT_TRUE(parse_heart_beat("0,0").has_value());
  for (const char* bad : {"", "1", ",", "1,", ",1", "a,1", "1,b", "-1,0", "+1,0", "1, 2",
                          "1,2,3", "99999999999x,0"}) {
    EXPECT_FALSE(parse_heart_beat(bad).has_value()) << bad;
  }
  // No upper bound in the spec: past 32 bits of milliseconds it is the longest period.
  const auto huge = parse_heart_beat("99999999999,123456789012345678901234567890");
  ASSERT_TRUE(huge.has_value());
  EXPECT_EQ(huge->send_ms, 4294967295u);
  EXPECT_EQ(huge->receive_ms, 4294967295u);
}

TEST(StompNegotiate, HeartBeatTakesTheLargerWishOrNone) {
  // Client can send every 10 s and wants beats every 5 s; server offers 4 s and wants 20 s.
  auto hb = negotiate_heart_beat({10000, 5000}, {4000, 20000});
  EXPECT_EQ(hb.send_ms, 5000u);      // server to client: max(4000, 5000)
  EXPECT_EQ(hb.receive_ms, 20000u);  // client to server: max(10000, 20000)
  hb = negotiate_heart_beat({0, 5000}, {4000, 20000});
  EXPECT_EQ(hb.send_ms, 5000u);
  EXPECT_EQ(hb.receive_ms, 0u);  // the client cannot send
  hb = negotiate_heart_beat({10000, 0}, {4000, 0});
  EXPECT_EQ(hb.send_ms, 0u);
  EXPECT_EQ(hb.receive_ms, 0u);
}


// ---- idle memory ----------------------------------------------------------------------------

TEST(StompParse, ReleasingBuffersBetweenFramesKeepsParsing) {
  Parser p;
  std::string_view connect = "CONNECT\naccept-version:1.2\nhost:chatd\n\n";
  auto r = p.consume(std::string_view(connect.data(), connect.size() + 1));  // with the NUL
  ASSERT_EQ(r.status, Status::frame);
  p.release_buffers();
  EXPECT_EQ(p.frame().headers.capacity(), 0u) << "an idle connection keeps no header buffers";
  EXPECT_EQ(p.frame().body.capacity(), std::string().capacity());

  // The next frame arrives in two pieces, split inside a header.
  std::string send("SEND\ndestination:/pub/chat/message\ncontent-length:2\n\nhi");
  send += '\0';
  r = p.consume(std::string_view(send).substr(0, 20));
  ASSERT_EQ(r.status, Status::need_more);
  r = p.consume(std::string_view(send).substr(20));
  ASSERT_EQ(r.status, Status::frame);
  EXPECT_EQ(p.frame().command, Command::send);
  ASSERT_NE(p.frame().header("destination"), nullptr);
  EXPECT_EQ(*p.frame().header("destination"), "/pub/chat/message");
  EXPECT_EQ(p.frame().body, "hi");
}

}  // namespace
}  // namespace chatd::stomp
