#!/usr/bin/env bash
# Herald's memory with a backlog: a carrier paused by the operator
# (POST /v1/admin/carriers/{id}/pause) while messages keep being accepted.
# The backlog must live in RabbitMQ and PostgreSQL, not in Herald: its
# resident memory should not grow with the number of messages waiting.
#
# Starts the SMSC simulator and `herald serve` (bench profile, its own
# database, broker and Redis prefixes, ports 28080/22775/28775), pauses the
# carrier, then sends with herald-loadtest until BACKLOG_STEPS messages are
# waiting (default "1000 10000 100000 1000000"), and after each step, once
# the flow has settled, prints Herald's RSS, the carrier queue's depth (AMQP
# messages, up to 16 SMS each) and
# the messages stored. Settings: BACKLOG_STEPS, BACKLOG_RATE (msg/s, default
# 3000), BACKLOG_SKIP_BUILD=1, BACKLOG_OUT (results directory).
#
# BACKLOG_HEAP_PROFILE=1: Herald built with `--features heap-profile`
# (jemalloc's sampling profiler instead of mimalloc) writes a heap profile
# after each step ($OUT/heap.*.heap); compare two with
# `jeprof --text --base=A B` (Debian: libjemalloc-dev). BACKLOG_HEAP_BIN: a
# `herald` already built so, instead of building one.
#
# BACKLOG_SETTLE_MAX: longest wait, in seconds, for the flow to settle after
# a step (default 600). BACKLOG_RESTART=1: after the last step, stop the
# SMSC simulator (so nothing can be delivered) and Herald, start Herald again
# over the same database and queues, and print its RSS 30 and 60 s later:
# a Herald started over the backlog should weigh what one over a thousand
# messages does.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/herald-target}
STEPS=${BACKLOG_STEPS:-"1000 10000 100000 1000000"}
RATE=${BACKLOG_RATE:-3000}
OUT=${BACKLOG_OUT:-$CARGO_TARGET_DIR/bench/backlog-$(date -u +%Y%m%dT%H%M%SZ)}
BIN=$CARGO_TARGET_DIR/release
NAME=herald_backlog
URL=http://127.0.0.1:28080
ADMIN=bench-admin-token
mkdir -p "$OUT"

say() { echo "bench-backlog.sh: $*" >&2; }
. scripts/bench-lib.sh

scripts/services.sh
if [ -z "${BACKLOG_SKIP_BUILD:-}" ]; then
  say "building release binaries"
  cargo build --release -p herald -p herald-loadtest
fi
if [ -n "${BACKLOG_HEAP_PROFILE:-}" ]; then
  say "building Herald with the heap profiler"
  mkdir -p "$OUT/bin"
  cp "$BIN/herald-loadtest" "$OUT/bin/"
  if [ -n "${BACKLOG_HEAP_BIN:-}" ]; then
    cp "$BACKLOG_HEAP_BIN" "$OUT/bin/herald"
  else
    cargo build --release -p herald --features heap-profile
    cp "$BIN/herald" "$OUT/bin/"
    # Back to the default build, so $BIN holds what it held.
    cargo build --release -p herald
  fi
  BIN=$OUT/bin
  # A sample every 128 KiB allocated on average.
  export _RJEM_MALLOC_CONF="prof:true,lg_prof_sample:17,prof_prefix:$OUT/heap"
fi

PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  # What the run left in RabbitMQ: its queues and exchanges.
  for q in $(rabbitmqctl -q list_queues name 2>/dev/null | grep "^$NAME" || true); do
    rabbitmqctl -q delete_queue "$q" >/dev/null 2>&1 || true
  done
  dropdb -h 127.0.0.1 -U postgres --if-exists "$NAME" || true
  # Its Redis keys (an idempotency key per message).
  redis-cli --scan --pattern "$NAME:*" | xargs -r -n 1000 redis-cli del >/dev/null || true
}
trap cleanup EXIT

cat > "$OUT/smsc.toml" <<TOML
smpp_addr = "127.0.0.1:22775"
http_addr = "127.0.0.1:28775"
credentials = [["herald", "secret"]]
record = false
TOML
"$BIN/herald" sim smsc --config "$OUT/smsc.toml" >"$OUT/smsc.log" 2>&1 &
PIDS+=($!)

cat > "$OUT/carriers.toml" <<TOML
[[carrier]]
id = "held"
kind = "smpp"
binds = 1
tps = 1000
window = 10
[carrier.smpp]
host = "127.0.0.1"
port = 22775
system_id = "herald"
password = "secret"
TOML
cat > "$OUT/routes.toml" <<TOML
[[route]]
id = "all-sms"
channel = "sms"
prefixes = ["+"]
carriers = ["held"]
TOML

