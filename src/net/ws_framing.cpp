#include "net/ws_framing.h"

#include "chat/session.h"
#include "net/sessions.h"
#include "net/ws_app.h"
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

// STOMP as a WebSocket application: each message's STOMP bytes, unwrapped by the framing, go
// to one chat::StompSession. Binary messages carry STOMP as text ones do (stomp.js may send
// either).
class StompApp final : public WsApp {
 public:
  StompApp(const chat::Limits& limits, WsFraming& framing, std::string url_token)
      : framing_(framing), max_message_(framing.max_message_bytes(limits.max_frame_bytes)) {
    if (!url_token.empty()) url_token_ = std::make_unique<std::string>(std::move(url_token));
  }

  std::size_t max_message_bytes() const override { return max_message_; }

  void open_in_loop(chat::Shard& shard, chat::Transport& transport, std::string client) override {
    stomp_ = std::make_shared<chat::StompSession>(shard, transport, new_session_id());
    if (url_token_) stomp_->set_url_token(std::move(*url_token_));
    url_token_.reset();
    stomp_->set_client(std::move(client));
    stomp_->start_in_loop();
  }

  bool on_message_in_loop(std::string_view payload, bool, const bool& closing) override {
    return framing_.on_message(payload, *stomp_, closing);
  }

  void on_closed_in_loop() override {
    if (stomp_) stomp_->on_closed_in_loop();
  }

 private:
  WsFraming& framing_;
  std::size_t max_message_;
  std::unique_ptr<std::string> url_token_;  // until open; a pointer keeps idle sessions small
  std::shared_ptr<chat::StompSession> stomp_;
};

}  // namespace

std::unique_ptr<WsApp> make_stomp_ws_app(const chat::Limits& limits, WsFraming& framing, std::string url_token) {
  return std::make_unique<StompApp>(limits, framing, std::move(url_token));
}

WsFraming& raw_ws_framing() {
  static RawFraming raw;
  return raw;
}

}  // namespace chatd::net
