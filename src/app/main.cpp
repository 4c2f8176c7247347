// chatd's start-up and shutdown. Configuration errors are exceptions here and nowhere else:
// they print one line and exit non-zero. SIGTERM/SIGINT stop accepting, tell every client,
// drain for at most --drain-timeout-ms, stop the engines and exit 0.
#include <fcntl.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <unistd.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>

#include <filesystem>
#include <functional>
#include <fstream>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <iostream>
#include <thread>

#include "log/log.h"
#include "log/thread_name.h"
#include "app/options.h"
#include "chat/rules.h"
#include "net/static_files.h"

extern char** environ;

namespace {

namespace asio = boost::asio;

// Returns the node id kept in the data dir for this port, creating it on first start, so a
// restarted node keeps its name and two nodes sharing a folder still differ.
std::string node_id_for(const std::string& data_dir, std::uint16_t port) {
  std::filesystem::create_directories(data_dir);
  auto path = std::filesystem::path(data_dir) / ("node-" + std::to_string(port) + ".id");
  std::string id;
  if (std::ifstream in(path); in) std::getline(in, id);
  if (id.empty()) {
    id = "node-" + chatd::chat::new_room_id().substr(0, 8);
    std::ofstream(path) << id << '\n';
  }
  return id;
}

// Raises the open-file limit to the hard limit: every connection is a file. Returns the limit
// now in force (RLIM_INFINITY when unknown).
rlim_t raise_file_limit() {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return RLIM_INFINITY;
  if (rl.rlim_cur < rl.rlim_max) {
    rlimit raised = rl;
    raised.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &raised) == 0) return raised.rlim_cur;
  }
  return rl.rlim_cur;
}

// Files chatd holds besides its connections: data files, the loops' descriptors, the engines'
// sockets (about 30 idle with Redis; librdkafka holds a few per broker).
constexpr rlim_t kReservedFiles = 128;

// Past the open-file limit accept() fails and a connection waits unanswered in the backlog;
// under it chatd answers 503. So --max-connections stays below the limit.
void fit_connections_to(rlim_t file_limit, std::size_t& max_connections) {
  if (file_limit == RLIM_INFINITY || max_connections + kReservedFiles <= file_limit) return;
  const auto fit = static_cast<std::size_t>(file_limit > 2 * kReservedFiles ? file_limit - kReservedFiles : file_limit / 2);
  chatd::log::message("max_connections_lowered", "--max-connections " + std::to_string(max_connections) + " lowered to " +
                                              std::to_string(std::max<std::size_t>(1, fit)) + ": the open-file limit is " +
                                              std::to_string(file_limit) + " (raise it with ulimit -n or LimitNOFILE)");
  max_connections = std::max<std::size_t>(1, fit);
}

// The embedded store and history belong to one process: a second one on the same data dir (a
// second node, or --check-config beside a running node) folds and unlinks the running node's
// history journal and numbers seqs from the same counters. Holds an exclusive flock on
// <data-dir>/chatd.lock for the life of the process (the kernel drops it at exit, kill -9
// included); returns false when another process holds it.
bool lock_data_dir(const std::string& dir) {
  std::filesystem::create_directories(dir);
  const auto path = (std::filesystem::path(dir) / "chatd.lock").string();
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) throw std::runtime_error(path + ": " + std::strerror(errno));
  if (::flock(fd, LOCK_EX | LOCK_NB) == 0) return true;  // fd stays open: the lock lives with the process
  const int err = errno;
  ::close(fd);
  if (err == EWOULDBLOCK) return false;
  throw std::runtime_error(path + ": " + std::strerror(err));
}

// Returns the first line of the secret file named by `option`, without the blanks around it (a
// CRLF file, an editor's trailing space: an HTTP header value cannot carry them, so the key could
// never match); throws when it is missing or empty, since an unsigned webhook or an API open to
// an empty key is worse than none.
std::string read_secret(const std::string& path, const std::string& option) {
  std::ifstream in(path);
  std::string line;
  if (in) std::getline(in, line);
  const auto first = line.find_first_not_of(" \t\r");
  if (!in || first == std::string::npos)
    throw std::runtime_error(option + " " + path + ": missing, unreadable or empty");
  return line.substr(first, line.find_last_not_of(" \t\r") - first + 1);
}

// --check-config: the engines were built (which already refuses a bad URL, a wrong password or
// an unwritable data dir); returns whether both answer within a bounded wait, after printing
// one line for each.
bool engines_up(chatd::store::RoomStore& rooms, chatd::bus::MessageBus& messages) {
  messages.start([](chatd::bus::Delivery&&) {});
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!(rooms.up() && messages.up()) && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  std::cout << "store: " << rooms.describe() << "\nbus: " << messages.describe() << '\n';
  return rooms.up() && messages.up();
}

