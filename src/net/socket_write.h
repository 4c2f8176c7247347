// Writing to a non-blocking socket straight from the caller's buffers: one sendmsg(2) carries up
// to IOV_MAX pieces (Asio's async_write sends at most 16 per call, so a 20-message burst to one
// subscriber cost it 4 calls), and a write the kernel only partly takes leaves the rest where it
// was, for the caller to keep and finish when the socket is writable again.
#pragma once

#include <sys/uio.h>

#include <boost/asio/ip/tcp.hpp>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace chatd::net {

enum class WriteResult : std::uint8_t {
  done,     // every piece was taken
  blocked,  // the kernel's send buffer is full; wait for writable and call again
  failed,   // the connection is broken
};

// Writes iov[pos..] without blocking, advancing `pos` (and trimming the first piece left) past
// what the kernel took. Returns how it ended; adds the sendmsg calls made to `calls` and the
// bytes taken to `taken`.
WriteResult write_pieces(int fd, std::vector<iovec>& iov, std::size_t& pos, std::uint64_t& calls,
                         std::size_t& taken);

// Moves `pos` (and trims the first piece left) past `n` bytes the kernel took.
void advance_pieces(std::vector<iovec>& iov, std::size_t& pos, std::size_t n);

// Many sockets' writes of one loop turn in one system call: each is a non-blocking sendmsg(2)
// queued on an io_uring and submitted together, so a fan-out to N sockets enters the kernel
// once instead of N times. Each write's result (bytes taken, or -errno with -EAGAIN for a full
// send buffer) is what sendmsg would have returned; nothing is left in flight after submit().
// One per loop thread.
class UringWrites {
 public:
  // Returns null, and why in `why`, when io_uring cannot be used here (an old kernel,
  // kernel.io_uring_disabled, a seccomp filter).
  static std::unique_ptr<UringWrites> open(std::string& why);
  ~UringWrites();
  UringWrites(const UringWrites&) = delete;
  UringWrites& operator=(const UringWrites&) = delete;

  // Writes queued before submit() must be at most this many.
  static constexpr std::size_t capacity = 256;

  // Queues a sendmsg of iov[pos..] (at most IOV_MAX pieces) on `fd`. `m` must stay put until
  // submit() returns. Returns the write's index in this round.
  std::size_t add(int fd, std::vector<iovec>& iov, std::size_t pos, msghdr& m);

  // Submits the round and returns each write's result by index in `results` (-ECANCELED: not
  // submitted, nothing of it written). Returns false when not all could be submitted: the
  // object must then be destroyed, not used again.
  bool submit(std::vector<int>& results);

  std::size_t queued() const { return queued_; }

 private:
  struct Ring;
  explicit UringWrites(std::unique_ptr<Ring> ring);
  std::unique_ptr<Ring> ring_;
  std::size_t queued_ = 0;
};

// Returns the bytes in iov[pos..].
std::size_t pieces_left(const std::vector<iovec>& iov, std::size_t pos);

// Closes with a reset instead of a FIN, so the kernel drops what the peer never read instead of
// holding it (and the socket) while it retries.
void close_hard(boost::asio::ip::tcp::socket& socket);

}  // namespace chatd::net
