// chatd_loadgen: a STOMP-over-WebSocket load generator for chatd and its peers.
//
// Shape: the parent resolves rooms, maps shared memory, forks --procs children (each under the
// 20,000-fd limit), tells them when to start, samples the server's /proc while they run, then
// merges their counters and histograms and prints one JSON line (stdout) and a summary (stderr).
// Each child runs --threads workers, one epoll loop each; a connection lives on one worker.
// The workers use plain non-blocking sockets rather than Asio: in the fan-out rows the generator
// receives one small message per socket per round, and Asio's speculative read (a recv that
// returns EAGAIN before every wait) and per-operation bookkeeping nearly doubled its cost there.
//
// Timeline (same in every process, CLOCK_MONOTONIC): start .. +warmup .. +duration .. +drain.
// Senders send from start to the end of the window; latency is recorded for messages whose
// intended send time falls in the window, deliveries are counted by receive time in the window.
// With --rate R the schedule is open loop: message k of a sender is due at a fixed time and
// carries that time, so a stalled server shows up as latency instead of a lower send rate.
// The loop sleeps until the next message is due (not a fixed tick), so a message leaves when
// it is due unless the generator is busy; how late each one left (send lag) is reported, and
// it is part of the latency, never subtracted from it.

#include "frames.h"
#include "histogram.h"

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/json.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <memory>
#include <queue>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using loadgen::Histogram;

