#!/usr/bin/env bash
# `make bench-peers`: Herald and Kannel side by side, in one session, against
# the same SMSC simulator (`herald sim smsc`: window 10, 5 ms submit latency,
# receipts 50 ms after the submit) and the same open-loop load
# (herald-loadtest; `--target kannel` drives smsbox's HTTP sendsms).
#
# Systems, run alternately in every round so they share the machine's
# conditions:
#   herald        Herald with the bench profile (config/bench.toml), one SMPP
#                 bind, window 10, carrier TPS $PEERS_TPS (not the limit);
#                 receipts on, completion = `delivered` on the stream and a
#                 signed final webhook (4 fresh tenants a run)
#   kannel        Kannel as shipped (no message store), no receipts:
#                 completion = submit_sm accepted at the simulator
#   kannel-dlr    Kannel, no store, receipts and DLR callbacks
#                 (dlr-mask $PEERS_DLR_MASK to the generator's receiver)
#   kannel-file   Kannel with `store-type = file`, receipts and DLR callbacks
# Kannel is the Debian package (bearerbox + smsbox, both started with -v 4),
# configured from loadtest/peers/kannel.conf.in into a temporary directory;
# it is installed with apt-get when missing.
#
# Per run: the loadtest JSON, utime+stime of every process involved (from
# /proc/<pid>/stat, before and after), the load average before and after,
# and each second's CPU and disk pressure (scripts/bench-pressure.py: the
# summary names the seconds whose accept p99 passed 50 ms and whether the
# disk stalled everything in them; without PEERS_WARMUP, as the pressure
# is counted from the generator's start).
# At the end: the median (min-max) table, the ratios, and a latency-over-time
# plot (scripts/bench-plot.py, matplotlib) of the first round.
#
# Settings (environment): PEERS_RUNS (rounds, default 3), PEERS_DURATION
# (default 20s), PEERS_DRAIN (default 60s), PEERS_WARMUP (default 0s: sent
# at the same rate before each measured run and left out of its figures but
# for CPU per message, whose count includes the warm-up's messages), PEERS_HERALD_RATE (default 300),
# PEERS_KANNEL_RATE (default 1500), PEERS_SYSTEMS (default "herald kannel
# kannel-dlr kannel-file"), PEERS_TPS (Herald's configured carrier TPS,
# default 5000), PEERS_HERALD_BINDS (Herald's SMPP binds, default 1 as
# Kannel's; a diagnostic knob, the comparison uses 1), PEERS_DLR_MASK (default 11: SMSC ack, delivered,
# undelivered; Herald's `sent` and final webhooks), PEERS_WEBHOOK_STATUSES
# (the statuses Herald's endpoints ask for; default the same callbacks,
# sent,delivered,undelivered,failed,expired,rejected; "all": every one), PEERS_BIN (directory of
# prebuilt `herald` and `herald-loadtest`; default: build them),
# PEERS_CONFIG_DIR (Herald's config directory, default ./config; with
# PEERS_BIN it must come from the binary's commit, or Herald refuses keys it
# does not know),
# PEERS_HERALD_ARGS (more herald-loadtest arguments for the Herald runs, e.g.
# "--find-max --step-rate 100 --step-duration 10s": the table then shows the
# last step), PEERS_OUT (results directory), PEERS_KEEP_DB=1 (keep the herald_peers
# database; by default it is dropped at the end, with the run's RabbitMQ
# queues and Redis keys), PEERS_PLOT (default bench-peers-latency.png
# in the results directory).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/herald-target}
RUNS=${PEERS_RUNS:-3}
DURATION=${PEERS_DURATION:-20s}
DRAIN=${PEERS_DRAIN:-60s}
WARMUP=${PEERS_WARMUP:-0s}
HERALD_RATE=${PEERS_HERALD_RATE:-300}
KANNEL_RATE=${PEERS_KANNEL_RATE:-1500}
SYSTEMS=${PEERS_SYSTEMS:-"herald kannel kannel-dlr kannel-file"}
TPS=${PEERS_TPS:-5000}
BINDS=${PEERS_HERALD_BINDS:-1}
DLR_MASK=${PEERS_DLR_MASK:-11}
# The statuses Herald's webhook endpoints ask for: those Kannel's dlr-mask 11
# calls back for (SMSC ack = sent, delivered, undelivered) plus Herald's other
# final ones. "all": every status (Herald's default).
WEBHOOK_STATUSES=${PEERS_WEBHOOK_STATUSES:-sent,delivered,undelivered,failed,expired,rejected}
[ "$WEBHOOK_STATUSES" = all ] && WEBHOOK_STATUSES=
OUT=${PEERS_OUT:-$CARGO_TARGET_DIR/bench-peers/$(date -u +%Y%m%dT%H%M%SZ)}
PLOT=${PEERS_PLOT:-$OUT/bench-peers-latency.png}
# Ports of their own (29xxx), so `make bench` (18xxx), bench-backlog.sh
# (28xxx) or tests can run beside this; refused if any is taken, so a run
# never talks to someone else's Herald or simulator.
SMPP_PORT=29775
CTL=http://127.0.0.1:29776
HERALD_PORT=29080
URL=http://127.0.0.1:$HERALD_PORT
ADMIN=bench-admin-token
K_ADMIN=29000 K_SMSBOX=29001 K_SENDSMS=29013
mkdir -p "$OUT"

