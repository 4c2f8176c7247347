#include "hooks/webhooks.h"
#include "log/log.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <boost/asio/error.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <boost/url/parse.hpp>

#include <atomic>
#include <deque>
#include <iostream>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <utility>
#include <vector>

namespace chatd::hooks {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using Kind = chat::ChatEvent::Kind;
using Clock = std::chrono::steady_clock;

constexpr Kind kKinds[] = {Kind::message, Kind::join, Kind::leave, Kind::room};
constexpr std::chrono::milliseconds kFirstBackoff{100};
constexpr std::chrono::seconds kLogEvery{10};  // drop and failure lines, at most this often

struct Target {
  std::string host, port, target, host_header;
  std::string authorization;  // "Basic ..." from the URL's user:password, else empty
  std::string shown;          // the URL for logs: no password, no query (it may carry a token)
};

std::string base64(std::string_view in) {
  std::string out(4 * ((in.size() + 2) / 3) + 1, '\0');
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), reinterpret_cast<const unsigned char*>(in.data()),
                                static_cast<int>(in.size()));
  out.resize(static_cast<std::size_t>(n));
  return out;
}

Target parse_target(const std::string& url) {
  auto u = boost::urls::parse_uri(url);
  if (!u) throw std::invalid_argument("--webhook-url: '" + url + "' is not a URL");
  if (u->scheme() != "http")
    throw std::invalid_argument("--webhook-url: only http:// is supported (put TLS in a proxy beside the backend)");
  Target t;
  t.host = std::string(u->host_address());
  if (t.host.empty()) throw std::invalid_argument("--webhook-url: no host in '" + url + "'");
  t.port = u->has_port() ? std::string(u->port()) : "80";
  t.host_header = std::string(u->encoded_host_and_port());
  t.target = std::string(u->encoded_resource());
  if (t.target.empty()) t.target = "/";
  // RFC 9110 §4.2.4: a URL's user:password is not sent as is; HTTP Basic (RFC 7617) carries it.
  if (u->has_userinfo()) t.authorization = "Basic " + base64(std::string(u->user()) + ":" + std::string(u->password()));
  t.shown = "http://" + std::string(u->encoded_host_and_port()) + std::string(u->encoded_path());
  return t;
}

struct Event {
  std::string json;  // one element of the batch's "events" array
};

// All state lives on the io loop; on_event() from other threads only touches the inbox.
class Core : public std::enable_shared_from_this<Core> {
 public:
  Core(WebhookConfig cfg, asio::io_context& io)
      : cfg_(std::move(cfg)), target_(parse_target(cfg_.url)), io_(io), resolver_(io), stream_(io),
        linger_(io), backoff_timer_(io), drain_timer_(io) {}

  void push(chat::ChatEvent e) {
    std::string json;
    json.reserve(e.data.size() + e.id.size() + e.room_id.size() + e.epoch.size() + 80);
    json.append("{\"id\":\"").append(e.id).append("\",\"type\":\"").append(to_string(e.kind));
    json.append("\",\"roomId\":\"").append(e.room_id).append("\",\"ts\":").append(std::to_string(now_ms()));
    if (e.seq) json.append(",\"seq\":").append(std::to_string(e.seq));
    // Epochs are [A-Za-z0-9_.-] (bus::Delivery): nothing to escape.
    if (!e.epoch.empty()) json.append(",\"epoch\":\"").append(e.epoch).append("\"");
    json.append(",\"data\":").append(e.data.empty() ? "{}" : e.data).append("}");
    queued_total_.fetch_add(1, std::memory_order_relaxed);
    bool post;
    {
      std::lock_guard lock(inbox_mu_);
      inbox_.push_back(Event{std::move(json)});
      post = !drain_posted_;
      drain_posted_ = true;
    }
    if (post) asio::post(io_, [self = shared_from_this()] { self->drain_in_loop(); });
  }

