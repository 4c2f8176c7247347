#include "ws/websocket.h"

#include <algorithm>
#include <cstring>

#include "utf8/utf8.h"

namespace chatd::ws {
namespace {

class Category final : public std::error_category {
 public:
  const char* name() const noexcept override { return "chatd.ws"; }
  // These texts become close reasons, so they stay short (a close reason holds 123 bytes).
  std::string message(int ev) const override {
    switch (static_cast<Error>(ev)) {
      case Error::ok: return "ok";
      case Error::unmasked: return "client frame not masked";
      case Error::reserved_bits: return "reserved bits set";
      case Error::bad_opcode: return "unknown opcode";
      case Error::bad_control: return "control frame fragmented or over 125 bytes";
      case Error::bad_continuation: return "continuation frame out of order";
      case Error::too_big: return "message too big";
      case Error::bad_utf8: return "text message is not UTF-8";
      case Error::bad_length: return "bad frame length encoding";
      case Error::bad_close: return "bad close frame payload";
    }
    return "unknown websocket error";
  }
};

bool is_control(std::uint8_t op) { return (op & 0x8) != 0; }

// The header size the second byte announces (the mask key is counted: clients must mask).
std::size_t header_size(unsigned char b1) {
  const unsigned len7 = b1 & 0x7Fu;
  return 2 + (len7 == 126 ? 2u : len7 == 127 ? 8u : 0u) + 4;
}

std::uint64_t read_be(const unsigned char* p, std::size_t n) {
  std::uint64_t v = 0;
  for (std::size_t i = 0; i < n; ++i) v = (v << 8) | p[i];
  return v;
}

// Copies `n` bytes from `src` to `dst` unmasking with `mask` started at offset `pos`;
// eight bytes at a time with the mask rotated and repeated into a 64-bit word.
void unmask_copy(char* dst, const char* src, std::size_t n, const std::uint8_t (&mask)[4],
                 std::size_t pos) {
  unsigned char rotated[8];
  for (std::size_t i = 0; i < 8; ++i) rotated[i] = mask[(pos + i) & 3];
  std::uint64_t key;
  std::memcpy(&key, rotated, 8);
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    std::uint64_t w;
    std::memcpy(&w, src + i, 8);
    w ^= key;
    std::memcpy(dst + i, &w, 8);
  }
  for (; i < n; ++i) dst[i] = static_cast<char>(src[i] ^ static_cast<char>(rotated[i & 7]));
}

bool valid_close_code(std::uint16_t c) {
  return (c >= 1000 && c <= 1003) || (c >= 1007 && c <= 1011) || (c >= 3000 && c <= 4999);
}

}  // namespace

const std::error_category& error_category() noexcept {
  static const Category category;
  return category;
}

std::error_code make_error_code(Error e) noexcept { return {static_cast<int>(e), error_category()}; }

std::uint16_t close_code_for(std::error_code e) {
  if (e == Error::too_big) return 1009;
  if (e == Error::bad_utf8) return 1007;
  return 1002;
}

std::string_view Decoder::payload() const { return message_ready_ ? message_ : control_; }

void Decoder::shrink() {
  // A message being assembled keeps its bytes; only its spare capacity goes.
  if (in_message_) {
    message_.shrink_to_fit();
  } else {
    std::string().swap(message_);
    message_ready_ = false;
  }
  if (in_frame_ && is_control(frame_opcode_)) {
    control_.shrink_to_fit();
  } else {
    std::string().swap(control_);
  }
  header_.shrink_to_fit();
}

Decoder::Result Decoder::fail(std::size_t used, std::error_code e) {
  error_ = e;
  return {used, Status::error};
}

// Validates the first `have` bytes of a header, in an order that does not depend on how the
// bytes were split, and sets `need` to the header's size (2 until the second byte is known).
std::error_code Decoder::check_header(const unsigned char* p, std::size_t have,
                                      std::size_t& need) const {
  need = 2;
  if (have < 2) return {};
  const unsigned char b0 = p[0], b1 = p[1];
  const auto op = static_cast<std::uint8_t>(b0 & 0x0F);
  const bool fin = (b0 & 0x80) != 0;
  const unsigned len7 = b1 & 0x7Fu;
  if ((b0 & 0x70) != 0) return Error::reserved_bits;
  if (op > 10 || (op > 2 && op < 8)) return Error::bad_opcode;
  if ((b1 & 0x80) == 0) return Error::unmasked;
  if (is_control(op)) {
    if (!fin || len7 > 125) return Error::bad_control;
  } else if ((op == 0) != in_message_) {
    return Error::bad_continuation;
  }
  need = header_size(b1);
  std::uint64_t length = len7;
  if (len7 == 126) {
    if (have < 4) return {};
    length = read_be(p + 2, 2);
    if (length < 126) return Error::bad_length;
  } else if (len7 == 127) {
    if (have < 10) return {};
    length = read_be(p + 2, 8);
    if ((length >> 63) != 0 || length < 65536) return Error::bad_length;
  }
  // Refused on the header alone, so a client cannot make the server buffer first.
  if (!is_control(op)) {
    const std::size_t so_far = op == 0 ? message_.size() : 0;
    if (length > max_message_ - std::min(so_far, max_message_)) return Error::too_big;
  }
  return {};
}