namespace {

std::int64_t now_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return std::int64_t(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

struct Options {
  std::string host = "127.0.0.1";
  std::vector<int> ports = {8080};  // several: a room's members alternate between them
  std::string path = "/ws-stomp";
  std::string mode = "fanout";  // idle | fanout | rooms
  int conns = 100;
  int threads = 1;
  int procs = 0;  // 0: as few as keep every process under fd_budget connections
  int rooms = -1;  // -1: 0 for idle, 1 for fanout, conns/10 for rooms
  int senders_per_room = 1;
  double rate = 0;  // total messages/s; 0 = as fast as the window allows
  int window = 16;  // max mode: messages in flight per sender
  int burst = 0;  // >0 (max mode, one sender): send this many, wait until every connection has them all
  double window_timeout = 10;  // max mode: s without an own message back before the window reopens
  double duration = 10;
  double warmup = 2;
  double drain = 5;  // at most; ends as soon as every message has arrived
  int size = 100;  // bytes of message text
  std::string sub_prefix = "/sub/chat/room/";
  std::string send_dest = "/pub/chat/message";  // "{room}" is replaced by the room id
  std::string body_format = "chatd";  // chatd (JSON chat message) | raw (text only)
  // stomp | raw (each WebSocket text message is one message's text: the ceiling peer) |
  // centrifugo (Centrifugo's JSON protocol: connect, subscribe, publish, pushes)
  std::string protocol = "stomp";
  std::string room_ids;  // comma-separated; overrides room creation
  std::string room_source = "rest";  // rest: POST /chat/room; names: bench-0..bench-R-1
  std::string login, passcode;
  std::string vhost = "/";
  std::vector<int> server_pids;  // CPU and RSS are summed over these
  std::vector<int> engine_pids;  // CPU reported per pid (the engine's shards: Redis, Kafka)
  bool sub_receipt = true;  // ready only once the SUBSCRIBE's RECEIPT arrives
  // busy: workers poll epoll without sleeping, so a delivery never has to wake the generator.
  // On one machine a sleeping receiver's wake-up is paid by the sending core (the server's):
  // remote clients would not charge the server for it.
  bool busy_poll = false;
  int connect_concurrency = 200;  // handshakes in progress per worker
  double connect_timeout = 120;
  int addr_span = 25000;  // connections per loopback source address (ephemeral ports ~28k)
  int fd_budget = 19000;  // connections per process, under the 20,000-fd limit
  std::string label;
};

[[noreturn]] void usage(const char* why) {
  std::fprintf(stderr,
               "chatd_loadgen: %s\n"
               "usage: chatd_loadgen --port P|--ports P1,P2 [--host 127.0.0.1] [--path /ws-stomp (/{room}: per room)]\n"
               "  --mode idle|fanout|rooms --conns N --threads T --procs P\n"
               "  --rooms R --senders-per-room S --rate MSGS_PER_S(0=max) --window W --window-timeout S --burst N\n"
               "  --duration S --warmup S --drain S --size BYTES\n"
               "  --sub-prefix /sub/chat/room/ --send-dest /pub/chat/message (or /topic/{room})\n"
               "  --body-format chatd|raw --room-ids a,b --room-source rest|names --protocol stomp|raw|centrifugo\n"
               "  --login U --passcode P --vhost / --server-pids PID[,PID] --engine-pids PID[,PID] --label TEXT\n"
               "  --sub-receipt yes|no --poll block|busy\n"
               "  --connect-concurrency N --connect-timeout S --addr-span N --fd-budget N\n",
               why);
  std::exit(2);
}

Options parse_options(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string key = argv[i];
    std::string val;
    if (key.rfind("--", 0) != 0) usage(("unexpected argument " + key).c_str());
    if (auto eq = key.find('='); eq != std::string::npos) {
      val = key.substr(eq + 1);
      key = key.substr(0, eq);
    } else {
      if (i + 1 >= argc) usage(("missing value for " + key).c_str());
      val = argv[++i];
    }
    auto num = [&] { return std::stod(val); };
    auto integer = [&] { return std::stoi(val); };
    auto integers = [&] {
      std::vector<int> v;
      std::stringstream ss(val);
      for (std::string x; std::getline(ss, x, ',');) v.push_back(std::stoi(x));
      return v;
    };
    if (key == "--host") o.host = val;
    else if (key == "--port" || key == "--ports") o.ports = integers();
    else if (key == "--path") o.path = val;
    else if (key == "--mode") o.mode = val;
    else if (key == "--conns") o.conns = integer();
    else if (key == "--threads") o.threads = integer();
    else if (key == "--procs") o.procs = integer();
    else if (key == "--rooms") o.rooms = integer();
    else if (key == "--senders-per-room") o.senders_per_room = integer();
    else if (key == "--rate") o.rate = num();
    else if (key == "--window") o.window = integer();
    else if (key == "--burst") o.burst = integer();
    else if (key == "--window-timeout") o.window_timeout = num();
    else if (key == "--duration") o.duration = num();
    else if (key == "--warmup") o.warmup = num();
    else if (key == "--drain") o.drain = num();
    else if (key == "--size") o.size = integer();
    else if (key == "--sub-prefix") o.sub_prefix = val;
    else if (key == "--send-dest") o.send_dest = val;
    else if (key == "--body-format") o.body_format = val;
    else if (key == "--protocol") o.protocol = val;
    else if (key == "--room-ids") o.room_ids = val;
    else if (key == "--room-source") o.room_source = val;
    else if (key == "--login") o.login = val;
    else if (key == "--passcode") o.passcode = val;
    else if (key == "--vhost") o.vhost = val;
    else if (key == "--server-pid" || key == "--server-pids") o.server_pids = integers();
    else if (key == "--engine-pids") o.engine_pids = integers();
    else if (key == "--sub-receipt") o.sub_receipt = val == "yes" || val == "1" || val == "true";
    else if (key == "--poll") {
      if (val != "busy" && val != "block") usage("--poll: busy or block");
      o.busy_poll = val == "busy";
    }
    else if (key == "--connect-concurrency") o.connect_concurrency = integer();
    else if (key == "--connect-timeout") o.connect_timeout = num();
    else if (key == "--addr-span") o.addr_span = integer();
    else if (key == "--fd-budget") o.fd_budget = integer();
    else if (key == "--label") o.label = val;
    else usage(("unknown option " + key).c_str());
  }
  if (o.mode != "idle" && o.mode != "fanout" && o.mode != "rooms") usage("bad --mode");
  if (o.body_format != "chatd" && o.body_format != "raw") usage("bad --body-format");
  if (o.protocol != "stomp" && o.protocol != "raw" && o.protocol != "centrifugo") usage("bad --protocol");
  if (o.protocol != "stomp") o.body_format = "raw";
  if (o.rooms < 0) o.rooms = o.mode == "idle" ? 0 : o.mode == "fanout" ? 1 : std::max(1, o.conns / 10);
  if (o.mode != "idle" && o.rooms == 0) usage("fanout/rooms need --rooms >= 1");
  if (o.ports.empty()) usage("need --port");
  if (o.conns < 1 || o.threads < 1 || o.size < 24 || o.window < 1) usage("bad numbers");
  if (o.mode != "idle" && o.senders_per_room * o.rooms > o.conns) usage("more senders than conns");
  if (o.burst > 0 && (o.rate > 0 || o.senders_per_room * o.rooms != 1)) usage("--burst needs --rate 0 and one sender");
  if (o.procs == 0) o.procs = (o.conns + o.fd_budget - 1) / o.fd_budget;
  if (o.conns / o.procs > o.fd_budget) usage("too many conns per process for the fd limit");
  return o;
}

// ---- Server sampling through /proc ----

// Returns utime+stime of pid in seconds, or -1 when unreadable.
double proc_cpu_seconds_one(int pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string s((std::istreambuf_iterator<char>(f)), {});
  auto rp = s.rfind(')');
  if (rp == std::string::npos) return -1;
  std::istringstream in(s.substr(rp + 2));
  std::string field;
  unsigned long long utime = 0, stime = 0;
  for (int i = 3; i <= 15 && in >> field; ++i) {
    if (i == 14) utime = std::stoull(field);
    if (i == 15) stime = std::stoull(field);
  }
  return double(utime + stime) / double(sysconf(_SC_CLK_TCK));
}

// Returns VmRSS of pid in KiB, or -1.
long proc_rss_kb_one(int pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  return -1;
}

// Sums over pids; -1 when there are none or one is unreadable.
double proc_cpu_seconds(const std::vector<int>& pids) {
  double sum = pids.empty() ? -1 : 0;
  for (int p : pids) {
    const double v = proc_cpu_seconds_one(p);
    if (v < 0) return -1;
    sum += v;
  }
  return sum;
}

double proc_rss_kb(const std::vector<int>& pids) {
  double sum = pids.empty() ? -1 : 0;
  for (int p : pids) {
    const long v = proc_rss_kb_one(p);
    if (v < 0) return -1;
    sum += double(v);
  }
  return sum;
}

// ---- Rooms ----

std::vector<std::string> resolve_rooms(const Options& o) {
  std::vector<std::string> rooms;
  if (!o.room_ids.empty()) {
    std::stringstream ss(o.room_ids);
    for (std::string r; std::getline(ss, r, ',');)
      if (!r.empty()) rooms.push_back(r);
    if (int(rooms.size()) < o.rooms) throw std::runtime_error("--room-ids has fewer ids than --rooms");
    rooms.resize(std::size_t(o.rooms));
    return rooms;
  }
  if (o.room_source == "names") {
    for (int i = 0; i < o.rooms; ++i) rooms.push_back("bench-" + std::to_string(i));
    return rooms;
  }
  asio::io_context ioc;
  tcp::socket sock(ioc);
  const tcp::endpoint ep(asio::ip::make_address(o.host), static_cast<unsigned short>(o.ports[0]));
  sock.connect(ep);
  beast::flat_buffer buf;
  for (int i = 0; i < o.rooms; ++i) {
    http::request<http::empty_body> req{http::verb::post, "/chat/room?name=bench-" + std::to_string(i), 11};
    req.set(http::field::host, o.host + ":" + std::to_string(o.ports[0]));
    req.keep_alive(true);
    req.prepare_payload();
    http::write(sock, req);
    http::response<http::string_body> res;
    http::read(sock, buf, res);
    if (res.result_int() / 100 != 2)
      throw std::runtime_error("POST /chat/room: HTTP " + std::to_string(res.result_int()));
    auto v = boost::json::parse(res.body());
    rooms.emplace_back(v.at("roomId").as_string());
    if (!res.keep_alive()) {
      sock.close();
      sock = tcp::socket(ioc);
      sock.connect(ep);
      buf.clear();
    }
  }
  return rooms;
}

// ---- Results shared between processes ----

struct Counters {
  std::uint64_t conns_ok = 0, conns_failed = 0, conns_dropped = 0, conns_held = 0;
  std::uint64_t sent = 0, sent_total = 0, send_skipped = 0, window_resets = 0;
  // lost: gaps in a sender's sequence; undelivered: never arrived by the end of the drain
  // (a server still working through a backlog, or loss at the tail).
  std::uint64_t delivered = 0, delivered_total = 0, lost = 0, undelivered = 0, reordered = 0;
  std::uint64_t errors = 0, unparsed = 0, misrouted = 0;

  void add(const Counters& c) {
    conns_ok += c.conns_ok; conns_failed += c.conns_failed; conns_dropped += c.conns_dropped;
    conns_held += c.conns_held; sent += c.sent; sent_total += c.sent_total;
    send_skipped += c.send_skipped; window_resets += c.window_resets; delivered += c.delivered;
    delivered_total += c.delivered_total; lost += c.lost; undelivered += c.undelivered;
    reordered += c.reordered;
    errors += c.errors; unparsed += c.unparsed; misrouted += c.misrouted;
  }
};

struct ChildResult {
  Counters c;
  Histogram hist;
  Histogram send_lag;
  std::int64_t connected_at_ns = 0;
  int done = 0;
};

struct Shared {
  std::atomic<int> ready{0};
  std::atomic<std::int64_t> start_ns{0};
  std::atomic<int> abort{0};
  std::atomic<std::uint64_t> burst_acks{0};  // --burst: connections that got a burst's last message
};

struct Timeline {
  std::int64_t start = 0, window_begin = 0, window_end = 0, finish = 0;
};

// ---- One child: workers and connections ----

struct Run;
struct Worker;

struct Conn {
  enum class State { idle, connecting, upgrading, connected_ws, subscribing, ready, closed };

