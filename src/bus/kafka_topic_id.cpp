#include "bus/kafka_topic_id.h"

#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <vector>

namespace chatd::bus::kafka_meta {
namespace {

constexpr std::int16_t kApiMetadata = 3;
constexpr std::int16_t kVersion = 12;           // flexible encoding; carries topic_id (v10+)
constexpr std::size_t kMaxResponse = 1u << 20;  // a one-topic answer is a few hundred bytes

void put16(std::string& b, std::int16_t v) {
  b.push_back(static_cast<char>((v >> 8) & 0xff));
  b.push_back(static_cast<char>(v & 0xff));
}
void put32(std::string& b, std::int32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) b.push_back(static_cast<char>((v >> shift) & 0xff));
}
void put_uvarint(std::string& b, std::uint32_t v) {
  while (v >= 0x80) {
    b.push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  b.push_back(static_cast<char>(v));
}

// A bounds-checked reader over the response; any overrun sets `bad` and yields zeros.
struct Reader {
  std::string_view in;
  std::size_t at = 0;
  bool bad = false;

  bool need(std::size_t n) {
    if (bad || in.size() - at < n) bad = true;
    return !bad;
  }
  std::uint64_t be(std::size_t n) {
    if (!need(n)) return 0;
    std::uint64_t v = 0;
    for (std::size_t i = 0; i < n; ++i) v = (v << 8) | static_cast<unsigned char>(in[at + i]);
    at += n;
    return v;
  }
  std::int16_t i16() { return static_cast<std::int16_t>(be(2)); }
  std::int32_t i32() { return static_cast<std::int32_t>(be(4)); }
  std::uint32_t uvarint() {
    std::uint32_t v = 0;
    for (int shift = 0; shift <= 28; shift += 7) {
      if (!need(1)) return 0;
      const auto byte = static_cast<unsigned char>(in[at++]);
      v |= static_cast<std::uint32_t>(byte & 0x7f) << shift;
      if (!(byte & 0x80)) return v;
    }
    bad = true;
    return 0;
  }
  void skip(std::size_t n) {
    if (need(n)) at += n;
  }
  // COMPACT_(NULLABLE_)STRING: length + 1, 0 = null.
  void skip_compact_string() {
    const auto n = uvarint();
    if (n > 0) skip(n - 1);
  }
  void skip_tagged_fields() {
    for (auto n = uvarint(); n > 0 && !bad; --n) {
      uvarint();        // tag
      skip(uvarint());  // size, data
    }
  }
};

constexpr char kBase64Url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

std::string base64url(std::string_view bytes) {
  std::string out;
  std::size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    const auto n = (static_cast<unsigned char>(bytes[i]) << 16) | (static_cast<unsigned char>(bytes[i + 1]) << 8) |
                   static_cast<unsigned char>(bytes[i + 2]);
    for (int shift = 18; shift >= 0; shift -= 6) out.push_back(kBase64Url[(n >> shift) & 0x3f]);
  }
  if (bytes.size() - i == 1) {
    const auto n = static_cast<unsigned char>(bytes[i]) << 16;
    out.push_back(kBase64Url[(n >> 18) & 0x3f]);
    out.push_back(kBase64Url[(n >> 12) & 0x3f]);
  } else if (bytes.size() - i == 2) {
    const auto n = (static_cast<unsigned char>(bytes[i]) << 16) | (static_cast<unsigned char>(bytes[i + 1]) << 8);
    for (int shift = 18; shift >= 6; shift -= 6) out.push_back(kBase64Url[(n >> shift) & 0x3f]);
  }
  return out;
}

// Waits until fd is ready for `events` or the deadline passes; returns whether it is.
bool wait_fd(int fd, short events, std::chrono::steady_clock::time_point deadline) {
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd p{fd, events, 0};
    const int rc = ::poll(&p, 1, static_cast<int>(left.count()));
    if (rc > 0) return true;
    if (rc < 0 && errno != EINTR) return false;
  }
}

// Connects to host:port without blocking past the deadline; returns the fd or -1.
int connect_to(const std::string& host, const std::string& port, std::chrono::steady_clock::time_point deadline,
               std::string& why) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (int rc = ::getaddrinfo(host.c_str(), port.c_str(), &hints, &res); rc != 0) {
    why = host + ":" + port + ": " + ::gai_strerror(rc);
    return -1;
  }
  int fd = -1;
  for (addrinfo* a = res; a && fd < 0; a = a->ai_next) {
    fd = ::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    if (::connect(fd, a->ai_addr, a->ai_addrlen) == 0) break;
    int err = 0;
    socklen_t len = sizeof err;
    if (errno == EINPROGRESS && wait_fd(fd, POLLOUT, deadline) &&
        ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0)
      break;
    why = host + ":" + port + ": cannot connect";
    ::close(fd);
    fd = -1;
  }
  ::freeaddrinfo(res);
  return fd;
}

