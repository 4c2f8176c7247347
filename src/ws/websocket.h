// chatd::ws — the server side of RFC 6455 framing as a pure codec: bytes in, messages out,
// no sockets. Beast does the HTTP upgrade; this replaces Beast's WebSocket stream on the hot
// path so one read can hand every complete message to STOMP before anything is written (the
// writes of a whole batch then leave together), and so an idle connection owns no buffers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <system_error>

#include "utf8/utf8.h"

namespace chatd::ws {

enum class Opcode : std::uint8_t { continuation = 0, text = 1, binary = 2, close = 8, ping = 9, pong = 10 };

enum class Error {
  ok = 0,
  unmasked = 1,         // a client frame without the mask bit (RFC 6455 §5.1)
  reserved_bits,        // RSV1-3 set without a negotiated extension
  bad_opcode,           // an opcode RFC 6455 does not define
  bad_control,          // a control frame fragmented or longer than 125 bytes
  bad_continuation,     // a continuation with no message open, or a new message inside one
  too_big,              // a message longer than the limit (close code 1009)
  bad_utf8,             // a text message that is not UTF-8 (close code 1007)
  bad_length,           // a 64-bit length with the top bit set, or a non-minimal length
  bad_close,            // a close payload of 1 byte, a bad code, or a reason not UTF-8
};
const std::error_category& error_category() noexcept;
std::error_code make_error_code(Error e) noexcept;

// Returns the close code RFC 6455 prescribes for `e`: 1009 too big, 1007 bad UTF-8, else 1002.
std::uint16_t close_code_for(std::error_code e);

// An incremental decoder of client frames. Each consume() takes what arrived, unmasks it, and
// stops at the first complete event; "need more" is a normal answer.
class Decoder {
 public:
  enum class Status { need_more, message, ping, pong, close, error };
  struct Result {
    std::size_t used;  // bytes of the input taken, whatever the status
    Status status;
  };

  explicit Decoder(std::size_t max_message_bytes) : max_message_(max_message_bytes) {}

  Result consume(std::string_view bytes);

  // After Status::message: the whole (reassembled) payload and whether it was text.
  // After ping/pong/close: that control frame's payload. Valid until the next consume().
  std::string_view payload() const;
  bool text() const { return text_; }
  // After Status::close: the code the client sent (1005 when it sent none) and its reason.
  std::uint16_t close_code() const { return close_code_; }
  std::error_code error() const { return error_; }

  // Releases buffers kept from earlier messages; an idle connection then holds nothing.
  void shrink();
  // shrink(), but only when no message or frame header is half-read.
  void shrink_if_idle() {
    if (!in_message_ && !in_frame_ && header_.empty()) shrink();
  }

 private:
  std::size_t max_message_;
  std::string message_;   // the message being reassembled (unmasked)
  std::string control_;   // the last control frame's payload
  std::string header_;    // a frame header split across reads
  bool in_message_ = false;
  bool text_ = false;
  bool message_ready_ = false;
  std::uint16_t close_code_ = 1005;
  std::error_code error_;
  // The frame being read.
  std::uint64_t frame_left_ = 0;
  std::uint8_t frame_opcode_ = 0;
  bool frame_fin_ = false;
  bool in_frame_ = false;
  std::uint8_t mask_[4] = {};
  std::size_t mask_pos_ = 0;  // payload bytes of this frame unmasked so far, mod 4
  // UTF-8 state of the text message so far, so each fragment is scanned once.
  utf8::Validator utf8_;

  Result fail(std::size_t used, std::error_code e);
  std::error_code check_header(const unsigned char* p, std::size_t have, std::size_t& need) const;
  void start_frame(const unsigned char* p, std::size_t size);
  Result finish_frame(std::size_t used);
};

// Appends a server frame header (FIN set, unmasked) for a payload of `length` bytes.
void append_header(std::string& out, Opcode op, std::size_t length);

// Returns a complete close frame with `code` and up to 123 bytes of `reason`.
std::string close_frame(std::uint16_t code, std::string_view reason);

// Returns a pong frame echoing `payload`.
std::string pong_frame(std::string_view payload);

}  // namespace chatd::ws

namespace std {
template <>
struct is_error_code_enum<chatd::ws::Error> : true_type {};
}  // namespace std
