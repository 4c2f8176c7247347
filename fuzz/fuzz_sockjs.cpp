// libFuzzer target for the SockJS codec.
//
// The input is used four ways; invariants checked, each by abort():
//   - parse_path never fails on any target, and a session route's ids are non-empty, dot-free
//     views into the target;
//   - append_escaped output always parses as a JSON string, and escaping what it parses to
//     gives the same bytes (invalid UTF-8 became U+FFFD, everything else round-trips);
//   - decode_messages either fails leaving its output alone, or returns messages that
//     append_messages encodes to a frame that decodes back to the same messages;
//   - read as operations on a Session: pending bytes stay within the bound, a finished write
//     detaches the receiver (except c[2010] to a second one), "o" is sent at most once, and
//     after the close frame only close frames follow.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>

#include "sockjs/sockjs.h"

namespace {

namespace sj = chatd::sockjs;

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "invariant broken: %s\n", what);
    std::abort();
  }
}

void fuzz_path(std::string_view target) {
  sj::Route r;
  if (sj::parse_path(target, "/ws-stomp", r)) return;
  if (r.kind != sj::Route::Kind::session) return;
  check(!r.server.empty() && !r.session.empty(), "empty id accepted");
  check(r.server.find('.') == std::string_view::npos && r.session.find('.') == std::string_view::npos,
        "dotted id accepted");
  check(r.server.data() >= target.data() && r.session.data() + r.session.size() <= target.data() + target.size(),
        "ids are views into the target");
}

void fuzz_escape(std::string_view bytes) {
  std::string escaped;
  sj::append_escaped(escaped, bytes);
  boost::system::error_code ec;
  const auto v = boost::json::parse("\"" + escaped + "\"", ec);
  check(!ec && v.is_string(), "escaped output is a JSON string");
  const auto& s = v.get_string();
  std::string again;
  sj::append_escaped(again, std::string_view(s.data(), s.size()));
  check(again == escaped, "escape(parse(escape(x))) == escape(x)");
}

void fuzz_decode(std::string_view payload, sj::Source source) {
  std::vector<std::string> out{"sentinel"};
  if (sj::decode_messages(payload, source, out)) {
    check(out.size() == 1 && out[0] == "sentinel", "output untouched on error");
    return;
  }
  const std::vector<std::string_view> views(out.begin() + 1, out.end());
  std::string frame;
  sj::append_messages(frame, views);
  std::vector<std::string> back;
  check(!sj::decode_messages(std::string_view(frame).substr(1), sj::Source::xhr_send, back), "frame decodes");
  check(back.size() == views.size(), "same message count");
  for (std::size_t i = 0; i < back.size(); ++i) check(back[i] == views[i], "same messages");
}

void fuzz_session(std::string_view ops) {
  sj::Session s({.max_pending_bytes = 64, .streaming_bytes_limit = 2200});
  std::size_t opens = 0;
  bool closed_sent = false;
  auto saw = [&](const sj::Session::Write& w) {
    // c[2010] finishes the newcomer only; the attached receiver stays.
    const bool turned_away = w.bytes.rfind("c[2010", 0) == 0;
    if (w.finish && !turned_away) check(!s.has_receiver(), "a finished write detaches");
    if (turned_away) check(s.has_receiver(), "a newcomer is turned away only while a receiver is attached");
    if (w.bytes.empty()) return;
    check(!closed_sent || w.bytes.find("c[") != std::string::npos, "after a close frame only close frames");
    for (std::size_t at = 0; (at = w.bytes.find("o\n", at)) != std::string::npos; at += 2) {
      if (at == 0 || w.bytes[at - 1] == '\n') ++opens;
    }
    if (w.bytes.find("c[3000") != std::string::npos) closed_sent = true;
  };
  for (std::size_t i = 0; i < ops.size(); ++i) {
    const auto op = static_cast<unsigned char>(ops[i]);
    switch (op % 8) {
      case 0: saw(s.attach(sj::Transport::xhr)); break;
      case 1: saw(s.attach(sj::Transport::xhr_streaming)); break;
      case 2: s.detach(); break;
      case 3: s.push(std::string(op / 8, 'm')); break;
      case 4: saw(s.flush()); break;
      case 5: saw(s.heartbeat()); break;
      case 6: if (op > 200) saw(s.close(sj::go_away)); break;
      default: break;
    }
    check(s.pending_bytes() <= 64, "pending bytes bounded");
    check(opens <= 1, "\"o\" sent at most once");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  fuzz_path(in);
  fuzz_escape(in);
  fuzz_decode(in, sj::Source::xhr_send);
  fuzz_decode(in, sj::Source::websocket);
  fuzz_session(in);
  return 0;
}
