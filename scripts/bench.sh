#!/usr/bin/env bash
# `make bench`: Herald end to end on this machine, with everything it needs
# on the one box. Builds release binaries, makes sure PostgreSQL, RabbitMQ and
# Redis answer (scripts/services.sh), starts the SMSC simulator (window 10,
# 5 ms submit latency, receipts after 50 ms) and `herald serve` with the bench
# profile (config/bench.toml, a fresh `herald_bench` database), then runs the
# standard scenarios with herald-loadtest and prints their figures.
#
# Scenarios:
#   sms       SMS only, receipts on, completion by stream and signed webhooks
#   flood     one tenant at BENCH_RATE while another sends 5/s (the quiet
#             tenant's latency is the figure)
#   throttle  the SMSC throttles to half the carrier's configured TPS
#             (POST /faults {"max_tps": TPS/2}) while load runs at BENCH_RATE
#   mix       sms=90,whatsapp=8,voice=2: not run (no WhatsApp/voice
#             simulators in this script yet)
#
# Settings (environment): BENCH_RATE (msg/s, default 500), BENCH_DURATION
# (default 30s), BENCH_DRAIN (default 60s), BENCH_TPS (the carrier's
# configured TPS, default 1000), BENCH_RUNS (runs of each scenario, default 1;
# the summary shows the median with min and max), BENCH_SCENARIOS (default
# "sms flood throttle"), BENCH_SKIP_BUILD=1, BENCH_OUT (results directory).
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/herald-target}
RATE=${BENCH_RATE:-500}
DURATION=${BENCH_DURATION:-30s}
DRAIN=${BENCH_DRAIN:-60s}
TPS=${BENCH_TPS:-1000}
RUNS=${BENCH_RUNS:-1}
SCENARIOS=${BENCH_SCENARIOS:-"sms flood throttle"}
OUT=${BENCH_OUT:-$CARGO_TARGET_DIR/bench/$(date -u +%Y%m%dT%H%M%SZ)}
BIN=$CARGO_TARGET_DIR/release
URL=http://127.0.0.1:18080
CTL=http://127.0.0.1:18775
ADMIN=bench-admin-token
mkdir -p "$OUT"

say() { echo "bench.sh: $*" >&2; }
. scripts/bench-lib.sh

scripts/services.sh
if [ -z "${BENCH_SKIP_BUILD:-}" ]; then
  say "building release binaries"
  cargo build --release -p herald -p herald-loadtest
fi

PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

# The SMSC simulator.
cat > "$OUT/smsc.toml" <<TOML
smpp_addr = "127.0.0.1:12775"
http_addr = "127.0.0.1:18775"
credentials = [["herald", "secret"]]
record = true
[behaviour]
latency_ms = 5
window = 10
receipts = true
receipt_delay_ms = 50
TOML
"$BIN/herald" sim smsc --config "$OUT/smsc.toml" >"$OUT/smsc.log" 2>&1 &
PIDS+=($!)

# Herald: one SMPP carrier (2 binds, window 10) for every SMS route.
cat > "$OUT/carriers.toml" <<TOML
[[carrier]]
id = "bench-smsc"
kind = "smpp"
binds = 2
tps = $TPS
window = 10
[carrier.smpp]
host = "127.0.0.1"
port = 12775
system_id = "herald"
password = "secret"
TOML
cat > "$OUT/routes.toml" <<TOML
[[route]]
id = "bench-sms"
channel = "sms"
prefixes = ["+250"]
strategy = "failover"
carriers = ["bench-smsc"]
TOML
export HERALD_PROFILE=bench
export HERALD__ROUTING__CARRIERS_FILE=$OUT/carriers.toml
export HERALD__ROUTING__ROUTES_FILE=$OUT/routes.toml
start_herald herald_bench
curl -fs -X POST "$CTL/reset" >/dev/null || true

tenant() { new_tenant "$1" sms,whatsapp,voice 100000; } # name -> api key

