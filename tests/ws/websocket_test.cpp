// The RFC 6455 codec: every input is decoded whole, split at every byte offset, byte by byte and
// glued three times, and must give the same events each way.
#include "ws/websocket.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

namespace {

using namespace chatd::ws;
using Status = Decoder::Status;

constexpr std::uint8_t kMask[4] = {0x37, 0xFA, 0x21, 0x3D};

// A client frame as a browser sends it: masked, minimal length unless `len_form` forces one
// (0: 7-bit, 1: 16-bit, 2: 64-bit) and `len` overrides the announced length.
struct Spec {
  std::uint8_t op = 1;
  std::string payload;
  bool fin = true;
  bool masked = true;
  std::uint8_t rsv = 0;
  int len_form = -1;
  std::int64_t len = -1;
};

std::string client_frame(const Spec& s) {
  std::string out;
  out += static_cast<char>((s.fin ? 0x80 : 0) | (s.rsv << 4) | s.op);
  const std::uint64_t len = s.len >= 0 ? static_cast<std::uint64_t>(s.len) : s.payload.size();
  int form = s.len_form;
  if (form < 0) form = len < 126 ? 0 : len <= 0xFFFF ? 1 : 2;
  const int mbit = s.masked ? 0x80 : 0;
  if (form == 0) {
    out += static_cast<char>(mbit | static_cast<int>(len));
  } else if (form == 1) {
    out += static_cast<char>(mbit | 126);
    out += static_cast<char>(len >> 8);
    out += static_cast<char>(len & 0xFF);
  } else {
    out += static_cast<char>(mbit | 127);
    for (int sh = 56; sh >= 0; sh -= 8) out += static_cast<char>((len >> sh) & 0xFF);
  }
  if (s.masked) out.append(reinterpret_cast<const char*>(kMask), 4);
  for (std::size_t i = 0; i < s.payload.size(); ++i) {
    out += static_cast<char>(s.payload[i] ^ (s.masked ? kMask[i % 4] : 0));
  }
  return out;
}

std::string frame(std::uint8_t op, std::string payload, bool fin = true) {
  Spec s;
  s.op = op;
  s.payload = std::move(payload);
  s.fin = fin;
  return client_frame(s);
}

// Turns a server frame into the frame a client would send with the same content: sets the
// mask bit, inserts the key after the length and masks the payload.
std::string mask_server_frame(const std::string& f) {
  const auto len7 = static_cast<unsigned char>(f[1]) & 0x7F;
  const std::size_t hdr = 2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0);
  std::string out = f.substr(0, hdr);
  out[1] = static_cast<char>(out[1] | 0x80);
  out.append(reinterpret_cast<const char*>(kMask), 4);
  for (std::size_t i = hdr; i < f.size(); ++i) {
    out += static_cast<char>(f[i] ^ kMask[(i - hdr) % 4]);
  }
  return out;
}

struct Event {
  Status status;
  std::string payload;
  bool text;
  std::uint16_t close_code;
  std::error_code error;
  bool operator==(const Event&) const = default;
};

// Decodes `input` fed in pieces cut at `cuts` (ascending offsets).
std::vector<Event> decode(const std::string& input, const std::vector<std::size_t>& cuts,
                          std::size_t max = 1 << 20) {
  Decoder d(max);
  std::vector<Event> events;
  std::size_t from = 0;
  std::vector<std::size_t> ends = cuts;
  ends.push_back(input.size());
  for (const std::size_t to : ends) {
    std::string_view rest(input.data() + from, to - from);
    from = to;
    while (!rest.empty()) {
      const auto r = d.consume(rest);
      EXPECT_LE(r.used, rest.size());
      rest.remove_prefix(r.used);
      if (r.status == Status::need_more) {
        EXPECT_TRUE(rest.empty()) << "need_more keeps every byte";
        break;
      }
      if (r.status == Status::error) {
        events.push_back({r.status, "", false, 0, d.error()});
        const auto again = d.consume(frame(2, "x"));
        EXPECT_EQ(again.status, Status::error);
        EXPECT_EQ(again.used, 0u);
        EXPECT_EQ(d.error(), events.back().error);
        return events;
      }
      const bool msg = r.status == Status::message;
      events.push_back({r.status, std::string(d.payload()), msg && d.text(),
                        r.status == Status::close ? d.close_code() : std::uint16_t{0}, {}});
    }
  }
  return events;
}