  Worker* w = nullptr;
  int fd = -1;  // non-blocking; registered edge-triggered for in and out in the worker's epoll
  int gidx = 0;
  int room = -1;  // -1 in idle mode without rooms
  bool sender = false;
  std::uint64_t sid = 0;
  State state = State::idle;
  std::vector<char> rbuf = std::vector<char>(4096);
  std::size_t rlen = 0;
  std::string sbuf;  // STOMP byte stream reassembled from WebSocket payloads
  std::string out_pending;  // frames to write; the first out_sent bytes are written
  std::size_t out_sent = 0;
  // One write at a time, as with Asio's async_write: after a write, frames queue until the end
  // of the loop turn (write_turn_done) or, when the kernel's buffer was full, until EPOLLOUT.
  bool writing = false, wait_writable = false;
  bool hold_writes = false;  // queue frames without writing (a burst being built)
  std::uint32_t rng = 0;
  // Sender side.
  std::uint64_t scheduled = 0, seq = 0, inflight = 0, bursts = 0;
  std::int64_t phase_ns = 0, last_progress = 0;
  // Receiver side: next expected seq per sender slot of this room (senders start at 1, and
  // start only after every connection has subscribed, so a missing first message is a loss).
  std::vector<std::uint64_t> next_seq;

  std::size_t unsent() const { return out_pending.size() - out_sent; }

  Conn() = default;
  Conn(const Conn&) = delete;
  Conn& operator=(const Conn&) = delete;
  ~Conn() {
    if (fd >= 0) ::close(fd);
  }
};

struct Run {
  Options o;
  std::vector<std::string> rooms;
  Shared* shared = nullptr;
  std::atomic<std::uint64_t>* sender_totals = nullptr;
  std::string upgrade_request;
  std::string upgrade_tail;  // after the path: a --path with {room} gets each connection's room
  std::string connect_frame;
  std::uint64_t total_senders = 0;
  double interval_ns = 0;  // per sender, rate mode
  std::atomic<int> workers_connected{0};
  int workers = 0;
  std::int64_t connect_deadline = 0;
};

constexpr std::uint64_t kFinal = std::uint64_t{1} << 63;  // sender_totals: count is final
constexpr std::size_t kMaxBacklog = 4 << 20;  // bytes waiting per socket before sends are skipped
constexpr std::size_t kMaxReadBuf = 8 << 20;

struct Worker {
  Run& run;
  int epfd = -1;
  bool stopped = false;
  std::int64_t next_tick = 0;  // tick() runs 1 ms after the previous one ended
  std::vector<std::unique_ptr<Conn>> conns;
  std::vector<Conn*> senders;
  std::vector<Conn*> wrote_this_turn, wrote_scratch;
  std::size_t next_to_open = 0;
  int opening = 0;
  bool reported_connected = false;
  Timeline tl;
  Counters c;
  Histogram hist;
  Histogram send_lag;  // rate mode: actual send time - intended send time, in the window
  // Rate mode: each ready sender's next due time, earliest first; the loop sleeps until the
  // top is due. Senders enter once ready and the start time is known.
  using Due = std::pair<std::int64_t, Conn*>;
  std::priority_queue<Due, std::vector<Due>, std::greater<>> due;
  bool due_started = false;
  std::string scratch;
  int error_logs = 0;

  explicit Worker(Run& r) : run(r), epfd(epoll_create1(EPOLL_CLOEXEC)) {
    if (epfd < 0) throw std::runtime_error(std::string("epoll_create1: ") + std::strerror(errno));
  }
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;
  ~Worker() { ::close(epfd); }

  // The worker's loop: opens the connections, then handles socket events and runs tick() every
  // millisecond until finish().
  void run_loop() {
    open_more();
    tick();
    std::array<epoll_event, 1024> events;
    while (!stopped) {
      const std::int64_t wake = due.empty() ? next_tick : std::min(next_tick, due.top().first);
      const std::int64_t wait = run.o.busy_poll ? 0 : std::max<std::int64_t>(0, wake - now_ns());
      const timespec timeout{wait / 1'000'000'000, wait % 1'000'000'000};
      const int n = epoll_pwait2(epfd, events.data(), int(events.size()), &timeout, nullptr);
      if (n < 0 && errno != EINTR) {
        std::perror("loadgen: epoll_pwait2");
        run.shared->abort = 1;
        return;
      }
      for (int i = 0; i < n; ++i) on_event(*static_cast<Conn*>(events[std::size_t(i)].data.ptr), events[std::size_t(i)].events);
      send_due(now_ns());
      if (now_ns() >= next_tick) tick();
      write_turn_done();
    }
  }

  // Opens connections until connect_concurrency handshakes are in flight.
  void open_more() {
    while (opening < run.o.connect_concurrency && next_to_open < conns.size()) {
      open(*conns[next_to_open++]);
      ++opening;
    }
    maybe_connected();
  }

  void maybe_connected() {
    if (reported_connected || c.conns_ok + c.conns_failed < conns.size()) return;
    reported_connected = true;
    if (run.workers_connected.fetch_add(1) + 1 == run.workers) run.shared->ready.fetch_add(1);
  }

