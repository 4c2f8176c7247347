#!/usr/bin/env python3
"""Turns bench/run.sh results (JSON lines) into the median table and BENCHMARKS.md."""
import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess

TARGETS = ["chatd", "spring", "rabbitmq", "centrifugo", "ceiling"]
NAMES = {"chatd": "chatd", "spring": "Spring", "rabbitmq": "RabbitMQ", "centrifugo": "Centrifugo",
         "ceiling": "ceiling (nbio)"}

# (scenario, field, label, unit, better)
ROWS = [
    ("idle-{small}", "conns_held", "idle {small_n}: connections held", "", "higher"),
    ("idle-{small}", "server_rss_per_conn_kb", "idle {small_n}: server RSS per connection", "KiB", "lower"),
    ("idle-{big}", "conns_held", "idle {big_n}: connections held", "", "higher"),
    ("idle-{big}", "server_rss_per_conn_kb", "idle {big_n}: server RSS per connection", "KiB", "lower"),
    ("fanout", "deliveries_per_s", "fan-out 1×{fan}: deliveries/s", "/s", "higher"),
    ("fanout", "deliveries_per_cpu_s", "fan-out 1×{fan}: deliveries per server CPU-s", "", "higher"),
    ("fanout", "p50_us", "fan-out 1×{fan}: latency p50", "ms", "lower"),
    ("fanout", "p99_us", "fan-out 1×{fan}: latency p99", "ms", "lower"),
    ("fanout-b20", "deliveries_per_s", "fan-out 1×{fan}, bursts of 20: deliveries/s", "/s", "higher"),
    ("fanout-b20", "deliveries_per_cpu_s", "fan-out 1×{fan}, bursts of 20: deliveries per server CPU-s", "", "higher"),
    ("fanout-b20", "p99_us", "fan-out 1×{fan}, bursts of 20: latency p99", "ms", "lower"),
    ("fanout-b20", "writes_per_sub_burst", "fan-out 1×{fan}, bursts of 20: server writes per subscriber per burst", "", "lower"),
    ("fanout-b1", "deliveries_per_s", "fan-out 1×{fan}, single messages: deliveries/s", "/s", "higher"),
    ("fanout-b1", "deliveries_per_cpu_s", "fan-out 1×{fan}, single messages: deliveries per server CPU-s", "", "higher"),
    ("fanout-b1", "p99_us", "fan-out 1×{fan}, single messages: latency p99", "ms", "lower"),
    ("fanout-b1", "writes_per_sub_burst", "fan-out 1×{fan}, single messages: server writes per subscriber per message", "", "lower"),
    ("rooms-max", "sent_per_s", "rooms {rooms}×10 max: messages/s in", "/s", "higher"),
    ("rooms-max", "deliveries_per_s", "rooms {rooms}×10 max: deliveries/s", "/s", "higher"),
    ("rooms-max", "deliveries_per_cpu_s", "rooms {rooms}×10 max: deliveries per server CPU-s", "", "higher"),
]
for pct in (25, 50, 75):
    ROWS += [
        (f"rooms-{pct}", "rate_target", f"rooms {{rooms}}×10 @{pct}% of own max: rate", "/s", "info"),
        (f"rooms-{pct}", "p50_us", f"rooms {{rooms}}×10 @{pct}%: latency p50", "ms", "lower"),
        (f"rooms-{pct}", "p99_us", f"rooms {{rooms}}×10 @{pct}%: latency p99", "ms", "lower"),
    ]
ROWS += [
    ("rooms-common", "rate_target", "rooms {rooms}×10 @ same rate for all: rate", "/s", "info"),
    ("rooms-common", "p50_us", "rooms {rooms}×10 @ same rate: latency p50", "ms", "lower"),
    ("rooms-common", "p99_us", "rooms {rooms}×10 @ same rate: latency p99", "ms", "lower"),
    ("rooms-common", "p999_us", "rooms {rooms}×10 @ same rate: latency p99.9", "ms", "lower"),
]
for eng in ("redis", "kafka"):
    ROWS += [
        (f"2nodes-{eng}-max", "deliveries_per_s", f"2 nodes via {eng}, rooms max: deliveries/s", "/s", "higher"),
        (f"2nodes-{eng}-max", "lost", f"2 nodes via {eng}, rooms max: lost (seq gaps)", "", "lower"),
        (f"2nodes-{eng}-50", "p50_us", f"2 nodes via {eng} @50%: latency p50", "ms", "lower"),
        (f"2nodes-{eng}-50", "p99_us", f"2 nodes via {eng} @50%: latency p99", "ms", "lower"),
        (f"2nodes-{eng}-fixed", "rate_target", f"2 nodes via {eng} @ fixed rate: rate", "/s", "info"),
        (f"2nodes-{eng}-fixed", "p50_us", f"2 nodes via {eng} @ fixed rate: latency p50", "ms", "lower"),
        (f"2nodes-{eng}-fixed", "p99_us", f"2 nodes via {eng} @ fixed rate: latency p99", "ms", "lower"),
        # How late the generator itself sent (already inside the latency): what it adds to the tail.
        (f"2nodes-{eng}-fixed", "send_lag_p99_us", f"2 nodes via {eng} @ fixed rate: generator send lag p99 (included above)", "ms", "info"),
    ]
