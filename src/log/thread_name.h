// Names threads, so `top -H`, `ps -L`, perf and gdb tell an operator which of chatd's threads
// is busy (the history writer, a worker, a Kafka loop) instead of showing "chatd" for each.
// Linux keeps 15 bytes of a name; longer names are cut.
#pragma once

#include <pthread.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <string_view>
#include <thread>
#include <utility>

namespace chatd::log {

inline void name_this_thread(std::string_view name) {
  char buf[16] = {};
  std::memcpy(buf, name.data(), std::min(name.size(), sizeof buf - 1));
  pthread_setname_np(pthread_self(), buf);  // a name is only a label: failure changes nothing
}

// Starts a thread named `name` that runs `f`.
template <class F>
std::thread named_thread(std::string name, F f) {
  return std::thread([name = std::move(name), f = std::move(f)]() mutable {
    name_this_thread(name);
    f();
  });
}

}  // namespace chatd::log