  void open(Conn& k) {
    k.fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (k.fd < 0) return fail(k, "open", errno);
    if (run.o.conns > run.o.addr_span) {
      // Spread over 127.0.0.x source addresses: each has its own ~28k ephemeral ports.
      // IP_BIND_ADDRESS_NO_PORT lets connect() pick the port per destination.
      int one = 1;
      ::setsockopt(k.fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
      sockaddr_in src{};
      src.sin_family = AF_INET;
      src.sin_addr.s_addr = htonl((127u << 24) | static_cast<unsigned>(1 + k.gidx / run.o.addr_span));
      if (::bind(k.fd, reinterpret_cast<const sockaddr*>(&src), sizeof src) != 0) return fail(k, "bind", errno);
    }
    k.state = Conn::State::connecting;
    // Members of a room alternate between the given ports (nodes).
    const std::size_t member = run.rooms.empty() ? std::size_t(k.gidx) : std::size_t(k.gidx) / run.rooms.size();
    sockaddr_in dst{};
    dst.sin_family = AF_INET;
    dst.sin_port = htons(static_cast<std::uint16_t>(run.o.ports[member % run.o.ports.size()]));
    if (::inet_pton(AF_INET, run.o.host.c_str(), &dst.sin_addr) != 1) return fail(k, "host (IPv4 address)", EINVAL);
    if (::connect(k.fd, reinterpret_cast<const sockaddr*>(&dst), sizeof dst) != 0 && errno != EINPROGRESS)
      return fail(k, "connect", errno);
    // Edge-triggered: an event per arrival, so one short read is enough (see read_available).
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
    ev.data.ptr = &k;
    if (::epoll_ctl(epfd, EPOLL_CTL_ADD, k.fd, &ev) != 0) return fail(k, "epoll_ctl", errno);
  }

  // Handles what epoll reported for k: connect finished, bytes to read, room to write.
  void on_event(Conn& k, std::uint32_t events) {
    if (k.state == Conn::State::closed) return;  // closed earlier in this batch
    if (k.state == Conn::State::connecting) {
      if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) return;
      int err = 0;
      socklen_t len = sizeof err;
      ::getsockopt(k.fd, SOL_SOCKET, SO_ERROR, &err, &len);
      if (err != 0) return fail(k, "connect", err);
      int one = 1;
      ::setsockopt(k.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      k.state = Conn::State::upgrading;
      if (auto at = run.o.path.find("{room}"); at != std::string::npos && k.room >= 0) {
        std::string path = run.o.path;
        path.replace(at, 6, run.rooms[std::size_t(k.room)]);
        k.out_pending += "GET " + path + run.upgrade_tail;
      } else {
        k.out_pending += run.upgrade_request;
      }
      flush(k);
    }
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLERR | EPOLLHUP)) read_available(k);
    if ((events & EPOLLOUT) && k.wait_writable) {
      k.wait_writable = false;
      k.writing = false;
      flush(k);
    }
  }

  // A connection failed before it was ready, or dropped after.
  // err is an errno value, or 0 for the server's end of stream.
  void fail(Conn& k, const char* what, int err) {
    if (k.state == Conn::State::closed) return;
    const bool was_ready = k.state == Conn::State::ready;
    k.state = Conn::State::closed;
    if (k.fd >= 0) ::close(k.fd);  // also leaves the epoll set
    k.fd = -1;
    if (error_logs++ < 5)
      std::fprintf(stderr, "loadgen: conn %d %s: %s\n", k.gidx, what, err ? std::strerror(err) : "end of stream");
    if (was_ready) {
      ++c.conns_dropped;
    } else {
      ++c.conns_failed;
      --opening;
      open_more();
    }
  }