say() { echo "bench-peers.sh: $*" >&2; }
. scripts/bench-lib.sh
for port in $SMPP_PORT ${CTL##*:} $HERALD_PORT $K_ADMIN $K_SMSBOX $K_SENDSMS; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    say "port $port is in use (another benchmark running?); not starting"
    exit 1
  fi
done

scripts/services.sh
if ! command -v bearerbox >/dev/null && [ ! -x /usr/sbin/bearerbox ]; then
  say "installing kannel (Debian package)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kannel >/dev/null
fi
BEARERBOX=$(command -v bearerbox || echo /usr/sbin/bearerbox)
SMSBOX=$(command -v smsbox || echo /usr/sbin/smsbox)

if [ -n "${PEERS_BIN:-}" ]; then
  BIN=$PEERS_BIN
else
  say "building release binaries"
  cargo build --release -p herald -p herald-loadtest
  BIN=$CARGO_TARGET_DIR/release
fi

PIDS=()
KPIDS=()
stop_kannel() {
  for p in "${KPIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${KPIDS[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
  done
  KPIDS=()
}
cleanup() {
  stop_kannel
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  # Herald's queues of this benchmark (quorum queues would pile up).
  rabbitmqctl list_queues -q name 2>/dev/null | grep '^herald_peers\.' |
    while read -r q; do rabbitmqctl delete_queue -q "$q" </dev/null >/dev/null 2>&1 || true; done
  # Its Redis keys (submission ledger, idempotency; they would live for days).
  redis-cli -h 127.0.0.1 --scan --pattern 'herald_peers:*' 2>/dev/null |
    xargs -r -n 1000 redis-cli -h 127.0.0.1 unlink >/dev/null 2>&1 || true
  [ -n "${PEERS_KEEP_DB:-}" ] || dropdb -h 127.0.0.1 -U postgres --if-exists herald_peers 2>/dev/null || true
}
trap cleanup EXIT

# The SMSC simulator: the same settings as scripts/bench.sh.
cat > "$OUT/smsc.toml" <<TOML
smpp_addr = "127.0.0.1:$SMPP_PORT"
http_addr = "127.0.0.1:${CTL##*:}"
credentials = [["herald", "secret"]]
record = true
[behaviour]
latency_ms = 5
window = 10
receipts = true
receipt_delay_ms = 50
TOML
"$BIN/herald" sim smsc --config "$OUT/smsc.toml" >"$OUT/smsc.log" 2>&1 &
SIM_PID=$!
PIDS+=($SIM_PID)

# Herald: the bench profile on ports, database and prefixes of its own; one
# SMPP bind, window 10, like Kannel's.
cat > "$OUT/carriers.toml" <<TOML
[[carrier]]
id = "bench-smsc"
kind = "smpp"
binds = $BINDS
tps = $TPS
window = 10
[carrier.smpp]
host = "127.0.0.1"
port = $SMPP_PORT
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
export HERALD_CONFIG_DIR=${PEERS_CONFIG_DIR:-$ROOT/config}
export HERALD__HTTP__PORT=$HERALD_PORT
export HERALD__DATABASE__URL=postgres://postgres@127.0.0.1:5432/herald_peers
export HERALD__BROKER__PREFIX=herald_peers
export HERALD__REDIS__PREFIX=herald_peers
export HERALD__ROUTING__CARRIERS_FILE=$OUT/carriers.toml
export HERALD__ROUTING__ROUTES_FILE=$OUT/routes.toml
start_herald herald_peers

tenant() { new_tenant "$1" sms 100000; } # name -> api key

start_kannel() { # store: none|file
  local dir=$OUT/kannel-$1
  rm -rf "$dir"; mkdir -p "$dir"
  local store=""
  [ "$1" = file ] && store="store-type = file
store-location = \"$dir/kannel.store\""
  awk -v store="$store" -v dir="$dir" -v smpp="$SMPP_PORT" -v admin="$K_ADMIN" \
      -v box="$K_SMSBOX" -v http="$K_SENDSMS" '
    { gsub(/@DIR@/, dir); gsub(/@SMPP_PORT@/, smpp); gsub(/@ADMIN_PORT@/, admin);
      gsub(/@SMSBOX_PORT@/, box); gsub(/@SENDSMS_PORT@/, http) }
    /^@STORE@$/ { print store; next }
    { print }' loadtest/peers/kannel.conf.in >"$dir/kannel.conf"
  "$BEARERBOX" -v 4 "$dir/kannel.conf" >"$dir/bearerbox.out" 2>&1 &
  KPIDS+=($!)
  for _ in $(seq 1 50); do (exec 3<>"/dev/tcp/127.0.0.1/$K_SMSBOX") 2>/dev/null && break; sleep 0.2; done
  "$SMSBOX" -v 4 "$dir/kannel.conf" >"$dir/smsbox.out" 2>&1 &
  KPIDS+=($!)
  for _ in $(seq 1 50); do
    curl -fs "http://127.0.0.1:$K_ADMIN/status.txt?password=bench" 2>/dev/null | grep -q 'online' && break
    sleep 0.2
  done
  for _ in $(seq 1 50); do (exec 3<>"/dev/tcp/127.0.0.1/$K_SENDSMS") 2>/dev/null && break; sleep 0.2; done
  curl -fs "http://127.0.0.1:$K_ADMIN/status.txt?password=bench" >"$dir/status-start.txt" || true
}

# utime+stime (ticks) of every process of interest, as JSON.
ticks() {
  python3 - "$HERALD_PID" "$SIM_PID" "${KPIDS[@]:-}" <<'PY'
import json, os, sys
herald, sim, kannel = sys.argv[1], sys.argv[2], [p for p in sys.argv[3:] if p]
def stat(pid):
    try:
        f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return int(f[11]) + int(f[12])
    except (OSError, IndexError):
        return None
def comm(pid):
    try:
        return open(f"/proc/{pid}/comm").read().strip()
    except OSError:
        return ""
out = {"herald": {herald: stat(herald)}, "sim": {sim: stat(sim)},
       "kannel": {p: stat(p) for p in kannel}, "rabbitmq": {}, "postgres": {},
       "redis": {}}
for pid in os.listdir("/proc"):
    if not pid.isdigit():
        continue
    c = comm(pid)
    group = {"beam.smp": "rabbitmq", "postgres": "postgres", "redis-server": "redis",
             }.get(c)
    if group:
        t = stat(pid)
        if t is not None:
            out[group][pid] = t
print(json.dumps(out))
PY
}

loadtest() { # json-file, args…
  local json=$1; shift
  # Its own CPU (user system seconds), which /proc cannot give: it has
  # exited by the time the "after" figures are read.
  /usr/bin/time -f '%U %S' -o "$json.cpu" \
    "$BIN/herald-loadtest" --duration "$DURATION" --drain "$DRAIN" --warmup "$WARMUP" --smsc-control "$CTL" \
    --json "$json" "$@"
}

for run in $(seq 1 "$RUNS"); do
  for s in $SYSTEMS; do
    say "round $run: $s"
    curl -fs -X POST "$CTL/reset" >/dev/null
    case $s in
      herald)
        keys=$(for i in 1 2 3 4; do tenant "peers-$run-$i"; done | paste -sd, -)
        ;;
      kannel|kannel-dlr) start_kannel none ;;
      kannel-file) start_kannel file ;;
      *) say "unknown system $s"; continue ;;
    esac
    load0=$(cut -d' ' -f1-3 /proc/loadavg)
    t0=$(ticks); w0=$(date +%s.%N)
    python3 scripts/bench-pressure.py "$OUT/$s-$run.pressure.json" "$w0" &
    PRESSURE_PID=$!
    case $s in
      herald)
        # shellcheck disable=SC2086 # PEERS_HERALD_ARGS is a list of arguments
        loadtest "$OUT/$s-$run.json" --url "$URL" --rate "$HERALD_RATE" --keys "$keys" \
          ${WEBHOOK_STATUSES:+--webhook-statuses "$WEBHOOK_STATUSES"} ${PEERS_HERALD_ARGS:-} | tee "$OUT/$s-$run.txt"
        ;;
      kannel)
        loadtest "$OUT/$s-$run.json" --target kannel --url "http://127.0.0.1:$K_SENDSMS" \
          --rate "$KANNEL_RATE" | tee "$OUT/$s-$run.txt"
        ;;
      kannel-dlr|kannel-file)
        loadtest "$OUT/$s-$run.json" --target kannel --url "http://127.0.0.1:$K_SENDSMS" \
          --rate "$KANNEL_RATE" --dlr-mask "$DLR_MASK" | tee "$OUT/$s-$run.txt"
        ;;
    esac
    t1=$(ticks); w1=$(date +%s.%N)
    kill "$PRESSURE_PID" 2>/dev/null || true
    wait "$PRESSURE_PID" 2>/dev/null || true
    load1=$(cut -d' ' -f1-3 /proc/loadavg)
    curl -fs "$CTL/stats" >"$OUT/$s-$run.smsc.json" || true
    python3 - "$OUT/$s-$run.proc.json" "$t0" "$t1" "$w0" "$w1" "$load0" "$load1" <<'PY'