// Takes in a complete, checked header.
void Decoder::start_frame(const unsigned char* p, std::size_t size) {
  frame_fin_ = (p[0] & 0x80) != 0;
  frame_opcode_ = static_cast<std::uint8_t>(p[0] & 0x0F);
  const unsigned len7 = p[1] & 0x7Fu;
  frame_left_ = len7 == 126 ? read_be(p + 2, 2) : len7 == 127 ? read_be(p + 2, 8) : len7;
  std::memcpy(mask_, p + size - 4, 4);
  mask_pos_ = 0;
  in_frame_ = true;
  if (is_control(frame_opcode_)) {
    control_.clear();
  } else if (frame_opcode_ != 0) {
    in_message_ = true;
    text_ = frame_opcode_ == static_cast<std::uint8_t>(Opcode::text);
    message_.clear();
    utf8_.reset();
  }
}

// The current frame's payload is all in; returns its event, or need_more for a data frame
// that does not end its message.
Decoder::Result Decoder::finish_frame(std::size_t used) {
  in_frame_ = false;
  switch (static_cast<Opcode>(frame_opcode_)) {
    case Opcode::ping: return {used, Status::ping};
    case Opcode::pong: return {used, Status::pong};
    case Opcode::close: {
      if (control_.empty()) {
        close_code_ = 1005;
        return {used, Status::close};
      }
      if (control_.size() < 2) return fail(used, Error::bad_close);
      const auto* p = reinterpret_cast<const unsigned char*>(control_.data());
      const auto code = static_cast<std::uint16_t>((p[0] << 8) | p[1]);
      if (!valid_close_code(code) || !utf8::valid(std::string_view(control_).substr(2))) {
        return fail(used, Error::bad_close);
      }
      close_code_ = code;
      return {used, Status::close};
    }
    default: break;
  }
  if (!frame_fin_) return {used, Status::need_more};
  if (text_ && !utf8_.complete()) return fail(used, Error::bad_utf8);
  in_message_ = false;
  message_ready_ = true;
  return {used, Status::message};
}

Decoder::Result Decoder::consume(std::string_view bytes) {
  if (error_) return {0, Status::error};
  if (message_ready_) {
    message_.clear();
    message_ready_ = false;
  }
  const auto* in = reinterpret_cast<const unsigned char*>(bytes.data());
  const std::size_t n = bytes.size();
  std::size_t used = 0;
  while (used < n) {
    if (!in_frame_) {
      std::size_t need = 0;
      const std::size_t avail = n - used;
      if (header_.empty() && avail >= 2 && avail >= header_size(in[used + 1])) {
        // The whole header is in this read: parse it where it lies.
        if (auto e = check_header(in + used, avail, need)) return fail(used, e);
        start_frame(in + used, need);
        used += need;
      } else {
        // A header split across reads is gathered in header_ (at most 14 bytes).
        for (;;) {
          const auto* h = reinterpret_cast<const unsigned char*>(header_.data());
          if (auto e = check_header(h, header_.size(), need)) return fail(used, e);
          if (header_.size() >= need) break;
          if (used == n) return {used, Status::need_more};
          const std::size_t take = std::min(need - header_.size(), n - used);
          header_.append(bytes.data() + used, take);
          used += take;
        }
        start_frame(reinterpret_cast<const unsigned char*>(header_.data()), need);
        header_.clear();
      }
    }
    const std::size_t take =
        static_cast<std::size_t>(std::min<std::uint64_t>(frame_left_, n - used));
    if (take > 0) {
      const bool control = is_control(frame_opcode_);
      std::string& dest = control ? control_ : message_;
      const std::size_t old = dest.size();
      dest.resize(old + take);
      unmask_copy(dest.data() + old, bytes.data() + used, take, mask_, mask_pos_);
      mask_pos_ = (mask_pos_ + take) & 3;
      frame_left_ -= take;
      used += take;
      if (!control && text_ &&
          !utf8_.feed(std::string_view(dest).substr(old))) {
        return fail(used, Error::bad_utf8);
      }
    }
    if (frame_left_ > 0) return {used, Status::need_more};
    const Result r = finish_frame(used);
    if (r.status != Status::need_more) return r;
  }
  return {used, Status::need_more};
}

void append_header(std::string& out, Opcode op, std::size_t length) {
  out += static_cast<char>(0x80 | static_cast<unsigned>(op));
  if (length < 126) {
    out += static_cast<char>(length);
  } else if (length <= 0xFFFF) {
    out += static_cast<char>(126);
    out += static_cast<char>((length >> 8) & 0xFF);
    out += static_cast<char>(length & 0xFF);
  } else {
    out += static_cast<char>(127);
    const auto len = static_cast<std::uint64_t>(length);
    for (int shift = 56; shift >= 0; shift -= 8) out += static_cast<char>((len >> shift) & 0xFF);
  }
}

std::string close_frame(std::uint16_t code, std::string_view reason) {
  std::string out;
  // 1005 means "no code": RFC 6455 §7.4.1 forbids sending it, so the frame goes empty.
  if (code == 1005) {
    append_header(out, Opcode::close, 0);
    return out;
  }
  if (reason.size() > 123) {
    std::size_t cut = 123;
    // Back off to the lead byte of the code point the limit falls inside.
    while (cut > 0 && (static_cast<unsigned char>(reason[cut]) & 0xC0) == 0x80) --cut;
    reason = reason.substr(0, cut);
  }
  append_header(out, Opcode::close, 2 + reason.size());
  out += static_cast<char>(code >> 8);
  out += static_cast<char>(code & 0xFF);
  out += reason;
  return out;
}

std::string pong_frame(std::string_view payload) {
  std::string out;
  append_header(out, Opcode::pong, payload.size());
  out += payload;
  return out;
}

}  // namespace chatd::ws