  // Reads what k's socket holds and parses it. A read that leaves room in the buffer has taken
  // everything there was, and anything arriving later raises a new edge, so there is no second
  // read to see EAGAIN (as nginx does for epoll): one recv per delivery in the fan-out rows.
  void read_available(Conn& k) {
    while (k.state != Conn::State::closed) {
      if (k.rlen == k.rbuf.size()) {
        if (k.rbuf.size() >= kMaxReadBuf) return fail(k, "read", EMSGSIZE);
        k.rbuf.resize(k.rbuf.size() * 2);
      }
      const std::size_t room = k.rbuf.size() - k.rlen;
      const ssize_t n = ::recv(k.fd, k.rbuf.data() + k.rlen, room, 0);
      if (n > 0) {
        k.rlen += std::size_t(n);
        on_read(k);
        if (std::size_t(n) < room) return;
      } else if (n == 0) {
        return fail(k, "read", 0);
      } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
        return;
      } else if (errno != EINTR) {
        return fail(k, "read", errno);
      }
    }
  }

  void on_read(Conn& k) {
    std::size_t off = 0;
    if (k.state == Conn::State::upgrading) {
      std::string_view s(k.rbuf.data(), k.rlen);
      auto end = s.find("\r\n\r\n");
      if (end == std::string_view::npos) return;
      if (s.substr(0, 12) != "HTTP/1.1 101") {
        std::string line(s.substr(0, s.find('\r')));
        if (error_logs++ < 5) std::fprintf(stderr, "loadgen: upgrade refused: %s\n", line.c_str());
        return fail(k, "upgrade", ECONNREFUSED);
      }
      off = end + 4;
      k.state = Conn::State::connected_ws;
      if (run.o.protocol == "raw") become_ready(k);
      else if (run.o.protocol == "centrifugo") send_ws(k, 1, R"({"id":1,"connect":{}})");
      else send_ws(k, 1, run.connect_frame);
    }
    bool stomp_data = false;
    while (k.state != Conn::State::closed) {
      loadgen::WsFrame f;
      bool too_big = false;
      const std::size_t used =
          loadgen::parse_ws_frame(k.rbuf.data() + off, k.rlen - off, f, kMaxReadBuf / 2, too_big);
      if (too_big) return fail(k, "frame", EMSGSIZE);
      if (used == 0) break;
      off += used;
      switch (f.opcode) {
        case 0: case 1: case 2:
          if (run.o.protocol == "raw") {
            on_message(k, f.payload, now_ns());
          } else if (run.o.protocol == "centrifugo") {
            on_centrifugo(k, f.payload);
          } else {
            k.sbuf.append(f.payload);
            stomp_data = true;
          }
          break;
        case 8:
          return fail(k, "server close", 0);
        case 9:
          send_ws(k, 10, f.payload);
          break;
        default:
          break;
      }
    }
    if (k.state == Conn::State::closed) return;
    if (off > 0) {
      std::memmove(k.rbuf.data(), k.rbuf.data() + off, k.rlen - off);
      k.rlen -= off;
    }
    if (stomp_data) on_stomp_bytes(k);
  }

  void on_stomp_bytes(Conn& k) {
    const std::int64_t now = now_ns();
    std::size_t pos = 0;
    while (k.state != Conn::State::closed) {
      loadgen::StompFrame f;
      const std::size_t next = loadgen::parse_stomp_frame(k.sbuf, pos, f);
      if (next == 0) break;
      pos = next;
      if (f.command == "MESSAGE") {
        on_message(k, f.body, now);
      } else if (f.command == "CONNECTED") {
        on_connected(k);
      } else if (f.command == "RECEIPT") {
        if (k.state == Conn::State::subscribing) become_ready(k);
      } else if (f.command == "ERROR") {
        ++c.errors;
        if (error_logs++ < 5)
          std::fprintf(stderr, "loadgen: conn %d STOMP ERROR: %.*s %.*s\n", k.gidx,
                       int(loadgen::stomp_header(f.headers, "message").size()),
                       loadgen::stomp_header(f.headers, "message").data(),
                       int(std::min<std::size_t>(f.body.size(), 200)), f.body.data());
        return fail(k, "stomp", ECONNRESET);
      }
    }
    if (k.state != Conn::State::closed) k.sbuf.erase(0, pos);
  }

  // Centrifugo's JSON protocol: one reply or push per line of a WebSocket message.
  void on_centrifugo(Conn& k, std::string_view payload) {
    const std::int64_t now = now_ns();
    while (!payload.empty() && k.state != Conn::State::closed) {
      auto nl = payload.find('\n');
      std::string_view line = payload.substr(0, nl);
      payload.remove_prefix(nl == std::string_view::npos ? payload.size() : nl + 1);
      if (line == "{}") {
        send_ws(k, 1, "{}");  // the server's ping
      } else if (line.find("\"push\"") != std::string_view::npos) {
        auto p = line.find("\"t\":\"");
        if (p == std::string_view::npos) ++c.unparsed;
        else on_message(k, line.substr(p + 5), now);
      } else if (line.find("\"error\"") != std::string_view::npos) {
        ++c.errors;
        if (error_logs++ < 5) std::fprintf(stderr, "loadgen: conn %d centrifugo: %.*s\n", k.gidx, int(std::min<std::size_t>(line.size(), 200)), line.data());
      } else if (line.rfind("{\"id\":1,", 0) == 0 && k.state == Conn::State::connected_ws) {
        if (k.room < 0) return become_ready(k);  // idle: connected is all
        scratch = R"({"id":2,"subscribe":{"channel":")" + run.rooms[std::size_t(k.room)] + "\"}}";
        send_ws(k, 1, scratch);
        k.state = Conn::State::subscribing;
      } else if (line.rfind("{\"id\":2,", 0) == 0 && k.state == Conn::State::subscribing) {
        become_ready(k);
      }
    }
  }

  void on_connected(Conn& k) {
    if (k.state != Conn::State::connected_ws) return;
    if (k.room < 0) return become_ready(k);
    scratch.clear();
    scratch += "SUBSCRIBE\nid:sub-0\ndestination:";
    scratch += run.o.sub_prefix;
    scratch += run.rooms[std::size_t(k.room)];
    scratch += "\nack:auto\n";
    if (run.o.sub_receipt) scratch += "receipt:sub\n";
    scratch += "\n";
    scratch.push_back('\0');
    send_ws(k, 1, scratch);
    if (!run.o.sub_receipt) return become_ready(k);
    k.state = Conn::State::subscribing;
  }

  void become_ready(Conn& k) {
    k.state = Conn::State::ready;
    if (k.sender && due_started) due.emplace(due_time(k), &k);  // late: joins the schedule
    ++c.conns_ok;
    --opening;
    open_more();
  }

  // Parses "<sid> <seq> <ts_ns>" from the message text and accounts for it.
  void on_message(Conn& k, std::string_view body, std::int64_t now) {
    std::string_view text = body;
    if (run.o.body_format == "chatd") {
      auto p = body.find("\"message\"");
      if (p == std::string_view::npos) return void(++c.unparsed);
      p += 9;
      while (p < body.size() && (body[p] == ' ' || body[p] == ':')) ++p;
      if (p >= body.size() || body[p] != '"') return void(++c.unparsed);
      text = body.substr(p + 1);
    }
    std::uint64_t v[3] = {0, 0, 0};
    const char* s = text.data();
    const char* e = text.data() + text.size();
    for (int i = 0; i < 3; ++i) {
      auto r = std::from_chars(s, e, v[i]);
      if (r.ec != std::errc{}) return void(++c.unparsed);
      s = r.ptr + 1;
      if (s > e) s = e;
    }
    const std::uint64_t sid = v[0], seq = v[1];
    const auto ts = static_cast<std::int64_t>(v[2]);
    const auto nrooms = std::uint64_t(run.rooms.size());
    if (k.room < 0 || sid % nrooms != std::uint64_t(k.room) || sid >= run.total_senders)
      return void(++c.misrouted);
    ++c.delivered_total;
    if (now >= tl.window_begin && now < tl.window_end) ++c.delivered;
    if (ts >= tl.window_begin && ts < tl.window_end) hist.record(std::uint64_t(std::max<std::int64_t>(0, now - ts)));
    auto& next = k.next_seq[sid / nrooms];
    if (seq == next) {
      next = seq + 1;
    } else if (seq > next) {
      c.lost += seq - next;
      next = seq + 1;
    } else {
      ++c.reordered;  // late: it was counted lost when the gap opened
      if (c.lost > 0) --c.lost;
    }
    if (run.o.burst > 0) {
      if (seq % std::uint64_t(run.o.burst) != 0) return;
      run.shared->burst_acks.fetch_add(1);
      for (Conn* snd : senders) top_up(*snd, now);  // the sender, if it lives on this worker
      return;
    }
    if (k.sender && sid == k.sid && run.o.rate <= 0) {
      if (k.inflight > 0) --k.inflight;
      k.last_progress = now;
      top_up(k, now);
    }
  }

  // Appends one SEND for sender k, stamped with ts (the intended send time).
  void send_chat(Conn& k, std::int64_t ts) {
    ++k.seq;
    const std::string& room = run.rooms[std::size_t(k.room)];
    char head[64];
    int n = std::snprintf(head, sizeof head, "%llu %llu %lld ", (unsigned long long)k.sid,
                          (unsigned long long)k.seq, (long long)ts);
    std::string text(head, std::size_t(n));
    if (text.size() < std::size_t(run.o.size)) text.append(std::size_t(run.o.size) - text.size(), 'x');
    std::string body;
    if (run.o.body_format == "chatd") {
      body.reserve(text.size() + room.size() + 80);
      body += R"({"type":"TALK","roomId":")";
      body += room;
      body += R"(","sender":"lg)";
      body += std::to_string(k.sid);
      body += R"(","message":")";
      body += text;
      body += "\"}";
    } else {
      body = std::move(text);
    }
    if (run.o.protocol == "raw") {
      send_ws(k, 1, body);
    } else if (run.o.protocol == "centrifugo") {
      scratch = R"({"id":)" + std::to_string(k.seq + 2) + R"(,"publish":{"channel":")" + room + R"(","data":{"t":")" + body + "\"}}}";
      send_ws(k, 1, scratch);
    }
    if (run.o.protocol != "stomp") {
      ++c.sent_total;
      if (ts >= tl.window_begin && ts < tl.window_end) {
        ++c.sent;
        if (run.o.rate > 0) send_lag.record(std::uint64_t(std::max<std::int64_t>(0, now_ns() - ts)));
      }
      return;
    }
    scratch.clear();
    scratch += "SEND\ndestination:";
    const std::string& d = run.o.send_dest;
    if (auto p = d.find("{room}"); p != std::string::npos) {
      scratch.append(d, 0, p);
      scratch += room;
      scratch.append(d, p + 6);
    } else {
      scratch += d;
    }
    scratch += run.o.body_format == "chatd" ? "\ncontent-type:application/json" : "\ncontent-type:text/plain";
    scratch += "\ncontent-length:";
    scratch += std::to_string(body.size());
    scratch += "\n\n";
    scratch += body;
    scratch.push_back('\0');
    send_ws(k, 1, scratch);
    ++c.sent_total;
    if (ts >= tl.window_begin && ts < tl.window_end) {
      ++c.sent;
      if (run.o.rate > 0) send_lag.record(std::uint64_t(std::max<std::int64_t>(0, now_ns() - ts)));
    }
  }

  // Max mode: keeps `window` messages of sender k in flight.
  void top_up(Conn& k, std::int64_t now) {
    if (k.state != Conn::State::ready || now < tl.start || now >= tl.window_end) return;
    if (run.o.burst > 0) {
      // The next burst leaves once every connection has the last one (or the window timed out).
      if (k.bursts > 0 && run.shared->burst_acks.load() < k.bursts * std::uint64_t(run.o.conns)) return;
      ++k.bursts;
      // The whole burst in one write, as a client that has N messages at once sends them.
      k.hold_writes = true;
      for (int i = 0; i < run.o.burst; ++i) send_chat(k, now_ns());
      k.hold_writes = false;
      flush(k);
      k.last_progress = now;
      return;
    }
    while (k.inflight < std::uint64_t(run.o.window) && k.unsent() < kMaxBacklog) {
      send_chat(k, now_ns());
      ++k.inflight;
    }
  }

  void send_ws(Conn& k, std::uint8_t opcode, std::string_view payload) {
    loadgen::append_ws_frame(k.out_pending, opcode, payload, k.rng);
    flush(k);
  }

  // Writes what k has queued, unless a write already left this turn or the kernel's buffer is
  // full; then it goes out with what else queues meanwhile, in one write.
  void flush(Conn& k) {
    if (k.writing || k.hold_writes || k.unsent() == 0 || k.state == Conn::State::closed) return;
    ssize_t n;
    do {
      n = ::send(k.fd, k.out_pending.data() + k.out_sent, k.unsent(), MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) return fail(k, "write", errno);
    k.writing = true;
    if (n > 0) k.out_sent += std::size_t(n);
    if (k.unsent() == 0) {
      k.out_pending.clear();
      k.out_sent = 0;
      wrote_this_turn.push_back(&k);
    } else {
      if (k.out_sent * 2 >= k.out_pending.size()) {  // keeps the buffer from growing without end
        k.out_pending.erase(0, k.out_sent);
        k.out_sent = 0;
      }
      k.wait_writable = true;  // the kernel took what it could: EPOLLOUT says when there is room
    }
  }

  // The end of a loop turn: the writes that left in it are complete, and what queued behind them
  // leaves now.
  void write_turn_done() {
    wrote_scratch.swap(wrote_this_turn);
    for (Conn* k : wrote_scratch) {
      k->writing = false;
      flush(*k);
    }
    wrote_scratch.clear();
  }

  // Rate mode: returns when sender k's next message is due.
  std::int64_t due_time(const Conn& k) const {
    return tl.start + k.phase_ns + std::int64_t(double(k.scheduled) * run.interval_ns);
  }

  // Rate mode: sends every message due by `now` (the window's end at most), each stamped with
  // its intended time; a sender whose socket is backed up skips its message (counted).
  void send_due(std::int64_t now) {
    const std::int64_t until = std::min(now, tl.window_end - 1);
    while (!due.empty() && due.top().first <= until) {
      auto [ts, k] = due.top();
      due.pop();
      if (k->state != Conn::State::ready) continue;  // dropped: leaves the schedule
      ++k->scheduled;
      if (k->unsent() >= kMaxBacklog) ++c.send_skipped;  // the server is not reading: above its capacity
      else send_chat(*k, ts);
      due.emplace(due_time(*k), k);
    }
    if (!due.empty() && due.top().first >= tl.window_end) due = {};  // the schedule is over
  }

  // Every millisecond: wait for the start signal, send what the schedule says is due, finish.
  void tick() {
    const std::int64_t now = now_ns();
    if (tl.start == 0) {
      const std::int64_t s = run.shared->start_ns.load();
      if (s != 0) {
        tl.start = s;
        tl.window_begin = s + std::int64_t(run.o.warmup * 1e9);
        tl.window_end = tl.window_begin + std::int64_t(run.o.duration * 1e9);
        tl.finish = tl.window_end + std::int64_t(run.o.drain * 1e9);
      }
    }
    if (run.shared->abort.load()) return finish();
    if (tl.start != 0 && now >= tl.start) {
      if (now >= tl.finish) return finish();
      if (run.o.rate > 0 && !due_started) {
        due_started = true;
        for (Conn* k : senders)
          if (k->state == Conn::State::ready) due.emplace(due_time(*k), k);
        send_due(now);
      }
      for (Conn* k : senders) {
        if (k->state != Conn::State::ready) continue;
        if (run.o.rate <= 0) {
          if ((k->inflight >= std::uint64_t(run.o.window) || run.o.burst > 0) &&
              now - k->last_progress > std::int64_t(run.o.window_timeout * 1e9)) {
            k->inflight = 0;  // a lost reply must not stall the sender for the whole run
            if (run.o.burst > 0) run.shared->burst_acks.store(k->bursts * std::uint64_t(run.o.conns));
            k->last_progress = now;
            ++c.window_resets;
          }
          if (k->last_progress == 0) k->last_progress = now;
          top_up(*k, now);
        }
      }
      if (now >= tl.window_end) {
        for (Conn* k : senders) run.sender_totals[k->sid].store(k->seq | kFinal);
        if (all_delivered()) return finish();
      }
    }
    next_tick = now_ns() + 1'000'000;
  }

  // True once every live receiver here has seen every sender's last message, so the drain
  // can end early; under overload the drain deadline ends it and the rest counts as lost.
  bool all_delivered() const {
    const auto nrooms = std::uint64_t(run.rooms.size());
    for (const auto& k : conns) {
      if (k->room < 0 || k->state != Conn::State::ready) continue;
      for (std::size_t slot = 0; slot < k->next_seq.size(); ++slot) {
        const std::uint64_t t = run.sender_totals[slot * nrooms + std::uint64_t(k->room)].load();
        if (!(t & kFinal) || k->next_seq[slot] <= (t & ~kFinal)) return false;
      }
    }
    return true;
  }

  void finish() {
    for (auto& k : conns) {
      if (k->state == Conn::State::ready) ++c.conns_held;
      // What each sender sent after the last message this receiver saw.
      if (k->room < 0) continue;
      const auto nrooms = std::uint64_t(run.rooms.size());
      for (std::size_t slot = 0; slot < k->next_seq.size(); ++slot) {
        const std::uint64_t sid = slot * nrooms + std::uint64_t(k->room);
        const std::uint64_t total = run.sender_totals[sid].load() & ~kFinal;
        if (total + 1 > k->next_seq[slot]) c.undelivered += total + 1 - k->next_seq[slot];
      }
    }
    stopped = true;
  }
};

