// libFuzzer target for the STOMP parser and encoder.
//
// Input layout: byte 0 picks the version (bits 0-1) and small limits (bit 2); byte 1 seeds the
// split points; the rest is the byte stream. Invariants checked, each by abort():
//   - consume() never uses more than it is given, and need_more uses everything;
//   - the frames, heart-beat count and error are the same whatever the split;
//   - after an error the parser stays failed and uses nothing;
//   - a parsed non-handshake frame encodes to bytes that parse back to the same frame;
//   - encode_message around a parsed body parses back to that body.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "stomp/stomp.h"

namespace {

using chatd::stomp::Command;
using chatd::stomp::Frame;
using chatd::stomp::Header;
using chatd::stomp::Limits;
using chatd::stomp::Parser;
using chatd::stomp::Version;

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "invariant broken: %s\n", what);
    std::abort();
  }
}

bool same(const Frame& a, const Frame& b) {
  if (a.command != b.command || a.body != b.body || a.headers.size() != b.headers.size()) {
    return false;
  }
  for (std::size_t i = 0; i < a.headers.size(); ++i) {
    if (a.headers[i].name != b.headers[i].name || a.headers[i].value != b.headers[i].value) {
      return false;
    }
  }
  return true;
}

struct Run {
  std::vector<Frame> frames;
  std::error_code error;
  std::uint64_t heartbeats = 0;
};

// Feeds `bytes` in pieces whose sizes come from `seed` (0: all at once).
Run parse(std::string_view bytes, Version v, const Limits& limits, std::uint32_t seed) {
  Parser parser(limits);
  parser.set_version(v);
  Run run;
  std::size_t at = 0;
  while (at < bytes.size()) {
    std::size_t piece = bytes.size() - at;
    if (seed != 0) {
      seed = seed * 1103515245u + 12345u;
      piece = std::min<std::size_t>(piece, 1 + (seed >> 16) % 17);
    }
    std::string_view rest = bytes.substr(at, piece);
    at += piece;
    while (!rest.empty()) {
      const auto r = parser.consume(rest);
      check(r.used <= rest.size(), "used <= size");
      rest.remove_prefix(r.used);
      if (r.status == Parser::Status::frame) {
        run.frames.push_back(parser.frame());
      } else if (r.status == Parser::Status::error) {
        run.error = parser.error();
        check(run.error && run.error.category() == chatd::stomp::error_category(),
              "an error has a chatd.stomp code");
        check(!run.error.message().empty(), "every error has a message");
        const auto again = parser.consume("SEND\n\n\0");
        check(again.status == Parser::Status::error && again.used == 0, "stays failed");
        check(parser.error() == run.error, "error unchanged");
        run.heartbeats = parser.heartbeats();
        return run;
      } else {
        check(rest.empty(), "need_more uses every byte");
      }
    }
  }
  run.heartbeats = parser.heartbeats();
  return run;
}

bool is_handshake(Command c) {
  return c == Command::connect || c == Command::stomp || c == Command::connected;
}

// 1.0 and 1.1 have no escape for CR, so a value ending in CR cannot be written back.
bool representable(const Frame& f, Version v) {
  if (v == Version::v1_2) return true;
  for (const Header& h : f.headers) {
    if (!h.value.empty() && h.value.back() == '\r') return false;
  }
  return true;
}

void check_round_trip(const Frame& f, Version v) {
  Limits roomy;
  roomy.max_frame_bytes = 1 << 24;
  roomy.max_headers = 1 << 16;
  roomy.max_header_line = 1 << 24;

  if (!is_handshake(f.command) && representable(f, v)) {
    const std::string wire = chatd::stomp::encode(f, v);
    Parser p(roomy);
    p.set_version(v);
    const auto r = p.consume(wire);
    check(r.status == Parser::Status::frame && r.used == wire.size(), "encoded frame re-parses");
    Frame expected = f;
    if (!f.body.empty() && f.header("content-length") == nullptr) {
      expected.headers.push_back({"content-length", std::to_string(f.body.size())});
    }
    check(same(p.frame(), expected), "encode then parse gives the same frame");
  }

  const auto m = chatd::stomp::encode_message("/sub/chat/room/1", "m-1", "application/json", f.body);
  const std::string wire = m.head + chatd::stomp::escape_header("s:1", v) + m.tail;
  Parser p(roomy);
  p.set_version(v);
  const auto r = p.consume(wire);
  check(r.status == Parser::Status::frame && r.used == wire.size(), "split MESSAGE parses");
  check(p.frame().body == f.body, "split MESSAGE keeps the body");
  const std::string* sub = p.frame().header("subscription");
  check(sub != nullptr && (v == Version::v1_0 || *sub == "s:1"), "subscription spliced in");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  const Version v = static_cast<Version>(data[0] % 3);
  Limits limits;
  if (data[0] & 4) {
    limits.max_frame_bytes = 256;
    limits.max_headers = 4;
    limits.max_header_line = 32;
  }
  const std::uint32_t seed = data[1] | 1u;
  const std::string_view bytes(reinterpret_cast<const char*>(data + 2), size - 2);

  const Run whole = parse(bytes, v, limits, 0);
  const Run split = parse(bytes, v, limits, seed);
  check(whole.error == split.error, "same error whatever the split");
  check(whole.heartbeats == split.heartbeats, "same heart-beats whatever the split");
  check(whole.frames.size() == split.frames.size(), "same frame count whatever the split");
  for (std::size_t i = 0; i < whole.frames.size(); ++i) {
    check(same(whole.frames[i], split.frames[i]), "same frames whatever the split");
    check_round_trip(whole.frames[i], v);
  }
  return 0;
}