// Decodes `input` whole, split at every offset (a sample for big inputs), byte by byte and glued
// three times; expects the same events each way and returns them.
std::vector<Event> decode_all(const std::string& input, std::size_t max = 1 << 20) {
  const auto whole = decode(input, {}, max);
  for (std::size_t i = 0; i <= input.size(); ++i) {
    if (input.size() > 600 && i > 40 && i + 40 < input.size() && i % 331 != 0) continue;
    EXPECT_EQ(decode(input, {i}, max), whole) << "split at " << i;
  }
  if (input.size() <= 600) {
    std::vector<std::size_t> every;
    for (std::size_t i = 1; i < input.size(); ++i) every.push_back(i);
    EXPECT_EQ(decode(input, every, max), whole) << "byte by byte";
  }
  auto thrice = whole;
  const bool failed = !whole.empty() && whole.back().status == Status::error;
  if (!failed) {
    thrice.insert(thrice.end(), whole.begin(), whole.end());
    thrice.insert(thrice.end(), whole.begin(), whole.end());
  }
  EXPECT_EQ(decode(input + input + input, {}, max), thrice) << "glued 3x";
  EXPECT_EQ(decode(input + input + input, {input.size() / 2, input.size() + 3}, max), thrice);
  return whole;
}

Event message(std::string p, bool text) { return {Status::message, std::move(p), text, 0, {}}; }
Event control(Status s, std::string p, std::uint16_t code = 0) {
  return {s, std::move(p), false, code, {}};
}
Event failure(Error e) { return {Status::error, "", false, 0, make_error_code(e)}; }

std::string pattern(std::size_t n) {
  std::string s(n, '\0');
  for (std::size_t i = 0; i < n; ++i) s[i] = static_cast<char>('a' + (i * 7) % 26);
  return s;
}

TEST(WebSocketDecoder, EveryLengthForm) {
  for (const std::size_t n : {0u, 1u, 7u, 8u, 9u, 125u, 126u, 127u, 300u, 65535u, 65536u, 70001u}) {
    const std::string p = pattern(n);
    EXPECT_EQ(decode_all(frame(1, p)), std::vector<Event>{message(p, true)}) << n;
    EXPECT_EQ(decode_all(frame(2, p)), std::vector<Event>{message(p, false)}) << n;
  }
}

TEST(WebSocketDecoder, BinaryKeepsEveryByteValue) {
  std::string p;
  for (int i = 0; i < 512; ++i) p += static_cast<char>(i & 0xFF);
  EXPECT_EQ(decode_all(frame(2, p)), std::vector<Event>{message(p, false)});
}

TEST(WebSocketDecoder, FragmentsWithControlFramesBetween) {
  const std::string in = frame(1, "Hel", false) + frame(9, "p1") + frame(0, "lo", false) +
                         frame(10, "") + frame(0, "", false) + frame(0, " world");
  EXPECT_EQ(decode_all(in), (std::vector<Event>{control(Status::ping, "p1"),
                                                control(Status::pong, ""),
                                                message("Hello world", true)}));
  // A close between fragments is reported too; the message stays open behind it.
  const std::string in2 = frame(2, "ab", false) + frame(8, "") + frame(0, "cd");
  EXPECT_EQ(decode_all(in2), (std::vector<Event>{control(Status::close, "", 1005),
                                                 message("abcd", false)}));
}

