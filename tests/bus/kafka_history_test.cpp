// The Kafka bus's per-node memory (cache and dedupe window) and its Metadata codec, without a
// broker: these are plain data structures and bytes.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "bus/kafka_history.h"
#include "bus/kafka_topic_id.h"

namespace chatd::bus {
namespace {

using namespace std::chrono_literals;

std::vector<std::uint64_t> seqs_of(const std::vector<Delivery>& ds) {
  std::vector<std::uint64_t> out;
  for (const auto& d : ds) out.push_back(d.seq);
  return out;
}

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

TEST(KafkaHistoryCache, AnswersByRoomAndSaysFromWhereItIsComplete) {
  KafkaHistoryCache cache({.per_room = 3, .ttl = 0ms, .max_bytes = 1 << 20});
  const auto t = now_ms();
  cache.start_partition(0, 101);  // this node started at offset 100
  for (std::uint64_t s = 101; s <= 110; ++s) cache.add(0, s % 2 ? "odd" : "even", s, t, "p" + std::to_string(s));
  auto odd = cache.read(0, {.room_id = "odd", .limit = 10}, t);
  ASSERT_TRUE(odd.known);
  EXPECT_EQ(seqs_of(odd.messages), (std::vector<std::uint64_t>{105, 107, 109})) << "per_room keeps the newest 3";
  EXPECT_EQ(odd.complete_from, 104u) << "complete after the evicted 103";
  EXPECT_EQ(odd.position, 110u);
  EXPECT_EQ(odd.messages[0].payload, "p105");
  EXPECT_EQ(seqs_of(cache.read(0, {.room_id = "odd", .after_seq = 105, .limit = 1}, t).messages),
            (std::vector<std::uint64_t>{107}));
  EXPECT_EQ(seqs_of(cache.read(0, {.room_id = "odd", .before_seq = 109, .limit = 10}, t).messages),
            (std::vector<std::uint64_t>{105, 107}));
  auto unseen = cache.read(0, {.room_id = "quiet", .limit = 10}, t);
  EXPECT_TRUE(unseen.messages.empty());
  EXPECT_EQ(unseen.complete_from, 101u) << "a room never seen is complete from the partition's start";
  cache.advance(0, 120);  // another room's records, or keyless ones
  EXPECT_EQ(cache.read(0, {.room_id = "odd", .limit = 1}, t).position, 120u);
  EXPECT_EQ(cache.position(0), 120u) << "the offset of the partition's next record";
  EXPECT_FALSE(cache.read(1, {.room_id = "odd", .limit = 1}, t).known);
  EXPECT_EQ(cache.position(1), std::nullopt);
}

TEST(KafkaHistoryCache, EvictsByBytesAndAgeAndForgetsARecreatedPartition) {
  KafkaHistoryCache cache({.per_room = 100, .ttl = 60s, .max_bytes = 100});
  const auto t = now_ms();
  cache.start_partition(0, 1);
  for (std::uint64_t s = 1; s <= 20; ++s) cache.add(0, "r" + std::to_string(s % 3), s, t, std::string(10, 'x'));
  EXPECT_LE(cache.bytes(), 100u);
  auto r = cache.read(0, {.room_id = "r1", .limit = 100}, t);
  ASSERT_FALSE(r.messages.empty());
  EXPECT_GT(r.complete_from, 1u);
  EXPECT_LE(r.complete_from, r.messages.front().seq);

  KafkaHistoryCache aged({.per_room = 100, .ttl = 60s, .max_bytes = 1 << 20});
  aged.start_partition(0, 1);
  aged.add(0, "a", 1, t - 120'000, "old");
  aged.add(0, "a", 2, t, "new");
  EXPECT_EQ(seqs_of(aged.read(0, {.room_id = "a", .after_seq = 0, .limit = 10}, t).messages),
            (std::vector<std::uint64_t>{2}));
  aged.start_partition(0, 1);  // the topic was recreated: offsets start again
  EXPECT_TRUE(aged.read(0, {.room_id = "a", .limit = 10}, t).messages.empty());
  EXPECT_EQ(aged.bytes(), 0u);
}

TEST(KafkaDedupeWindow, FirstSeenWinsWithinTheWindowByRecordTime) {
  KafkaDedupeWindow w(5s, 1000);
  const std::int64_t t = 1'000'000;
  EXPECT_FALSE(w.first_or_remember("r", "id", 10, t));
  EXPECT_FALSE(w.first_or_remember("r", "id", 10, t)) << "the same record again (delivery report, then consumer)";
  EXPECT_EQ(w.first_or_remember("r", "id", 12, t + 1000), 10u) << "a later copy is a duplicate";
  EXPECT_FALSE(w.first_or_remember("other", "id", 13, t + 1000)) << "ids are per room";
  EXPECT_EQ(w.find("r", "id", t + 4000), 10u);
  EXPECT_FALSE(w.find("r", "id", t + 6000));
  EXPECT_FALSE(w.first_or_remember("r", "id", 20, t + 6000)) << "past the window: a new message";
  KafkaDedupeWindow small(5s, 2);
  for (int i = 0; i < 10; ++i) small.first_or_remember("r", std::to_string(i), static_cast<std::uint64_t>(i + 1), t);
  EXPECT_FALSE(small.find("r", "0", t)) << "past max_ids the oldest go early";
  EXPECT_EQ(small.find("r", "9", t), 10u);
}

// A Metadata v12 response as a broker writes it, cut short at every byte: never a crash, and
// only the whole answer parses.
TEST(KafkaTopicId, ParsesTheTopicIdAndRefusesTruncatedAnswers) {
  std::string b;
  auto u8 = [&](int v) { b.push_back(static_cast<char>(v)); };
  auto i32 = [&](std::int32_t v) {
    for (int s = 24; s >= 0; s -= 8) u8((v >> s) & 0xff);
  };
  i32(7);                     // correlation id
  u8(0);                      // header tagged fields
  i32(0);                     // throttle
  u8(2);                      // one broker
  i32(1);                     // node id
  u8(10);                     // host, compact
  b += "127.0.0.1";
  i32(9092);
  u8(0);                      // rack: null
  u8(0);                      // tagged
  u8(5);                      // cluster id
  b += "abcd";
  i32(1);                     // controller
  u8(2);                      // one topic
  u8(0), u8(0);               // error 0
  u8(6);                      // name
  b += "topic";
  for (int i = 0; i < 16; ++i) u8(0xf0 + i);  // topic id
  u8(0);                      // is_internal
  u8(1);                      // no partitions
  i32(0);                     // authorized ops
  u8(0);                      // tagged
  u8(0);                      // tagged

  auto t = kafka_meta::parse_metadata_response(b, 7);
  ASSERT_TRUE(t);
  EXPECT_EQ(t->error, 0);
  EXPECT_EQ(t->id, "8PHy8_T19vf4-fr7_P3-_w");  // java.util.Base64 URL encoder, no padding
  EXPECT_FALSE(kafka_meta::parse_metadata_response(b, 8)) << "another request's answer";
  const std::size_t id_end = b.size() - 8;
  for (std::size_t cut = 0; cut < id_end; ++cut)
    EXPECT_FALSE(kafka_meta::parse_metadata_response(std::string_view(b).substr(0, cut), 7)) << cut;
  const std::string req = kafka_meta::encode_metadata_request(7, "c", "topic");
  EXPECT_EQ(static_cast<std::size_t>(req[3]) + 4, req.size()) << "size prefix";
  EXPECT_EQ(req.substr(4, 4), std::string("\0\3\0\14", 4)) << "api 3 (Metadata), version 12";
}

}  // namespace
}  // namespace chatd::bus
