// Presence on one node (the local bus): the engine is a map in this process. Answers go
// through the engine loop, never inside the call, as the interface promises.
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>

#include <mutex>
#include <unordered_map>
#include <unordered_set>

#include "bus/presence.h"

namespace chatd::bus {
namespace {

class LocalPresence final : public Presence {
 public:
  explicit LocalPresence(boost::asio::io_context& engine) : engine_(engine) {}

  void start(GoneFn) override {}  // one node: nobody else can die

  void join(const std::string& room, const std::string& member, ChangedFn done) override {
    bool first;
    std::size_t count;
    {
      std::lock_guard lock(mu_);
      auto& in = rooms_[room];
      first = in.insert(member).second;
      count = in.size();
    }
    boost::asio::post(engine_, [done = std::move(done), first, count] { done({}, first, count); });
  }

  void leave(const std::string& room, const std::string& member, ChangedFn done) override {
    bool last = false;
    std::size_t count = 0;
    {
      std::lock_guard lock(mu_);
      if (auto it = rooms_.find(room); it != rooms_.end()) {
        last = it->second.erase(member) != 0;
        count = it->second.size();
        if (it->second.empty()) rooms_.erase(it);
      }
    }
    boost::asio::post(engine_, [done = std::move(done), last, count] { done({}, last, count); });
  }

  void members(const std::string& room, std::size_t limit, MembersFn done) override {
    MemberList out;
    {
      std::lock_guard lock(mu_);
      if (auto it = rooms_.find(room); it != rooms_.end()) {
        out.count = it->second.size();
        for (const auto& m : it->second) {
          if (out.names.size() >= limit) break;
          out.names.push_back(m);
        }
      }
    }
    boost::asio::post(engine_, [done = std::move(done), out = std::move(out)]() mutable { done({}, std::move(out)); });
  }

  void counts(std::vector<std::string> rooms, CountsFn done) override {
    std::vector<std::size_t> out(rooms.size(), 0);
    {
      std::lock_guard lock(mu_);
      for (std::size_t i = 0; i < rooms.size(); ++i)
        if (auto it = rooms_.find(rooms[i]); it != rooms_.end()) out[i] = it->second.size();
    }
    boost::asio::post(engine_, [done = std::move(done), out = std::move(out)]() mutable { done({}, std::move(out)); });
  }

  bool up() const override { return true; }
  void stop() override {}

 private:
  boost::asio::io_context& engine_;
  std::mutex mu_;
  std::unordered_map<std::string, std::unordered_set<std::string>> rooms_;
};

}  // namespace

std::unique_ptr<Presence> make_local_presence(boost::asio::io_context& engine) {
  return std::make_unique<LocalPresence>(engine);
}

}  // namespace chatd::bus
