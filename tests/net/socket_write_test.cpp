// UringWrites: a round of sendmsgs through io_uring answers what sendmsg(2) would (bytes
// taken, a short write, -EAGAIN for a full send buffer, -EPIPE for a gone peer), and nothing is
// left in flight once submit() returns. Real sockets, no mocks.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <vector>

#include "net/socket_write.h"

namespace chatd::net {
namespace {

struct Pair {
  int fd[2]{-1, -1};
  Pair() {
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, fd), 0);
    ::fcntl(fd[0], F_SETFL, O_NONBLOCK);
    ::fcntl(fd[1], F_SETFL, O_NONBLOCK);
  }
  ~Pair() {
    for (int f : fd)
      if (f >= 0) ::close(f);
  }
  std::string drain() const {
    std::string out;
    char buf[65536];
    for (ssize_t n; (n = ::read(fd[1], buf, sizeof buf)) > 0;) out.append(buf, static_cast<std::size_t>(n));
    return out;
  }
};

std::vector<iovec> pieces_of(std::vector<std::string>& parts) {
  std::vector<iovec> iov;
  for (auto& p : parts) iov.push_back(iovec{p.data(), p.size()});
  return iov;
}

// Returns the ring, or null with why in `why` (a kernel with io_uring off: the test skips,
// saying so; chatd then writes with sendmsg).
std::unique_ptr<UringWrites> open_ring(std::string& why) { return UringWrites::open(why); }

TEST(UringWrites, OneRoundWritesEverySocketsPiecesInOrder) {
  std::string why;
  auto ring = open_ring(why);
  if (!ring) GTEST_SKIP() << "io_uring is not usable here (" << why << "); chatd falls back to sendmsg";
  Pair a, b, c;
  std::vector<std::string> pa{"\x81\x05", "hel", "lo"}, pb{"one"}, pc{"x", "", "yz", "!"};
  auto ia = pieces_of(pa), ib = pieces_of(pb), ic = pieces_of(pc);
  msghdr ma{}, mb{}, mc{};
  EXPECT_EQ(ring->add(a.fd[0], ia, 0, ma), 0u);
  EXPECT_EQ(ring->add(b.fd[0], ib, 0, mb), 1u);
  EXPECT_EQ(ring->add(c.fd[0], ic, 1, mc), 2u);  // from the second piece on
  std::vector<int> results;
  ASSERT_TRUE(ring->submit(results));
  ASSERT_EQ(results.size(), 3u);
  EXPECT_EQ(results[0], 7);
  EXPECT_EQ(results[1], 3);
  EXPECT_EQ(results[2], 3);
  EXPECT_EQ(a.drain(), std::string("\x81\x05hello"));
  EXPECT_EQ(b.drain(), "one");
  EXPECT_EQ(c.drain(), "yz!");
  EXPECT_EQ(ring->queued(), 0u);
  // The next round starts empty.
  ASSERT_TRUE(ring->submit(results));
  EXPECT_TRUE(results.empty());
}

TEST(UringWrites, AFullSendBufferAnswersShortThenEagainAndAGonePeerEpipe) {
  std::string why;
  auto ring = open_ring(why);
  if (!ring) GTEST_SKIP() << "io_uring is not usable here (" << why << "); chatd falls back to sendmsg";
  Pair full, gone;
  int small = 4096;
  ::setsockopt(full.fd[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
  std::vector<std::string> big{std::string(1 << 20, 'a')};
  auto ib = pieces_of(big);
  msghdr m1{};
  ring->add(full.fd[0], ib, 0, m1);
  ::close(gone.fd[1]);
  gone.fd[1] = -1;
  std::vector<std::string> small_parts{"late"};
  auto is = pieces_of(small_parts);
  msghdr m2{};
  ring->add(gone.fd[0], is, 0, m2);
  std::vector<int> results;
  ASSERT_TRUE(ring->submit(results));
  ASSERT_EQ(results.size(), 2u);
  ASSERT_GT(results[0], 0);  // short: the kernel took what fits
  EXPECT_LT(results[0], 1 << 20);
  EXPECT_EQ(results[1], -EPIPE);  // MSG_NOSIGNAL: an error, no SIGPIPE

  // Nothing read yet: the same socket now takes nothing.
  std::size_t pos = 0;
  advance_pieces(ib, pos, static_cast<std::size_t>(results[0]));
  EXPECT_EQ(pos, 0u);
  EXPECT_EQ(pieces_left(ib, pos), (1u << 20) - static_cast<std::size_t>(results[0]));
  msghdr m3{};
  ring->add(full.fd[0], ib, pos, m3);
  ASSERT_TRUE(ring->submit(results));
  EXPECT_EQ(results.at(0), -EAGAIN);
}

TEST(SocketWrite, AdvancePiecesSkipsWholePiecesAndTrimsThePartOne) {
  std::vector<std::string> parts{"ab", "cde", "f"};
  auto iov = pieces_of(parts);
  std::size_t pos = 0;
  advance_pieces(iov, pos, 3);
  EXPECT_EQ(pos, 1u);
  EXPECT_EQ(std::string(static_cast<char*>(iov[1].iov_base), iov[1].iov_len), "de");
  advance_pieces(iov, pos, 3);
  EXPECT_EQ(pos, 3u);
  EXPECT_EQ(pieces_left(iov, pos), 0u);
}

}  // namespace
}  // namespace chatd::net
