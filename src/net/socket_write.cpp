#include "net/socket_write.h"

#include <climits>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>

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
    auto left = static_cast<std::size_t>(n);
    taken += left;
    while (pos < iov.size() && left >= iov[pos].iov_len) left -= iov[pos++].iov_len;
    if (left > 0) {
      iov[pos].iov_base = static_cast<char*>(iov[pos].iov_base) + left;
      iov[pos].iov_len -= left;
    }
    // A short write means the send buffer is full: trying again now would only spin.
    if (static_cast<std::size_t>(n) < want) return WriteResult::blocked;
  }
  return WriteResult::done;
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