// Sends `req` and returns the response body, or nullopt.
std::optional<std::string> exchange(int fd, const std::string& req, std::chrono::steady_clock::time_point deadline) {
  for (std::size_t sent = 0; sent < req.size();) {
    if (!wait_fd(fd, POLLOUT, deadline)) return std::nullopt;
    const auto n = ::send(fd, req.data() + sent, req.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno != EAGAIN && errno != EINTR) return std::nullopt;
    if (n > 0) sent += static_cast<std::size_t>(n);
  }
  std::string in;
  std::size_t want = 4;
  char buf[4096];
  while (in.size() < want) {
    if (!wait_fd(fd, POLLIN, deadline)) return std::nullopt;
    const auto n = ::recv(fd, buf, sizeof buf, 0);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) return std::nullopt;
    if (n > 0) in.append(buf, static_cast<std::size_t>(n));
    if (want == 4 && in.size() >= 4) {
      Reader r{in};
      const auto size = static_cast<std::uint32_t>(r.i32());
      if (size > kMaxResponse) return std::nullopt;
      want = 4 + size;
    }
  }
  return in.substr(4, want - 4);
}

}  // namespace

std::string encode_metadata_request(std::int32_t correlation_id, std::string_view client_id, std::string_view topic) {
  std::string b;
  put16(b, kApiMetadata);
  put16(b, kVersion);
  put32(b, correlation_id);
  put16(b, static_cast<std::int16_t>(client_id.size()));  // header v2: client_id is a plain STRING
  b.append(client_id);
  put_uvarint(b, 0);                                 // header tagged fields
  put_uvarint(b, 2);                                 // topics: one (compact array: n + 1)
  b.append(16, '\0');                                // topic_id: zero, ask by name
  put_uvarint(b, static_cast<std::uint32_t>(topic.size() + 1));
  b.append(topic);
  put_uvarint(b, 0);                                 // topic tagged fields
  b.push_back('\0');                                 // allow_auto_topic_creation: no
  b.push_back('\0');                                 // include_topic_authorized_operations: no
  put_uvarint(b, 0);                                 // tagged fields
  std::string framed;
  put32(framed, static_cast<std::int32_t>(b.size()));
  return framed + b;
}

std::optional<TopicId> parse_metadata_response(std::string_view body, std::int32_t correlation_id) {
  Reader r{body};
  if (r.i32() != correlation_id) return std::nullopt;
  r.skip_tagged_fields();  // response header v1
  r.i32();                 // throttle_time_ms
  for (auto n = r.uvarint(); n > 1 && !r.bad; --n) {  // brokers
    r.i32();                                          // node_id
    r.skip_compact_string();                          // host
    r.i32();                                          // port
    r.skip_compact_string();                          // rack
    r.skip_tagged_fields();
  }
  r.skip_compact_string();  // cluster_id
  r.i32();                  // controller_id
  if (r.uvarint() < 2) return std::nullopt;  // topics: we asked for one
  TopicId t;
  t.error = r.i16();
  r.skip_compact_string();  // name
  if (!r.need(16)) return std::nullopt;
  t.id = base64url(body.substr(r.at, 16));
  r.skip(16);
  if (r.bad) return std::nullopt;
  return t;
}

std::optional<std::string> fetch_topic_id(const std::string& bootstrap, const std::string& topic,
                                          std::chrono::milliseconds timeout, std::string& why) {
  static std::atomic<std::int32_t> next_correlation{1};
  why = "no broker in '" + bootstrap + "'";
  std::size_t start = 0;
  while (start <= bootstrap.size()) {
    auto end = bootstrap.find(',', start);
    if (end == std::string::npos) end = bootstrap.size();
    std::string broker = bootstrap.substr(start, end - start);
    start = end + 1;
    const auto colon = broker.rfind(':');
    if (broker.empty() || colon == std::string::npos) continue;
    std::string host = broker.substr(0, colon);
    if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    const int fd = connect_to(host, broker.substr(colon + 1), deadline, why);
    if (fd < 0) continue;
    const std::int32_t corr = next_correlation++;
    auto body = exchange(fd, encode_metadata_request(corr, "chatd-epoch", topic), deadline);
    ::close(fd);
    if (!body) {
      why = broker + ": no Metadata answer";
      continue;
    }
    auto t = parse_metadata_response(*body, corr);
    if (!t) {
      why = broker + ": unreadable Metadata answer";
      continue;
    }
    if (t->error != 0) {
      why = "topic '" + topic + "': broker error " + std::to_string(t->error);
      return std::nullopt;
    }
    if (t->id == "AAAAAAAAAAAAAAAAAAAAAA") {
      why = "topic '" + topic + "': the broker reports no topic id";
      return std::nullopt;
    }
    return t->id;
  }
  return std::nullopt;
}

}  // namespace chatd::bus::kafka_meta
