#include "net/ws_framing.h"

#include "chat/session.h"
#include "ws/websocket.h"

namespace chatd::net {
namespace {

class RawFraming final : public WsFraming {
 public:
  std::size_t max_message_bytes(std::size_t max_frame_bytes) const override { return 2 * max_frame_bytes + 1024; }
  void append_open(std::string&) const override {}
  bool on_message(std::string_view payload, chat::StompSession& stomp, const bool&) override {
    stomp.on_bytes_in_loop(payload);
    return true;
  }
  // One header, then each frame's pieces as they are: a shared MESSAGE's head and tail are
  // not copied.
  void append_batch(const std::vector<chat::Outbound>& batch, std::size_t bytes, std::string& header,
                    std::vector<boost::asio::const_buffer>& buffers) override {
    ws::append_header(header, ws::Opcode::text, bytes);
    buffers.emplace_back(header.data(), header.size());
    for (auto& o : batch) {
      if (o.shared) {
        buffers.emplace_back(o.shared->frame.head.data(), o.shared->frame.head.size());
        buffers.emplace_back(o.own.data(), o.own.size());
        buffers.emplace_back(o.shared->frame.tail.data(), o.shared->frame.tail.size());
      } else {
        buffers.emplace_back(o.own.data(), o.own.size());
      }
    }
  }
  void append_close_notice(std::string&, std::string_view) const override {}
};

}  // namespace

WsFraming& raw_ws_framing() {
  static RawFraming raw;
  return raw;
}

}  // namespace chatd::net
