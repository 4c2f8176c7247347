// One STOMP conversation, whatever carries it. Reads frames from the codec, applies the
// protocol (CONNECT, SUBSCRIBE, SEND, receipts, heart-beats) and the chat rules, and writes
// through its Transport. Every *_in_loop member runs on its shard's loop; callbacks from the
// bus or store come back to that loop through a weak pointer.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "chat/hub.h"
#include "stomp/stomp.h"

namespace chatd::chat {

class StompSession : public std::enable_shared_from_this<StompSession> {
 public:
  using Clock = std::chrono::steady_clock;

  // `id` goes into CONNECTED's session header. The version is CONNECT's accept-version's to
  // decide (the WebSocket subprotocol is not consulted).
  StompSession(Shard& shard, Transport& transport, std::string id);
  ~StompSession();

  // Registers with the shard. Call once, on the shard's loop, before any bytes.
  void start_in_loop();
  // Feeds bytes read from the client; may queue writes and close the transport.
  void on_bytes_in_loop(std::string_view bytes);
  // Sends and checks heart-beats, enforces the CONNECT deadline. Called about once a second.
  void tick_in_loop(Clock::time_point now);
  // Queues a room message for subscription `sub`; a reader too slow to keep up is closed.
  void deliver_in_loop(const SharedMessagePtr& m, const std::string& sub);
  // The transport is gone: leave every room, unregister, never write again.
  void on_closed_in_loop();
  // Ends the conversation with an ERROR frame (message header + body), then closes.
  void fail_in_loop(std::string_view message, std::string_view detail);

  const std::string& id() const { return id_; }
  bool connected() const { return state_ == State::connected; }
  bool closed() const { return state_ == State::closed; }

 private:
  enum class State { awaiting_connect, connected, closing, closed };
  struct Subscription {
    std::string room_id;  // empty for /user/queue/errors
    std::string escaped;  // the id as it goes into MESSAGE frames
  };

  void on_frame(stomp::Frame& f);
  void on_connect(stomp::Frame& f);
  void on_subscribe(stomp::Frame& f);
  void on_unsubscribe(stomp::Frame& f);
  void on_send(stomp::Frame& f);
  void on_disconnect(stomp::Frame& f);

  // Answers (receipts and SEND rejections) leave in the order their frames came, whatever
  // order the bus or store finishes in: each frame that will be answered opens a slot.
  struct Answer {
    int status = 0;
    std::string error;                   // non-empty: a rejection for /user/queue/errors
    std::optional<std::string> receipt;  // else: a RECEIPT, if the frame asked for one
    bool close_after = false;            // DISCONNECT: close once answered
    bool ready = false;
  };
  std::uint64_t open_answer();
  void settle(std::uint64_t slot, Answer a);

  void send_bytes(std::string bytes);
  void send_receipt(const std::string& receipt_id);
  // Reports a chat-level rejection on /user/queue/errors (if subscribed); keeps the session.
  void reject(int status, std::string_view error, const std::string* receipt = nullptr);
  void leave_all_rooms();
  // Returns a callable for other threads that runs fn(*this, args...) on this session's loop
  // if the session is still open by then.
  template <class Fn>
  auto back_in_loop(Fn fn);

  Shard& shard_;
  Hub& hub_;
  Transport* transport_;  // null once closed
  std::string id_;
  State state_ = State::awaiting_connect;
  stomp::Parser parser_;
  stomp::Version version_ = stomp::Version::v1_2;
  std::chrono::milliseconds send_every_{0};
  std::chrono::milliseconds expect_every_{0};
  Clock::time_point started_;
  Clock::time_point last_read_;
  Clock::time_point last_write_;
  std::unordered_map<std::string, Subscription> subs_;
  std::optional<std::string> errors_sub_;  // escaped id of the /user/queue/errors subscription
  std::uint64_t next_error_id_ = 0;
  std::vector<Answer> answers_;  // answers_[0] is slot answers_base_
  std::uint64_t answers_base_ = 0;
};

}  // namespace chatd::chat
