// Pure framing for the load generator: WebSocket client frames and STOMP frames over a byte
// stream. No sockets, so it can be checked on its own (see frames_test in run.sh --selftest).
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace loadgen {

// Appends one masked WebSocket frame (FIN set) carrying payload to out. Clients must mask
// (RFC 6455 §5.3); the key comes from the caller's cheap PRNG state.
inline void append_ws_frame(std::string& out, std::uint8_t opcode, std::string_view payload,
                            std::uint32_t& rng) {
  const std::size_t n = payload.size();
  char hdr[14];
  std::size_t h = 0;
  hdr[h++] = static_cast<char>(0x80 | opcode);
  if (n < 126) {
    hdr[h++] = static_cast<char>(0x80 | n);
  } else if (n <= 0xffff) {
    hdr[h++] = static_cast<char>(0x80 | 126);
    hdr[h++] = static_cast<char>(n >> 8);
    hdr[h++] = static_cast<char>(n);
  } else {
    hdr[h++] = static_cast<char>(0x80 | 127);
    for (int i = 7; i >= 0; --i) hdr[h++] = static_cast<char>(std::uint64_t(n) >> (8 * i));
  }
  rng ^= rng << 13;  // xorshift32: unpredictable enough for a masking key
  rng ^= rng >> 17;
  rng ^= rng << 5;
  char key[4];
  std::memcpy(key, &rng, 4);
  std::memcpy(hdr + h, key, 4);
  h += 4;
  const std::size_t base = out.size();
  out.append(hdr, h);
  out.append(payload);
  char* p = out.data() + base + h;
  for (std::size_t i = 0; i < n; ++i) p[i] = static_cast<char>(p[i] ^ key[i & 3]);
}

struct WsFrame {
  std::uint8_t opcode = 0;
  bool fin = false;
  std::string_view payload;  // unmasked in place when the server masked (it should not)
};

// Parses one server frame from [p, p+n). Returns the bytes used, or 0 when more are needed.
// A length above max_len sets too_big and returns 0.
inline std::size_t parse_ws_frame(char* p, std::size_t n, WsFrame& f, std::uint64_t max_len,
                                  bool& too_big) {
  too_big = false;
  if (n < 2) return 0;
  const auto b0 = static_cast<std::uint8_t>(p[0]);
  const auto b1 = static_cast<std::uint8_t>(p[1]);
  std::uint64_t len = b1 & 0x7f;
  std::size_t h = 2;
  if (len == 126) {
    if (n < 4) return 0;
    len = (std::uint64_t(static_cast<std::uint8_t>(p[2])) << 8) | static_cast<std::uint8_t>(p[3]);
    h = 4;
  } else if (len == 127) {
    if (n < 10) return 0;
    len = 0;
    for (int i = 0; i < 8; ++i) len = (len << 8) | static_cast<std::uint8_t>(p[2 + i]);
    h = 10;
  }
  const bool masked = (b1 & 0x80) != 0;
  if (masked) h += 4;
  if (len > max_len) {
    too_big = true;
    return 0;
  }
  if (n < h + len) return 0;
  char* body = p + h;
  if (masked) {
    const char* key = p + h - 4;
    for (std::size_t i = 0; i < len; ++i) body[i] = static_cast<char>(body[i] ^ key[i & 3]);
  }
  f.opcode = b0 & 0x0f;
  f.fin = (b0 & 0x80) != 0;
  f.payload = std::string_view(body, static_cast<std::size_t>(len));
  return h + static_cast<std::size_t>(len);
}

struct StompFrame {
  std::string_view command;
  std::string_view headers;  // raw header lines, each ending in '\n'
  std::string_view body;
};

// Returns the value of header name in a raw header block, or an empty view.
inline std::string_view stomp_header(std::string_view headers, std::string_view name) {
  std::size_t pos = 0;
  while (pos < headers.size()) {
    std::size_t eol = headers.find('\n', pos);
    if (eol == std::string_view::npos) eol = headers.size();
    std::string_view line = headers.substr(pos, eol - pos);
    if (line.size() > name.size() && line.substr(0, name.size()) == name &&
        line[name.size()] == ':') {
      line.remove_prefix(name.size() + 1);
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      return line;
    }
    pos = eol + 1;
  }
  return {};
}

// Parses one STOMP frame from s starting at pos, skipping heart-beat EOLs first. Returns the
// position after the frame's NUL, or 0 when the frame is not complete yet.
inline std::size_t parse_stomp_frame(std::string_view s, std::size_t pos, StompFrame& f) {
  while (pos < s.size() && (s[pos] == '\n' || s[pos] == '\r')) ++pos;
  if (pos >= s.size()) return 0;
  const std::size_t eol = s.find('\n', pos);
  if (eol == std::string_view::npos) return 0;
  // Headers end at the first empty line; with no headers that is the command's own EOL.
  std::size_t hdr_end = s.find("\n\n", eol);
  std::size_t body_start;
  if (hdr_end != std::string_view::npos) {
    body_start = hdr_end + 2;
  } else {
    hdr_end = s.find("\n\r\n", eol);
    if (hdr_end == std::string_view::npos) return 0;
    body_start = hdr_end + 3;
  }
  f.command = s.substr(pos, eol - pos);
  if (!f.command.empty() && f.command.back() == '\r') f.command.remove_suffix(1);
  f.headers = eol < hdr_end ? s.substr(eol + 1, hdr_end - eol) : std::string_view{};
  const std::string_view cl = stomp_header(f.headers, "content-length");
  if (!cl.empty()) {
    std::size_t len = 0;
    for (char c : cl) {
      if (c < '0' || c > '9') break;
      len = len * 10 + static_cast<std::size_t>(c - '0');
    }
    if (s.size() < body_start + len + 1) return 0;
    f.body = s.substr(body_start, len);
    return body_start + len + 1;
  }
  const std::size_t nul = s.find('\0', body_start);
  if (nul == std::string_view::npos) return 0;
  f.body = s.substr(body_start, nul - body_start);
  return nul + 1;
}

}  // namespace loadgen
