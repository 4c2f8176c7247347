#include "net/socket_write.h"

#include <climits>
#include <liburing.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace chatd::net {

WriteResult write_pieces(int fd, std::vector<iovec>& iov, std::size_t& pos, std::uint64_t& calls,
                         std::size_t& taken) {
  while (pos < iov.size()) {
    const std::size_t count = std::min<std::size_t>(iov.size() - pos, IOV_MAX);
    std::size_t want = 0;
    for (std::size_t i = pos; i < pos + count; ++i) want += iov[i].iov_len;
    msghdr m{};
    m.msg_iov = iov.data() + pos;
    m.msg_iovlen = count;
    const ssize_t n = ::sendmsg(fd, &m, MSG_NOSIGNAL | MSG_DONTWAIT);
    ++calls;
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno == EAGAIN || errno == EWOULDBLOCK ? WriteResult::blocked : WriteResult::failed;
    }
    taken += static_cast<std::size_t>(n);
    advance_pieces(iov, pos, static_cast<std::size_t>(n));
    // A short write means the send buffer is full: trying again now would only spin.
    if (static_cast<std::size_t>(n) < want) return WriteResult::blocked;
  }
  return WriteResult::done;
}

void advance_pieces(std::vector<iovec>& iov, std::size_t& pos, std::size_t n) {
  while (pos < iov.size() && n >= iov[pos].iov_len) n -= iov[pos++].iov_len;
  if (n > 0) {
    iov[pos].iov_base = static_cast<char*>(iov[pos].iov_base) + n;
    iov[pos].iov_len -= n;
  }
}

struct UringWrites::Ring {
  io_uring ring{};
};

std::unique_ptr<UringWrites> UringWrites::open(std::string& why) {
  auto r = std::make_unique<Ring>();
  // The completion queue holds a whole round, so results never overflow it.
  if (int e = io_uring_queue_init(static_cast<unsigned>(capacity), &r->ring, 0); e < 0) {
    why = std::string("io_uring_setup: ") + std::strerror(-e);
    return nullptr;
  }
  return std::unique_ptr<UringWrites>(new UringWrites(std::move(r)));
}

UringWrites::UringWrites(std::unique_ptr<Ring> ring) : ring_(std::move(ring)) {}

UringWrites::~UringWrites() { io_uring_queue_exit(&ring_->ring); }

std::size_t UringWrites::add(int fd, std::vector<iovec>& iov, std::size_t pos, msghdr& m) {
  m = msghdr{};
  m.msg_iov = iov.data() + pos;
  m.msg_iovlen = std::min<std::size_t>(iov.size() - pos, IOV_MAX);
  io_uring_sqe* sqe = io_uring_get_sqe(&ring_->ring);  // never null: at most `capacity` queued
  // MSG_DONTWAIT: a full send buffer completes at once with -EAGAIN instead of waiting in the
  // ring, so nothing is in flight once submit() returns.
  io_uring_prep_sendmsg(sqe, fd, &m, MSG_NOSIGNAL | MSG_DONTWAIT);
  io_uring_sqe_set_data64(sqe, queued_);
  return queued_++;
}

bool UringWrites::submit(std::vector<int>& results) {
  const auto n = static_cast<int>(queued_);
  results.assign(queued_, -ECANCELED);
  queued_ = 0;
  if (n == 0) return true;
  int e;
  do e = io_uring_submit(&ring_->ring);
  while (e == -EINTR);
  // Each sendmsg ran during the submit; reap what was submitted.
  for (int seen = 0; seen < std::max(e, 0); ++seen) {
    io_uring_cqe* cqe = nullptr;
    if (io_uring_wait_cqe(&ring_->ring, &cqe) < 0) return false;
    const auto i = io_uring_cqe_get_data64(cqe);
    if (i < results.size()) results[i] = cqe->res;
    io_uring_cqe_seen(&ring_->ring, cqe);
  }
  // Entries not submitted still point into this round's buffers: the ring must go.
  return e == n;
}

std::size_t pieces_left(const std::vector<iovec>& iov, std::size_t pos) {
  std::size_t n = 0;
  for (; pos < iov.size(); ++pos) n += iov[pos].iov_len;
  return n;
}

void close_hard(boost::asio::ip::tcp::socket& socket) {
  boost::system::error_code ignored;
  socket.set_option(boost::asio::socket_base::linger(true, 0), ignored);
  socket.close(ignored);
}

}  // namespace chatd::net
