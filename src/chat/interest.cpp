#include "chat/interest.h"

#include <boost/asio/post.hpp>

namespace chatd::chat {

RoomInterest::RoomInterest(bus::MessageBus& bus, boost::asio::io_context& order_loop, std::size_t shards)
    : bus_(bus), order_(boost::asio::make_strand(order_loop)), shards_(shards) {}

void RoomInterest::join(const std::string& room_id, std::size_t shard, bus::DoneFn ready) {
  std::unique_lock lock(mu_);
  auto& in = rooms_[room_id];
  if (in.per_shard.empty()) in.per_shard.resize(shards_);
  ++in.count;
  ++in.per_shard[shard];
  if (in.ready) {
    lock.unlock();
    // Ready once, but the engine is away now: say so rather than promise delivery. The bus
    // keeps the room and subscribes it again when the engine returns.
    ready(bus_.up() ? std::error_code{} : make_error_code(bus::Error::engine_down));
    return;
  }
  in.waiters.push_back(std::move(ready));
  if (in.pending) return;
  in.pending = true;
  auto gen = in.generation = ++generations_;
  auto on_ready = [this, room_id, gen](std::error_code ec) {
    std::vector<bus::DoneFn> waiters;
    {
      std::lock_guard relock(mu_);
      auto it = rooms_.find(room_id);
      if (it == rooms_.end() || it->second.generation != gen) return;
      it->second.pending = false;
      it->second.ready = !ec;
      waiters.swap(it->second.waiters);
    }
    for (auto& w : waiters) w(ec);
  };
  // Posted under the lock: the strand runs bus calls in the order the interest changed. The
  // call itself runs outside the lock, so a bus that answers inline (on_ready locks) is fine.
  boost::asio::post(order_, [this, room_id, on_ready = std::move(on_ready)]() mutable {
    bus_.subscribe(room_id, std::move(on_ready));
  });
}

void RoomInterest::leave(const std::string& room_id, std::size_t shard) {
  std::unique_lock lock(mu_);
  auto it = rooms_.find(room_id);
  if (it == rooms_.end()) return;
  if (it->second.per_shard[shard] > 0) --it->second.per_shard[shard];
  if (--it->second.count > 0) return;
  auto waiters = std::move(it->second.waiters);
  rooms_.erase(it);
  boost::asio::post(order_, [this, room_id] { bus_.unsubscribe(room_id); });
  lock.unlock();
  for (auto& w : waiters) w(bus::Error::stopped);
}

std::vector<std::string> RoomInterest::rooms() {
  std::lock_guard lock(mu_);
  std::vector<std::string> out;
  out.reserve(rooms_.size());
  for (const auto& [room, interest] : rooms_)
    if (interest.count > 0) out.push_back(room);
  return out;
}

bool RoomInterest::shards_with(const std::string& room_id, std::vector<std::size_t>& shards) {
  shards.clear();
  std::lock_guard lock(mu_);
  auto it = rooms_.find(room_id);
  if (it == rooms_.end()) return false;
  for (std::size_t i = 0; i < it->second.per_shard.size(); ++i)
    if (it->second.per_shard[i] > 0) shards.push_back(i);
  return !shards.empty();
}

}  // namespace chatd::chat
