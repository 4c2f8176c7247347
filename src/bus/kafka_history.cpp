#include "bus/kafka_history.h"

#include <algorithm>

namespace chatd::bus {

// ---- KafkaHistoryCache ------------------------------------------------------------------------

void KafkaHistoryCache::start_partition(int p, std::uint64_t first_seq) {
  std::lock_guard lock(mu_);
  for (auto it = rooms_.begin(); it != rooms_.end();) {
    if (it->second.partition != p) {
      ++it;
      continue;
    }
    for (const auto& e : it->second.entries) bytes_ -= e.payload.size();
    entries_ -= it->second.entries.size();
    it = rooms_.erase(it);
  }
  // Drop the forgotten rooms' places in the eviction order now: a recreated topic reuses seqs.
  std::erase_if(order_, [&](const Order& o) { return !rooms_.count(o.room); });
  partitions_[p] = Partition{first_seq, first_seq > 0 ? first_seq - 1 : 0, 0};
}

void KafkaHistoryCache::clear() {
  std::lock_guard lock(mu_);
  partitions_.clear();
  rooms_.clear();
  order_.clear();
  bytes_ = 0;
  entries_ = 0;
}

// A room is cached per partition: partitions added to the topic move some rooms, and the new
// partition's seqs (its offsets) start again under another epoch.
std::string KafkaHistoryCache::key_of(int p, const std::string& room) {
  std::string k = room;
  k += '\n';  // the partition's digits follow the last newline: keys never collide
  k += std::to_string(p);
  return k;
}

std::uint64_t KafkaHistoryCache::room_floor_locked(int p) const {
  auto it = partitions_.find(p);
  return it == partitions_.end() ? 0 : std::max(it->second.start, it->second.floor);
}

void KafkaHistoryCache::add(int p, const std::string& room, std::uint64_t seq, std::int64_t ts_ms,
                            std::string payload) {
  const auto now = std::chrono::duration_cast<std::chrono::milliseconds>(
                       std::chrono::system_clock::now().time_since_epoch()).count();
  std::lock_guard lock(mu_);
  auto part = partitions_.find(p);
  if (part == partitions_.end()) return;
  part->second.position = std::max(part->second.position, seq);
  std::string key = key_of(p, room);
  auto [it, fresh] = rooms_.try_emplace(key);
  Room& r = it->second;
  if (fresh) {
    r.partition = p;
    r.complete_from = room_floor_locked(p);
  }
  bytes_ += payload.size();
  r.entries.push_back(Entry{seq, ts_ms, std::move(payload)});
  ++entries_;
  order_.push_back(Order{key, seq, ts_ms});
  if (r.entries.size() > limits_.per_room) evict_front_locked(r, key);
  expire_locked(now);
  while (bytes_ > limits_.max_bytes && !order_.empty()) {
    Order o = std::move(order_.front());
    order_.pop_front();
    auto victim = rooms_.find(o.room);
    if (victim != rooms_.end() && victim->second.entries.front().seq == o.seq)
      evict_front_locked(victim->second, o.room);
  }
  // Entries evicted by the per-room bound leave stale places in order_: sweep them now and
  // then, so order_ stays within twice the live entries.
  if (order_.size() > 2 * entries_ + 4096) {
    std::erase_if(order_, [&](const Order& o) {
      auto rit = rooms_.find(o.room);
      return rit == rooms_.end() || rit->second.entries.front().seq > o.seq;
    });
  }
}

void KafkaHistoryCache::advance(int p, std::uint64_t seq) {
  std::lock_guard lock(mu_);
  auto part = partitions_.find(p);
  if (part != partitions_.end()) part->second.position = std::max(part->second.position, seq);
}

// Drops the room's oldest entry; a room left empty is forgotten (its partition's floor keeps
// from where it was complete). `r` is invalid afterwards.
void KafkaHistoryCache::evict_front_locked(Room& r, const std::string& name) {
  bytes_ -= r.entries.front().payload.size();
  r.complete_from = r.entries.front().seq + 1;
  r.entries.pop_front();
  --entries_;
  if (!r.entries.empty()) return;
  Partition& part = partitions_[r.partition];
  part.floor = std::max(part.floor, r.complete_from);
  rooms_.erase(name);
}

void KafkaHistoryCache::expire_locked(std::int64_t now_ms) {
  if (limits_.ttl.count() <= 0) return;
  const std::int64_t cutoff = now_ms - limits_.ttl.count();
  while (!order_.empty() && order_.front().ts_ms < cutoff) {
    Order o = std::move(order_.front());
    order_.pop_front();
    auto victim = rooms_.find(o.room);
    if (victim != rooms_.end() && victim->second.entries.front().seq == o.seq)
      evict_front_locked(victim->second, o.room);
  }
}

KafkaHistoryCache::Answer KafkaHistoryCache::read(int p, const HistoryRequest& req, std::int64_t now_ms) {
  std::lock_guard lock(mu_);
  expire_locked(now_ms);
  Answer a;
  auto part = partitions_.find(p);
  if (part == partitions_.end()) return a;
  a.known = true;
  a.position = part->second.position;
  auto it = rooms_.find(key_of(p, req.room_id));
  if (it == rooms_.end()) {
    a.complete_from = room_floor_locked(p);
    return a;
  }
  const Room& r = it->second;
  a.complete_from = r.complete_from;
  // Entries past the ttl are skipped (a topic read filters them the same way); timestamps of
  // one room may step back a little (producers' clocks), so skipping never ends the walk.
  const std::int64_t cutoff = limits_.ttl.count() > 0 ? now_ms - limits_.ttl.count() : INT64_MIN;
  auto by_seq = [](const Entry& e, std::uint64_t s) { return e.seq < s; };
  std::vector<const Entry*> picked;
  if (req.after_seq != 0) {
    auto from = std::lower_bound(r.entries.begin(), r.entries.end(), req.after_seq + 1, by_seq);
    for (auto e = from; e != r.entries.end() && picked.size() < req.limit; ++e) {
      if (req.before_seq != 0 && e->seq >= req.before_seq) break;
      if (e->ts_ms >= cutoff) picked.push_back(&*e);
    }
  } else {
    auto end = req.before_seq == 0 ? r.entries.end()
                                   : std::lower_bound(r.entries.begin(), r.entries.end(), req.before_seq, by_seq);
    for (auto e = end; e != r.entries.begin() && picked.size() < req.limit;) {
      --e;
      if (e->ts_ms >= cutoff) picked.push_back(&*e);
    }
    std::reverse(picked.begin(), picked.end());
  }
  a.messages.reserve(picked.size());
  for (const Entry* e : picked) a.messages.push_back(Delivery{req.room_id, e->seq, {}, e->payload});
  return a;
}

std::optional<std::uint64_t> KafkaHistoryCache::position(int p) const {
  std::lock_guard lock(mu_);
  auto part = partitions_.find(p);
  if (part == partitions_.end()) return std::nullopt;
  return part->second.position;
}

std::size_t KafkaHistoryCache::bytes() const {
  std::lock_guard lock(mu_);
  return bytes_;
}

// ---- KafkaDedupeWindow ------------------------------------------------------------------------

std::string KafkaDedupeWindow::key(const std::string& room, std::string_view client_id) {
  std::string k;
  k.reserve(room.size() + 1 + client_id.size());
  k.append(room).push_back('\0');  // a room id holds no NUL, so the pair is unambiguous
  k.append(client_id);
  return k;
}

void KafkaDedupeWindow::expire_locked(std::int64_t now_ms) {
  const std::int64_t cutoff = now_ms - window_.count();
  while (!order_.empty() && (order_.front().second < cutoff || seen_.size() > max_ids_)) {
    auto it = seen_.find(order_.front().first);
    if (it != seen_.end() && it->second.ts_ms == order_.front().second) seen_.erase(it);
    order_.pop_front();
  }
}

std::optional<std::uint64_t> KafkaDedupeWindow::first_or_remember(const std::string& room, std::string_view client_id,
                                                                   std::uint64_t seq, std::int64_t ts_ms) {
  std::lock_guard lock(mu_);
  expire_locked(ts_ms);
  auto k = key(room, client_id);
  auto it = seen_.find(k);
  if (it != seen_.end() && it->second.seq != seq && ts_ms - it->second.ts_ms <= window_.count() &&
      it->second.seq < seq)
    return it->second.seq;
  if (it != seen_.end() && it->second.seq == seq) return std::nullopt;  // told by our own delivery report
  seen_[k] = Seen{seq, ts_ms};
  order_.emplace_back(std::move(k), ts_ms);
  return std::nullopt;
}

std::optional<std::uint64_t> KafkaDedupeWindow::find(const std::string& room, std::string_view client_id,
                                                     std::int64_t now_ms) {
  std::lock_guard lock(mu_);
  expire_locked(now_ms);
  auto it = seen_.find(key(room, client_id));
  if (it == seen_.end() || now_ms - it->second.ts_ms > window_.count()) return std::nullopt;
  return it->second.seq;
}

void KafkaDedupeWindow::clear() {
  std::lock_guard lock(mu_);
  seen_.clear();
  order_.clear();
}

}  // namespace chatd::bus
