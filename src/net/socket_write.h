// Writing to a non-blocking socket straight from the caller's buffers: one sendmsg(2) carries up
// to IOV_MAX pieces (Asio's async_write sends at most 16 per call, so a 20-message burst to one
// subscriber cost it 4 calls), and a write the kernel only partly takes leaves the rest where it
// was, for the caller to keep and finish when the socket is writable again.
#pragma once

#include <sys/uio.h>

#include <boost/asio/ip/tcp.hpp>

#include <cstddef>
#include <cstdint>
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

// Returns the bytes in iov[pos..].
std::size_t pieces_left(const std::vector<iovec>& iov, std::size_t pos);

// Closes with a reset instead of a FIN, so the kernel drops what the peer never read instead of
// holding it (and the socket) while it retries.
void close_hard(boost::asio::ip::tcp::socket& socket);

}  // namespace chatd::net