export HERALD_PROFILE=bench
export HERALD__HTTP__PORT=28080
export HERALD__DATABASE__URL=postgres://postgres@127.0.0.1:5432/$NAME
export HERALD__BROKER__PREFIX=$NAME
export HERALD__REDIS__PREFIX=$NAME
export HERALD__ROUTING__CARRIERS_FILE=$OUT/carriers.toml
export HERALD__ROUTING__ROUTES_FILE=$OUT/routes.toml
start_herald "$NAME"
for _ in $(seq 1 10); do
  curl -fs -X POST -H "Authorization: Bearer $ADMIN" "$URL/v1/admin/carriers/held/pause" >/dev/null && break
  sleep 1
done
curl -fs -H "Authorization: Bearer $ADMIN" "$URL/v1/admin/actors" | grep -q '"paused":\["held"\]' ||
  { say "could not pause the carrier; see $OUT/herald.log"; exit 1; }
key=$(new_tenant backlog sms 1000000)

# heap_dump STEP: with BACKLOG_HEAP_PROFILE, Herald's heap profile now, as
# $OUT/step-STEP.heap.
heap_dump() {
  [ -n "${BACKLOG_HEAP_PROFILE:-}" ] || return 0
  kill -USR2 "$HERALD_PID"
  sleep 2
  cp "$(ls -t "$OUT"/heap.*.heap | head -1)" "$OUT/step-$1.heap"
}
rss_mb() { awk '/VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$HERALD_PID/status"; }
depth() {
  curl -fs -H "Authorization: Bearer $ADMIN" "$URL/v1/admin/actors" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["queue_depths"].get("held", 0))'
}
stored() { psql -h 127.0.0.1 -U postgres -d "$NAME" -Atc "SELECT count(*) FROM messages"; }
# The carrier queue holds up to 16 messages per AMQP message (the route
# packs them), so its depth is not a count of messages: the flow has settled
# when the outbox is empty, the ingress queues are empty and the carrier
# queue's depth holds still (or after 10 minutes). A tenant's ingress
# overflow queue is not counted: behind a paused carrier it holds part of
# the backlog for good.
outboxed() { psql -h 127.0.0.1 -U postgres -d "$NAME" -Atc "SELECT count(*) FROM outbox"; }
ingress() {
  rabbitmqctl -q list_queues name messages 2>/dev/null |
    awk -v p="$NAME.ingress." 'index($1, p) == 1 && $1 !~ /\.overflow$/ { n += $2 } END { print n + 0 }'
}
settle() {
  local last=-1 now
  for _ in $(seq 1 $((${BACKLOG_SETTLE_MAX:-600} / 3))); do
    now=$(depth)
    [ "$(outboxed)" -eq 0 ] && [ "$(ingress)" -eq 0 ] && [ "$now" -eq "$last" ] && return
    last=$now
    sleep 3
  done
}

printf '%-10s %12s %12s %10s %14s\n' waiting amqp_depth stored rss_mb accepted/s | tee "$OUT/summary.txt"
printf '%-10s %12s %12s %10s %14s\n' 0 "$(depth)" 0 "$(rss_mb)" - | tee -a "$OUT/summary.txt"
heap_dump 0
# Herald's RSS every 5 s, for the plot of memory over the run.
(while kill -0 "$HERALD_PID" 2>/dev/null; do
  echo "$(date +%s) $(rss_mb)"
  sleep 5
done >"$OUT/rss.txt") &
PIDS+=($!)
sent=0
for step in $STEPS; do
  n=$((step - sent))
  secs=$(python3 -c "print(max(1, round($n / $RATE)))")
  rate=$(python3 -c "print($n / $secs)")
  "$BIN/herald-loadtest" --url "$URL" --keys "$key" --rate "$rate" --duration "${secs}s" \
    --drain 1s --no-webhooks --quiet --max-in-flight 5000 --json "$OUT/step-$step.json" \
    >"$OUT/step-$step.txt" 2>&1 || true
  accepted=$(python3 -c "import json; print(json.load(open('$OUT/step-$step.json'))['accepted'])")
  per_s=$(python3 -c "import json; print(round(json.load(open('$OUT/step-$step.json'))['accepted_per_s']))")
  sent=$((sent + accepted))
  settle
  heap_dump "$step"
  printf '%-10s %12s %12s %10s %14s\n' "$sent" "$(depth)" "$(stored)" "$(rss_mb)" "$per_s" | tee -a "$OUT/summary.txt"
done
if [ -n "${BACKLOG_RESTART:-}" ]; then
  say "restarting Herald over the backlog, the simulator stopped"
  kill "${PIDS[0]}" 2>/dev/null || true # the simulator, started first
  kill -TERM "$HERALD_PID"
  while kill -0 "$HERALD_PID" 2>/dev/null; do sleep 1; done
  start_herald "$NAME" keep
  for wait in 30 30; do
    sleep "$wait"
    printf '%-10s %12s %12s %10s %14s\n' "$sent" "$(depth)" "$(stored)" "$(rss_mb)" restarted | tee -a "$OUT/summary.txt"
  done
fi
say "results in $OUT"
