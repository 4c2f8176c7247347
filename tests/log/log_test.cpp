#include "log/log.h"

#include <gtest/gtest.h>

using namespace chatd::log;

TEST(Log, TextIsOneLineWhateverTheFieldsHold) {
  auto line = format_line(Format::text, 1700000000123, "refused", {{"reason", "http_framing"}, {"who", "a b\nc\"d"}}, 0);
  EXPECT_EQ(line, "chatd: refused reason=http_framing who=\"a b\\nc\\\"d\"\n");
  EXPECT_EQ(format_line(Format::text, 0, "x", {}, 3), "chatd: x suppressed=3\n");
}

TEST(Log, JsonIsOneObjectALine) {
  auto line = format_line(Format::json, 1700000000123, "session_closed", {{"reason", "slow consumer"}, {"ctl", "\x01"}}, 2);
  EXPECT_EQ(line, "{\"ts\":1700000000123,\"event\":\"session_closed\",\"reason\":\"slow consumer\",\"ctl\":\"\\u0001\","
                  "\"suppressed\":2}\n");
}

TEST(Log, EachKindIsRateLimited) {
  int written = 0;
  for (int i = 0; i < 100; ++i) written += event("log_test_flood", {{"i", "x"}});
  // A second boundary may fall inside the loop: at most two seconds' worth.
  EXPECT_GE(written, kLinesPerSecond);
  EXPECT_LE(written, 2 * kLinesPerSecond);
  EXPECT_TRUE(event("log_test_other_kind", {})) << "another kind has its own allowance";
}

TEST(Log, ProseLinesKeepTheirTextAndAreJsonInJsonFormat) {
  EXPECT_EQ(format_message(Format::text, 5, "stopped", "stopped"), "chatd: stopped\n");
  EXPECT_EQ(format_message(Format::json, 5, "webhooks", "webhooks: POST \"x\"\nfailed"),
            "{\"ts\":5,\"event\":\"webhooks\",\"message\":\"webhooks: POST \\\"x\\\"\\nfailed\"}\n");
}
