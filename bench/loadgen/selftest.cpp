// Checks the load generator's own measuring parts: histogram precision and the framing it
// parses with. Exits non-zero on the first failure.
#include "frames.h"
#include "histogram.h"

#include <cstdio>
#include <cstdlib>
#include <string>

namespace {

int failures = 0;

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "selftest FAILED: %s\n", what);
    ++failures;
  }
}

void histogram_precision() {
  using loadgen::Histogram;
  for (std::uint64_t v = 0; v < 5'000'000'000ull; v = v * 1.37 + 1) {
    const auto i = Histogram::index(v);
    check(Histogram::lower(i) <= v && v <= Histogram::upper(i), "value inside its bucket");
    if (v >= 256)
      check(double(Histogram::upper(i) - Histogram::lower(i) + 1) <= double(v) / 100.0 + 1,
            "bucket narrower than 1%");
  }
  Histogram h;
  for (std::uint64_t v = 1; v <= 100'000; ++v) h.record(v * 1000);  // 1 us .. 100 ms
  const double p50 = double(h.quantile(0.5)), p99 = double(h.quantile(0.99));
  check(p50 >= 50e6 && p50 <= 50e6 * 1.01, "p50 of uniform within 1%");
  check(p99 >= 99e6 && p99 <= 99e6 * 1.01, "p99 of uniform within 1%");
  check(h.quantile(1.0) == 100'000'000, "p100 is the exact max");
}

void ws_round_trip() {
  std::string out;
  std::uint32_t rng = 12345;
  const std::string big(70000, 'a');
  loadgen::append_ws_frame(out, 1, "hello", rng);
  loadgen::append_ws_frame(out, 2, big, rng);
  // Parsing needs every byte: feeding fewer returns 0.
  loadgen::WsFrame f;
  bool too_big = false;
  check(loadgen::parse_ws_frame(out.data(), 5, f, 1 << 20, too_big) == 0, "partial frame needs more");
  const std::size_t a = loadgen::parse_ws_frame(out.data(), out.size(), f, 1 << 20, too_big);
  check(a == 2 + 4 + 5 && f.payload == "hello" && f.opcode == 1 && f.fin, "masked small frame");
  const std::size_t b = loadgen::parse_ws_frame(out.data() + a, out.size() - a, f, 1 << 20, too_big);
  check(b == 10 + 4 + big.size() && f.payload == big, "masked 64-bit length frame");
  check(loadgen::parse_ws_frame(out.data() + a, out.size() - a, f, 100, too_big) == 0 && too_big,
        "oversized frame flagged");
}

void stomp_stream() {
  std::string s = "\nCONNECTED\nversion:1.2\n\n";
  s.push_back('\0');
  s += "MESSAGE\ndestination:/x\ncontent-length:3\n\na";
  s.push_back('\0');
  s += "b";
  s.push_back('\0');
  s += "MESSAGE\n\nno-len";
  s.push_back('\0');
  loadgen::StompFrame f;
  std::size_t pos = loadgen::parse_stomp_frame(s, 0, f);
  check(pos != 0 && f.command == "CONNECTED" && loadgen::stomp_header(f.headers, "version") == "1.2",
        "CONNECTED after heart-beat");
  pos = loadgen::parse_stomp_frame(s, pos, f);
  check(pos != 0 && f.command == "MESSAGE" && f.body == std::string("a\0b", 3), "content-length body with NUL");
  pos = loadgen::parse_stomp_frame(s, pos, f);
  check(pos == s.size() && f.body == "no-len" && f.headers.empty(), "frame without headers");
  // Every prefix of the stream is either a complete frame or "need more".
  for (std::size_t cut = 1; cut < s.size(); ++cut) {
    const std::string part = s.substr(0, cut);
    std::size_t p = 0, frames = 0;
    while (true) {
      const std::size_t next = loadgen::parse_stomp_frame(part, p, f);
      if (next == 0) break;
      p = next;
      ++frames;
    }
    check(frames <= 3 && p <= cut, "split stream parses only whole frames");
  }
}

}  // namespace

int main() {
  histogram_precision();
  ws_round_trip();
  stomp_stream();
  if (failures == 0) std::puts("chatd_loadgen_selftest: ok");
  return failures == 0 ? 0 : 1;
}