// Runs this process's share [first, last) of the global connections; returns its result.
void run_child(Run& run, int first, int last, ChildResult& out) {
  const Options& o = run.o;
  std::vector<std::unique_ptr<Worker>> workers;
  for (int t = 0; t < o.threads; ++t) workers.push_back(std::make_unique<Worker>(run));
  run.workers = o.threads;
  const int nrooms = int(run.rooms.size());
  for (int g = first; g < last; ++g) {
    Worker& w = *workers[std::size_t(g - first) % workers.size()];
    auto k = std::make_unique<Conn>();
    k->w = &w;
    k->gidx = g;
    k->rng = 0x9e3779b9u ^ std::uint32_t(g * 2654435761u);
    if (k->rng == 0) k->rng = 1;
    if (nrooms > 0) {
      k->room = g % nrooms;
      const int member = g / nrooms;
      k->next_seq.assign(std::size_t(o.senders_per_room), 1);
      if (o.mode != "idle" && member < o.senders_per_room) {
        k->sender = true;
        k->sid = std::uint64_t(g);
        // Spread senders' schedules over one interval so they do not fire in lockstep.
        if (o.rate > 0)
          k->phase_ns = std::int64_t(run.interval_ns * double(g) / double(run.total_senders));
        w.senders.push_back(k.get());
      }
    }
    w.conns.push_back(std::move(k));
  }
  std::vector<std::thread> threads;
  for (auto& w : workers) {
    Worker* wp = w.get();
    threads.emplace_back([wp] { wp->run_loop(); });
  }
  for (auto& t : threads) t.join();
  for (auto& w : workers) {
    out.c.add(w->c);
    out.hist.merge(w->hist);
    out.send_lag.merge(w->send_lag);
  }
  out.done = 1;
}