TEST(WebSocketDecoder, Utf8SplitAcrossFragments) {
  // U+20AC (E2 82 AC) and U+1F600 (F0 9F 98 80) cut inside their code points.
  const std::string valid = frame(1, "a\xE2", false) + frame(0, "\x82", false) +
                            frame(9, "x") + frame(0, "\xAC\xF0\x9F", false) +
                            frame(0, "\x98\x80");
  EXPECT_EQ(decode_all(valid), (std::vector<Event>{control(Status::ping, "x"),
                                                   message("a\xE2\x82\xAC\xF0\x9F\x98\x80", true)}));
  // A lead byte followed in the next fragment by a non-continuation.
  EXPECT_EQ(decode_all(frame(1, "a\xE2", false) + frame(0, "(b")),
            std::vector<Event>{failure(Error::bad_utf8)});
  // A code point still open when the message ends.
  EXPECT_EQ(decode_all(frame(1, "a\xE2", false) + frame(0, "\x82")),
            std::vector<Event>{failure(Error::bad_utf8)});
  // Reported at the bad fragment, before the message ends.
  EXPECT_EQ(decode(frame(1, "ok", false) + frame(0, "\xFF", false), {}),
            std::vector<Event>{failure(Error::bad_utf8)});
}

TEST(WebSocketDecoder, Utf8Rules) {
  for (const char* ok : {"", "plain ascii text, longer than eight bytes", "\xC2\x80",
                         "\xDF\xBF", "\xE0\xA0\x80", "\xED\x9F\xBF", "\xEE\x80\x80",
                         "\xF0\x90\x80\x80", "\xF4\x8F\xBF\xBF", "\x7F"}) {
    EXPECT_EQ(decode_all(frame(1, ok)), std::vector<Event>{message(ok, true)}) << ok;
  }
  for (const char* bad : {"\x80", "\xC0\xAF", "\xC1\xBF", "\xE0\x9F\xBF", "\xED\xA0\x80",
                          "\xED\xBF\xBF", "\xF0\x8F\xBF\xBF", "\xF4\x90\x80\x80", "\xF5\x80\x80\x80",
                          "\xFF", "abcdefgh\xE2\x82", "\xE2\x82(", "12345678\xC2"}) {
    EXPECT_EQ(decode_all(frame(1, bad)), std::vector<Event>{failure(Error::bad_utf8)}) << bad;
    // Binary messages are not checked.
    EXPECT_EQ(decode_all(frame(2, bad)), std::vector<Event>{message(bad, false)});
  }
}

TEST(WebSocketDecoder, EveryError) {
  Spec s;
  s.payload = "hi";
  s.masked = false;
  EXPECT_EQ(decode_all(client_frame(s)), std::vector<Event>{failure(Error::unmasked)});
  for (std::uint8_t rsv : {1, 2, 4}) {
    s = {};
    s.rsv = rsv;
    EXPECT_EQ(decode_all(client_frame(s)), std::vector<Event>{failure(Error::reserved_bits)});
  }
  for (std::uint8_t op : {3, 4, 5, 6, 7, 11, 12, 15}) {
    EXPECT_EQ(decode_all(frame(op, "x")), std::vector<Event>{failure(Error::bad_opcode)});
  }
  EXPECT_EQ(decode_all(frame(9, "x", false)), std::vector<Event>{failure(Error::bad_control)});
  EXPECT_EQ(decode_all(frame(8, std::string(126, 'x'))),
            std::vector<Event>{failure(Error::bad_control)});
  EXPECT_EQ(decode_all(frame(10, std::string(125, 'x'))),
            std::vector<Event>{control(Status::pong, std::string(125, 'x'))});
  EXPECT_EQ(decode_all(frame(0, "x")), std::vector<Event>{failure(Error::bad_continuation)});
  EXPECT_EQ(decode_all(frame(1, "a", false) + frame(2, "b")),
            std::vector<Event>{failure(Error::bad_continuation)});
  EXPECT_EQ(decode_all(frame(1, "a") + frame(0, "b")),
            (std::vector<Event>{message("a", true), failure(Error::bad_continuation)}));
  EXPECT_EQ(decode_all(frame(2, "12345678901"), 10), std::vector<Event>{failure(Error::too_big)});
  EXPECT_EQ(decode_all(frame(2, "1234567890"), 10),
            std::vector<Event>{message("1234567890", false)});
  EXPECT_EQ(decode_all(frame(2, "123456", false) + frame(0, "78901"), 10),
            std::vector<Event>{failure(Error::too_big)});
  EXPECT_EQ(decode_all(frame(1, "\xC0\x80")), std::vector<Event>{failure(Error::bad_utf8)});
  s = {};
  s.payload = std::string(125, 'x');
  s.len_form = 1;
  EXPECT_EQ(decode_all(client_frame(s)), std::vector<Event>{failure(Error::bad_length)});
  s.payload = std::string(65535, 'x');
  s.len_form = 2;
  EXPECT_EQ(decode_all(client_frame(s)), std::vector<Event>{failure(Error::bad_length)});
  s.payload = "";
  s.len = static_cast<std::int64_t>(0x8000000000000000ull - 1) ;
  s.len_form = 2;
  std::string top = client_frame(s);
  top[2] = static_cast<char>(0x80);  // the top bit of the 64-bit length
  EXPECT_EQ(decode_all(top), std::vector<Event>{failure(Error::bad_length)});
  EXPECT_EQ(decode_all(frame(8, "\x03")), std::vector<Event>{failure(Error::bad_close)});
}