import json, os, sys
path, t0, t1, w0, w1, l0, l1 = sys.argv[1:]
t0, t1 = json.loads(t0), json.loads(t1)
hz = os.sysconf("SC_CLK_TCK")
cpu = {}
for group in t1:
    # Processes that started during the run count from zero; ones that ended
    # during it are missed (none of the long-lived ones do).
    d = sum((v or 0) - (t0.get(group, {}).get(pid) or 0) for pid, v in t1[group].items())
    cpu[group] = max(d, 0) / hz
try:
    cpu["loadtest"] = sum(float(x) for x in open(path.replace(".proc.json", ".json.cpu")).read().split()[-2:])
except (OSError, ValueError):
    pass
json.dump({"cpu_s": cpu, "wall_s": float(w1) - float(w0),
           "loadavg_before": l0, "loadavg_after": l1}, open(path, "w"))
PY
    case $s in kannel*) curl -fs "http://127.0.0.1:$K_ADMIN/status.txt?password=bench" >"$OUT/$s-$run.status.txt" || true; stop_kannel ;; esac
  done
done

python3 scripts/bench-peers-summary.py "$OUT" $SYSTEMS | tee "$OUT/summary.txt"
if python3 -c 'import matplotlib' 2>/dev/null; then
  python3 scripts/bench-plot.py "$OUT" "$PLOT" && say "plot: $PLOT"
else
  say "no matplotlib (pip install matplotlib): no plot"
fi
say "results in $OUT"
