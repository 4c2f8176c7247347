// ws_echo: an RFC 6455 echo server for the Autobahn|Testsuite fuzzingclient (CTest
// `conformance_autobahn`). It speaks WebSocket through chatd's own code: the handshake's accept
// key (net::ws_accept_key, the one WsSession uses), the frame decoder with its reassembly,
// control-frame, UTF-8 and close checks (ws::Decoder), the server encoders (ws::append_header,
// pong_frame, close_frame) and the close codes chatd answers a protocol error with
// (ws::close_code_for). What it does with each decoded event is what WsSession does: a pong per
// ping, the client's close code echoed, a protocol error closed with RFC 6455's code. Only the
// application differs: every message goes back as it came (text or binary) instead of to STOMP.
//
//   ws_echo --port P [--max-message-bytes N]     (127.0.0.1 only; runs until killed)
#include <boost/asio.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>

#include <cstdio>
#include <cstdlib>
#include <deque>
#include <memory>
#include <string>
#include <string_view>

#include "net/ws_handshake.h"
#include "ws/websocket.h"

namespace asio = boost::asio;
namespace http = boost::beast::http;
using asio::ip::tcp;
namespace ws = chatd::ws;

namespace {

class EchoSession : public std::enable_shared_from_this<EchoSession> {
 public:
  EchoSession(tcp::socket socket, std::size_t max_message) : socket_(std::move(socket)), decoder_(max_message) {}

  void start() {
    parser_.header_limit(8 * 1024);
    http::async_read(socket_, buffer_, parser_, [self = shared_from_this()](boost::system::error_code ec, std::size_t) {
      if (ec) return;
      self->on_request();
    });
  }

 private:
  void on_request() {
    auto& req = parser_.get();
    auto key = req[http::field::sec_websocket_key];
    if (req.method() != http::verb::get || req[http::field::sec_websocket_version] != "13" || key.size() != 24) {
      queue("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
      close_after_write_ = true;
      return;
    }
    queue("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nServer: chatd-ws_echo\r\n"
          "Sec-WebSocket-Accept: " + chatd::net::ws_accept_key(key) + "\r\n\r\n");
    // Bytes the client sent past the request are frames already.
    auto early = buffer_.cdata();
    if (!on_bytes(std::string_view(static_cast<const char*>(early.data()), early.size()))) return;
    buffer_.consume(buffer_.size());
    read();
  }

  void read() {
    socket_.async_read_some(asio::buffer(chunk_), [self = shared_from_this()](boost::system::error_code ec, std::size_t n) {
      if (ec) return self->gone();
      if (!self->on_bytes(std::string_view(self->chunk_.data(), n))) return;
      self->read();
    });
  }

  // Returns false once nothing more will be read (the close is on its way).
  bool on_bytes(std::string_view bytes) {
    while (!bytes.empty()) {
      auto r = decoder_.consume(bytes);
      bytes.remove_prefix(r.used);
      switch (r.status) {
        case ws::Decoder::Status::need_more: return true;
        case ws::Decoder::Status::message: {
          std::string frame;
          ws::append_header(frame, decoder_.text() ? ws::Opcode::text : ws::Opcode::binary, decoder_.payload().size());
          frame += decoder_.payload();
          queue(std::move(frame));
          break;
        }
        case ws::Decoder::Status::ping: queue(ws::pong_frame(decoder_.payload())); break;
        case ws::Decoder::Status::pong: break;
        case ws::Decoder::Status::close:
          // Answer with the client's code, as WsSession does.
          return close(decoder_.close_code() == 1005 ? 1000 : decoder_.close_code(), {});
        case ws::Decoder::Status::error:
          return close(ws::close_code_for(decoder_.error()), decoder_.error().message());
      }
    }
    return true;
  }

  bool close(std::uint16_t code, std::string_view reason) {
    queue(ws::close_frame(code, reason.substr(0, 120)));
    close_after_write_ = true;
    return false;
  }

  void queue(std::string bytes) {
    out_.push_back(std::move(bytes));
    if (!writing_) write();
  }

  // One write in flight; what queues meanwhile follows it.
  void write() {
    if (out_.empty()) {
      writing_ = false;
      if (close_after_write_) finish();
      return;
    }
    writing_ = true;
    asio::async_write(socket_, asio::buffer(out_.front()), [self = shared_from_this()](boost::system::error_code ec, std::size_t) {
      if (ec) return self->gone();
      self->out_.pop_front();
      self->write();
    });
  }

  // Our close frame is out: half-close and give the client a moment to close its side.
  void finish() {
    boost::system::error_code ignored;
    socket_.shutdown(tcp::socket::shutdown_send, ignored);
    linger_.expires_after(std::chrono::seconds(2));
    linger_.async_wait([self = shared_from_this()](boost::system::error_code) { self->gone(); });
    drain();
  }

  void drain() {
    socket_.async_read_some(asio::buffer(chunk_), [self = shared_from_this()](boost::system::error_code ec, std::size_t) {
      if (ec) return self->gone();
      self->drain();
    });
  }

  void gone() {
    boost::system::error_code ignored;
    linger_.cancel();
    socket_.close(ignored);
  }

  tcp::socket socket_;
  boost::beast::flat_buffer buffer_;
  http::request_parser<http::empty_body> parser_;
  ws::Decoder decoder_;
  std::array<char, 64 * 1024> chunk_{};
  std::deque<std::string> out_;
  bool writing_ = false;
  bool close_after_write_ = false;
  asio::steady_timer linger_{socket_.get_executor()};
};

void accept(tcp::acceptor& acceptor, std::size_t max_message) {
  acceptor.async_accept([&acceptor, max_message](boost::system::error_code ec, tcp::socket socket) {
    if (!ec) {
      socket.set_option(tcp::no_delay(true));
      std::make_shared<EchoSession>(std::move(socket), max_message)->start();
    }
    accept(acceptor, max_message);
  });
}

}  // namespace

int main(int argc, char** argv) {
  unsigned long port = 0;
  // Autobahn's cases 9.x send messages of up to 16 MiB.
  std::size_t max_message = 20u << 20;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string_view a = argv[i];
    if (a == "--port") port = std::strtoul(argv[i + 1], nullptr, 10);
    else if (a == "--max-message-bytes") max_message = std::strtoull(argv[i + 1], nullptr, 10);
    else {
      std::fprintf(stderr, "usage: ws_echo --port P [--max-message-bytes N]\n");
      return 2;
    }
  }
  if (port == 0 || port > 65535) {
    std::fprintf(stderr, "usage: ws_echo --port P [--max-message-bytes N]\n");
    return 2;
  }
  asio::io_context io;
  tcp::acceptor acceptor(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), static_cast<unsigned short>(port)));
  accept(acceptor, max_message);
  std::fprintf(stderr, "ws_echo listening on 127.0.0.1:%lu\n", port);
  io.run();
}
