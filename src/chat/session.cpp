#include "chat/session.h"

#include <boost/asio/post.hpp>
#include <boost/json.hpp>

#include <algorithm>
#include <cctype>
#include <charconv>

namespace chatd::chat {
namespace {

using stomp::Command;
using stomp::Version;

// How long an ERROR waits for the answers of earlier frames (an engine slow to take a SEND).
constexpr auto kHoldErrorFor = std::chrono::seconds(2);

// Parses a whole header value as an unsigned number.
template <class T>
bool parse_uint(std::string_view s, T& out) {
  auto r = std::from_chars(s.data(), s.data() + s.size(), out);
  return !s.empty() && r.ec == std::errc() && r.ptr == s.data() + s.size();
}

// Returns whether `s` could be an epoch: the bus's tokens are short [A-Za-z0-9_.-].
bool is_epoch(std::string_view s) {
  if (s.empty() || s.size() > 64) return false;
  for (char c : s)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == '-')) return false;
  return true;
}

bool is_client_id(std::string_view s, std::size_t max) {
  if (s.empty() || s.size() > max) return false;
  for (char c : s)
    if (static_cast<unsigned char>(c) < 0x21 || static_cast<unsigned char>(c) > 0x7e) return false;
  return true;
}

int status_for(std::error_code ec) {
  if (ec == Error::unknown_room || ec == Error::unknown_destination) return 404;
  if (ec == Error::rate_limited || ec == Error::room_busy) return 429;
  if (ec == Error::message_too_long) return 413;
  if (ec == Error::not_yourself || ec == Error::room_forbidden) return 403;
  if (ec == Error::publish_failed || ec == Error::store_unavailable) return 503;
  if (ec == Error::publish_unconfirmed) return 504;
  return 400;
}

}  // namespace

StompSession::StompSession(Shard& shard, Transport& transport, std::string id)
    : shard_(shard),
      hub_(shard.hub()),
      transport_(&transport),
      id_(hub_.node_id() + "-" + std::move(id)),
      parser_(stomp::Limits{hub_.limits().max_frame_bytes, hub_.limits().max_headers,
                            hub_.limits().max_header_line}) {}

StompSession::~StompSession() = default;  // on_closed_in_loop gave back its history memory

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

void StompSession::set_url_token(std::string token) {
  if (!token.empty()) url_token_ = std::make_unique<std::string>(std::move(token));
}

void StompSession::start_in_loop() {
  started_ = last_read_ = last_write_ = Clock::now();
  shard_.add_session_in_loop(this);
}

