#include "chat/roster.h"

namespace chatd::chat {

Roster::Entry* Roster::find(const std::string& room, const std::string& member) {
  auto r = rooms_.find(room);
  if (r == rooms_.end()) return nullptr;
  auto m = r->second.find(member);
  return m == r->second.end() ? nullptr : &m->second;
}

void Roster::erase(const std::string& room, const std::string& member) {
  auto r = rooms_.find(room);
  if (r == rooms_.end()) return;
  r->second.erase(member);
  if (r->second.empty()) rooms_.erase(r);
}

Roster::Step Roster::attach(const std::string& room, const std::string& member) {
  auto& e = rooms_[room][member];
  const bool known = e.connections > 0 || e.grace != 0;
  if (e.grace != 0) {
    e.grace = 0;  // came back in time: its pending leave finds a stale token and is dropped
    --grace_count_;
  }
  ++e.connections;
  return known ? Step::none : Step::join;
}

Roster::Step Roster::detach(const std::string& room, const std::string& member, Clock::time_point now,
                            Clock::time_point leave_at) {
  auto* e = find(room, member);
  if (!e || e->connections == 0) return Step::none;
  if (--e->connections > 0) return Step::none;
  if (leave_at <= now) {
    erase(room, member);
    return Step::leave;
  }
  e->grace = ++next_token_;
  ++grace_count_;
  pending_.push_back({room, member, leave_at, e->grace});
  return Step::none;
}

std::vector<std::pair<std::string, std::string>> Roster::expire(Clock::time_point now) {
  std::vector<std::pair<std::string, std::string>> gone;
  while (!pending_.empty() && pending_.front().at <= now) {
    auto p = std::move(pending_.front());
    pending_.pop_front();
    auto* e = find(p.room, p.member);
    if (!e || e->grace != p.token) continue;  // came back, or left for good already
    --grace_count_;
    erase(p.room, p.member);
    gone.emplace_back(std::move(p.room), std::move(p.member));
  }
  return gone;
}

std::size_t Roster::connections(const std::string& room, const std::string& member) const {
  auto r = rooms_.find(room);
  if (r == rooms_.end()) return 0;
  auto m = r->second.find(member);
  return m == r->second.end() ? 0 : m->second.connections;
}

std::size_t Roster::members(const std::string& room) const {
  auto r = rooms_.find(room);
  return r == rooms_.end() ? 0 : r->second.size();
}

}  // namespace chatd::chat
