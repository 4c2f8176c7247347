// WsSession running an application other than STOMP (net/ws_app.h), over a real socket: each
// message the app sends leaves as one WebSocket message with its own opcode, even when several
// leave in the same loop turn, and a route exists only where ServerConfig::ws_apps adds it.
#include <gtest/gtest.h>

#include <boost/asio.hpp>

#include <filesystem>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <poll.h>
#include <unistd.h>
#include <vector>

#include "bus/message_bus.h"
#include "chat/hub.h"
#include "conformance/echo_app.h"
#include "net/server.h"
#include "store/room_store.h"
#include "ws/websocket.h"

using namespace chatd;
namespace asio = boost::asio;
using asio::ip::tcp;

namespace {

// A server on 127.0.0.1 with its own worker thread; `with_echo` adds the echo on /echo.
class Node {
 public:
  explicit Node(bool with_echo) {
    dir_ = std::filesystem::temp_directory_path() /
           ("chatd-ws-app-" + std::to_string(::getpid()) + "-" + std::to_string(with_echo));
    std::filesystem::remove_all(dir_);
    store::StoreConfig sc;
    sc.data_dir = dir_.string();
    rooms_ = store::make_embedded_store(sc);
    bus::BusConfig bc;
    bc.data_dir = dir_.string();
    messages_ = bus::make_local_bus(bc, engine_);
    chat::HubConfig hc;
    hc.node_id = "test";
    hub_ = std::make_unique<chat::Hub>(hc, *rooms_, *messages_, std::vector<asio::io_context*>{&worker_});
    net::ServerConfig cfg;
    cfg.address = "127.0.0.1";
    cfg.port = 0;
    if (with_echo) cfg.ws_apps.emplace("/echo", [] { return std::make_unique<test::EchoApp>(1 << 20); });
    server_ = std::make_unique<net::Server>(cfg, *hub_, std::vector<asio::io_context*>{&worker_});
    server_->start();
    hub_->start();
    engine_thread_ = std::thread([this] { engine_.run(); });
    worker_thread_ = std::thread([this] { worker_.run(); });
  }
  // Shuts down as chatd does: every connection gone (none is left holding the server) before
  // the loops stop.
  ~Node() {
    asio::post(worker_, [this] {
      server_->shutdown([this] {
        messages_->stop();
        rooms_->stop();
        worker_guard_.reset();
        worker_.stop();
        engine_guard_.reset();
        engine_.stop();
      });
    });
    worker_thread_.join();
    engine_thread_.join();
    server_.reset();
    hub_.reset();
    std::filesystem::remove_all(dir_);
  }
  std::uint16_t port() const { return server_->port(); }

 private:
  std::filesystem::path dir_;
  asio::io_context engine_{1};
  asio::io_context worker_{1};
  asio::executor_work_guard<asio::io_context::executor_type> engine_guard_ = asio::make_work_guard(engine_);
  asio::executor_work_guard<asio::io_context::executor_type> worker_guard_ = asio::make_work_guard(worker_);
  std::unique_ptr<store::RoomStore> rooms_;
  std::unique_ptr<bus::MessageBus> messages_;
  std::unique_ptr<chat::Hub> hub_;
  std::unique_ptr<net::Server> server_;
  std::thread engine_thread_, worker_thread_;
};

// Returns the server's answer to a WebSocket upgrade of `path`, up to the blank line.
std::string upgrade(tcp::socket& s, std::uint16_t port, const std::string& path) {
  s.connect({asio::ip::make_address("127.0.0.1"), port});
  asio::write(s, asio::buffer("GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                              "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                              "Sec-WebSocket-Version: 13\r\n\r\n"));
  std::string head;
  boost::system::error_code ec;
  asio::read_until(s, asio::dynamic_buffer(head), "\r\n\r\n", ec);
  return head;
}

// A client frame (masked with a zero key, so the payload reads as it is), under 126 bytes.
std::string client_frame(ws::Opcode op, const std::string& payload) {
  std::string f;
  f += static_cast<char>(0x80 | static_cast<int>(op));
  f += static_cast<char>(0x80 | payload.size());
  f.append(4, '\0');
  return f + payload;
}

struct ServerFrame {
  int byte0;  // FIN and opcode
  std::string payload;
};

// Reads one unmasked server frame under 126 bytes; throws when none starts within 5 s.
ServerFrame read_frame(tcp::socket& s) {
  pollfd p{s.native_handle(), POLLIN, 0};
  if (::poll(&p, 1, 5000) != 1) throw std::runtime_error("no frame within 5 s");
  unsigned char h[2];
  asio::read(s, asio::buffer(h));
  std::string payload(h[1] & 0x7F, '\0');
  asio::read(s, asio::buffer(payload));
  return {h[0], payload};
}

}  // namespace

TEST(WsApp, EachMessageLeavesAloneWithItsOpcode) {
  Node node(true);
  asio::io_context io;
  tcp::socket s(io);
  ASSERT_EQ(upgrade(s, node.port(), "/echo").rfind("HTTP/1.1 101", 0), 0u);
  // Three messages in one write: the session reads them in one turn and their echoes leave
  // in the same flush, still as three messages (STOMP frames would be joined into one).
  std::string binary("\0\x01two", 5);
  asio::write(s, asio::buffer(client_frame(ws::Opcode::text, "one") + client_frame(ws::Opcode::binary, binary) +
                              client_frame(ws::Opcode::text, "three")));
  auto a = read_frame(s), b = read_frame(s), c = read_frame(s);
  EXPECT_EQ(a.byte0, 0x81);
  EXPECT_EQ(a.payload, "one");
  EXPECT_EQ(b.byte0, 0x82);
  EXPECT_EQ(b.payload, binary);
  EXPECT_EQ(c.byte0, 0x81);
  EXPECT_EQ(c.payload, "three");
  // The close handshake is the session's: our code comes back.
  asio::write(s, asio::buffer(client_frame(ws::Opcode::close, std::string("\x03\xe8", 2))));
  auto close = read_frame(s);
  EXPECT_EQ(close.byte0, 0x88);
  EXPECT_EQ(close.payload, std::string("\x03\xe8", 2));
}

TEST(WsApp, NoRouteUnlessConfigured) {
  Node node(false);  // as chatd's main builds it: no ws_apps
  asio::io_context io;
  tcp::socket s(io);
  auto head = upgrade(s, node.port(), "/echo");
  EXPECT_EQ(head.rfind("HTTP/1.1 404", 0), 0u) << head;
}
