#include "net/sockjs/ws_framing.h"

#include <deque>

#include "chat/session.h"
#include "sockjs/sockjs.h"
#include "ws/websocket.h"

namespace chatd::net {
namespace {

class SockJsFraming final : public WsFraming {
 public:
  explicit SockJsFraming(std::chrono::milliseconds heartbeat) : heartbeat_(heartbeat) {}

  // SockJS messages are JSON-escaped STOMP frames: allow for the escapes.
  std::size_t max_message_bytes(std::size_t max_frame_bytes) const override { return 6 * max_frame_bytes + 1024; }

  // SockJS's open frame "o" leaves with the 101.
  void append_open(std::string& handshake) const override {
    ws::append_header(handshake, ws::Opcode::text, 1);
    handshake += 'o';
  }

  // Each string of a SockJS message is fed to STOMP; broken JSON ends the session.
  bool on_message(std::string_view payload, chat::StompSession& stomp, const bool& closing) override {
    in_.clear();
    if (sockjs::decode_messages(payload, sockjs::Source::websocket, in_)) return false;
    for (auto& m : in_) {
      if (closing) break;
      stomp.on_bytes_in_loop(m);
    }
    return true;
  }

  // Encodes the batch as one a["frame",...] text message: a frame per JSON string. A shared
  // MESSAGE's head and tail are escaped once per delivery, by the first SockJS subscriber of
  // any shard (SharedMessage::encoded_parts), and copied from there; only the subscription id
  // is escaped per subscriber. Escaping is concatenative, so the pieces join into one string.
  void begin_write() override { used_ = 0; }
  // The strings stay for the next write, but not one grown by a replay: 40 idle connections
  // that had each read a history of 4 MB held 217 MB (an outside probe).
  void end_write() override {
    for (auto& out : outs_)
      if (out.capacity() > kKeepBytes) std::string().swap(out);
  }

  void append_batch(const std::vector<chat::Outbound>& batch, std::size_t, std::string& header,
                    std::vector<boost::asio::const_buffer>& buffers) override {
    // One string per batch of the write, kept (with its capacity) for the next writes.
    if (used_ == outs_.size()) outs_.emplace_back();
    auto& out = outs_[used_++];
    out.clear();
    out += "a[";
    bool first = true;
    for (auto& o : batch) {
      out += first ? "\"" : ",\"";
      first = false;
      if (!o.shared) {
        sockjs::append_escaped(out, o.own);
      } else {
        const auto& parts = o.shared->encoded_parts(&sockjs::append_escaped);
        out += parts.head;
        sockjs::append_escaped(out, o.own);
        out += parts.tail;
      }
      out += '"';
    }
    out += ']';
    ws::append_header(header, ws::Opcode::text, out.size());
    buffers.emplace_back(header.data(), header.size());
    buffers.emplace_back(out.data(), out.size());
  }

  // SockJS says why in its own frame first: c[3000,"reason"].
  void append_close_notice(std::string& out, std::string_view reason) const override {
    std::string c;
    sockjs::append_close(c, {3000, reason.empty() ? sockjs::go_away.reason : reason});
    ws::append_header(out, ws::Opcode::text, c.size());
    out += c;
  }

  // "h" when nothing else was sent for a heart-beat period: proxies drop idle connections.
  std::chrono::milliseconds keepalive_period() const override { return heartbeat_; }
  std::string_view keepalive_message() const override { return {"\x81\x01h", 3}; }

 private:
  static constexpr std::size_t kKeepBytes = 64 * 1024;
  std::chrono::milliseconds heartbeat_;
  std::vector<std::string> in_;  // one message's decoded strings
  std::deque<std::string> outs_;  // the a[...] messages being written: deque, so they stay put
  std::size_t used_ = 0;
};

}  // namespace

std::unique_ptr<WsFraming> make_sockjs_ws_framing(std::chrono::milliseconds heartbeat) {
  return std::make_unique<SockJsFraming>(heartbeat);
}

}  // namespace chatd::net