// An event loop that can drop its queued handlers before it is destroyed: objects declared after
// it (the server, the hub) must outlive the sessions those handlers hold.
class Loop : public asio::io_context {
 public:
  using asio::io_context::io_context;
  // Destroys every pending handler (execution_context::shutdown; idempotent, and the destructor
  // runs it again harmlessly). Only once run() has returned on every thread.
  void end_handlers() { shutdown(); }
};

}  // namespace

int main(int argc, char** argv) {
  using namespace chatd;
  app::Options opt;
  try {
    std::vector<std::string> args(argv + 1, argv + argc), env;
    for (char** e = environ; *e; ++e) env.emplace_back(*e);
    opt = app::parse_options(args, env);
    log::set_format(opt.log_json ? log::Format::json : log::Format::text);
  } catch (const std::exception& e) {
    std::cerr << "chatd: " << e.what() << '\n';
    return 2;
  }
  if (opt.help) {
    std::cout << app::help_text();
    return 0;
  }
  if (opt.version) {
    std::cout << app::version_text() << '\n';
    return 0;
  }
  // A write to a socket its peer closed must fail with EPIPE, not end the process: Asio and
  // librdkafka ask for that per call, but not every library's write does (hiredis's send()).
  std::signal(SIGPIPE, SIG_IGN);
  fit_connections_to(raise_file_limit(), opt.server.limits.max_connections);

  unsigned n = opt.threads ? opt.threads : std::max(1u, std::thread::hardware_concurrency());
  std::vector<std::unique_ptr<Loop>> loops;
  std::vector<asio::io_context*> workers;
  for (unsigned i = 0; i < n; ++i) {
    loops.push_back(std::make_unique<Loop>(1));
    workers.push_back(loops.back().get());
  }

  // Bus and store I/O. On a worker's loop a Redis message costs no wake-up of another thread on
  // the way in or out: two nodes via Redis at 2,000 msg/s on one core, p50 0.50 -> 0.36 ms and
  // 12 % less CPU; but at saturation 12 % fewer deliveries (the engine thread lets a worker's
  // turn hand over a whole batch), so a thread of its own stays the default. --check-config
  // waits for the engines on this thread, so it needs the engine loop running elsewhere.
  const bool engine_on_worker = !opt.check_config && !opt.engine_thread;
  Loop own_engine(1);
  asio::io_context& engine = engine_on_worker ? *workers[0] : own_engine;
  auto engine_guard = asio::make_work_guard(engine);
  std::thread engine_thread;
  if (!engine_on_worker) engine_thread = log::named_thread("chatd-engine", [&] { engine.run(); });

  std::unique_ptr<store::RoomStore> rooms;
  std::unique_ptr<bus::MessageBus> messages;
  std::unique_ptr<bus::Presence> presence;
  std::unique_ptr<chat::EventSink> webhooks;
  std::shared_ptr<auth::JwtVerifier> jwt;  // --auth jwt
  std::unique_ptr<chat::Hub> hub;
  std::unique_ptr<net::Server> server;
  auto stop_engines = [&] {
    if (engine_on_worker) engine.stop();  // not running yet: the engines' stops run right here
    if (presence) presence->stop();
    if (messages) messages->stop();
    if (rooms) rooms->stop();
    engine_guard.reset();
    engine.stop();
    if (engine_thread.joinable()) engine_thread.join();
  };
  auto fail = [&](const std::string& why) {
    log::message("cannot_start", "cannot start: " + why);
    stop_engines();
    return 1;
  };
  try {
    // What a start reads besides the engines comes first, so --check-config finds it too.
    boost::system::error_code bad_address;
    asio::ip::make_address(opt.server.address, bad_address);
    if (bad_address) throw std::runtime_error("--address '" + opt.server.address + "' is not an IP address");
    if (std::error_code ec; !opt.server.web_root.empty() && !std::filesystem::is_directory(opt.server.web_root, ec))
      log::message("warning", "WARNING --web-root " + opt.server.web_root +
                                  " is not a folder: no browser pages are served (--web-root '' serves none without this warning)");
    if (!opt.api_key_file.empty()) opt.server.api.key = read_secret(opt.api_key_file, "--api-key-file");
    if (opt.auth_jwt) {
      opt.jwt.max_name_bytes = opt.hub.limits.max_sender_bytes;
      jwt = std::make_shared<auth::JwtVerifier>(opt.jwt);
      opt.hub.verifier = jwt;
      if (opt.auth_dev_mint) {
        opt.server.dev_mint_secret = auth::read_secret_file(opt.jwt.secret_file);
        log::message("warning", "WARNING --auth-dev-mint is on: anyone can get a token for any name (development only)");
      }
    }
    if (!opt.webhooks.url.empty()) {
      hooks::check_url(opt.webhooks.url);
      if (!opt.webhook_secret_file.empty()) opt.webhooks.secret = read_secret(opt.webhook_secret_file, "--webhook-secret-file");
    }
    if (opt.bus.node_id.empty()) opt.bus.node_id = node_id_for(opt.data_dir, opt.server.port);
    opt.hub.node_id = opt.bus.node_id;
    if ((opt.store.kind == "embedded" || opt.bus.kind == "local") && !lock_data_dir(opt.data_dir)) {
      if (!opt.check_config)
        return fail("the data dir " + opt.data_dir + " is in use by another chatd: the embedded store and history "
                    "serve one process (give each node its own --data-dir)");
      // Opening the engines here would fold the running node's journal under it.
      stop_engines();
      std::cout << "chatd: configuration ok (the embedded engines in " << opt.data_dir
                << " belong to the chatd running there: not opened)\n";
      return 0;
    }
    rooms = store::make_store(opt.store, engine);
    messages = bus::make_bus(opt.bus, engine);
    if (opt.check_config) {
      if (!engines_up(*rooms, *messages)) return fail("an engine did not answer within 10 s");
      stop_engines();
      std::cout << "chatd: configuration ok\n";
      return 0;
    }
    if (opt.presence) presence = bus::make_presence(opt.bus, opt.presence_cfg, engine);
    hub = std::make_unique<chat::Hub>(opt.hub, *rooms, *messages, workers, presence.get());
    if (!opt.webhooks.url.empty()) {
      opt.webhooks.node_id = opt.bus.node_id;
      webhooks = hooks::make_webhooks(opt.webhooks, engine);
      hub->set_event_sink(webhooks.get());
    }
    server = std::make_unique<net::Server>(opt.server, *hub, workers);
    server->start();
    hub->start();
  } catch (const std::exception& e) {
    return fail(e.what());
  }

  std::vector<asio::executor_work_guard<asio::io_context::executor_type>> guards;
  for (auto* w : workers) guards.push_back(asio::make_work_guard(*w));

  asio::signal_set signals(engine, SIGINT, SIGTERM);
  auto stop_all = [&] {
    if (presence) presence->stop();
    messages->stop();
    rooms->stop();
    for (auto& g : guards) g.reset();
    for (auto* w : workers) w->stop();
    engine_guard.reset();
    engine.stop();
  };
  signals.async_wait([&](boost::system::error_code ec, int sig) {
    if (ec) return;
    log::message("draining", "signal " + std::to_string(sig) + ", draining");
    server->shutdown([&] {
      // Sessions closed during the drain queued their leave events: the backend gets a bounded
      // chance to receive them (--webhook-drain-ms); then the engines stop, from a worker, since
      // stopping them waits on the engine thread the webhooks answer on.
      if (webhooks) webhooks->drain(opt.webhooks.drain, [&] { asio::post(*workers[0], stop_all); });
      else stop_all();
    });
  });

  // SIGHUP rereads the JWT key files (key rotation); a file that does not load keeps the old keys.
  asio::signal_set hangups(engine, SIGHUP);
  std::function<void()> on_hangup = [&] {
    hangups.async_wait([&](boost::system::error_code ec, int) {
      if (ec) return;
      std::string why;
      if (!jwt) log::message("sighup", "SIGHUP: nothing to reload (--auth none)");
      else if (jwt->reload(why)) log::message("sighup", "SIGHUP: JWT keys reloaded, " + std::to_string(jwt->key_count()) + " key(s)");
      else log::message("sighup", "SIGHUP: JWT keys NOT reloaded, keeping the old ones: " + why);
      on_hangup();
    });
  };
  on_hangup();

  log::message("listening", "listening on http://" + opt.server.address + ':' + std::to_string(server->port()) +
                                " node=" + opt.bus.node_id + " bus=" + messages->describe() + " store=" + rooms->describe() +
                                " auth=" + (jwt ? "jwt" : "none") + " workers=" + std::to_string(n) +
                                (engine_on_worker ? " (engines on the worker)" : "") +
                                " web-root=" + (server->files().size() ? opt.server.web_root : "(none)"));

  std::vector<std::thread> threads;
  // Worker 0 is the main thread and keeps the process's name (pgrep, systemd, ps show "chatd").
  for (unsigned i = 1; i < n; ++i)
    threads.push_back(log::named_thread("chatd-worker-" + std::to_string(i), [w = workers[i]] { w->run(); }));
  workers[0]->run();
  for (auto& t : threads) t.join();
  if (engine_thread.joinable()) engine_thread.join();
  // Handlers the stop left queued (a write timeout, a close linger, a REST answer) hold sessions
  // whose destructors give back their server and hub slots: end them while those still exist.
  // A handler's destructor may post to another loop (a receiver telling its session it is gone):
  // a few passes drop those too.
  for (int pass = 0; pass < 3; ++pass) {
    for (auto& l : loops) l->end_handlers();
    own_engine.end_handlers();
  }
  log::message("stopped", "stopped");
  return 0;
}