void sleep_until_ns(std::int64_t t) {
  const std::int64_t d = t - now_ns();
  if (d > 0) std::this_thread::sleep_for(std::chrono::nanoseconds(d));
}

double us(std::uint64_t ns) { return double(ns) / 1000.0; }

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse_options(argc, argv);
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  auto run = std::make_unique<Run>();
  run->o = o;
  try {
    run->rooms = resolve_rooms(o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "chatd_loadgen: rooms: %s\n", e.what());
    return 1;
  }
  const int nrooms = int(run->rooms.size());
  run->total_senders = o.mode == "idle" ? 0 : std::uint64_t(o.senders_per_room) * std::uint64_t(nrooms);
  if (o.rate > 0 && run->total_senders > 0) run->interval_ns = 1e9 * double(run->total_senders) / o.rate;
  run->upgrade_tail = " HTTP/1.1\r\nHost: " + o.host + ":" + std::to_string(o.ports[0]) +
                      "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                      "Sec-WebSocket-Protocol: v12.stomp\r\n\r\n";
  run->upgrade_request = "GET " + o.path + run->upgrade_tail;
  run->connect_frame = "CONNECT\naccept-version:1.2\nhost:" + o.vhost + "\nheart-beat:0,0\n";
  if (!o.login.empty()) run->connect_frame += "login:" + o.login + "\npasscode:" + o.passcode + "\n";
  run->connect_frame += "\n";
  run->connect_frame.push_back('\0');

  // Shared memory: flags, one result per child, and every sender's final count.
  const std::size_t bytes = sizeof(Shared) + sizeof(ChildResult) * std::size_t(o.procs) +
                            sizeof(std::atomic<std::uint64_t>) * (run->total_senders + 1);
  void* mem = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) {
    std::perror("mmap");
    return 1;
  }
  auto* shared = new (mem) Shared();
  auto* results = reinterpret_cast<ChildResult*>(static_cast<char*>(mem) + sizeof(Shared));
  for (int i = 0; i < o.procs; ++i) new (&results[i]) ChildResult();
  auto* totals = reinterpret_cast<std::atomic<std::uint64_t>*>(results + o.procs);
  for (std::uint64_t i = 0; i <= run->total_senders; ++i) new (&totals[i]) std::atomic<std::uint64_t>(0);
  run->shared = shared;
  run->sender_totals = totals;

  const double rss_before = proc_rss_kb(o.server_pids);
  const double cpu_before_connect = proc_cpu_seconds(o.server_pids);
  std::fprintf(stderr, "loadgen: %s%s mode=%s conns=%d rooms=%d senders=%llu rate=%g procs=%d threads=%d\n",
               o.label.c_str(), o.label.empty() ? "" : ":", o.mode.c_str(), o.conns, nrooms,
               (unsigned long long)run->total_senders, o.rate, o.procs, o.threads);
  const std::int64_t t0 = now_ns();
  std::vector<pid_t> kids;
  for (int p = 0; p < o.procs; ++p) {
    const int first = int(std::int64_t(o.conns) * p / o.procs);
    const int last = int(std::int64_t(o.conns) * (p + 1) / o.procs);
    const pid_t pid = fork();
    if (pid < 0) {
      std::perror("fork");
      shared->abort = 1;
      break;
    }
    if (pid == 0) {
      alarm(static_cast<unsigned>(o.connect_timeout + o.warmup + o.duration + o.drain + 60));
      // A sleep until a message is due ends then, not up to the default 50 us timer slack later.
      prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
      run_child(*run, first, last, results[p]);
      _exit(0);
    }
    kids.push_back(pid);
  }

  // Wait until every child has finished opening its connections (or the timeout).
  const std::int64_t connect_deadline = t0 + std::int64_t(o.connect_timeout * 1e9);
  while (shared->ready.load() < int(kids.size()) && now_ns() < connect_deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  const double connect_s = double(now_ns() - t0) / 1e9;
  const bool connect_timed_out = shared->ready.load() < int(kids.size());
  std::fprintf(stderr, "loadgen: connected in %.2f s%s\n", connect_s, connect_timed_out ? " (timeout)" : "");
  const std::int64_t start = now_ns() + 100'000'000;
  shared->start_ns = start;
  const std::int64_t wb = start + std::int64_t(o.warmup * 1e9);
  const std::int64_t we = wb + std::int64_t(o.duration * 1e9);
  // The generator's own CPU over the window shows whether it, not the server, was the limit.
  const std::vector<int> kid_pids(kids.begin(), kids.end());
  sleep_until_ns(wb);
  const double cpu0 = proc_cpu_seconds(o.server_pids);
  const double gen0 = proc_cpu_seconds(kid_pids);
  std::vector<double> engine0;
  for (int p : o.engine_pids) engine0.push_back(proc_cpu_seconds_one(p));
  sleep_until_ns(we);
  const double cpu1 = proc_cpu_seconds(o.server_pids);
  const double gen1 = proc_cpu_seconds(kid_pids);
  boost::json::array engine_cpu;  // per engine pid, -1 when unreadable
  for (std::size_t i = 0; i < o.engine_pids.size(); ++i) {
    const double v = proc_cpu_seconds_one(o.engine_pids[i]);
    engine_cpu.push_back(v >= 0 && engine0[i] >= 0 ? v - engine0[i] : -1.0);
  }
  const double rss_held = proc_rss_kb(o.server_pids);

  // Bounded wait for the children; stragglers are killed.
  const std::int64_t hard = we + std::int64_t((o.drain + 30) * 1e9);
  std::size_t alive = kids.size();
  while (alive > 0) {
    int status = 0;
    const pid_t r = waitpid(-1, &status, WNOHANG);
    if (r > 0) {
      --alive;
      continue;
    }
    if (now_ns() > hard) {
      std::fprintf(stderr, "loadgen: children overran, killing them\n");
      for (pid_t k : kids) kill(k, SIGKILL);
      while (waitpid(-1, &status, 0) > 0) {
      }
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }

  Counters c;
  Histogram h, lag;
  int children_ok = 0;
  for (int i = 0; i < o.procs; ++i) {
    if (!results[i].done) continue;
    ++children_ok;
    c.add(results[i].c);
    h.merge(results[i].hist);
    lag.merge(results[i].send_lag);
  }
  const double sent_rate = double(c.sent) / o.duration;
  const double deliv_rate = double(c.delivered) / o.duration;
  const double cpu = (cpu0 >= 0 && cpu1 >= 0) ? cpu1 - cpu0 : -1;
  const double rss_per_conn = (rss_before >= 0 && rss_held >= 0 && c.conns_held > 0)
                                  ? (rss_held - rss_before) / double(c.conns_held)
                                  : -1;
  boost::json::object j;
  j["label"] = o.label;
  j["mode"] = o.mode;
  j["conns"] = o.conns;
  j["conns_ok"] = c.conns_ok;
  j["conns_failed"] = c.conns_failed;
  j["conns_held"] = c.conns_held;
  j["conns_dropped"] = c.conns_dropped;
  j["connect_s"] = connect_s;
  j["rooms"] = nrooms;
  j["senders"] = run->total_senders;
  j["rate_target"] = o.rate;
  j["duration_s"] = o.duration;
  j["sent"] = c.sent;
  j["sent_per_s"] = sent_rate;
  j["send_skipped"] = c.send_skipped;
  j["sent_total"] = c.sent_total;
  j["delivered_total"] = c.delivered_total;
  j["delivered"] = c.delivered;
  j["deliveries_per_s"] = deliv_rate;
  j["expected_fanout"] = nrooms ? double(o.conns) / nrooms : 0.0;
  j["lost"] = c.lost;
  j["undelivered"] = c.undelivered;
  j["reordered"] = c.reordered;
  j["errors"] = c.errors;
  j["unparsed"] = c.unparsed;
  j["misrouted"] = c.misrouted;
  j["window_resets"] = c.window_resets;
  j["lat_count"] = h.count();
  j["p50_us"] = us(h.quantile(0.50));
  j["p90_us"] = us(h.quantile(0.90));
  j["p99_us"] = us(h.quantile(0.99));
  j["p999_us"] = us(h.quantile(0.999));
  j["max_us"] = us(h.max());
  j["send_lag_p50_us"] = us(lag.quantile(0.50));
  j["send_lag_p99_us"] = us(lag.quantile(0.99));
  j["send_lag_max_us"] = us(lag.max());
  j["server_cpu_s"] = cpu;
  j["deliveries_per_cpu_s"] = cpu > 0 ? double(c.delivered) / cpu : -1.0;
  j["loadgen_cpu_s"] = (gen0 >= 0 && gen1 >= 0) ? gen1 - gen0 : -1.0;
  j["server_rss_before_kb"] = rss_before;
  j["server_rss_held_kb"] = rss_held;
  j["server_rss_per_conn_kb"] = rss_per_conn;
  j["engine_cpu_s"] = engine_cpu;
  j["server_cpu_connect_s"] = (cpu_before_connect >= 0 && cpu0 >= 0) ? cpu0 - cpu_before_connect : -1.0;
  j["procs"] = o.procs;
  j["children_ok"] = children_ok;
  std::cout << boost::json::serialize(j) << std::endl;

  std::fprintf(stderr,
               "loadgen: conns held %llu/%d (failed %llu, dropped %llu), connect %.2f s\n"
               "loadgen: sent %llu (%.0f/s, skipped %llu), delivered %llu (%.0f/s), lost %llu, "
               "undelivered %llu, reordered %llu, errors %llu\n"
               "loadgen: latency us p50 %.0f p90 %.0f p99 %.0f p99.9 %.0f max %.0f (n=%llu)\n",
               (unsigned long long)c.conns_held, o.conns, (unsigned long long)c.conns_failed,
               (unsigned long long)c.conns_dropped, connect_s, (unsigned long long)c.sent, sent_rate,
               (unsigned long long)c.send_skipped, (unsigned long long)c.delivered, deliv_rate,
               (unsigned long long)c.lost, (unsigned long long)c.undelivered, (unsigned long long)c.reordered,
               (unsigned long long)c.errors,
               us(h.quantile(0.5)), us(h.quantile(0.9)), us(h.quantile(0.99)), us(h.quantile(0.999)),
               us(h.max()), (unsigned long long)h.count());
  if (lag.count() > 0)
    std::fprintf(stderr, "loadgen: send lag us p50 %.0f p99 %.0f max %.0f (part of the latency above)\n",
                 us(lag.quantile(0.5)), us(lag.quantile(0.99)), us(lag.max()));
  std::fprintf(stderr, "loadgen: generator cpu %.2f s in window\n", (gen0 >= 0 && gen1 >= 0) ? gen1 - gen0 : -1.0);
  if (!o.server_pids.empty())
    std::fprintf(stderr, "loadgen: server cpu %.2f s in window (%.0f deliveries/cpu-s), rss %.0f -> %.0f KiB (%.2f KiB/conn)\n",
                 cpu, cpu > 0 ? double(c.delivered) / cpu : -1.0, rss_before, rss_held, rss_per_conn);
  return children_ok == o.procs ? 0 : 1;
}