TEST(WebSocketDecoder, TooBigBeforeThePayloadArrives) {
  Spec s;
  s.op = 2;
  s.len = 1'000'000;
  const std::string header = client_frame(s);  // the header alone: no payload follows
  ASSERT_EQ(header.size(), 14u);
  Decoder d(1000);
  const auto r = d.consume(header);
  EXPECT_EQ(r.status, Status::error);
  EXPECT_EQ(d.error(), Error::too_big);
  EXPECT_EQ(close_code_for(d.error()), 1009);
  // Even before the mask key: the length alone decides.
  Decoder d2(1000);
  EXPECT_EQ(d2.consume(header.substr(0, 10)).status, Status::error);
  EXPECT_EQ(d2.error(), Error::too_big);
}

TEST(WebSocketDecoder, ClosePayloads) {
  EXPECT_EQ(decode_all(frame(8, "")), std::vector<Event>{control(Status::close, "", 1005)});
  for (const std::uint16_t code : {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000,
                                   4000, 4999}) {
    std::string p{static_cast<char>(code >> 8), static_cast<char>(code & 0xFF)};
    EXPECT_EQ(decode_all(frame(8, p)), std::vector<Event>{control(Status::close, p, code)});
    p += "bye \xE2\x82\xAC";
    EXPECT_EQ(decode_all(frame(8, p)), std::vector<Event>{control(Status::close, p, code)});
    p += "\xE2\x82";  // a reason cut inside a code point
    EXPECT_EQ(decode_all(frame(8, p)), std::vector<Event>{failure(Error::bad_close)});
  }
  for (const std::uint16_t code : {0, 999, 1004, 1005, 1006, 1012, 1015, 2999, 5000, 65535}) {
    const std::string p{static_cast<char>(code >> 8), static_cast<char>(code & 0xFF)};
    EXPECT_EQ(decode_all(frame(8, p)), std::vector<Event>{failure(Error::bad_close)}) << code;
  }
}

TEST(WebSocketDecoder, PayloadIsValidUntilTheNextConsume) {
  Decoder d(100);
  const std::string in = frame(1, "first") + frame(9, "ping") + frame(2, "second");
  std::string_view rest = in;
  auto r = d.consume(rest);
  ASSERT_EQ(r.status, Status::message);
  EXPECT_EQ(d.payload(), "first");
  EXPECT_TRUE(d.text());
  rest.remove_prefix(r.used);
  r = d.consume(rest);
  ASSERT_EQ(r.status, Status::ping);
  EXPECT_EQ(d.payload(), "ping");
  rest.remove_prefix(r.used);
  r = d.consume(rest);
  ASSERT_EQ(r.status, Status::message);
  EXPECT_EQ(d.payload(), "second");
  EXPECT_FALSE(d.text());
  EXPECT_EQ(r.used, rest.size());
}

