// chatd::utf8 — the one UTF-8 validator, shared by the WebSocket and SockJS codecs and the chat
// rules. Well-formed means Unicode Table 3-7 (RFC 3629): no overlongs, no surrogates, nothing
// past U+10FFFF. Standard library only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace chatd::utf8 {

// Validates text that arrives in pieces (WebSocket fragments, read buffers): each byte is
// scanned once, and a code point may be split across pieces.
class Validator {
 public:
  // Scans `s` after what came before; returns false at the first byte that cannot be part of
  // well-formed UTF-8. The state is then unspecified until reset().
  bool feed(std::string_view s);
  // True when no code point is left open by the pieces fed so far.
  bool complete() const { return need_ == 0; }
  void reset() { *this = Validator{}; }

 private:
  std::uint8_t need_ = 0;    // continuation bytes still owed by the open code point
  std::uint8_t lo_ = 0x80;   // the range the next continuation byte must be in
  std::uint8_t hi_ = 0xBF;
};

// Returns true when `s` is well-formed UTF-8 as a whole.
bool valid(std::string_view s);

// Returns the length (2-4) of the well-formed multi-byte sequence at the start of `s` and sets
// `cp` to its code point, or returns 0 when `s` does not start with one (an ASCII byte counts
// as not multi-byte).
std::size_t decode_multibyte(std::string_view s, std::uint32_t& cp);

// Appends code point `cp` (at most U+10FFFF, not a surrogate) encoded as UTF-8.
void append(std::string& out, std::uint32_t cp);

}  // namespace chatd::utf8
