// The test-only echo application (net/ws_app.h) that ws_echo serves to Autobahn and
// tests/net/ws_app_test drives: every message goes back as it came, one WebSocket message of
// the same kind (text or binary), never joined with another. chatd itself has no such app.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "chat/hub.h"
#include "net/ws_app.h"

namespace chatd::test {

class EchoApp final : public net::WsApp {
 public:
  explicit EchoApp(std::size_t max_message) : max_message_(max_message) {}

  std::size_t max_message_bytes() const override { return max_message_; }

  void open_in_loop(chat::Shard&, chat::Transport& transport, std::string) override { transport_ = &transport; }

  bool on_message_in_loop(std::string_view payload, bool text, const bool& closing) override {
    if (closing || !transport_) return true;
    auto kind = text ? chat::Outbound::Kind::text_message : chat::Outbound::Kind::binary_message;
    transport_->send(chat::Outbound{nullptr, std::string(payload), kind});
    return true;
  }

  void on_closed_in_loop() override { transport_ = nullptr; }

 private:
  std::size_t max_message_;
  chat::Transport* transport_ = nullptr;
};

}  // namespace chatd::test
