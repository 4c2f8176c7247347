// chatd::bus — a Kafka topic's id (the UUID the controller gives a topic when it is created; a
// deleted and recreated topic gets a new one), which the Kafka bus uses as the history epoch.
// Debian's librdkafka 2.0.2 has no call that returns it (rd_kafka_TopicDescription_topic_id
// came in 2.3), so this asks a broker itself: one Metadata v12 request over a plain TCP socket.
// The codec half is pure (bytes in, answer out) and the fetch half blocks: start-up and the
// consumer thread's periodic check only.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace chatd::bus::kafka_meta {

// Returns a Metadata v12 request for `topic`, size prefix included.
std::string encode_metadata_request(std::int32_t correlation_id, std::string_view client_id, std::string_view topic);

struct TopicId {
  std::int16_t error = 0;  // the broker's error code for the topic (3: unknown topic)
  std::string id;          // Kafka's own rendering: URL-safe base64 of the 16 bytes, no padding
};
// Reads the response body (after the size prefix) to a request made by
// encode_metadata_request. Returns nullopt if it is not one (wrong correlation id, truncated).
std::optional<TopicId> parse_metadata_response(std::string_view body, std::int32_t correlation_id);

// Asks the brokers in `bootstrap` ("host:port,host:port") in turn. Returns the topic's id, or
// nullopt with `why` set; each broker gets at most `timeout`.
std::optional<std::string> fetch_topic_id(const std::string& bootstrap, const std::string& topic,
                                          std::chrono::milliseconds timeout, std::string& why);

}  // namespace chatd::bus::kafka_meta
