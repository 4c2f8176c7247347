# Kafka bus tests against ONE real broker for the whole CTest run: the `kafka` fixture starts it
# (scripts/kafka.sh, KRaft, fetched from Maven Central on first use) and stops it at the end.
# Debian's librdkafka starts its threads with C11 thrd_create, which GCC 12's TSan does not
# intercept: any librdkafka program crashes under TSan before a test runs. ASan/UBSan are fine.
if(CHATD_TSAN)
  message(STATUS "Kafka bus tests skipped under TSan (librdkafka's C11 threads are not intercepted)")
  return()
endif()

# Below Linux's ephemeral port range, so no client socket can hold it while the broker restarts.
set(CHATD_TEST_KAFKA_PORT 29092 CACHE STRING "127.0.0.1 port of the Kafka broker the tests start")
set(chatd_kafka_sh ${PROJECT_SOURCE_DIR}/scripts/kafka.sh)
set(chatd_kafka_dir ${CMAKE_BINARY_DIR}/test-kafka)

add_test(NAME kafka_broker_start
         COMMAND ${chatd_kafka_sh} start --fresh --port ${CHATD_TEST_KAFKA_PORT} --dir ${chatd_kafka_dir})
# The first run on a fresh machine fetches the jars: minutes, not seconds.
set_tests_properties(kafka_broker_start PROPERTIES FIXTURES_SETUP kafka TIMEOUT 900 LABELS kafka)
add_test(NAME kafka_broker_stop COMMAND ${chatd_kafka_sh} stop --dir ${chatd_kafka_dir})
set_tests_properties(kafka_broker_stop PROPERTIES FIXTURES_CLEANUP kafka TIMEOUT 60 LABELS kafka)

add_executable(kafka_bus_test kafka_bus_test.cpp)
target_link_libraries(kafka_bus_test PRIVATE chatd_bus PkgConfig::RDKAFKA GTest::gtest_main chatd_warnings)
# The restart test drives the broker itself; the port comes from the environment (below).
target_compile_definitions(kafka_bus_test PRIVATE
  CHATD_TEST_KAFKA_SH="${chatd_kafka_sh}" CHATD_TEST_KAFKA_DIR="${chatd_kafka_dir}")
# RESOURCE_LOCK: the restart test bounces the shared broker, so Kafka tests never overlap.
gtest_discover_tests(kafka_bus_test DISCOVERY_TIMEOUT 30 PROPERTIES
  FIXTURES_REQUIRED kafka RESOURCE_LOCK kafka_broker TIMEOUT 180 LABELS kafka
  ENVIRONMENT CHATD_TEST_KAFKA_PORT=${CHATD_TEST_KAFKA_PORT})
