// libFuzzer target for the RFC 6455 decoder and encoders.
//
// Input layout: byte 0 picks the message limit (bit 0: 64 bytes, else 64 KiB); byte 1 seeds
// the split points; the rest is the client's byte stream. Invariants checked, each by abort():
//   - consume() never uses more than it is given, and need_more uses everything;
//   - the events and the error are the same whatever the split;
//   - after an error the decoder stays failed and uses nothing;
//   - a decoded message, ping or close re-encoded by the server encoders (then masked as a
//     client would) decodes back to the same event.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "ws/websocket.h"

namespace {

namespace ws = chatd::ws;
using Status = ws::Decoder::Status;

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "invariant broken: %s\n", what);
    std::abort();
  }
}

struct Event {
  Status status;
  std::string payload;
  bool text;
  std::uint16_t close_code;
  bool operator==(const Event&) const = default;
};

struct Run {
  std::vector<Event> events;
  std::error_code error;
};

// Feeds `bytes` in pieces whose sizes come from `seed` (0: all at once).
Run decode(std::string_view bytes, std::size_t max, std::uint32_t seed) {
  ws::Decoder d(max);
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
      const auto r = d.consume(rest);
      check(r.used <= rest.size(), "used <= size");
      rest.remove_prefix(r.used);
      if (r.status == Status::need_more) {
        check(rest.empty(), "need_more uses every byte");
      } else if (r.status == Status::error) {
        run.error = d.error();
        check(run.error && run.error.category() == ws::error_category(), "a chatd.ws error");
        check(!run.error.message().empty(), "every error has a message");
        const auto again = d.consume(std::string_view("\x82\x80\0\0\0\0", 6));
        check(again.status == Status::error && again.used == 0, "stays failed");
        check(d.error() == run.error, "error unchanged");
        return run;
      } else {
        run.events.push_back({r.status, std::string(d.payload()),
                              r.status == Status::message && d.text(),
                              r.status == Status::close ? d.close_code() : std::uint16_t{0}});
      }
    }
  }
  return run;
}

// Masks a server frame as a client would (fixed key).
std::string masked(const std::string& f) {
  static constexpr unsigned char key[4] = {0xA1, 0x5B, 0x07, 0xEE};
  const unsigned len7 = static_cast<unsigned char>(f[1]) & 0x7Fu;
  const std::size_t hdr = 2 + (len7 == 126 ? 2u : len7 == 127 ? 8u : 0u);
  std::string out = f.substr(0, hdr);
  out[1] = static_cast<char>(out[1] | 0x80);
  out.append(reinterpret_cast<const char*>(key), 4);
  for (std::size_t i = hdr; i < f.size(); ++i) out += static_cast<char>(f[i] ^ key[(i - hdr) % 4]);
  return out;
}

void check_round_trip(const Event& e, std::size_t max) {
  std::string wire;
  Event expected = e;
  if (e.status == Status::message) {
    ws::append_header(wire, e.text ? ws::Opcode::text : ws::Opcode::binary, e.payload.size());
    wire += e.payload;
  } else if (e.status == Status::ping) {
    wire = ws::pong_frame(e.payload);
    expected.status = Status::pong;
  } else if (e.status == Status::close) {
    // The payload holds the code; the reason (already under 124 bytes) follows it.
    wire = ws::close_frame(e.close_code, e.payload.size() >= 2 ? e.payload.substr(2) : "");
  } else {
    return;
  }
  const Run back = decode(masked(wire), max, 0);
  check(!back.error && back.events.size() == 1, "an encoded frame decodes to one event");
  check(back.events[0] == expected, "encode then decode gives the same event");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  const std::size_t max = (data[0] & 1) ? 64 : 65536;
  const std::uint32_t seed = data[1] | 1u;
  const std::string_view bytes(reinterpret_cast<const char*>(data + 2), size - 2);

  const Run whole = decode(bytes, max, 0);
  const Run split = decode(bytes, max, seed);
  check(whole.error == split.error, "same error whatever the split");
  check(whole.events == split.events, "same events whatever the split");
  for (const Event& e : whole.events) check_round_trip(e, max);
  return 0;
}