TEST(WebSocketDecoder, ShrinkKeepsAMessageInProgress) {
  Decoder d(1 << 20);
  const std::string big = pattern(5000);
  EXPECT_EQ(d.consume(frame(2, big)).status, Status::message);
  d.shrink();
  EXPECT_TRUE(d.payload().empty());
  const std::string in = frame(1, "abc", false) + frame(0, "def");
  const std::size_t cut = frame(1, "abc", false).size() + 3;  // inside the second header
  EXPECT_EQ(d.consume(std::string_view(in).substr(0, cut)).status, Status::need_more);
  d.shrink();
  const auto r = d.consume(std::string_view(in).substr(cut));
  EXPECT_EQ(r.status, Status::message);
  EXPECT_EQ(d.payload(), "abcdef");
}

TEST(WebSocketEncoder, HeadersEveryLengthForm) {
  std::string h;
  append_header(h, Opcode::text, 5);
  EXPECT_EQ(h, std::string("\x81\x05", 2));
  h.clear();
  append_header(h, Opcode::binary, 126);
  EXPECT_EQ(h, std::string("\x82\x7E\x00\x7E", 4));
  h.clear();
  append_header(h, Opcode::binary, 65536);
  EXPECT_EQ(h, std::string("\x82\x7F\x00\x00\x00\x00\x00\x01\x00\x00", 10));
  for (const std::size_t n : {0u, 125u, 126u, 65535u, 65536u}) {
    std::string f;
    append_header(f, Opcode::text, n);
    const std::string p = pattern(n);
    f += p;
    EXPECT_EQ(decode(mask_server_frame(f), {}), std::vector<Event>{message(p, true)}) << n;
  }
}

TEST(WebSocketEncoder, CloseAndPongDecodeBack) {
  EXPECT_EQ(decode_all(mask_server_frame(close_frame(1000, "bye"))),
            std::vector<Event>{control(Status::close, "\x03\xE8" "bye", 1000)});
  EXPECT_EQ(decode_all(mask_server_frame(close_frame(1005, "ignored"))),
            std::vector<Event>{control(Status::close, "", 1005)});
  const std::string ascii = close_frame(1009, std::string(200, 'r'));
  EXPECT_EQ(ascii.size(), 2u + 125u);
  // Two-byte code points: 123 would cut one, so 122 bytes are kept.
  std::string accents;
  for (int i = 0; i < 100; ++i) accents += "\xC3\xA9";
  const auto evs = decode_all(mask_server_frame(close_frame(1007, accents)));
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_EQ(evs[0].status, Status::close);
  EXPECT_EQ(evs[0].close_code, 1007);
  EXPECT_EQ(evs[0].payload.substr(2), accents.substr(0, 122));
  EXPECT_EQ(decode_all(mask_server_frame(pong_frame("abc"))),
            std::vector<Event>{control(Status::pong, "abc")});
}

TEST(WebSocket, ErrorsHaveMessagesAndCloseCodes) {
  EXPECT_STREQ(error_category().name(), "chatd.ws");
  for (int e = 1; e <= static_cast<int>(Error::bad_close); ++e) {
    const std::error_code ec = make_error_code(static_cast<Error>(e));
    EXPECT_FALSE(ec.message().empty());
    EXPECT_LE(ec.message().size(), 123u);
  }
  EXPECT_EQ(close_code_for(Error::too_big), 1009);
  EXPECT_EQ(close_code_for(Error::bad_utf8), 1007);
  EXPECT_EQ(close_code_for(Error::unmasked), 1002);
  EXPECT_EQ(close_code_for(Error::bad_close), 1002);
}

}  // namespace
