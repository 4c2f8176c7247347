#include "chat/publisher.h"

#include <boost/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>

namespace chatd::chat {

Publisher::Publisher(const Limits& limits, const Texts& texts, std::string id_prefix, store::RoomStore& store,
                     bus::MessageBus& bus, Refusals& refusals)
    : limits_(limits), texts_(texts), id_prefix_(std::move(id_prefix)), store_(store), bus_(bus), refusals_(refusals) {}

bool Publisher::known_room(const std::string& id) {
  std::shared_lock lock(rooms_mu_);
  return known_rooms_.count(id) != 0;
}

void Publisher::remember_known(const std::string& id) {
  std::unique_lock lock(rooms_mu_);
  known_rooms_.insert(id);
}

void Publisher::remember_access(const store::Room& room) {
  if (!room.restricted) return;
  std::unique_lock lock(rooms_mu_);
  restricted_rooms_.try_emplace(room.id, room);
}

void Publisher::remember_room(const store::Room& room) {
  remember_access(room);
  remember_known(room.id);
}

void Publisher::forget_room(const std::string& id) {
  std::unique_lock lock(rooms_mu_);
  known_rooms_.erase(id);
  restricted_rooms_.erase(id);
}

void Publisher::forget_known_rooms() {
  std::unique_lock lock(rooms_mu_);
  known_rooms_.clear();
}

// A publish the engine may have carried out (sent, never confirmed) is not "failed": a client
// told to try again without its x-client-id would publish it twice.
static std::error_code publish_error(std::error_code bus_ec) {
  return make_error_code(bus_ec == bus::Error::timed_out ? Error::publish_unconfirmed : Error::publish_failed);
}

bool may_enter(const Identity* who, const store::Room& room) {
  if (!who || !room.restricted) return true;
  auto has = [](const std::vector<std::string>& v, const std::string& x) { return std::find(v.begin(), v.end(), x) != v.end(); };
  return has(room.members, who->user) || has(who->rooms, room.id);
}

bool Publisher::may_enter(const Identity* who, const std::string& id) {
  if (!who) return true;
  std::shared_lock lock(rooms_mu_);
  auto it = restricted_rooms_.find(id);
  return it == restricted_rooms_.end() || chat::may_enter(who, it->second);
}

void Publisher::check_room(const std::string& id, std::function<void(std::error_code)> done) {
  if (known_room(id)) return done({});
  store_.find(id, [this, id, done = std::move(done)](std::error_code ec, std::optional<store::Room> room) {
    if (ec) return done(make_error_code(Error::store_unavailable));
    if (!room) return done(make_error_code(Error::unknown_room));
    remember_room(*room);
    done({});
  });
}

void Publisher::publish(const ChatMessage& m, std::string client_id, bus::PublishedFn done, IdentityPtr who) {
  if (known_room(m.room_id)) {
    publish_known(m, std::move(client_id), std::move(done), true, who.get());
    return;
  }
  {
    // While a room's first lookup is in flight, later messages for it wait behind it, so a
    // sender's messages leave in the order they came.
    std::lock_guard lock(lookups_mu_);
    if (known_room(m.room_id)) {
      publish_known(m, std::move(client_id), std::move(done), true, who.get());
      return;
    }
    auto [it, first] = lookups_.try_emplace(m.room_id);
    it->second.push_back({m, std::move(client_id), std::move(done), std::move(who)});
    if (!first) return;
  }
  store_.find(m.room_id, [this, room_id = m.room_id](std::error_code ec, std::optional<store::Room> room) {
    std::vector<PendingPublish> waiting;
    {
      std::lock_guard lock(lookups_mu_);
      waiting.swap(lookups_[room_id]);
      lookups_.erase(room_id);
      // Publish the waiting ones first and only then mark the room known, all under the lock:
      // a SEND that finds the room unknown waits here and so goes out after them.
      if (!ec && room) {
        remember_access(*room);
        for (auto& p : waiting) publish_known(p.message, std::move(p.client_id), std::move(p.done), true, p.who.get());
        remember_known(room_id);
      }
    }
    if (ec || !room)
      for (auto& p : waiting) p.done(ec ? Error::store_unavailable : Error::unknown_room, 0, {});
  });
}

std::string Publisher::stamp_new(const ChatMessage& m, std::string* id) {
  auto n = next_id_.fetch_add(1, std::memory_order_relaxed);
  auto ts = std::chrono::duration_cast<std::chrono::milliseconds>(
                std::chrono::system_clock::now().time_since_epoch()).count();
  std::string stamped_id = id_prefix_ + std::to_string(n);
  if (id) *id = stamped_id;
  return stamp(m, std::move(stamped_id), ts, texts_);
}

void Publisher::report_message(const std::string& room_id, std::uint64_t seq, std::string_view epoch,
                               std::string_view dedupe_key, std::string payload) {
  // Its id is the room, the seq and a tag of what the engine de-duplicates the message by: a
  // retried SEND (x-client-id) reports the same id again, while a message given the same seq
  // after the room's epoch changed (its history lost, a topic recreated) gets another one.
  std::uint64_t h = 14695981039346656037ull;  // FNV-1a
  for (unsigned char c : dedupe_key) h = (h ^ c) * 1099511628211ull;
  char tag[17];
  std::snprintf(tag, sizeof tag, "%016llx", static_cast<unsigned long long>(h));
  events_->on_event({ChatEvent::Kind::message, room_id, "m-" + room_id + "-" + std::to_string(seq) + "-" + tag, seq,
                     std::move(payload), std::string(epoch)});
}

void Publisher::publish_known(const ChatMessage& m, std::string client_id, bus::PublishedFn done, bool rated,
                              const Identity* who) {
  if (!may_enter(who, m.room_id)) {
    refusals_.count(Refusal::room_forbidden);
    return done(make_error_code(Error::room_forbidden), 0, {});
  }
  if (rated && !room_rate_.take(m.room_id, static_cast<double>(limits_.room_send_rate),
                       static_cast<double>(limits_.room_send_burst))) {
    refusals_.count(Refusal::room_rate);
    return done(make_error_code(Error::room_busy), 0, {});
  }
  published_.fetch_add(1, std::memory_order_relaxed);
  if (on_publish_) on_publish_(m.room_id);
  // The publishing node reports the message, so a backend hears of it once, not once per node.
  const bool report = events_ && events_->wants(ChatEvent::Kind::message);
  std::string id;
  auto payload = stamp_new(m, report ? &id : nullptr);
  std::string reported, dedupe_key;
  if (report) {
    reported = payload;
    dedupe_key = client_id.empty() ? std::move(id) : client_id;
  }
  bus_.publish(m.room_id, std::move(payload), bus::PublishOptions{std::move(client_id)},
               [this, room_id = m.room_id, reported = std::move(reported), dedupe_key = std::move(dedupe_key),
                done = std::move(done)](std::error_code ec, std::uint64_t seq, std::string_view epoch) mutable {
                 if (!ec && !reported.empty()) report_message(room_id, seq, epoch, dedupe_key, std::move(reported));
                 done(ec ? publish_error(ec) : ec, seq, epoch);
               });
}

void Publisher::publish_from_api(ChatMessage m, Rooms::PublishedFn done) {
  m.room_id = canonical_room_id(m.room_id);
  auto room_id = m.room_id;
  store_.find(room_id, [this, m = std::move(m), done = std::move(done)](std::error_code ec, std::optional<store::Room> room) {
    if (ec) return done(Error::store_unavailable, {});
    if (!room) return done(Error::unknown_room, {});
    published_.fetch_add(1, std::memory_order_relaxed);
    if (on_publish_) on_publish_(m.room_id);
    std::string id;
    auto payload = stamp_new(m, &id);
    bus_.publish(m.room_id, payload, {}, [this, room_id = m.room_id, payload, id, done](std::error_code ec2, std::uint64_t seq,
                                                                                       std::string_view epoch) {
      if (ec2) return done(publish_error(ec2), {});
      if (events_ && events_->wants(ChatEvent::Kind::message)) report_message(room_id, seq, epoch, id, payload);
      // As subscribers get it: the stored message with its seq and epoch.
      auto answer = boost::json::parse(payload).as_object();
      answer["seq"] = seq;
      if (!epoch.empty()) answer["epoch"] = epoch;
      done({}, boost::json::serialize(answer));
    });
  });
}

}  // namespace chatd::chat
