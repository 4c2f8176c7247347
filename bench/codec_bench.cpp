// Micro-benchmarks of the STOMP codec: the per-message costs on chatd's hot path.
#include <benchmark/benchmark.h>

#include <string>

#include "stomp/stomp.h"

namespace {

using chatd::stomp::Parser;

const std::string kBody =
    R"({"type":"TALK","roomId":"6f1c2d7e-9a41-4c55-8f0e-3b2a1d9c4e70","sender":"minji",)"
    R"("message":"7시에 강남역 2번 출구에서 만나요! 메뉴는 삼겹살 어때요?"})";

const std::string kSend = "SEND\ndestination:/pub/chat/message\ncontent-type:application/json\n"
                          "content-length:" + std::to_string(kBody.size()) + "\n\n" + kBody + '\0';

// One typical SEND frame parsed from one buffer, as after a WebSocket message.
void BM_ParseSend(benchmark::State& state) {
  Parser parser;
  for (auto _ : state) {
    const auto r = parser.consume(kSend);
    benchmark::DoNotOptimize(parser.frame().body.data());
    if (r.status != Parser::Status::frame) state.SkipWithError("not a frame");
  }
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(kSend.size()));
}
BENCHMARK(BM_ParseSend);

// The same frame arriving in 16-byte pieces: the cost of partial lines and resuming.
void BM_ParseSendIn16ByteReads(benchmark::State& state) {
  Parser parser;
  const std::string_view all(kSend);
  for (auto _ : state) {
    for (std::size_t at = 0; at < all.size(); at += 16) {
      const auto r = parser.consume(all.substr(at, 16));
      benchmark::DoNotOptimize(r);
    }
  }
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(kSend.size()));
}
BENCHMARK(BM_ParseSendIn16ByteReads);

// The split MESSAGE encoding done once per message per node.
void BM_EncodeMessage(benchmark::State& state) {
  for (auto _ : state) {
    auto m = chatd::stomp::encode_message("/sub/chat/room/6f1c2d7e-9a41-4c55-8f0e-3b2a1d9c4e70",
                                          "1732550400000-42", "application/json", kBody);
    benchmark::DoNotOptimize(m.head.data());
    benchmark::DoNotOptimize(m.tail.data());
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_EncodeMessage);

// A whole frame through the generic encoder, e.g. a RECEIPT or ERROR.
void BM_EncodeFrame(benchmark::State& state) {
  chatd::stomp::Frame f;
  f.command = chatd::stomp::Command::message;
  f.headers = {{"destination", "/sub/chat/room/1"}, {"message-id", "42"}, {"subscription", "sub-0"}};
  f.body = kBody;
  for (auto _ : state) {
    auto wire = chatd::stomp::encode(f, chatd::stomp::Version::v1_2);
    benchmark::DoNotOptimize(wire.data());
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_EncodeFrame);

}  // namespace

BENCHMARK_MAIN();
