// ws_echo: the server Autobahn|Testsuite's fuzzingclient drives (CTest `conformance_autobahn`).
// It is chatd's own net::Server with its WsSession, the code /ws-stomp runs on (reading,
// decoding, pings, close handshake, UTF-8, backpressure, write deadline, outbound bound), with
// an echo application on "/" instead of STOMP: every message goes back as one message of the
// same kind. The echo exists only in this test binary; chatd serves no such route.
//
//   ws_echo --port P [--max-message-bytes N]     (127.0.0.1 only; runs until SIGTERM/SIGINT)
//
// Test-only limits: a message may be N bytes (default 20 MiB, for the 16 MiB messages of
// Autobahn's cases 9.x; chatd allows 2 x 64 KiB + 1 KiB), and 2 N may wait for the client
// (chatd: 1 MiB + 4 KiB), so one echoed message fits behind another.
#include <boost/asio.hpp>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <thread>

#include "bus/message_bus.h"
#include "chat/hub.h"
#include "net/server.h"
#include "net/ws_app.h"
#include "store/room_store.h"
#include "conformance/echo_app.h"

namespace asio = boost::asio;
using namespace chatd;

namespace {

int usage() {
  std::fprintf(stderr, "usage: ws_echo --port P [--max-message-bytes N]\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  unsigned long port = 0;
  std::size_t max_message = 20u << 20;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string_view a = argv[i];
    if (a == "--port") port = std::strtoul(argv[i + 1], nullptr, 10);
    else if (a == "--max-message-bytes") max_message = std::strtoull(argv[i + 1], nullptr, 10);
    else return usage();
  }
  if (port == 0 || port > 65535 || argc % 2 == 0) return usage();

  // The hub wants a store and a bus; the echo uses neither, so they live in a scratch folder.
  std::string dir_template = (std::filesystem::temp_directory_path() / "ws_echo-XXXXXX").string();
  if (!::mkdtemp(dir_template.data())) {
    std::perror("ws_echo: mkdtemp");
    return 1;
  }
  const std::filesystem::path dir = dir_template;

  asio::io_context engine(1);
  auto engine_guard = asio::make_work_guard(engine);
  asio::io_context worker(1);
  auto worker_guard = asio::make_work_guard(worker);
  std::vector<asio::io_context*> workers{&worker};

  store::StoreConfig sc;
  sc.data_dir = dir.string();
  bus::BusConfig bc;
  bc.data_dir = dir.string();
  bc.node_id = "ws_echo";
  chat::HubConfig hc;
  hc.node_id = "ws_echo";
  hc.limits.max_outbound_bytes = 2 * max_message;
  net::ServerConfig cfg;
  cfg.address = "127.0.0.1";
  cfg.port = static_cast<std::uint16_t>(port);
  cfg.ws_apps.emplace("/", [max_message] { return std::make_unique<test::EchoApp>(max_message); });

  auto rooms = store::make_embedded_store(sc);
  auto messages = bus::make_local_bus(bc, engine);
  chat::Hub hub(hc, *rooms, *messages, workers);
  net::Server server(cfg, hub, workers);
  server.start();
  hub.start();

  asio::signal_set signals(engine, SIGINT, SIGTERM);
  // Stops as chatd's main does: the server drains (echo sessions are not told to close, so a
  // connection still open is waited for up to drain_timeout), then the engines stop from the
  // worker, since stopping them waits on the engine thread.
  signals.async_wait([&](boost::system::error_code ec, int) {
    if (ec) return;
    server.shutdown([&] {
      messages->stop();
      rooms->stop();
      worker_guard.reset();
      worker.stop();
      engine_guard.reset();
      engine.stop();
    });
  });
  std::thread engine_thread([&] { engine.run(); });
  std::fprintf(stderr, "ws_echo listening on 127.0.0.1:%u\n", static_cast<unsigned>(server.port()));
  worker.run();
  engine_thread.join();
  std::error_code ignored;
  std::filesystem::remove_all(dir, ignored);
}
