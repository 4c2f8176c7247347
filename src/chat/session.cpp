#include "chat/session.h"

#include <boost/asio/post.hpp>

#include <charconv>

namespace chatd::chat {
namespace {

using stomp::Command;
using stomp::Version;

int status_for(std::error_code ec) {
  if (ec == Error::unknown_room || ec == Error::unknown_destination) return 404;
  if (ec == Error::message_too_long) return 413;
  if (ec == Error::publish_failed || ec == Error::store_unavailable) return 503;
  return 400;
}

}  // namespace

StompSession::StompSession(Shard& shard, Transport& transport, std::string id)
    : shard_(shard),
      hub_(shard.hub()),
      transport_(&transport),
      id_(std::move(id)),
      parser_(stomp::Limits{hub_.limits().max_frame_bytes, hub_.limits().max_headers,
                            hub_.limits().max_header_line}) {}

StompSession::~StompSession() = default;

template <class Fn>
auto StompSession::back_in_loop(Fn fn) {
  // Callbacks from the bus or store hold only a weak pointer and never lock it off the loop,
  // so a session is always destroyed on its own loop.
  return [loop = &shard_.loop(), weak = weak_from_this(), fn = std::move(fn)](auto&&... args) mutable {
    boost::asio::post(*loop, [weak, fn, args...]() mutable {
      if (auto self = weak.lock(); self && self->transport_) fn(*self, args...);
    });
  };
}

void StompSession::start_in_loop() {
  started_ = last_read_ = last_write_ = Clock::now();
  shard_.add_session_in_loop(this);
}

void StompSession::on_bytes_in_loop(std::string_view bytes) {
  last_read_ = Clock::now();
  while (!bytes.empty() && (state_ == State::awaiting_connect || state_ == State::connected)) {
    auto r = parser_.consume(bytes);
    bytes.remove_prefix(r.used);
    if (r.status == stomp::Parser::Status::frame) {
      on_frame(parser_.frame());
      // Senders keep the parser's buffers for their next SEND; everyone else is likely to
      // sit idle now, and thousands of idle sessions should not each hold a frame's worth.
      if (parser_.frame().command != Command::send) parser_.release_buffers();
    } else if (r.status == stomp::Parser::Status::error) {
      hub_.protocol_errors.fetch_add(1, std::memory_order_relaxed);
      fail_in_loop(parser_.error().message(), "The frame could not be read: " + parser_.error().message());
      return;
    } else {
      break;
    }
  }
}

void StompSession::on_frame(stomp::Frame& f) {
  if (state_ == State::awaiting_connect) {
    if (f.command == Command::connect || f.command == Command::stomp) return on_connect(f);
    hub_.protocol_errors.fetch_add(1, std::memory_order_relaxed);
    return fail_in_loop("expected CONNECT",
                        "The first frame must be CONNECT or STOMP, not " + std::string(to_string(f.command)) + ".");
  }
  switch (f.command) {
    case Command::subscribe: return on_subscribe(f);
    case Command::unsubscribe: return on_unsubscribe(f);
    case Command::send: return on_send(f);
    case Command::disconnect: return on_disconnect(f);
    case Command::ack:
    case Command::nack:
    case Command::begin:
    case Command::commit:
    case Command::abort:
      // Accepted and ignored: subscriptions are auto-ack and chat has no transactions.
      if (auto r = f.header("receipt")) settle(open_answer(), {0, {}, *r});
      return;
    default:
      hub_.protocol_errors.fetch_add(1, std::memory_order_relaxed);
      return fail_in_loop("unexpected " + std::string(to_string(f.command)) + " frame",
                          "A client may not send " + std::string(to_string(f.command)) + " here.");
  }
}

void StompSession::on_connect(stomp::Frame& f) {
  const std::string* accept = f.header("accept-version");
  auto v = stomp::negotiate_version(accept ? std::optional<std::string_view>(*accept) : std::nullopt);
  if (!v) {
    version_ = Version::v1_0;
    stomp::Frame err{Command::error, {{"version", "1.0,1.1,1.2"}, {"message", "unsupported protocol version"},
                                      {"content-type", "text/plain"}},
                     "Supported protocol versions are 1.0, 1.1 and 1.2."};
    send_bytes(stomp::encode(err, version_));
    state_ = State::closing;
    transport_->close("unsupported protocol version");
    return;
  }
  version_ = *v;
  parser_.set_version(version_);

  const auto& lim = hub_.limits();
  // Options bound both to a day, so they fit the codec's 32-bit milliseconds.
  const stomp::HeartBeat server{static_cast<std::uint32_t>(lim.heartbeat_send.count()),
                                static_cast<std::uint32_t>(lim.heartbeat_receive.count())};
  stomp::Frame ok{Command::connected, {{"version", std::string(to_string(version_))}}, {}};
  if (version_ != Version::v1_0) {
    stomp::HeartBeat client;  // no header: the client neither sends nor wants beats
    if (auto hb = f.header("heart-beat")) {
      auto parsed = stomp::parse_heart_beat(*hb);
      if (!parsed) {
        hub_.protocol_errors.fetch_add(1, std::memory_order_relaxed);
        return fail_in_loop("malformed heart-beat header", "heart-beat must be two numbers, e.g. 10000,10000.");
      }
      client = *parsed;
    }
    const auto agreed = stomp::negotiate_heart_beat(client, server);
    send_every_ = std::chrono::milliseconds(agreed.send_ms);
    expect_every_ = std::chrono::milliseconds(agreed.receive_ms);
    ok.headers.push_back({"heart-beat", std::to_string(server.send_ms) + "," + std::to_string(server.receive_ms)});
  }
  ok.headers.push_back({"server", hub_.config().server_name});
  ok.headers.push_back({"session", id_});
  state_ = State::connected;
  send_bytes(stomp::encode(ok, version_));
  if (auto r = f.header("receipt")) send_receipt(*r);
}

void StompSession::on_subscribe(stomp::Frame& f) {
  auto dest = f.header("destination");
  if (!dest) return fail_in_loop("SUBSCRIBE needs a destination", "Add a destination header, e.g. /sub/chat/room/{roomId}.");
  auto idh = f.header("id");
  if (!idh && version_ != Version::v1_0)
    return fail_in_loop("SUBSCRIBE needs an id", "STOMP 1.1 and 1.2 subscriptions carry an id header.");
  std::string sub_id = idh ? *idh : *dest;
  if (subs_.count(sub_id)) return fail_in_loop("duplicate subscription id", "Subscription '" + sub_id + "' already exists.");
  if (subs_.size() >= hub_.limits().max_subscriptions)
    return fail_in_loop("too many subscriptions",
                        "A connection may hold at most " + std::to_string(hub_.limits().max_subscriptions) + " subscriptions.");

  auto escaped = stomp::escape_header(sub_id, version_, Command::message);
  const std::string* receipt = f.header("receipt");

  if (*dest == kErrorQueue) {
    subs_.emplace(sub_id, Subscription{{}, escaped});
    errors_sub_ = sub_id;
    if (receipt) settle(open_answer(), {0, {}, *receipt});
    return;
  }
  std::string_view d = *dest;
  if (d.substr(0, kRoomPrefix.size()) != kRoomPrefix || !is_room_id(d.substr(kRoomPrefix.size()))) {
    hub_.protocol_errors.fetch_add(1, std::memory_order_relaxed);
    return fail_in_loop("unknown destination",
                        "Subscribe to /sub/chat/room/{roomId} or /user/queue/errors, not " + *dest + ".");
  }
  std::string room = canonical_room_id(d.substr(kRoomPrefix.size()));

  subs_.emplace(sub_id, Subscription{room, escaped});
  shard_.subscribe_in_loop(room, this, escaped);
  std::optional<std::uint64_t> slot;
  if (receipt) slot = open_answer();
  auto confirmed = back_in_loop([sub_id, slot, receipt = receipt ? *receipt : std::string()](StompSession& s, std::error_code ec) {
    if (!s.subs_.count(sub_id) || s.state_ != State::connected) return;
    if (ec)
      return s.fail_in_loop("message engine unavailable",
                            "The subscription could not be confirmed: " + ec.message() + ". Reconnect later.");
    if (slot) s.settle(*slot, {0, {}, receipt});
  });
  hub_.join(room, [confirmed = std::move(confirmed)](std::error_code ec) mutable {
    if (ec != bus::Error::stopped) confirmed(ec);
  });
}

void StompSession::on_unsubscribe(stomp::Frame& f) {
  auto idh = f.header("id");
  if (!idh && version_ == Version::v1_0) idh = f.header("destination");
  if (!idh) return fail_in_loop("UNSUBSCRIBE needs an id", "Name the subscription to end with its id header.");
  if (auto it = subs_.find(*idh); it != subs_.end()) {
    if (it->second.room_id.empty()) {
      errors_sub_.reset();
    } else {
      shard_.unsubscribe_in_loop(it->second.room_id, this, it->second.escaped);
      hub_.leave(it->second.room_id);
    }
    subs_.erase(it);
  }
  if (auto r = f.header("receipt")) settle(open_answer(), {0, {}, *r});
}

void StompSession::on_send(stomp::Frame& f) {
  auto dest = f.header("destination");
  if (!dest) return fail_in_loop("SEND needs a destination", "Send chat messages to /pub/chat/message.");
  std::optional<std::string> receipt;
  if (auto r = f.header("receipt")) receipt = *r;
  auto slot = open_answer();
  if (*dest != kSendDestination)
    return settle(slot, {404, make_error_code(Error::unknown_destination).message(), std::move(receipt)});
  std::error_code ec;
  auto m = parse_chat_message(f.body, hub_.limits(), ec);
  if (!m) return settle(slot, {status_for(ec), ec.message(), std::move(receipt)});
  auto answered = back_in_loop([slot, receipt = std::move(receipt)](StompSession& s, std::error_code pec, std::uint64_t) mutable {
    if (s.state_ != State::connected) return;
    if (pec) return s.settle(slot, {status_for(pec), pec.message(), std::move(receipt)});
    s.settle(slot, {0, {}, std::move(receipt)});
  });
  hub_.publish(*m, {}, std::move(answered));
}

void StompSession::on_disconnect(stomp::Frame& f) {
  std::optional<std::string> receipt;
  if (auto r = f.header("receipt")) receipt = *r;
  settle(open_answer(), {0, {}, std::move(receipt), true});
}

std::uint64_t StompSession::open_answer() {
  answers_.emplace_back();
  return answers_base_ + answers_.size() - 1;
}

void StompSession::settle(std::uint64_t slot, Answer a) {
  a.ready = true;
  answers_[slot - answers_base_] = std::move(a);
  std::size_t done = 0;
  while (done < answers_.size() && answers_[done].ready && state_ == State::connected) {
    auto& x = answers_[done++];
    if (!x.error.empty()) reject(x.status, x.error, x.receipt ? &*x.receipt : nullptr);
    else if (x.receipt) send_receipt(*x.receipt);
    if (x.close_after) {
      state_ = State::closing;
      transport_->close("client disconnected");
    }
  }
  answers_.erase(answers_.begin(), answers_.begin() + static_cast<std::ptrdiff_t>(done));
  answers_base_ += done;
}

void StompSession::send_bytes(std::string bytes) {
  if (!transport_) return;
  last_write_ = Clock::now();
  transport_->send(Outbound{nullptr, std::move(bytes)});
}

void StompSession::send_receipt(const std::string& receipt_id) {
  send_bytes(stomp::encode(stomp::Frame{Command::receipt, {{"receipt-id", receipt_id}}, {}}, version_));
}

void StompSession::reject(int status, std::string_view error, const std::string* receipt) {
  hub_.chat_rejections.fetch_add(1, std::memory_order_relaxed);
  if (!errors_sub_) return;  // like Spring: a user destination nobody subscribed to drops the message
  stomp::Frame m{Command::message,
                 {{"destination", std::string(kErrorQueue)},
                  {"message-id", id_ + "-e" + std::to_string(++next_error_id_)},
                  {"subscription", *errors_sub_},
                  {"content-type", "application/json"}},
                 error_json(status, error)};
  // The rejected SEND's receipt id, so a client can tell which message failed.
  if (receipt) {
    m.headers.push_back({"receipt-id", *receipt});
    m.body = with_field(m.body, "receipt", *receipt);
  }
  send_bytes(stomp::encode(m, version_));
}

void StompSession::deliver_in_loop(const SharedMessagePtr& m, const std::string& sub) {
  if (state_ != State::connected || !transport_) return;
  Outbound out{m, sub};
  auto limit = hub_.limits().max_outbound_bytes;
  if (transport_->queued_bytes() + out.size() > limit) {
    hub_.slow_consumers.fetch_add(1, std::memory_order_relaxed);
    return fail_in_loop("slow consumer", "More than " + std::to_string(limit) +
                                             " bytes were waiting to be written: the client does not read fast enough.");
  }
  last_write_ = Clock::now();
  transport_->send(std::move(out));
}

void StompSession::tick_in_loop(Clock::time_point now) {
  using namespace std::chrono;
  if (state_ == State::awaiting_connect) {
    if (now - started_ > hub_.limits().connect_timeout)
      fail_in_loop("no CONNECT", "No CONNECT frame arrived within " +
                                     std::to_string(duration_cast<seconds>(hub_.limits().connect_timeout).count()) + " s.");
    return;
  }
  if (state_ != State::connected) return;
  if (expect_every_.count() && now - last_read_ > 2 * expect_every_) {
    return fail_in_loop("heart-beat timeout", "Nothing arrived from the client for " +
                                                  std::to_string(duration_cast<milliseconds>(now - last_read_).count()) + " ms.");
  }
  // Sweeps come once a second, so send a little early rather than late.
  if (send_every_.count() && now - last_write_ + seconds(1) >= send_every_) send_bytes("\n");
}

void StompSession::fail_in_loop(std::string_view message, std::string_view detail) {
  if (state_ == State::closing || state_ == State::closed || !transport_) return;
  stomp::Frame err{Command::error, {{"message", std::string(message)}, {"content-type", "text/plain"}}, std::string(detail)};
  send_bytes(stomp::encode(err, version_));
  state_ = State::closing;
  transport_->close(message);
}

void StompSession::leave_all_rooms() {
  for (auto& [id, s] : subs_) {
    if (s.room_id.empty()) continue;
    shard_.unsubscribe_in_loop(s.room_id, this, s.escaped);
    hub_.leave(s.room_id);
  }
  subs_.clear();
  errors_sub_.reset();
}

void StompSession::on_closed_in_loop() {
  if (state_ == State::closed) return;
  state_ = State::closed;
  leave_all_rooms();
  shard_.remove_session_in_loop(this);
  transport_ = nullptr;
}

}  // namespace chatd::chat
