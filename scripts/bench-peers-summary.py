#!/usr/bin/env python3
"""The table of scripts/bench-peers.sh: median (min-max) over the rounds of
every system, CPU per delivered message and the ratios Herald / Kannel.

usage: bench-peers-summary.py RESULTS_DIR SYSTEM...

CPU per delivered message: Herald's side sums `herald serve`, RabbitMQ
(beam.smp), every postgres process and redis-server; Kannel's sums bearerbox
and smsbox. RabbitMQ, PostgreSQL and Redis are shared with whatever else runs
on the machine, so Herald's side is also given "net of background": minus
their CPU per second measured during the Kannel runs of the same round (when
nothing of the benchmark uses them), times the Herald run's wall time.
"""
import glob
import json
import os
import re
import statistics
import sys

out, systems = sys.argv[1], sys.argv[2:]
SHARED = ("rabbitmq", "postgres", "redis")


def med(xs, fmt="{:.1f}"):
    xs = [x for x in xs if x is not None]
    if not xs:
        return "-"
    m = statistics.median(xs)
    if len(xs) == 1:
        return fmt.format(m)
    return f"{fmt.format(m)} ({fmt.format(min(xs))}-{fmt.format(max(xs))})"


def runs(system):
    rows = []
    for path in sorted(glob.glob(f"{out}/{system}-[0-9]*.json")):
        m = re.match(rf"{re.escape(system)}-(\d+)\.json$", os.path.basename(path))
        if not m:
            continue
        r = json.load(open(path))
        p = json.load(open(path.replace(".json", ".proc.json")))
        rows.append((int(m.group(1)), r, p))
    return rows


def slow_seconds(system, rnd, r):
    """Lines naming the seconds of a round whose accept p99 passed 50 ms,
    with that second's pressure (scripts/bench-pressure.py): milliseconds
    in which every task waited for the disk (io full), and in which some
    runnable task waited for a CPU (cpu some). The pressure is counted from
    the generator's start, so after a warm-up (`PEERS_WARMUP`) it no longer
    lines up with the measured seconds and is left out."""
    pressure = None
    if not r.get("warmup"):
        try:
            pressure = json.load(open(f"{out}/{system}-{rnd}.pressure.json"))
        except (OSError, ValueError):
            pass

    def at(key, second):
        values = pressure[key] if pressure else []
        return values[second - 1] if second - 1 < len(values) else None

    seconds = r.get("timeline", [])[: int(r["duration_s"])]
    lines = []
    cpu = [v for v in (at("cpu_some", s["t"]) for s in seconds) if v is not None]
    if cpu:
        lines.append(f"round {rnd}: cpu some, median of the sending seconds: "
                     f"{statistics.median(cpu):.0f} ms/s")
    for s in seconds:
        if s["accept_p99_ms"] <= 50:
            continue
        line = f"round {rnd}: second {s['t']}: accept p99 {s['accept_p99_ms']:.0f} ms"
        if at("io_full", s["t"]) is not None:
            line += (f", io full {at('io_full', s['t']):.0f} ms,"
                     f" cpu some {at('cpu_some', s['t']):.0f} ms")
        lines.append(line)
    return lines


def e2e(r):
    # Completed messages over the time from the first request to the last
    # completion (a request left hanging by the server does not stretch it).
    span = r.get("completed_s") or (r["duration_s"] + r["drain_s"])
    return r["delivered"] / max(span, r["duration_s"])


# Background CPU/s of the shared services, per round, from the Kannel runs.
background = {}
for s in systems:
    if not s.startswith("kannel"):
        continue
    for rnd, _, p in runs(s):
        rate = sum(p["cpu_s"].get(g, 0) for g in SHARED) / p["wall_s"]
        background.setdefault(rnd, []).append(rate)
background = {k: statistics.median(v) for k, v in background.items()}

table = {}
print(f"\nresults in {out}; median (min-max) over rounds")
cols = ["offered/s", "accepted/s", "end-to-end/s", "accept p50", "accept p99",
        "->done p50", "->done p99", "lost", "dup cb", "dup submits", "errors",
        "CPU ms/msg", "net ms/msg", "loadavg"]
