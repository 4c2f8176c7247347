// How chatd's Redis connections (the store's and the bus's alike) watch their server. Every
// field is an option (app/options.cpp, --redis-*-ms); each default says why.
#pragma once

#include <chrono>

namespace chatd::redis {

struct Timing {
  // Start-up check (connect, AUTH, SELECT, PING), per step: a wrong address or password stops
  // chatd at once with one line, and a Redis a little slow to answer still lets it start.
  std::chrono::milliseconds start_timeout{3000};
  // One reconnect attempt (connect and setup) that takes longer is abandoned and retried.
  std::chrono::milliseconds connect_timeout{3000};
  // A PING this often on an idle connection, so a frozen server or a dead host is noticed...
  std::chrono::milliseconds ping_every{1000};
  // ...and dropped once it has not answered for this long: callers get engine_down, not a hang.
  std::chrono::milliseconds ping_timeout{3000};
  // Reconnect pauses double from 100 ms up to this: back within two seconds of Redis returning.
  std::chrono::milliseconds backoff_max{2000};
};

// The first reconnect pause: soon enough for a restart to go unnoticed, late enough not to spin.
inline constexpr std::chrono::milliseconds kBackoffMin{100};

}  // namespace chatd::redis