  void stop() {
    asio::post(io_, [self = shared_from_this()] {
      self->stopped_ = true;
      self->linger_.cancel();
      self->backoff_timer_.cancel();
      beast::error_code ignored;
      self->stream_.socket().close(ignored);
    });
  }

  // Shutdown: sends what is queued (the linger and backoff still apply) until the queue is
  // empty or `within` passed, then stops; what is left is lost, counted and logged.
  void drain(std::chrono::milliseconds within, std::function<void()> done) {
    asio::post(io_, [self = shared_from_this(), within, done = std::move(done)]() mutable {
      self->drain_in_loop();  // what on_event queued before the call
      self->drained_ = std::move(done);
      self->drain_timer_.expires_after(within);
      self->drain_timer_.async_wait([self](beast::error_code ec) {
        if (!ec) self->finish_drain_in_loop();
      });
      self->check_drained_in_loop();
    });
  }

  std::string metrics() const {
    std::ostringstream out;
    out << "# HELP chatd_webhook_events_total Webhook events by outcome: queued, sent (the backend answered 2xx), "
           "dropped (the queue was full), rejected (the backend answered 4xx).\n"
           "# TYPE chatd_webhook_events_total counter\n"
        << "chatd_webhook_events_total{outcome=\"queued\"} " << queued_total_.load() << '\n'
        << "chatd_webhook_events_total{outcome=\"sent\"} " << sent_total_.load() << '\n'
        << "chatd_webhook_events_total{outcome=\"dropped\"} " << dropped_total_.load() << '\n'
        << "chatd_webhook_events_total{outcome=\"rejected\"} " << rejected_total_.load() << '\n'
        << "# HELP chatd_webhook_requests_total Webhook POSTs by result.\n"
           "# TYPE chatd_webhook_requests_total counter\n"
        << "chatd_webhook_requests_total{result=\"ok\"} " << requests_ok_.load() << '\n'
        << "chatd_webhook_requests_total{result=\"failed\"} " << requests_failed_.load() << '\n'
        << "# HELP chatd_webhook_queue Webhook events waiting for the backend.\n"
           "# TYPE chatd_webhook_queue gauge\n"
        << "chatd_webhook_queue " << queue_length_.load() << '\n';
    return out.str();
  }

