// The WebSocket framings (net/ws_framing.h) as bytes: what a batch becomes on the wire.
#include <gtest/gtest.h>

#include <string>
#include <string_view>
#include <vector>

#include "chat/hub.h"
#include "net/sockjs/ws_framing.h"
#include "net/ws_framing.h"
#include "sockjs/sockjs.h"
#include "ws/websocket.h"

using namespace chatd;

namespace {

chat::SharedMessagePtr message(std::string_view text) {
  return chat::encode_delivery({"room-1", 7, "e1", "{\"message\":\"" + std::string(text) + "\"}"});
}

// Returns what the buffers hold, joined.
std::string joined(const std::vector<boost::asio::const_buffer>& buffers) {
  std::string out;
  for (const auto& b : buffers) out.append(static_cast<const char*>(b.data()), b.size());
  return out;
}

std::string whole_frame(const chat::Outbound& o) {
  return o.shared ? o.shared->frame.head + o.own + o.shared->frame.tail : o.own;
}

}  // namespace

TEST(SockJsWsFraming, BatchIsOneArrayOfTheWholeFramesEscaped) {
  // Quotes, a line separator and a NUL: the shared parts need escaping.
  auto m = message("점심 \\\"🍜\\\" \u2028 at 12");
  std::vector<chat::Outbound> batch{{m, "sub-0"}, {nullptr, "RECEIPT\nreceipt-id:1\n\n" + std::string(1, '\0')},
                                    {m, "sub\\c1"}};
  auto framing = net::make_sockjs_ws_framing(std::chrono::milliseconds(25000));
  framing->begin_write();
  std::string header;
  std::vector<boost::asio::const_buffer> buffers;
  std::size_t bytes = 0;
  for (auto& o : batch) bytes += o.size();
  framing->append_batch(batch, bytes, header, buffers);

  std::vector<std::string> frames;
  for (auto& o : batch) frames.push_back(whole_frame(o));
  std::vector<std::string_view> views(frames.begin(), frames.end());
  std::string expected;
  sockjs::append_messages(expected, views);
  std::string expected_header;
  ws::append_header(expected_header, ws::Opcode::text, expected.size());
  EXPECT_EQ(joined(buffers), expected_header + expected);
}

TEST(SockJsWsFraming, SharedPartsAreEscapedOncePerMessage) {
  auto m = message("hi \"there\"");
  const auto* first = &m->encoded_parts(&sockjs::append_escaped);
  std::vector<chat::Outbound> batch{{m, "sub-0"}, {m, "sub-1"}};
  auto a = net::make_sockjs_ws_framing(std::chrono::milliseconds(25000));
  auto b = net::make_sockjs_ws_framing(std::chrono::milliseconds(25000));
  std::string ha, hb;
  std::vector<boost::asio::const_buffer> ba, bb;
  a->append_batch(batch, 0, ha, ba);
  b->append_batch(batch, 0, hb, bb);
  // Every subscriber of every session reads the same escaped parts.
  EXPECT_EQ(&m->encoded_parts(&sockjs::append_escaped), first);
  std::string escaped_head;
  sockjs::append_escaped(escaped_head, m->frame.head);
  EXPECT_EQ(first->head, escaped_head);
  EXPECT_EQ(joined(ba), joined(bb));
}

TEST(RawWsFraming, BatchIsTheFramesAsTheyAre) {
  auto m = message("hello");
  std::vector<chat::Outbound> batch{{m, "sub-0"}, {nullptr, "RECEIPT\nreceipt-id:1\n\n" + std::string(1, '\0')}};
  std::size_t bytes = 0;
  std::string expected;
  for (auto& o : batch) {
    bytes += o.size();
    expected += whole_frame(o);
  }
  std::string header;
  std::vector<boost::asio::const_buffer> buffers;
  net::raw_ws_framing().append_batch(batch, bytes, header, buffers);
  std::string expected_header;
  ws::append_header(expected_header, ws::Opcode::text, bytes);
  EXPECT_EQ(joined(buffers), expected_header + expected);
}
