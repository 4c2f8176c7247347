#include "net/health.h"

#include <boost/json.hpp>

#include <sstream>

namespace chatd::net {

std::string health_json(const chat::NodeView& node, const ConnectionCounts& conns, bool shutting_down, bool& up) {
  const auto bus = node.bus_health();
  const auto store = node.store_health();
  up = bus.up && store.up && !shutting_down;
  boost::json::object o{
      {"status", up ? "UP" : "DOWN"},
      {"node", node.node_id()},
      {"bus", {{"up", bus.up}, {"detail", bus.detail}}},
      {"store", {{"up", store.up}, {"detail", store.detail}}},
      {"connections", conns.open},
      {"sessions", node.counters().sessions},
  };
  if (shutting_down) o["detail"] = "shutting down";
  return boost::json::serialize(o);
}

std::string metrics_text(const chat::NodeView& node, const ConnectionCounts& conns) {
  std::ostringstream out;
  const auto c = node.counters();
  auto gauge = [&](const char* name, const char* help, auto v, const char* type = "gauge") {
    out << "# HELP " << name << ' ' << help << "\n# TYPE " << name << ' ' << type << '\n' << name << ' ' << v << '\n';
  };
  gauge("chatd_connections", "Open TCP connections.", conns.open);
  gauge("chatd_stomp_sessions", "Open STOMP sessions.", c.sessions);
  gauge("chatd_bus_up", "1 when the message engine is reachable.", node.bus_health().up ? 1 : 0);
  gauge("chatd_store_up", "1 when the room store is reachable.", node.store_health().up ? 1 : 0);
  gauge("chatd_connections_accepted_total", "Connections accepted.", conns.accepted, "counter");
  gauge("chatd_connections_refused_total", "Connections refused over max-connections.", conns.refused, "counter");
  gauge("chatd_accept_failures_total", "Connections left waiting because the process was out of files (or memory); each pauses accepting 100 ms.",
        conns.accept_failures, "counter");
  gauge("chatd_messages_published_total", "Chat messages this node published.", c.published, "counter");
  gauge("chatd_messages_received_total", "Messages this node received from the bus.", c.delivered_from_bus, "counter");
  gauge("chatd_deliveries_total", "MESSAGE frames queued to local subscribers.", c.deliveries, "counter");
  gauge("chatd_socket_writes_total", "System calls writing to client sockets (divide by deliveries for writes per delivery).",
        conns.socket_writes, "counter");
  gauge("chatd_write_timeouts_total", "Connections reset for taking no byte of a pending write within --write-timeout-ms.",
        conns.write_timeouts, "counter");
  gauge("chatd_slow_consumers_total", "Sessions closed for not reading fast enough.", c.slow_consumers, "counter");
  gauge("chatd_history_memory_bytes", "History (replays past --max-outbound-bytes, large REST answers) waiting for clients; at most --max-history-memory.",
        c.history_memory);
  gauge("chatd_protocol_errors_total", "Sessions closed for STOMP protocol errors.", c.protocol_errors, "counter");
  gauge("chatd_chat_rejections_total", "Chat messages rejected by the chat rules.", c.chat_rejections, "counter");
  out << "# HELP chatd_refusals_total Requests, frames and connections refused to protect the node, by reason.\n"
         "# TYPE chatd_refusals_total counter\n";
  for (std::size_t i = 0; i < c.refusals.size(); ++i) {
    out << "chatd_refusals_total{reason=\"" << chat::to_string(static_cast<chat::Refusal>(i)) << "\"} "
        << c.refusals[i] << '\n';
  }
  out << node.integration_metrics();
  return out.str();
}

}  // namespace chatd::net