 private:
  static std::int64_t now_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch()).count();
  }

  void drain_in_loop() {
    std::vector<Event> in;
    {
      std::lock_guard lock(inbox_mu_);
      in.swap(inbox_);
      drain_posted_ = false;
    }
    if (stopped_) return;
    for (auto& e : in) {
      queued_bytes_ += e.json.size();
      queue_.push_back(std::move(e));
    }
    // Drop the oldest beyond the bounds, in flight or not: the request already holds its copy,
    // and whatever its answer, a newer event is worth more to a backend that was away.
    std::size_t dropped = 0;
    while (queue_.size() > cfg_.max_queue || (queued_bytes_ > cfg_.max_queue_bytes && queue_.size() > 1)) {
      queued_bytes_ -= queue_.front().json.size();
      queue_.pop_front();
      // One the POST carries counts as sent or dropped by that POST's answer.
      if (in_flight_) {
        --in_flight_;
        ++left_in_flight_;
      } else {
        dropped_total_.fetch_add(1, std::memory_order_relaxed);
      }
      ++dropped;
    }
    if (dropped) {
      log_in_loop("queue full (" + std::to_string(cfg_.max_queue) + " events or " +
                  std::to_string(cfg_.max_queue_bytes) + " bytes): dropped the oldest " + std::to_string(dropped));
    }
    queue_length_.store(queue_.size(), std::memory_order_relaxed);
    maybe_send_in_loop();
  }

  // Sends now if a full batch waits, else arms the linger timer for the rest.
  void maybe_send_in_loop() {
    if (stopped_ || requesting_ || backing_off_ || queue_.empty()) return;
    if (queue_.size() >= cfg_.max_batch) {
      linger_.cancel();
      lingering_ = false;
      send_in_loop();
      return;
    }
    if (lingering_) return;
    lingering_ = true;
    linger_.expires_after(cfg_.linger);
    linger_.async_wait([self = shared_from_this()](beast::error_code ec) {
      if (ec || self->stopped_) return;
      self->lingering_ = false;
      if (!self->requesting_ && !self->backing_off_ && !self->queue_.empty()) self->send_in_loop();
    });
  }

  void send_in_loop() {
    requesting_ = true;
    in_flight_ = std::min(queue_.size(), cfg_.max_batch);
    std::string body = "{\"node\":\"" + cfg_.node_id + "\",\"sent\":" + std::to_string(now_ms()) + ",\"events\":[";
    for (std::size_t i = 0; i < in_flight_; ++i) {
      if (i) body.push_back(',');
      body.append(queue_[i].json);
    }
    body.append("]}");
    req_ = {};
    req_.method(http::verb::post);
    req_.target(target_.target);
    req_.version(11);
    req_.set(http::field::host, target_.host_header);
    req_.set(http::field::user_agent, "chatd-webhooks");
    if (!target_.authorization.empty()) req_.set(http::field::authorization, target_.authorization);
    req_.set(http::field::content_type, "application/json");
    if (!cfg_.secret.empty()) req_.set("X-Chatd-Signature", signature(cfg_.secret, body));
    req_.set("X-Chatd-Node", cfg_.node_id);
    req_.keep_alive(true);
    req_.body() = std::move(body);
    req_.prepare_payload();
    stream_.expires_after(cfg_.timeout);
    reused_ = connected_;
    if (connected_) {
      write_in_loop();
      return;
    }
    connect_in_loop();
  }

  void connect_in_loop() {
    resolver_.async_resolve(target_.host, target_.port,
                            [self = shared_from_this()](beast::error_code ec, tcp::resolver::results_type r) {
                              if (ec) return self->failed_in_loop("resolve: " + ec.message());
                              self->stream_.async_connect(r, [self](beast::error_code ec2, const tcp::endpoint&) {
                                if (ec2) return self->failed_in_loop("connect: " + ec2.message());
                                self->connected_ = true;
                                self->write_in_loop();
                              });
                            });
  }

  void write_in_loop() {
    http::async_write(stream_, req_, [self = shared_from_this()](beast::error_code ec, std::size_t) {
      if (ec && !self->stale_in_loop(ec)) return self->failed_in_loop("write: " + ec.message());
      if (ec) return;
      self->read_buffer_.clear();
      self->read_answer_in_loop(0);
    });
  }

  // Reads the answer, skipping interim 1xx ones (RFC 9110 §15.2: 100 Continue, 103 Early
  // Hints), a few at most: a backend that sends only those is failing.
  void read_answer_in_loop(int interim) {
    res_ = {};
    http::async_read(stream_, read_buffer_, res_, [self = shared_from_this(), interim](beast::error_code ec, std::size_t) {
      if (ec && !self->stale_in_loop(ec)) return self->failed_in_loop("read: " + ec.message());
      if (ec) return;
      if (self->res_.result_int() / 100 == 1) {
        if (interim < 8) return self->read_answer_in_loop(interim + 1);
        return self->failed_in_loop("only interim answers");
      }
      self->answered_in_loop();
    });
  }

  // A kept-alive connection the backend closed while it was idle (Node's server does after 5 s,
  // nginx after 75 s) fails on its first use without a byte of answer. That is not the backend
  // failing: the batch goes again at once on a new connection, neither counted nor logged. Once
  // per batch, so a backend that really drops every request still backs off.
  bool stale_in_loop(const beast::error_code& ec) {
    if (!reused_ || stopped_) return false;
    reused_ = false;
    if (ec != http::error::end_of_stream && ec != asio::error::eof && ec != asio::error::connection_reset &&
        ec != asio::error::broken_pipe)
      return false;
    close_in_loop();
    connect_in_loop();
    return true;
  }

  void answered_in_loop() {
    auto status = res_.result_int();
    if (!res_.keep_alive()) close_in_loop();
    if (status >= 200 && status < 300) {
      requests_ok_.fetch_add(1, std::memory_order_relaxed);
      sent_total_.fetch_add(in_flight_ + std::exchange(left_in_flight_, 0), std::memory_order_relaxed);
      done_with_batch_in_loop();
      return;
    }
    // A 4xx other than "try later" says this batch will never be taken: keep the queue moving.
    if (status >= 400 && status < 500 && status != 408 && status != 429) {
      requests_failed_.fetch_add(1, std::memory_order_relaxed);
      const std::size_t carried = in_flight_ + std::exchange(left_in_flight_, 0);
      rejected_total_.fetch_add(carried, std::memory_order_relaxed);
      log_in_loop("backend refused a batch of " + std::to_string(carried) + " events with HTTP " +
                  std::to_string(status) + "; dropped it");
      done_with_batch_in_loop();
      return;
    }
    failed_in_loop("HTTP " + std::to_string(status));
  }

  void done_with_batch_in_loop() {
    for (std::size_t i = 0; i < in_flight_; ++i) queued_bytes_ -= queue_[i].json.size();
    queue_.erase(queue_.begin(), queue_.begin() + static_cast<std::ptrdiff_t>(in_flight_));
    in_flight_ = 0;
    requesting_ = false;
    queue_length_.store(queue_.size(), std::memory_order_relaxed);
    backoff_ = kFirstBackoff;
    maybe_send_in_loop();
    check_drained_in_loop();
  }

  // The batch stays at the head of the queue and goes again after a backoff.
  void failed_in_loop(const std::string& why) {
    if (stopped_) return;
    requests_failed_.fetch_add(1, std::memory_order_relaxed);
    close_in_loop();
    dropped_total_.fetch_add(std::exchange(left_in_flight_, 0), std::memory_order_relaxed);  // not sent again
    in_flight_ = 0;
    requesting_ = false;
    log_in_loop("POST " + target_.shown + " failed (" + why + "); retrying in " + std::to_string(backoff_.count()) +
                " ms with " + std::to_string(queue_.size()) + " events queued");
    backing_off_ = true;
    backoff_timer_.expires_after(backoff_);
    backoff_ = std::min(backoff_ * 2, cfg_.max_backoff);
    backoff_timer_.async_wait([self = shared_from_this()](beast::error_code ec) {
      if (ec || self->stopped_) return;
      self->backing_off_ = false;
      if (!self->queue_.empty()) self->send_in_loop();
    });
  }

  void check_drained_in_loop() {
    if (drained_ && queue_.empty() && !requesting_) finish_drain_in_loop();
  }

  void finish_drain_in_loop() {
    if (!drained_) return;
    drain_timer_.cancel();
    if (!queue_.empty()) {
      dropped_total_.fetch_add(queue_.size(), std::memory_order_relaxed);
      log::message("webhooks_dropped", "webhooks: shutting down with " + std::to_string(queue_.size()) + " events not sent");
    }
    auto done = std::move(drained_);
    drained_ = nullptr;
    stopped_ = true;
    linger_.cancel();
    backoff_timer_.cancel();
    close_in_loop();
    done();
  }

  void close_in_loop() {
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
    stream_.socket().close(ignored);
    connected_ = false;
  }

  // One line per kind of trouble at most every kLogEvery, with how many were not printed.
  void log_in_loop(const std::string& line) {
    auto now = Clock::now();
    if (now - last_log_ < kLogEvery) {
      ++unlogged_;
      return;
    }
    log::message("webhooks", "webhooks: " + line + (unlogged_ ? " (" + std::to_string(unlogged_) + " similar lines not shown)" : ""));
    unlogged_ = 0;
    last_log_ = now;
  }

  const WebhookConfig cfg_;
  const Target target_;
  asio::io_context& io_;
  tcp::resolver resolver_;
  beast::tcp_stream stream_;
  asio::steady_timer linger_;
  asio::steady_timer backoff_timer_;
  asio::steady_timer drain_timer_;
  std::function<void()> drained_;  // set while draining at shutdown
  http::request<http::string_body> req_;
  http::response<http::string_body> res_;
  beast::flat_buffer read_buffer_;

  std::mutex inbox_mu_;
  std::vector<Event> inbox_;
  bool drain_posted_ = false;

  std::deque<Event> queue_;     // oldest first; the first in_flight_ are in the current POST
  std::size_t queued_bytes_ = 0;  // of the events in queue_
  std::size_t in_flight_ = 0;   // fewer than the POST carries once older events were dropped
  std::size_t left_in_flight_ = 0;  // those dropped from the queue while the POST carries them
  bool requesting_ = false;     // a POST is on the wire
  bool connected_ = false;
  bool reused_ = false;         // the POST on the wire went on a kept-alive connection
  bool lingering_ = false;
  bool backing_off_ = false;
  bool stopped_ = false;
  std::chrono::milliseconds backoff_ = kFirstBackoff;
  Clock::time_point last_log_{};
  std::size_t unlogged_ = 0;

  std::atomic<std::uint64_t> queued_total_{0}, sent_total_{0}, dropped_total_{0}, rejected_total_{0};
  std::atomic<std::uint64_t> requests_ok_{0}, requests_failed_{0};
  std::atomic<std::size_t> queue_length_{0};
};

