#include "chat/control.h"

#include <sstream>

namespace chatd::chat {

ControlChannel::ControlChannel(bus::MessageBus& bus) : bus_(bus) {
  bus_.on_control([this](bus::ControlMessage&& m) { on_message(std::move(m)); });
}

void ControlChannel::send(std::string type, std::string body, bus::DoneFn done) {
  bus_.publish_control(bus::ControlMessage{std::move(type), {}, std::move(body)},
                       [this, done = std::move(done)](std::error_code ec) {
                         (ec ? send_failed_ : sent_).fetch_add(1, std::memory_order_relaxed);
                         done(ec);
                       });
}

void ControlChannel::listen(std::string type, Handler fn) { handlers_[std::move(type)] = std::move(fn); }

void ControlChannel::on_message(bus::ControlMessage&& m) {
  received_.fetch_add(1, std::memory_order_relaxed);
  auto it = handlers_.find(m.type);
  // A type this node does not know (a newer node's) is counted and ignored.
  if (it == handlers_.end()) return void(unhandled_.fetch_add(1, std::memory_order_relaxed));
  it->second(m);
}

std::string ControlChannel::metrics_text() const {
  std::ostringstream out;
  out << "# HELP chatd_control_sent_total Control messages this node published, by outcome.\n"
         "# TYPE chatd_control_sent_total counter\n"
      << "chatd_control_sent_total{outcome=\"ok\"} " << sent_.load() << '\n'
      << "chatd_control_sent_total{outcome=\"failed\"} " << send_failed_.load() << '\n'
      << "# HELP chatd_control_received_total Control messages this node received, and how many had no handler.\n"
         "# TYPE chatd_control_received_total counter\n"
      << "chatd_control_received_total{handled=\"yes\"} " << received_.load() - unhandled_.load() << '\n'
      << "chatd_control_received_total{handled=\"no\"} " << unhandled_.load() << '\n';
  return out.str();
}

}  // namespace chatd::chat