# How busy each core was in the measured window: a generator near 100 % caps the row it measures.
# At a fraction of the maximum the server may still be nearly full: one write per delivery
# costs more than the batched writes the maximum was measured with.
for scen, name in (("fanout", "fan-out 1×{fan}"), ("fanout-b20", "fan-out 1×{fan}, bursts of 20"),
                   ("fanout-b1", "fan-out 1×{fan}, single messages"), ("rooms-max", "rooms {rooms}×10 max"),
                   ("rooms-25", "rooms {rooms}×10 @25%"), ("rooms-50", "rooms {rooms}×10 @50%")):
    ROWS += [
        (scen, "server_busy_pct", f"{name}: server core busy", "%", "info"),
        (scen, "gen_busy_pct", f"{name}: generator core busy", "%", "info"),
    ]
# Quality columns: any non-zero value makes a run's figures suspect, so they are shown too.
CHECKS = ["lost", "undelivered", "reordered", "errors", "conns_failed", "conns_dropped", "send_skipped"]


def sh(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception:
        return ""


def machine():
    model = next((l.split(":", 1)[1].strip() for l in sh("lscpu").splitlines()
                  if l.startswith("Model name")), platform.processor())
    mem_kb = next((int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal")), 0)
    load = open("/proc/loadavg").read().split()[:3]
    # Other work on the machine shows in every figure; the load average says how much there was.
    return (f"{model}, {os.cpu_count()} cores, {mem_kb / 1048576:.1f} GiB RAM, Linux {platform.release()}; "
            f"load average {' '.join(load)} when written")


def fmt(v, unit):
    if v is None:
        return "–"
    if unit == "ms":
        return f"{v / 1000:.2f}"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:.2f}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", required=True)
    ap.add_argument("--command", default="bench/run.sh")
    ap.add_argument("--quick", type=int, default=0)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--write")
    a = ap.parse_args()

    runs, skips, warm = {}, [], {}
    for line in open(a.results):
        if not line.strip():
            continue
        r = json.loads(line)
        if "skipped" in r:
            skips.append(r)
        else:
            x = r["r"]
            d = x.get("duration_s") or 0
            if d > 0:
                for src, dst in (("server_cpu_s", "server_busy_pct"), ("loadgen_cpu_s", "gen_busy_pct")):
                    if x.get(src, -1) >= 0:
                        x[dst] = 100 * x[src] / d
            if r["scenario"].startswith("warm-"):
                warm.setdefault((r["target"], r["scenario"][5:]), []).append((r["rep"], x))
            else:
                runs.setdefault((r["target"], r["scenario"]), []).append(x)

    def med(t, s, f):
        v = [x[f] for x in runs.get((t, s), []) if x.get(f) is not None and x[f] != -1
             and not (f.endswith("_us") and x.get("lat_count", 0) == 0)]
        return statistics.median(v) if v else None

    small, big = ("1k", "2k") if a.quick else ("10k", "18k")
    fmtargs = dict(small=small, big=big, small_n=small, big_n=big,
                   fan=200 if a.quick else 1000, rooms=100 if a.quick else 1000)
    present = [t for t in TARGETS if any(k[0] == t for k in runs)]
    peers = [t for t in present if t != "chatd"]
    head = ["scenario", "unit"] + [NAMES[t] for t in present]
    if "chatd" in present:
        head += [f"chatd/{NAMES[p]}" for p in peers]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for scen, field, label, unit, better in ROWS:
        s = scen.format(**fmtargs)
        vals = {t: med(t, s, field) for t in present}
        if all(v is None for v in vals.values()):
            continue
        row = [label.format(**fmtargs), unit] + [fmt(vals[t], unit) for t in present]
        if "chatd" in present:
            for p in peers:
                c, q = vals.get("chatd"), vals.get(p)
                row.append(f"{c / q:.2f}×" if c is not None and q and better != "info" else "–")
        lines.append("| " + " | ".join(row) + " |")
    table = "\n".join(lines)

    checks = []
    for (t, s), rs in sorted(runs.items()):
        bad = {f: med(t, s, f) for f in CHECKS if (med(t, s, f) or 0) > 0}
        if bad:
            checks.append(f"- {NAMES.get(t, t)} {s}: " + ", ".join(f"{k} {v:g}" for k, v in bad.items()))

    # Warm-up curves: deliveries/s of each timed warm-up step, then the measured median.
    wlines = []
    if warm:
        wlines = ["| target | scenario | warm-up steps: deliveries/s | measured median | steps |", "|---|---|---|---|---|"]
        for t in TARGETS:
            for (wt, ws), steps in warm.items():
                if wt != t:
                    continue
                curve = " → ".join(f"{x['deliveries_per_s']:,.0f}" for _, x in sorted(steps, key=lambda p: p[0]))
                m = med(t, ws, "deliveries_per_s")
                wlines.append(f"| {NAMES[t]} | {ws} | {curve} | {fmt(m, '/s')} | {len(steps)} |")
    wtable = "\n".join(wlines)

    print(table)
    if wtable:
        print(wtable)
    for c in checks:
        print(c)
    for s in skips:
        print(f"skipped {s['target']}/{s['scenario']}: {s['skipped']}")

    if a.write:
        commit = sh("git", "rev-parse", "--short", "HEAD")
        if sh("git", "status", "--porcelain", "--untracked-files=no"):
            commit += " (with uncommitted changes)"
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        doc = f"""# Benchmarks

Written by `bench/run.sh` on {now}{' (**--quick smoke run: short, 1 repetition, small sizes; not for comparison**)' if a.quick else ''}.

- Machine: {machine()}
- Commit: `{commit}`
- Command: `{a.command}`
- Method: each server pinned with `taskset` to core 0 (chatd with `--threads 1`), the generator
  (`bench/loadgen`, one thread) to core 1; every figure is the median of {a.reps} run(s). Servers are
  restarted per scenario (per run for the idle ones) and warmed before each traffic scenario
  with that scenario's load in timed steps (5 s each) until a step is no more than 3 % above the best
  before it (at least 3 steps; the JVM peer needs this for its JIT; the curves are below the table). Latency is end to end, from the message's
  intended send time (open-loop schedule, so no coordinated omission; the generator sleeps until
  each message is due, and how late it still sent is shown as its send lag) to its arrival at each
  subscriber; percentiles come from a log-linear histogram with < 1 % bucket error. Deliveries
  are counted at the subscribers inside the measured window; server CPU is utime+stime from
  `/proc/<pid>/stat` over the same window; RSS per connection is the VmRSS growth while the
  connections are held, divided by their number. "@N%" runs each server at N % of its own
  measured maximum (the rate is shown), so latencies there compare equal relative load; "same
  rate" runs every server at one fixed rate. Ratios are chatd ÷ peer: above 1 is better for
  chatd in throughput rows, below 1 in latency and memory rows.
- Peers: Spring Boot 3.2 `@EnableWebSocketMessageBroker` simple broker with ordering preserved
  (`bench/peers/spring`), RabbitMQ 3.10 Web-STOMP with `/topic/<room>` (`bench/peers/rabbitmq`),
  Centrifugo 6.9.1 (`go install` from the Go module proxy, `GOMAXPROCS=1`, anonymous publish and
  subscribe, its JSON protocol over WebSocket: `bench/peers/centrifugo`), and a STOMP-less ceiling:
  a plain WebSocket broadcast on lesismal/nbio, one write per connection per poller turn
  (`bench/peers/ceiling`, generator in `--protocol raw`; its rooms are URL paths, each connection
  upgrading on `/<room>`). Writes per subscriber per burst are the
  server's sendmsg/writev/write/sendto calls counted by `perf stat` over the run.

{table}

"""
        if wtable:
            doc += "Warm-up curves (each step a fresh generator run on the same server process):\n\n" + wtable + "\n\n"
        if checks:
            doc += "Runs with loss, reordering, errors or failed connections (medians):\n\n" + "\n".join(checks) + "\n\n"
        if skips:
            doc += "Skipped:\n\n" + "\n".join(f"- {s['target']}/{s['scenario']}: {s['skipped']}" for s in skips) + "\n\n"
        doc += f"Raw results: `{os.path.relpath(a.results)}` (one JSON line per run, not committed).\n"
        # The sections after the main table (dated, by hand or by other scripts) are kept.
        rest = ""
        if os.path.exists(a.write):
            old = open(a.write).read()
            i = old.find("\n## ")
            if i >= 0:
                rest = old[i + 1:]
        with open(a.write, "w") as f:
            f.write(doc + ("\n" + rest if rest else ""))
        print(f"wrote {a.write}")


if __name__ == "__main__":
    main()