class Webhooks final : public chat::EventSink {
 public:
  Webhooks(WebhookConfig cfg, asio::io_context& io) : events_(cfg.events), core_(std::make_shared<Core>(std::move(cfg), io)) {}
  ~Webhooks() override { core_->stop(); }

  bool wants(Kind k) const override { return events_ & (1u << static_cast<unsigned>(k)); }
  void on_event(chat::ChatEvent e) override {
    if (wants(e.kind)) core_->push(std::move(e));
  }
  std::string metrics_text() const override { return core_->metrics(); }
  void drain(std::chrono::milliseconds within, std::function<void()> done) override {
    core_->drain(within, std::move(done));
  }

 private:
  unsigned events_;
  std::shared_ptr<Core> core_;
};

}  // namespace

unsigned parse_event_kinds(std::string_view list) {
  unsigned out = 0;
  while (!list.empty()) {
    auto comma = list.find(',');
    auto name = list.substr(0, comma);
    list = comma == std::string_view::npos ? std::string_view{} : list.substr(comma + 1);
    while (!name.empty() && name.front() == ' ') name.remove_prefix(1);
    while (!name.empty() && name.back() == ' ') name.remove_suffix(1);
    if (name.empty()) continue;
    bool known = false;
    for (auto k : kKinds) {
      if (name == "all" || name == to_string(k)) {
        out |= 1u << static_cast<unsigned>(k);
        known = true;
      }
    }
    if (!known)
      throw std::invalid_argument("--webhook-events: unknown event '" + std::string(name) +
                                  "' (expected message, join, leave, room or all)");
  }
  return out;
}

std::string signature(std::string_view secret, std::string_view body) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned len = 0;
  HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
       reinterpret_cast<const unsigned char*>(body.data()), body.size(), mac, &len);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out = "sha256=";
  for (unsigned i = 0; i < len; ++i) {
    out.push_back(kHex[mac[i] >> 4]);
    out.push_back(kHex[mac[i] & 15]);
  }
  return out;
}

void check_url(const std::string& url) { parse_target(url); }

std::unique_ptr<chat::EventSink> make_webhooks(WebhookConfig cfg, asio::io_context& io) {
  if (cfg.max_batch == 0 || cfg.max_queue < cfg.max_batch)
    throw std::invalid_argument("webhooks: the queue must hold at least one batch");
  return std::make_unique<Webhooks>(std::move(cfg), io);
}

}  // namespace chatd::hooks