print(f"{'system':<12}" + "".join(f" {c:>24}" for c in cols))
for s in systems:
    rs = runs(s)
    if not rs:
        continue
    cpu, net = [], []
    for rnd, r, p in rs:
        # The CPU was read around the warm-up too (PEERS_WARMUP): its
        # completed messages count.
        w = r.get("warmup") or {}
        d = max(r["delivered"] + w.get("accepted", 0) - w.get("lost", 0), 1)
        if s == "herald":
            c = p["cpu_s"].get("herald", 0) + sum(p["cpu_s"].get(g, 0) for g in SHARED)
            cpu.append(1000 * c / d)
            bg = background.get(rnd)
            net.append(1000 * (c - bg * p["wall_s"]) / d if bg is not None else None)
        else:
            c = p["cpu_s"].get("kannel", 0)
            cpu.append(1000 * c / d)
            net.append(1000 * c / d)
    loads = [float(p["loadavg_before"].split()[0]) for _, _, p in rs] + \
            [float(p["loadavg_after"].split()[0]) for _, _, p in rs]
    vals = [
        med([r["target_rate"] for _, r, _ in rs], "{:.0f}"),
        med([r["accepted_per_s"] for _, r, _ in rs]),
        med([e2e(r) for _, r, _ in rs]),
        med([r["accept_latency_ms"]["p50"] for _, r, _ in rs], "{:.2f}"),
        med([r["accept_latency_ms"]["p99"] for _, r, _ in rs], "{:.2f}"),
        med([r["to_delivered_ms"]["p50"] or None for _, r, _ in rs], "{:.0f}"),
        med([r["to_delivered_ms"]["p99"] or None for _, r, _ in rs], "{:.0f}"),
        med([r["lost"] for _, r, _ in rs], "{:.0f}"),
        med([r["webhook_duplicates"] for _, r, _ in rs], "{:.0f}"),
        med([r.get("carrier_duplicates") for _, r, _ in rs], "{:.0f}"),
        med([sum(r["errors"].values()) for _, r, _ in rs], "{:.0f}"),
        med(cpu, "{:.2f}"),
        med(net, "{:.2f}"),
        f"{min(loads):.1f}-{max(loads):.1f}",
    ]
    table[s] = statistics.median([e2e(r) for _, r, _ in rs])
    print(f"{s:<12}" + "".join(f" {v:>24}" for v in vals))
    detail = []
    for rnd, r, p in rs:
        c = p["cpu_s"]
        detail.append(f"round {rnd}: delivered {r['delivered']}/{r['accepted']} "
                      f"by {r.get('completed_s', 0):.1f}s (drain end {r['duration_s'] + r['drain_s']:.1f}s), cpu s " +
                      " ".join(f"{k}={v:.1f}" for k, v in sorted(c.items())) +
                      f", wall {p['wall_s']:.1f}s, load {p['loadavg_before']} -> {p['loadavg_after']}")
        detail.extend(slow_seconds(s, rnd, r))
    for line in detail:
        print(f"    {line}")
print("(end-to-end/s: completed / time from the start to the last completion. Completed: Herald = delivered on the")
print(" stream and a signed final webhook; kannel = submit_sm accepted at the simulator (no")
print(" receipts); kannel-dlr/-file = final DLR callback received. CPU ms/msg: Herald +")
print(" RabbitMQ + PostgreSQL + Redis, or bearerbox + smsbox, per completed message; net:")
print(" minus the shared services' background CPU measured during the Kannel runs.)")
print(f"background CPU of RabbitMQ+PostgreSQL+Redis per round (s/s): "
      + ", ".join(f"{k}: {v:.3f}" for k, v in sorted(background.items())))
if "herald" in table:
    for s, v in table.items():
        if s != "herald" and v:
            print(f"ratio herald / {s} (end-to-end/s, medians): {table['herald'] / v:.3f}")