void StompSession::on_bytes_in_loop(std::string_view bytes) {
  shard_.assert_in_loop();
  last_read_ = Clock::now();
  reading_ = true;
  struct Done {
    bool& r;
    ~Done() { r = false; }
  } done{reading_};
  // After DISCONNECT a client sends nothing more (STOMP 1.2); whatever it does send is not acted on.
  // After a frame that drew an ERROR, nothing either: the ERROR only waits for earlier answers.
  while (!bytes.empty() && (state_ == State::awaiting_connect || state_ == State::connected) && !goodbye_ &&
         !held_error_) {
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
  // An ERROR this frame causes names its receipt (STOMP 1.2: receipt-id on ERROR).
  frame_receipt_ = f.header("receipt");
  struct Clear {
    const std::string*& r;
    ~Clear() { r = nullptr; }
  } clear{frame_receipt_};
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
    if (frame_receipt_) err.headers.push_back({"receipt-id", *frame_receipt_});
    return send_error_and_close(stomp::encode(err, version_), "unsupported protocol version");
  }
  version_ = *v;
  parser_.set_version(version_);
  if (hub_.verifier() && !authenticate(f)) return;

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

bool StompSession::authenticate(stomp::Frame& f) {
  auto url_token = std::move(url_token_);
  std::string_view token;
  if (auto a = f.header("Authorization"); a && !bearer_token_of(*a).empty())
    token = bearer_token_of(*a);
  else if (auto p = f.header("passcode"); p && !p->empty())
    token = *p;  // stomp.js 2.3.3 and other clients that only send login/passcode
  else if (url_token)
    token = *url_token;
  if (token.empty()) {
    hub_.refusals.count(Refusal::auth_failed, client_, id_);
    fail_in_loop("unauthorized (no token)",
                 "--auth jwt: send the token in CONNECT's Authorization: Bearer header, its passcode header, or "
                 "the URL's access_token parameter.");
    return false;
  }
  std::string why;
  auto who = hub_.verifier()->verify(token, why);
  if (who) {
    // The name is shown to everyone as sender: it must pass the rules a nickname passes.
    std::string bad;
    auto nick = check_name(who->name, hub_.limits().max_sender_bytes, bad);
    if (!nick) why = "the token's name " + bad;
    else if (*nick != who->name) why = "the token's name has invisible characters at its ends";
    if (!why.empty()) who.reset();
  }
  if (!who) {
    hub_.refusals.count(Refusal::auth_failed, client_, id_);
    fail_in_loop("unauthorized (" + why + ")", "The token was refused: " + why + ".");
    return false;
  }
  identity_ = std::move(who);
  return true;
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
  const auto* mode = f.header("ack");
  const bool wants_ack = mode && version_ == Version::v1_2 && (*mode == "client" || *mode == "client-individual");
  const std::string* receipt = f.header("receipt");
  auto ask = history_ask(f);
  if (!ask) return;

  if (*dest == kErrorQueue) {
    subs_.emplace(sub_id, Subscription{{}, escaped});
    if (wants_ack) joined().ack_subs.push_back(escaped);
    joined().errors_subs.push_back(sub_id);
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

  std::optional<std::uint64_t> slot;
  if (receipt) slot = open_answer();
  std::string receipt_id = receipt ? *receipt : std::string();
  const auto serial = ++next_sub_serial_;
  if (hub_.known_room(room)) {
    if (!hub_.may_enter(identity_.get(), room)) return refuse_room(slot ? *slot : open_answer(), receipt_id);
    subs_.emplace(sub_id, Subscription{room, escaped, false, serial});
    if (wants_ack) joined().ack_subs.push_back(escaped);
    return join_room(sub_id, serial, room, escaped, slot, std::move(receipt_id), *ask);
  }
  // Not known here yet: ask the store before subscribing (finding 11: a SUBSCRIBE to a room
  // that does not exist is refused). The id is held meanwhile; a slot keeps answers in order.
  if (!slot) slot = open_answer();
  subs_.emplace(sub_id, Subscription{room, escaped, true, serial});
  if (wants_ack) joined().ack_subs.push_back(escaped);
  hub_.check_room(room, back_in_loop([sub_id, serial, slot, receipt_id, ask = *ask](StompSession& s, std::error_code ec) {
    s.on_room_checked(sub_id, serial, *slot, receipt_id, ask, ec);
  }));
}

void StompSession::on_room_checked(const std::string& sub_id, std::uint64_t serial, std::uint64_t slot,
                                   const std::string& receipt, const std::optional<HistoryAsk>& ask, std::error_code ec) {
  if (state_ != State::connected) return;
  auto it = subs_.find(sub_id);
  std::optional<std::string> r;
  if (!receipt.empty()) r = receipt;
  // Unsubscribed meanwhile: the SUBSCRIBE still gets its RECEIPT, in order.
  if (it == subs_.end() || it->second.serial != serial) return settle(slot, {0, {}, std::move(r)});
  if (ec) {
    forget_ack(it->second.escaped);
    subs_.erase(it);
    if (ec == Error::unknown_room) hub_.refusals.count(Refusal::subscribe_unknown_room, client_, id_);
    return settle(slot, {status_for(ec), ec.message(), std::move(r)});
  }
  if (!hub_.may_enter(identity_.get(), it->second.room_id)) {
    forget_ack(it->second.escaped);
    subs_.erase(it);
    return refuse_room(slot, receipt);
  }
  it->second.pending = false;
  join_room(sub_id, serial, it->second.room_id, it->second.escaped, slot, receipt, ask);
}

void StompSession::join_room(const std::string& sub_id, std::uint64_t serial, const std::string& room,
                             const std::string& escaped, std::optional<std::uint64_t> slot, std::string receipt,
                             std::optional<HistoryAsk> ask) {
  // Live first: from here every new message of the room reaches this subscription (held while
  // history is read), so history and live overlap rather than leave a gap between them.
  shard_.subscribe_in_loop(room, this, escaped);
  if (ask) joined().replays[escaped] = Replay{};
  auto confirmed = back_in_loop([sub_id, serial, slot, receipt = std::move(receipt), ask](StompSession& s, std::error_code ec) {
    if (s.state_ != State::connected) return;
    // Unsubscribed meanwhile (its leave ends the join with `stopped`), or the node is stopping:
    // the SUBSCRIBE still gets its RECEIPT, since every later answer waits on this one.
    auto it = s.subs_.find(sub_id);
    if (it == s.subs_.end() || it->second.serial != serial || ec == bus::Error::stopped) {
      if (slot) s.settle(*slot, {0, {}, receipt});
      return;
    }
    if (ec) {
      // The room's engine cannot confirm now (Redis away, or its Cluster shard without a
      // primary): this subscription is not made, like one to an unknown room. The connection
      // and its other rooms stay; the client subscribes again later.
      s.end_subscription(sub_id);
      std::optional<std::string> r;
      if (!receipt.empty()) r = receipt;
      return s.settle(slot ? *slot : s.open_answer(),
                      {503, "message engine unavailable: the subscription could not be confirmed (" + ec.message() +
                                "); subscribe again later",
                       std::move(r)});
    }
    if (slot) s.settle(*slot, {0, {}, receipt});
    // Only now: on Redis a message published before the node's channel subscription was
    // confirmed reaches this node through history alone.
    if (ask) s.start_replay_in_loop(sub_id, *ask);
  });
  hub_.join(room, shard_.index(), [confirmed = std::move(confirmed)](std::error_code ec) mutable { confirmed(ec); });
  hub_.report_subscription(ChatEvent::Kind::join, room, id_);
  if (hub_.presence_on()) update_presence(room, true, nullptr);  // an ENTER may have come first
}

void StompSession::refuse_room(std::uint64_t slot, const std::string& receipt) {
  hub_.refusals.count(Refusal::room_forbidden, client_, id_);
  std::optional<std::string> r;
  if (!receipt.empty()) r = receipt;
  settle(slot, {403, make_error_code(Error::room_forbidden).message(), std::move(r)});
}

void StompSession::on_unsubscribe(stomp::Frame& f) {
  auto idh = f.header("id");
  if (!idh && version_ == Version::v1_0) idh = f.header("destination");
  if (!idh) return fail_in_loop("UNSUBSCRIBE needs an id", "Name the subscription to end with its id header.");
  end_subscription(*idh);
  if (auto r = f.header("receipt")) settle(open_answer(), {0, {}, *r});
}

void StompSession::end_subscription(const std::string& sub_id) {
  auto it = subs_.find(sub_id);
  if (it == subs_.end()) return;
  if (it->second.room_id.empty()) {
    if (joined_) std::erase(joined_->errors_subs, it->first);
  } else if (!it->second.pending) {
    shard_.unsubscribe_in_loop(it->second.room_id, this, it->second.escaped);
    hub_.leave(it->second.room_id, shard_.index());
    if (joined_) joined_->replays.erase(it->second.escaped);
    hub_.report_subscription(ChatEvent::Kind::leave, it->second.room_id, id_);
  }
  forget_ack(it->second.escaped);
  auto room = std::move(it->second.room_id);
  subs_.erase(it);
  if (hub_.presence_on() && !room.empty()) update_presence(room, true, nullptr);
  // Out of the room: its ENTER goes too, so a later SUBSCRIBE is no member without a new
  // ENTER, and a connection walking through rooms holds nothing per room it left.
  if (joined_ && !room.empty() && !subscribed(room, false)) joined_->entered.erase(room);
}

void StompSession::on_send(stomp::Frame& f) {
  auto dest = f.header("destination");
  if (!dest) return fail_in_loop("SEND needs a destination", "Send chat messages to /pub/chat/message.");
  std::optional<std::string> receipt;
  if (auto r = f.header("receipt")) receipt = *r;
  auto slot = open_answer();
  const auto& lim = hub_.limits();
  auto now = Clock::now();
  if (!send_bucket_.take(now, static_cast<double>(lim.send_rate), static_cast<double>(lim.send_burst))) {
    // Every refusal costs from a second bucket of the same size: a client that keeps sending
    // at more than twice its rate empties it and is disconnected.
    if (!flood_bucket_.take(now, static_cast<double>(lim.send_rate), static_cast<double>(lim.send_burst))) {
      hub_.refusals.count(Refusal::send_flood, client_, id_);
      settle(slot, {});  // this SEND gets the ERROR, not an answer of its own
      return fail_in_loop("too many messages", "This connection kept sending faster than " + std::to_string(lim.send_rate) +
                                                   " messages a second after being told to slow down.");
    }
    hub_.refusals.count(Refusal::send_rate, client_, id_);
    return settle(slot, {429, make_error_code(Error::rate_limited).message(), std::move(receipt)});
  }
  if (*dest != kSendDestination)
    return settle(slot, {404, make_error_code(Error::unknown_destination).message(), std::move(receipt)});
  std::error_code ec;
  auto m = parse_chat_message(f.body, hub_.limits(), ec, identity_ ? &identity_->name : nullptr);
  if (!m) return settle(slot, {status_for(ec), ec.message(), std::move(receipt)});
  user_ = m->sender;
  if (hub_.presence_on() && (m->type == MessageType::enter || m->type == MessageType::quit) &&
      subscribed(m->room_id, false)) {
    // The connection's ENTER and QUIT say whether it is in the room; the server announces
    // a join or leave only when it is news for the room (not a second tab, not a reconnect).
    auto member = member_name(m->sender);
    auto& entered = joined().entered;
    if (m->type == MessageType::enter) {
      entered.try_emplace(m->room_id, std::move(member));  // the first name holds for this connection
    } else if (auto e = entered.find(m->room_id); e != entered.end() && e->second == member) {
      entered.erase(e);
    }
    update_presence(m->room_id, true, back_in_loop([slot, receipt = std::move(receipt)](StompSession& s) mutable {
      if (s.state_ == State::connected) s.settle(slot, {0, {}, std::move(receipt)});
    }));
    return;
  }
  std::string client_id;
  if (auto c = f.header("x-client-id")) {
    if (!is_client_id(*c, hub_.limits().max_client_id_bytes)) {
      auto bad = make_error_code(Error::bad_client_id);
      return settle(slot, {400, bad.message(), std::move(receipt)});
    }
    // The id is its sender's own (the token's user, else the nickname): another sender's
    // message with the same id, a counter or a guess, is a different message.
    client_id = identity_ ? identity_->user : m->sender;
    client_id.append(1, '\x1f').append(*c);
  }
  // The epoch is copied only for a RECEIPT that will carry it; the engine's view of it lasts
  // only for the call.
  const bool receipted = receipt.has_value();
  auto in_loop = back_in_loop([slot, receipt = std::move(receipt)](StompSession& s, std::error_code pec, std::uint64_t seq,
                                                                 std::string& epoch) mutable {
    if (s.state_ != State::connected) return;
    if (pec) return s.settle(slot, {status_for(pec), pec.message(), std::move(receipt)});
    Answer a{0, {}, std::move(receipt)};
    a.seq = seq;
    a.epoch = std::move(epoch);
    s.settle(slot, std::move(a));
  });
  auto answered = [in_loop = std::move(in_loop), receipted](std::error_code pec, std::uint64_t seq,
                                                            std::string_view epoch) mutable {
    in_loop(pec, seq, receipted ? std::string(epoch) : std::string());
  };
  hub_.publish(*m, std::move(client_id), std::move(answered), identity_);
}

void StompSession::on_disconnect(stomp::Frame& f) {
  goodbye_ = true;
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
    else if (x.receipt) send_receipt(*x.receipt, x.seq, x.epoch);
    if (x.close_after && transport_ && state_ == State::connected) {
      if (held_error_) {
        auto held = std::move(*held_error_);
        held_error_.reset();
        send_error_and_close(std::move(held.bytes), held.reason);
        break;
      }
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

void StompSession::send_receipt(const std::string& receipt_id, std::uint64_t seq, std::string_view epoch) {
  stomp::Frame r{Command::receipt, {{"receipt-id", receipt_id}}, {}};
  if (seq) r.headers.push_back({"x-seq", std::to_string(seq)});
  if (seq && !epoch.empty()) r.headers.push_back({"x-epoch", std::string(epoch)});
  send_bytes(stomp::encode(r, version_));
}

void StompSession::reject(int status, std::string_view error, const std::string* receipt) {
  hub_.chat_rejections.fetch_add(1, std::memory_order_relaxed);
  // Like Spring: a user destination nobody subscribed to drops the message, and each
  // subscription to it gets its own copy.
  if (!joined_ || joined_->errors_subs.empty()) return;
  stomp::Frame m{Command::message,
                 {{"destination", std::string(kErrorQueue)},
                  {"message-id", id_ + "-e" + std::to_string(++next_error_id_)},
                  {"subscription", ""},
                  {"content-type", "application/json"}},
                 error_json(status, error)};
  // The rejected SEND's receipt id, so a client can tell which message failed.
  if (receipt) {
    m.headers.push_back({"receipt-id", *receipt});
    m.body = with_field(m.body, "receipt", *receipt);
  }
  for (const auto& sub : joined_->errors_subs) {
    m.headers[2].value = sub;
    const bool ack = acks(subs_.at(sub).escaped);
    if (ack) m.headers.push_back({"ack", m.headers[1].value});
    send_bytes(stomp::encode(m, version_));
    if (ack) m.headers.pop_back();
  }
}

void StompSession::deliver_in_loop(const SharedMessagePtr& m, const std::string& sub) {
  shard_.assert_in_loop();
  if (state_ != State::connected || !transport_) return;
  auto limit = hub_.limits().max_outbound_bytes;
  if (joined_ && !joined_->replays.empty()) {
    if (auto it = joined_->replays.find(sub); it != joined_->replays.end()) {
      auto& r = it->second;
      if (r.holding) {
        r.held_bytes += m->frame.head.size() + sub.size() + m->frame.tail.size();
        if (r.held_bytes > limit) {
          hub_.slow_consumers.fetch_add(1, std::memory_order_relaxed);
          return fail_in_loop("slow consumer", "More than " + std::to_string(limit) +
                                                   " bytes of live messages waited behind the history being read.",
                              true);
        }
        r.held.push_back(m);
        return;
      }
      if (m->epoch == r.epoch && m->seq <= r.through) return;  // the replay had it
      joined_->replays.erase(it);  // the first one past the replay: live from here on
    }
  }
  Outbound out = outbound(m, sub);
  auto queued = transport_->queued_bytes();
  if (queued + out.size() > limit + (joined_ ? joined_->replay_allowance : 0)) {
    hub_.slow_consumers.fetch_add(1, std::memory_order_relaxed);
    return fail_in_loop("slow consumer", "More than " + std::to_string(limit) +
                                             " bytes were waiting to be written: the client does not read fast enough.",
                            true);
  }
  if (queued <= limit && joined_) joined_->replay_allowance = 0;  // the replay has drained
  last_write_ = Clock::now();
  transport_->send(std::move(out));
}

std::optional<std::optional<StompSession::HistoryAsk>> StompSession::history_ask(stomp::Frame& f) {
  auto* last = f.header("x-history");
  auto* since = f.header("x-since-seq");
  auto* epoch = f.header("x-epoch");
  HistoryAsk ask;
  if (since) {
    std::uint64_t s = 0;
    if (!parse_uint(*since, s)) {
      hub_.protocol_errors.fetch_add(1, std::memory_order_relaxed);
      fail_in_loop("bad x-since-seq header", "x-since-seq must be the last seq the client saw, a number (0: none).");
      return std::nullopt;
    }
    ask.since = s;
    if (epoch) {
      if (!is_epoch(*epoch)) {
        hub_.protocol_errors.fetch_add(1, std::memory_order_relaxed);
        fail_in_loop("bad x-epoch header", "x-epoch must be the epoch of a MESSAGE body, as it was.");
        return std::nullopt;
      }
      ask.epoch = *epoch;
    }
    return std::optional<HistoryAsk>(ask);  // x-since-seq wins over x-history
  }
  if (last) {
    std::uint64_t n = 0;
    if (!parse_uint(*last, n)) {
      hub_.protocol_errors.fetch_add(1, std::memory_order_relaxed);
      fail_in_loop("bad x-history header", "x-history must be a number of messages (at most " +
                                               std::to_string(hub_.limits().max_replay) + " are sent).");
      return std::nullopt;
    }
    if (n == 0) return std::optional<HistoryAsk>();
    ask.last = static_cast<std::size_t>(std::min<std::uint64_t>(n, hub_.limits().max_replay));
    return std::optional<HistoryAsk>(ask);
  }
  return std::optional<HistoryAsk>();
}

void StompSession::start_replay_in_loop(const std::string& sub_id, const HistoryAsk& ask) {
  // The answers settled just before may have taken a reader past its bound and closed the
  // session (its subscriptions are gone then): nothing to read for.
  auto found = subs_.find(sub_id);
  if (state_ != State::connected || found == subs_.end()) return;
  const auto& sub = found->second;
  const auto max = hub_.limits().max_replay;
  bus::HistoryRequest req{sub.room_id, 0, 0, 0};
  if (ask.since && *ask.since > 0) {
    // The oldest above S, one more than may be sent: a full answer means "too many".
    req.after_seq = *ask.since;
    req.limit = max + 1;
  } else {
    req.limit = ask.since ? max + 1 : ask.last;
  }
  // A read outlives its subscription: one with the same id (STOMP 1.0: the destination) may
  // be a later SUBSCRIBE, perhaps to another room, which its serial tells apart.
  hub_.history(std::move(req), back_in_loop([sub_id, ask, serial = sub.serial](StompSession& s, std::error_code ec, bus::History h) {
    auto it = s.subs_.find(sub_id);
    if (it == s.subs_.end() || it->second.serial != serial || !s.replaying(it->second.escaped)) return;  // gone
    s.on_history_in_loop(sub_id, ask, false, false, ec, std::move(h));
  }));
}

void StompSession::on_history_in_loop(const std::string& sub_id, const HistoryAsk& ask, bool second, bool capped,
                                      std::error_code ec, bus::History h) {
  const auto max = hub_.limits().max_replay;
  if (ec) {
    auto notice = history_notice(sub_id, "unavailable", "engine", ask, h, 0);
    std::vector<bus::Delivery> none;
    return finish_replay_in_loop(sub_id, &notice, none, {}, 0);
  }
  auto& msgs = h.messages;
  const auto& escaped = subs_.at(sub_id).escaped;
  if (!ask.since) {  // x-history: N, the newest N; nothing to compare against
    std::uint64_t through = msgs.empty() ? 0 : msgs.back().seq;
    // Told only when the node's history memory cut it: what was asked for is there to page.
    if (fit_replay_in_loop(msgs, escaped) == 0) return finish_replay_in_loop(sub_id, nullptr, msgs, h.epoch, through);
    auto notice = history_notice(sub_id, "partial", "memory", ask, h, msgs.empty() ? through + 1 : msgs.front().seq);
    return finish_replay_in_loop(sub_id, &notice, msgs, h.epoch, through);
  }
  const std::uint64_t since = *ask.since;
  const bool stale_epoch = ask.epoch && *ask.epoch != h.epoch;
  const bool ahead = !stale_epoch && since > h.last_seq;
  const bool too_many = capped || msgs.size() > max;
  if (!second && since > 0 && (stale_epoch || ahead || too_many)) {
    // What the client knows is not a place in this history, or more is missing than one
    // replay sends: the newest `max` are what there is to give.
    const auto& sub = subs_.at(sub_id);
    hub_.history({sub.room_id, 0, 0, max}, back_in_loop([sub_id, ask, too_many, serial = sub.serial](
                                               StompSession& s, std::error_code e2, bus::History h2) {
      auto it = s.subs_.find(sub_id);
      if (it == s.subs_.end() || it->second.serial != serial || !s.replaying(it->second.escaped)) return;
      s.on_history_in_loop(sub_id, ask, true, too_many, e2, std::move(h2));
    }));
    return;
  }
  if (!stale_epoch && !ahead) {
    // Only what the client has not seen.
    msgs.erase(std::remove_if(msgs.begin(), msgs.end(), [&](const bus::Delivery& d) { return d.seq <= since; }), msgs.end());
  }
  const bool over = msgs.size() > max;
  if (over) msgs.erase(msgs.begin(), msgs.begin() + static_cast<std::ptrdiff_t>(msgs.size() - max));
  const std::uint64_t last_kept = msgs.empty() ? 0 : msgs.back().seq;
  const bool cut = fit_replay_in_loop(msgs, escaped) > 0;
  const std::uint64_t from_seq = !msgs.empty() ? msgs.front().seq : cut ? last_kept + 1 : h.last_seq + 1;
  std::uint64_t through = last_kept;
  std::string notice;
  if (stale_epoch) {
    notice = history_notice(sub_id, "reset", "epoch", ask, h, from_seq);
  } else if (ahead) {
    notice = history_notice(sub_id, "reset", "ahead", ask, h, from_seq);
  } else {
    through = std::max(through, since);
    // Complete only if the history still holds everything after `since`: first_seq is the
    // seq from which on nothing of the room was dropped (0: nothing is retained).
    const bool dropped = h.first_seq == 0 ? since < h.last_seq : since + 1 < h.first_seq;
    // Retention first: what it dropped cannot be paged back, what the replay limit held back can.
    if (dropped) notice = history_notice(sub_id, "partial", "retention", ask, h, from_seq);
    else if (cut) notice = history_notice(sub_id, "partial", "memory", ask, h, from_seq);
    else if (too_many || over) notice = history_notice(sub_id, "partial", "replay-limit", ask, h, from_seq);
  }
  finish_replay_in_loop(sub_id, notice.empty() ? nullptr : &notice, msgs, h.epoch, through);
}

void StompSession::finish_replay_in_loop(const std::string& sub_id, const std::string* notice,
                                         std::vector<bus::Delivery>& messages, const std::string& epoch,
                                         std::uint64_t through) {
  if (state_ != State::connected || !transport_) return;
  const auto escaped = subs_.at(sub_id).escaped;
  if (!joined_) return;
  auto it = joined_->replays.find(escaped);
  if (it == joined_->replays.end()) return;
  if (notice) send_bytes(*notice);
  // History is sent whole (at most --max-replay messages): it may pass the slow-reader bound
  // by its own size, but live messages may not pile up behind it.
  for (auto& d : messages) {
    Outbound out = outbound(encode_delivery(d), escaped);
    out.replay = true;  // the transport's hard bound grants the same allowance
    joined_->replay_allowance = std::min(joined_->replay_allowance + out.size(), max_replay_bytes(hub_.limits()));
    transport_->send(std::move(out));
    // A transport that gave up on a slow reader closed this session inside send(): it has no
    // transport and no rooms any more (this loop dereferenced the null transport before).
    if (state_ != State::connected || !transport_) return;
  }
  if (!messages.empty()) last_write_ = Clock::now();
  auto held = std::move(it->second.held);
  it->second = Replay{false, {}, 0, epoch, through};
  for (auto& m : held) deliver_in_loop(m, escaped);
}

Outbound StompSession::outbound(const SharedMessagePtr& m, const std::string& escaped) const {
  Outbound out{m, escaped};
  if (acks(escaped)) {
    // Spliced after the subscription's value, before the blank line: its message-id, which
    // is what a 1.2 client's ACK names again (and is accepted).
    out.own.append("\nack:").append(m->frame.message_id());
  }
  return out;
}

std::size_t StompSession::fit_replay_in_loop(std::vector<bus::Delivery>& messages, const std::string& escaped) {
  if (messages.empty() || !transport_) return 0;
  // A MESSAGE's size: its body, the room in two headers, the subscription and ~160 bytes of
  // header names, message id and seq. Close enough for a bound.
  auto size = [&](const bus::Delivery& d) { return d.payload.size() + 2 * d.room_id.size() + escaped.size() + 160; };
  std::size_t total = 0;
  for (const auto& d : messages) total += size(d);
  const auto limit = hub_.limits().max_outbound_bytes;
  const auto queued = transport_->queued_bytes();
  const std::size_t room = limit > queued ? limit - queued : 0;
  if (total <= room) return 0;
  const std::size_t granted = hub_.history_memory().take(total - room);
  joined().history_memory += granted;
  if (total <= room + granted) return 0;
  std::size_t cut = 0;
  while (cut < messages.size() && total > room + granted) total -= size(messages[cut++]);
  messages.erase(messages.begin(), messages.begin() + static_cast<std::ptrdiff_t>(cut));
  hub_.refusals.count(Refusal::history_memory, client_, id_);
  return cut;
}

void StompSession::return_history_memory() {
  if (!joined_ || joined_->history_memory == 0) return;
  hub_.history_memory().give_back(joined_->history_memory);
  joined_->history_memory = 0;
}

std::string StompSession::history_notice(const std::string& sub_id, std::string_view status, std::string_view reason,
                                         const HistoryAsk& ask, const bus::History& h, std::uint64_t from_seq) {
  const auto& sub = subs_.at(sub_id);
  const auto& room = sub.room_id;
  boost::json::object body{{"type", "HISTORY"},
                           {"roomId", room},
                           {"status", status},
                           {"reason", reason},
                           {"epoch", h.epoch},
                           {"firstSeq", h.first_seq},
                           {"lastSeq", h.last_seq},
                           {"fromSeq", from_seq}};
  if (ask.since) body["sinceSeq"] = *ask.since;
  else body["history"] = ask.last;
  if (ask.epoch) body["askedEpoch"] = *ask.epoch;
  stomp::Frame m{Command::message,
                 {{"destination", std::string(kRoomPrefix) + room},
                  {"message-id", room + "-history-" + std::to_string(++next_notice_id_)},
                  {"subscription", sub_id},
                  {"content-type", "application/json"},
                  {"x-history-status", std::string(status)}},
                 boost::json::serialize(body)};
  if (acks(sub.escaped)) m.headers.push_back({"ack", m.headers[1].value});
  return stomp::encode(m, version_);
}

void StompSession::tick_in_loop(Clock::time_point now) {
  shard_.assert_in_loop();
  using namespace std::chrono;
  if (state_ == State::awaiting_connect) {
    if (now - started_ > hub_.limits().connect_timeout)
      fail_in_loop("no CONNECT", "No CONNECT frame arrived within " +
                                     std::to_string(duration_cast<seconds>(hub_.limits().connect_timeout).count()) + " s.");
    return;
  }
  if (state_ != State::connected) return;
  if (held_error_ && now - held_error_->since >= kHoldErrorFor) {
    // An earlier frame's answer is still out (an engine slow to answer): the ERROR waits no longer.
    auto held = std::move(*held_error_);
    held_error_.reset();
    return send_error_and_close(std::move(held.bytes), held.reason);
  }
  // The sweep is the expiry timer: no timer object per session. An expired token stops the
  // session within a second, so an expired user stops receiving.
  if (identity_ && identity_->expires_at && hub_.verifier()->expired(identity_->expires_at))
    return fail_in_loop("token expired", "The token expired while the session was open; reconnect with a new one.");
  if (expect_every_.count() && now - last_read_ > 2 * expect_every_) {
    return fail_in_loop("heart-beat timeout", "Nothing arrived from the client for " +
                                                  std::to_string(duration_cast<milliseconds>(now - last_read_).count()) + " ms.");
  }
  // A replay's share of the node's history memory is back once the client took it (checked
  // here, not at once: what a loop turn queued leaves at its end and is not counted before).
  if (joined_ && joined_->history_memory && transport_ && transport_->queued_bytes() <= hub_.limits().max_outbound_bytes)
    return_history_memory();
  // Sweeps come once a second, so send a little early rather than late.
  if (send_every_.count() && now - last_write_ + seconds(1) >= send_every_) send_bytes("\n");
}

void StompSession::fail_in_loop(std::string_view message, std::string_view detail, bool now) {
  if (state_ == State::closing || state_ == State::closed || !transport_) return;
  if (client_.empty()) log::event("session_closed", {{"session", id_}, {"reason", message}});
  else log::event("session_closed", {{"session", id_}, {"client", client_}, {"reason", message}});
  stomp::Frame err{Command::error, {{"message", std::string(message)}, {"content-type", "text/plain"}}, std::string(detail)};
  if (frame_receipt_) err.headers.push_back({"receipt-id", *frame_receipt_});
  auto bytes = stomp::encode(err, version_);
  if (held_error_) {
    // A second failure while one waits (a heart-beat timeout, say): the first cause goes now.
    bytes = std::move(held_error_->bytes);
    held_error_.reset();
  } else if (!now && reading_ && state_ == State::connected && !answers_.empty()) {
    // Earlier frames still wait for their answers (a SEND's RECEIPT comes once the engine took
    // it): the ERROR goes after them, as the last answer, and reading stops meanwhile.
    held_error_ = std::make_unique<HeldError>(HeldError{std::move(bytes), std::string(message), Clock::now()});
    settle(open_answer(), {0, {}, std::nullopt, true});
    return;
  }
  send_error_and_close(std::move(bytes), message);
}

void StompSession::send_error_and_close(std::string bytes, std::string_view reason) {
  send_bytes(std::move(bytes));
  if (!transport_) return;  // the transport gave up on the reader inside send (on_closed_in_loop ran)
  state_ = State::closing;
  transport_->close(reason);
}

void StompSession::end_room_subscription_in_loop(const SharedMessagePtr& notice, const std::string& sub) {
  shard_.assert_in_loop();
  auto it = std::find_if(subs_.begin(), subs_.end(), [&](const auto& kv) {
    return kv.second.escaped == sub && kv.second.room_id == notice->room_id && !kv.second.pending;
  });
  if (it == subs_.end()) return;
  if (joined_) joined_->replays.erase(sub);  // what a replay held belongs to a room that is gone
  deliver_in_loop(notice, sub);
  // The notice took a reader past --max-outbound-bytes: the session is closing, and leaves (or
  // has left: subs_ is cleared, `it` is gone) every room itself. Leaving here too crashed.
  if (state_ != State::connected) return;
  shard_.unsubscribe_in_loop(notice->room_id, this, sub);
  hub_.leave(notice->room_id, shard_.index());
  hub_.report_subscription(ChatEvent::Kind::leave, notice->room_id, id_);
  forget_ack(sub);
  subs_.erase(it);
  if (hub_.presence_on()) {
    if (joined_) joined_->entered.erase(notice->room_id);  // the room is gone: nobody is in it any more
    update_presence(notice->room_id, true, nullptr);
  }
}

void StompSession::leave_all_rooms() {
  for (auto& [id, s] : subs_) {
    if (s.room_id.empty() || s.pending) continue;
    shard_.unsubscribe_in_loop(s.room_id, this, s.escaped);
    hub_.leave(s.room_id, shard_.index());
    hub_.report_subscription(ChatEvent::Kind::leave, s.room_id, id_);
  }
  subs_.clear();
  if (!joined_) return;
  joined_->ack_subs.clear();
  // A connection that said DISCONNECT left; one that dropped may be back within the grace period.
  for (auto& [room, member] : joined_->present) hub_.presence_detach(room, member, goodbye_);
  return_history_memory();
  joined_.reset();  // the /user/queue/errors subscription, replays, ENTERs and presence go with it
}

std::string StompSession::member_name(const std::string& sender) const {
  return member_key(identity_.get(), sender);
}

bool StompSession::subscribed(const std::string& room, bool confirmed) const {
  for (const auto& [id, sub] : subs_)
    if (sub.room_id == room && !(confirmed && sub.pending)) return true;
  return false;
}

void StompSession::update_presence(const std::string& room, bool goodbye, std::function<void()> settled) {
  auto& j = joined();
  auto e = j.entered.find(room);
  const bool in = e != j.entered.end() && state_ == State::connected && subscribed(room, true);
  auto p = j.present.find(room);
  if (in && p == j.present.end()) {
    j.present.emplace(room, e->second);
    hub_.presence_attach(room, e->second, std::move(settled));
    return;
  }
  if (!in && p != j.present.end()) {
    hub_.presence_detach(room, p->second, goodbye);
    j.present.erase(p);
  }
  if (settled) settled();
}

void StompSession::on_closed_in_loop() {
  if (state_ == State::closed) return;
  state_ = State::closed;
  leave_all_rooms();
  shard_.remove_session_in_loop(this);
  transport_ = nullptr;
}

}  // namespace chatd::chat
