#include "redis/slot.h"

#include <array>
#include <charconv>

namespace chatd::redis {
namespace {

// CRC16-CCITT (XMODEM): polynomial 0x1021, initial value 0, no reflection; the table is
// computed at compile time rather than pasted.
constexpr std::array<std::uint16_t, 256> make_table() {
  std::array<std::uint16_t, 256> t{};
  for (unsigned i = 0; i < 256; ++i) {
    auto crc = static_cast<std::uint16_t>(i << 8);
    for (int b = 0; b < 8; ++b)
      crc = static_cast<std::uint16_t>((crc & 0x8000) ? (crc << 1) ^ 0x1021 : crc << 1);
    t[i] = crc;
  }
  return t;
}
constexpr auto kTable = make_table();

std::uint16_t crc16(std::string_view s) noexcept {
  std::uint16_t crc = 0;
  for (unsigned char c : s)
    crc = static_cast<std::uint16_t>((crc << 8) ^ kTable[((crc >> 8) ^ c) & 0xff]);
  return crc;
}

}  // namespace

std::uint16_t key_slot(std::string_view key) noexcept {
  const auto open = key.find('{');
  if (open != std::string_view::npos) {
    const auto close = key.find('}', open + 1);
    if (close != std::string_view::npos && close != open + 1) key = key.substr(open + 1, close - open - 1);
  }
  return static_cast<std::uint16_t>(crc16(key) & (kSlots - 1));
}

std::optional<Redirect> parse_redirect(std::string_view error) noexcept {
  Redirect r;
  if (error.starts_with("MOVED ")) {
    r.moved = true;
    error.remove_prefix(6);
  } else if (error.starts_with("ASK ")) {
    error.remove_prefix(4);
  } else {
    return std::nullopt;
  }
  unsigned slot = 0;
  auto [p, ec] = std::from_chars(error.data(), error.data() + error.size(), slot);
  if (ec != std::errc{} || p == error.data() || slot >= kSlots || p == error.data() + error.size() || *p != ' ')
    return std::nullopt;
  r.slot = static_cast<std::uint16_t>(slot);
  std::string_view where(p + 1, static_cast<std::size_t>(error.data() + error.size() - (p + 1)));
  const auto colon = where.rfind(':');
  if (colon == std::string_view::npos) return std::nullopt;
  const std::string_view port_text = where.substr(colon + 1);
  unsigned port = 0;
  auto [q, ec2] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (ec2 != std::errc{} || q != port_text.data() + port_text.size() || port == 0 || port > 65535) return std::nullopt;
  r.port = static_cast<std::uint16_t>(port);
  r.host.assign(where.substr(0, colon));
  return r;
}

}  // namespace chatd::redis
