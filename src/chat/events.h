// What happened on this node that an application backend may want to hear about. The chat core
// reports each event once, on the node where it happened (the publishing node for a message,
// the node holding the session for join/leave, the creating node for a room), so a sink that
// forwards them (hooks/webhooks) sends each event once however many nodes there are.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>

namespace chatd::chat {

struct ChatEvent {
  enum class Kind { message, join, leave, room };
  Kind kind = Kind::message;
  std::string room_id;
  std::string id;         // unique per event; the same event reported twice keeps its id
  std::uint64_t seq = 0;  // message: the seq the engine gave it
  std::string data;       // a JSON object: the message as stored, the room, or the session
  std::string epoch{};    // message: the epoch its seq counts in
};

inline const char* to_string(ChatEvent::Kind k) {
  switch (k) {
    case ChatEvent::Kind::message: return "message";
    case ChatEvent::Kind::join: return "join";
    case ChatEvent::Kind::leave: return "leave";
    case ChatEvent::Kind::room: return "room";
  }
  return "?";
}

class EventSink {
 public:
  virtual ~EventSink() = default;
  // Whether events of this kind are wanted at all; lets the caller skip building them.
  virtual bool wants(ChatEvent::Kind k) const = 0;
  // From any thread; never blocks.
  virtual void on_event(ChatEvent e) = 0;
  // Prometheus text for /metrics.
  virtual std::string metrics_text() const = 0;
  // Shutdown: keeps sending what is queued for at most `within`, then stops and calls `done`
  // (any thread). A sink that queues nothing calls it at once.
  virtual void drain(std::chrono::milliseconds within, std::function<void()> done) {
    (void)within;
    done();
  }
};

}  // namespace chatd::chat
