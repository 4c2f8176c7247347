// chatd::redis — running teardown on the engine thread from any thread.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>

#include <chrono>
#include <functional>
#include <future>
#include <memory>

namespace chatd::redis {

// How long a stop() waits for the engine thread to run its teardown: a stuck engine thread
// (a hung Redis call) must not hold up the process's shutdown longer than this.
inline constexpr std::chrono::milliseconds kTeardownWait{2000};

// Runs `f` on the engine thread and waits for it, at most `limit`. Runs it right here when
// called on that thread or when the engine is stopped (then no other thread touches the
// state). `f` must be idempotent: after a timeout it may still run later.
inline void run_in_loop_and_wait(boost::asio::io_context& io, std::function<void()> f,
                                 std::chrono::milliseconds limit = kTeardownWait) {
  if (io.get_executor().running_in_this_thread() || io.stopped()) {
    f();
    return;
  }
  auto finished = std::make_shared<std::promise<void>>();
  auto fut = finished->get_future();
  boost::asio::post(io, [f = std::move(f), finished] {
    f();
    finished->set_value();
  });
  fut.wait_for(limit);
}

}  // namespace chatd::redis
