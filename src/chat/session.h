// One STOMP conversation, whatever carries it. Reads frames from the codec, applies the
// protocol (CONNECT, SUBSCRIBE, SEND, receipts, heart-beats) and the chat rules, and writes
// through its Transport. Every *_in_loop member runs on its shard's loop; callbacks from the
// bus or store come back to that loop through a weak pointer.
#pragma once

#include <algorithm>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "chat/hub.h"
#include "chat/rate_limit.h"
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
  // Ends the conversation with an ERROR frame (message header + body), then closes. One a frame
  // caused waits for the answers of the frames before it (at most kHoldErrorFor); `now` closes at
  // once whatever is pending (a reader past its bound).
  void fail_in_loop(std::string_view message, std::string_view detail, bool now = false);

  // A token from the connection's URL (access_token=), proved at CONNECT when CONNECT carries
  // none. Call before the first bytes.
  void set_url_token(std::string token);
  // The client's address as the transport saw it (X-Forwarded-For from a trusted proxy), for
  // the log lines that name this session. Call before the first bytes.
  void set_client(std::string address) { client_ = std::move(address); }
  // Who this session speaks for: set at CONNECT with --auth jwt, null before and with --auth
  // none. Valid while the session lives; copy the pointer (identity_ptr) to keep it longer.
  const Identity* identity() const { return identity_.get(); }
  const IdentityPtr& identity_ptr() const { return identity_; }

  // The room of subscription `sub` (escaped id) was deleted: sends `notice` on it, then ends
  // the subscription as an UNSUBSCRIBE would, without a RECEIPT. The connection stays.
  void end_room_subscription_in_loop(const SharedMessagePtr& notice, const std::string& sub);

  // CONNECTED's session header: "<node id>-<id given>", unique across nodes.
  const std::string& id() const { return id_; }
  // Who /api/disconnect's "user" names: the identity's user (--auth jwt); with --auth none,
  // the sender of the last chat message this session sent (empty before its first).
  const std::string& user() const { return identity_ ? identity_->user : user_; }
  bool connected() const { return state_ == State::connected; }
  bool closed() const { return state_ == State::closed; }

 private:
  enum class State { awaiting_connect, connected, closing, closed };
  struct Subscription {
    std::string room_id;  // empty for /user/queue/errors
    std::string escaped;  // the id as it goes into MESSAGE frames
    bool pending = false;       // the room's existence is being checked; not joined yet
    std::uint64_t serial = 0;   // tells a pending check or join from a later subscription with the same id
  };
  // What a SUBSCRIBE asked of history: x-history: N, or x-since-seq: S (+ x-epoch: E).
  struct HistoryAsk {
    std::size_t last = 0;
    std::optional<std::uint64_t> since;
    std::optional<std::string> epoch;
  };
  // A subscription replaying history. Live messages that arrive while history is read are
  // held, then sent after it, less those the replay already held.
  struct Replay {
    bool holding = true;
    std::vector<SharedMessagePtr> held;
    std::size_t held_bytes = 0;
    std::string epoch;          // of the replayed messages
    std::uint64_t through = 0;  // live messages of that epoch up to this seq are not sent again
  };

  void on_frame(stomp::Frame& f);
  void on_connect(stomp::Frame& f);
  // --auth jwt: proves CONNECT's token (Authorization: Bearer, passcode, else the URL's) and
  // sets identity_. Returns false after failing the session.
  bool authenticate(stomp::Frame& f);
  void on_subscribe(stomp::Frame& f);
  void on_unsubscribe(stomp::Frame& f);
  // Ends subscription `sub_id` (UNSUBSCRIBE, or a join the engine could not confirm): the room
  // loses this subscriber, presence hears it, and the room's ENTER goes with the last one.
  void end_subscription(const std::string& sub_id);
  // The store answered whether a subscription's room exists: join it or refuse it with 404.
  void on_room_checked(const std::string& sub_id, std::uint64_t serial, std::uint64_t slot, const std::string& receipt,
                       const std::optional<HistoryAsk>& ask, std::error_code ec);
  // Subscribes to a room known to exist; its RECEIPT (if `slot`) waits for the bus, then the
  // history `ask`ed for is replayed.
  void join_room(const std::string& sub_id, std::uint64_t serial, const std::string& room, const std::string& escaped,
                 std::optional<std::uint64_t> slot, std::string receipt, std::optional<HistoryAsk> ask);
  // A SUBSCRIBE to a restricted room this identity may not enter: 403 on /user/queue/errors
  // in `slot`, no subscription (as for an unknown room).
  void refuse_room(std::uint64_t slot, const std::string& receipt);
  void on_send(stomp::Frame& f);
  void on_disconnect(stomp::Frame& f);

  // Returns what the SUBSCRIBE's history headers ask for; nullopt (after failing the session)
  // when one is malformed.
  std::optional<std::optional<HistoryAsk>> history_ask(stomp::Frame& f);
  void start_replay_in_loop(const std::string& sub_id, const HistoryAsk& ask);
  // Answers a replay's history read. `second`: this is the read of the newest --max-replay
  // after the first showed a stale epoch, a seq ahead of the room, or (`capped`) too many.
  void on_history_in_loop(const std::string& sub_id, const HistoryAsk& ask, bool second, bool capped,
                          std::error_code ec, bus::History h);
  // Sends the notice (if any) and `messages` on the subscription, then what was held.
  // Cuts the oldest of `messages` until the replay fits what this connection may queue plus
  // what the node's history memory grants it (taken here); returns how many it cut.
  std::size_t fit_replay_in_loop(std::vector<bus::Delivery>& messages, const std::string& escaped);
  // Gives back what replays took of the node's history memory.
  void return_history_memory();
  void finish_replay_in_loop(const std::string& sub_id, const std::string* notice, std::vector<bus::Delivery>& messages,
                             const std::string& epoch, std::uint64_t through);
  std::string history_notice(const std::string& sub_id, std::string_view status, std::string_view reason,
                             const HistoryAsk& ask, const bus::History& h, std::uint64_t from_seq);
  // Answers (receipts and SEND rejections) leave in the order their frames came, whatever
  // order the bus or store finishes in: each frame that will be answered opens a slot.
  struct Answer {
    int status = 0;
    std::string error;                   // non-empty: a rejection for /user/queue/errors
    std::optional<std::string> receipt;  // else: a RECEIPT, if the frame asked for one
    bool close_after = false;            // DISCONNECT: close once answered
    bool ready = false;
    std::uint64_t seq = 0;               // a SEND's seq: the RECEIPT's x-seq header
    std::string epoch{};                 // and the epoch it counts in: its x-epoch header
  };
  std::uint64_t open_answer();
  void settle(std::uint64_t slot, Answer a);

  void send_bytes(std::string bytes);
  void send_error_and_close(std::string bytes, std::string_view reason);
  void send_receipt(const std::string& receipt_id, std::uint64_t seq = 0, std::string_view epoch = {});
  // Reports a chat-level rejection on /user/queue/errors (if subscribed); keeps the session.
  void reject(int status, std::string_view error, const std::string* receipt = nullptr);
  void leave_all_rooms();

  // Presence (README "Presence"). A connection is in a room's member list once it holds a
  // confirmed subscription of the room and has ENTERed it. The member is chat::member_key:
  // with --auth jwt the token's user and name (so an ENTER can only be one's own), with
  // --auth none the sender the connection's first ENTER for the room named.
  std::string member_name(const std::string& sender) const;
  bool subscribed(const std::string& room, bool confirmed) const;
  // Brings the roster in line with whether this connection is in `room` now; `goodbye`: a
  // leave takes effect at once, not after the grace period. `settled` runs once any
  // announcement it caused was published (at once when none).
  void update_presence(const std::string& room, bool goodbye, std::function<void()> settled);
  // Returns a callable for other threads that runs fn(*this, args...) on this session's loop
  // if the session is still open by then.
  template <class Fn>
  auto back_in_loop(Fn fn);

  Shard& shard_;
  Hub& hub_;
  Transport* transport_;  // null once closed
  std::string id_;
  std::string client_;  // set_client: for logs only
  std::string user_;  // --auth none: the sender of the last chat message sent
  IdentityPtr identity_;                   // null: --auth none, or not connected yet
  std::unique_ptr<std::string> url_token_;  // until CONNECT; a pointer keeps idle sessions small
  State state_ = State::awaiting_connect;
  stomp::Parser parser_;
  stomp::Version version_ = stomp::Version::v1_2;
  std::chrono::milliseconds send_every_{0};
  std::chrono::milliseconds expect_every_{0};
  Clock::time_point started_;
  Clock::time_point last_read_;
  Clock::time_point last_write_;
  std::unordered_map<std::string, Subscription> subs_;
  // What only a session that subscribed needs, made at its first use (joined()): an idle
  // connection does not carry these maps (issue 15: idle memory per connection).
  struct Joined {
    std::vector<std::string> errors_subs;  // ids of the /user/queue/errors subscriptions (each gets every error)
    std::unordered_map<std::string, Replay> replays;  // by escaped subscription id
    // Escaped ids of STOMP 1.2 subscriptions with ack client or client-individual: their MESSAGE
    // frames carry an `ack` header, as 1.2 requires (every subscription is auto-acknowledged).
    std::vector<std::string> ack_subs;
    std::unordered_map<std::string, std::string> entered;  // room -> member its ENTER named
    std::unordered_map<std::string, std::string> present;  // room -> member, as the roster has it
    std::size_t replay_allowance = 0;  // replayed bytes not yet written: exempt from the slow-reader bound
    std::size_t history_memory = 0;    // taken from the node's history memory, until the queue drains
  };
  std::unique_ptr<Joined> joined_;
  Joined& joined() {
    if (!joined_) joined_ = std::make_unique<Joined>();
    return *joined_;
  }
  bool replaying(const std::string& escaped) const { return joined_ && joined_->replays.count(escaped); }
  // Wraps a room message for subscription `escaped`, with the `ack` header where it asked for one.
  Outbound outbound(const SharedMessagePtr& m, const std::string& escaped) const;
  bool acks(const std::string& escaped) const {
    return joined_ && !joined_->ack_subs.empty() &&
           std::find(joined_->ack_subs.begin(), joined_->ack_subs.end(), escaped) != joined_->ack_subs.end();
  }
  void forget_ack(const std::string& escaped) {
    if (joined_) std::erase(joined_->ack_subs, escaped);
  }
  std::uint64_t next_notice_id_ = 0;
  std::uint64_t next_error_id_ = 0;
  TokenBucket send_bucket_;   // SENDs admitted
  TokenBucket flood_bucket_;  // SENDs refused: empty means sustained abuse
  std::uint64_t next_sub_serial_ = 0;
  bool goodbye_ = false;                                  // DISCONNECT came: leaves are not drops
  bool reading_ = false;  // inside on_bytes_in_loop: an ERROR now is a frame's
  // An ERROR held until the answers of the frames before it have gone, so a RECEIPT the client
  // waits for is not lost to the close; the sweep sends it anyway after kHoldErrorFor.
  struct HeldError {
    std::string bytes, reason;
    Clock::time_point since;
  };
  std::unique_ptr<HeldError> held_error_;  // rare: kept out of every session's size
  const std::string* frame_receipt_ = nullptr;  // the receipt of the frame being handled, if any
  std::vector<Answer> answers_;  // answers_[0] is slot answers_base_
  std::uint64_t answers_base_ = 0;
};

}  // namespace chatd::chat