loadtest() { # json-file, args…
  local json=$1; shift
  "$BIN/herald-loadtest" --url "$URL" --drain "$DRAIN" --smsc-control "$CTL" --json "$json" "$@"
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$HERALD_PID/stat"; }
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$HERALD_PID/status"; }

for run in $(seq 1 "$RUNS"); do
  for s in $SCENARIOS; do
    say "run $run: scenario $s"
    t0=$(cpu_ticks)
    case $s in
      sms)
        keys=$(for i in 1 2 3 4; do tenant "bench-$s-$run-$i"; done | paste -sd, -)
        loadtest "$OUT/$s-$run.json" --rate "$RATE" --duration "$DURATION" --keys "$keys" \
          | tee "$OUT/$s-$run.txt"
        ;;
      flood)
        loud=$(tenant "bench-loud-$run"); quiet=$(tenant "bench-quiet-$run")
        loadtest "$OUT/$s-loud-$run.json" --quiet --rate "$RATE" --duration "$DURATION" --keys "$loud" \
          >"$OUT/$s-loud-$run.txt" &
        lp=$!
        loadtest "$OUT/$s-$run.json" --rate 5 --duration "$DURATION" --keys "$quiet" \
          | tee "$OUT/$s-$run.txt"
        wait $lp
        cat "$OUT/$s-loud-$run.txt"
        ;;
      throttle)
        half=$((TPS / 2))
        curl -fs -X POST "$CTL/faults" -H 'Content-Type: application/json' -d "{\"max_tps\": $half}" >/dev/null
        key=$(tenant "bench-$s-$run")
        loadtest "$OUT/$s-$run.json" --rate "$RATE" --duration "$DURATION" --keys "$key" \
          | tee "$OUT/$s-$run.txt"
        curl -fs -X POST "$CTL/faults" -H 'Content-Type: application/json' -d '{"max_tps": null}' >/dev/null
        ;;
      *) say "unknown scenario $s"; continue ;;
    esac
    t1=$(cpu_ticks)
    echo "{\"herald_cpu_s\": $(( (t1 - t0) / $(getconf CLK_TCK) )), \"herald_rss_kb\": $(rss_kb)}" >"$OUT/$s-$run.proc.json"
  done
done

curl -fs "$CTL/stats" >"$OUT/smsc-stats.json" || true
python3 - "$OUT" $SCENARIOS <<'PY'
import json, glob, os, statistics, sys
out, scenarios = sys.argv[1], sys.argv[2:]
def med(xs):
    xs = [x for x in xs if x is not None]
    if not xs: return "-"
    m = statistics.median(xs)
    return f"{m:.1f} ({min(xs):.1f}-{max(xs):.1f})" if len(xs) > 1 else f"{m:.1f}"
print(f"\nresults in {out}; median (min-max) over runs")
cols = ["accepted/s", "end-to-end/s", "accept p50", "accept p99", "accept p99.9", "->delivered p50", "->delivered p99", "lost", "dup webhooks", "dup submits", "errors", "herald CPU s", "RSS MB"]
print(f"{'scenario':<10}" + "".join(f" {c:>21}" for c in cols))
for s in scenarios:
    runs = sorted(glob.glob(f"{out}/{s}-[0-9]*.json"))
    runs = [r for r in runs if not r.endswith(".proc.json")]
    if not runs: continue
    rs = [json.load(open(r)) for r in runs]
    ps = [json.load(open(r.replace(".json", ".proc.json"))) for r in runs if os.path.exists(r.replace(".json", ".proc.json"))]
    vals = [
        med([r["accepted_per_s"] for r in rs]),
        med([r["delivered"] / (r["duration_s"] + r["drain_s"]) for r in rs]),
        med([r["accept_latency_ms"]["p50"] for r in rs]),
        med([r["accept_latency_ms"]["p99"] for r in rs]),
        med([r["accept_latency_ms"]["p999"] for r in rs]),
        med([r["to_delivered_ms"]["p50"] for r in rs]),
        med([r["to_delivered_ms"]["p99"] for r in rs]),
        med([r["lost"] for r in rs]),
        med([r["webhook_duplicates"] for r in rs]),
        med([r.get("carrier_duplicates") for r in rs]),
        med([sum(r["errors"].values()) for r in rs]),
        med([p["herald_cpu_s"] for p in ps]),
        med([p["herald_rss_kb"] / 1024 for p in ps]),
    ]
    print(f"{s:<10}" + "".join(f" {v:>21}" for v in vals))
print("(end-to-end/s: delivered / (sending + drain time), every delivery receipted and")
print(" webhooked; flood: figures of the quiet 5/s tenant; the loud tenant's table is in flood-loud-<run>.txt)")
PY
