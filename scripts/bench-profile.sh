#!/usr/bin/env bash
# Profile Herald end to end at its ceiling: runs the `herald` system of
# scripts/bench-peers.sh (one round) and, while its load runs,
#   - `perf record --call-graph dwarf` on `herald serve` (PROFILE_SECONDS),
#   - `perf record -a` without call graphs (where the machine's CPU goes, by
#     process and symbol),
#   - a sampler of pg_stat_activity (every 10 ms: which statements of the
#     herald_peers database are running: wall time, waits included),
#   - when the server has pg_stat_statements loaded
#     (shared_preload_libraries), each statement's calls, rows and
#     execution time over the window,
#   - the herald_peers database's commits and row counts before and after.
# Then prints the top of each. perf comes from Debian (linux-perf).
#
# Settings: PROFILE_RATE (default 300), PROFILE_DURATION (default 40s),
# PROFILE_SECONDS (perf window, default 20), PROFILE_OUT, plus PEERS_BIN /
# PEERS_CONFIG_DIR as for bench-peers.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/herald-target}
OUT=${PROFILE_OUT:-$CARGO_TARGET_DIR/bench-profile/$(date -u +%Y%m%dT%H%M%SZ)}
SECS=${PROFILE_SECONDS:-20}
mkdir -p "$OUT"
say() { echo "bench-profile.sh: $*" >&2; }
command -v perf >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-perf >/dev/null

PEERS_SYSTEMS=herald PEERS_RUNS=1 PEERS_HERALD_RATE=${PROFILE_RATE:-300} \
  PEERS_DURATION=${PROFILE_DURATION:-40s} PEERS_OUT=$OUT/run \
  scripts/bench-peers.sh >"$OUT/run.log" 2>&1 &
RUN=$!
for _ in $(seq 1 600); do
  grep -q 'round 1: herald' "$OUT/run.log" 2>/dev/null && break
  kill -0 $RUN 2>/dev/null || { say "bench-peers.sh ended early; see $OUT/run.log"; exit 1; }
  sleep 0.5
done
sleep 5 # tenants created, load running
HERALD=$(ss -ltnpH 'sport = :29080' | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2)
[ -n "$HERALD" ] || { say "no herald on :29080"; exit 1; }
say "herald pid $HERALD; recording ${SECS}s"

q() { psql -h 127.0.0.1 -U postgres -d herald_peers -AtqX -c "$1"; }
counts="SELECT xact_commit, tup_inserted, tup_updated, tup_deleted, tup_fetched FROM pg_stat_database WHERE datname = 'herald_peers'"
# The whole server's WAL (records, full-page images, bytes): the load is
# what runs.
wal="SELECT wal_records, wal_fpi, wal_bytes FROM pg_stat_wal"
q "$counts" >"$OUT/pg-before.txt"
q "$wal" >"$OUT/wal-before.txt"
amqp() { curl -fs http://127.0.0.1:29080/metrics | grep -E '^herald_(broker_published|messages_accepted)_total' || true; }
amqp >"$OUT/amqp-before.txt"
STATEMENTS=
if q "SHOW shared_preload_libraries" | grep -q pg_stat_statements; then
  STATEMENTS=1
  q "CREATE EXTENSION IF NOT EXISTS pg_stat_statements; SELECT pg_stat_statements_reset()" >/dev/null
fi
{
  for _ in $(seq 1 $((SECS * 100))); do
    echo "SELECT regexp_replace(left(query, 120), '\s+', ' ', 'g') FROM pg_stat_activity WHERE datname = 'herald_peers' AND state = 'active' AND pid <> pg_backend_pid();"
    echo "SELECT pg_sleep(0.01);"
  done
} | psql -h 127.0.0.1 -U postgres -d herald_peers -AtqX >"$OUT/pg-samples.txt" 2>&1 &
SAMPLER=$!
perf record -q -F 199 --call-graph dwarf,16384 -p "$HERALD" -o "$OUT/herald.perf" -- sleep "$SECS" 2>/dev/null &
P1=$!
perf record -q -F 99 -a -o "$OUT/system.perf" -- sleep "$SECS" 2>/dev/null &
P2=$!
wait $P1 $P2 $SAMPLER || true
q "$counts" >"$OUT/pg-after.txt"
q "$wal" >"$OUT/wal-after.txt"
amqp >"$OUT/amqp-after.txt"
if [ -n "$STATEMENTS" ]; then
  q "SELECT calls, rows, round(total_exec_time::numeric, 0) AS ms, round(total_plan_time::numeric, 0) AS plan_ms, \
       regexp_replace(left(query, 100), '\s+', ' ', 'g') \
     FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid \
     WHERE d.datname = 'herald_peers' ORDER BY total_exec_time DESC LIMIT 25" >"$OUT/pg-statements.txt"
fi
wait $RUN || true

set +o pipefail
perf report -i "$OUT/herald.perf" --no-children --sort symbol --percent-limit 0.7 --stdio 2>/dev/null \
  | grep -v '^$' | grep -E '^ +[0-9]' | head -60 >"$OUT/herald-self.txt"
perf report -i "$OUT/herald.perf" --children --sort symbol --percent-limit 3 --stdio -g none 2>/dev/null \
  | grep -E '^ +[0-9]' | head -80 >"$OUT/herald-children.txt"
perf report -i "$OUT/system.perf" --sort comm --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -20 >"$OUT/system-comm.txt"
perf report -i "$OUT/system.perf" --sort comm,dso,symbol --stdio --percent-limit 0.5 2>/dev/null \
  | grep -E '^ +[0-9]' | head -60 >"$OUT/system-symbols.txt"
grep -v '^$' "$OUT/pg-samples.txt" | sort | uniq -c | sort -rn | head -25 >"$OUT/pg-top.txt"
echo "== CPU by process (perf -a, ${SECS}s)"; cat "$OUT/system-comm.txt"
echo "== herald: self time by symbol"; head -40 "$OUT/herald-self.txt"
echo "== herald: inclusive time by symbol"; head -60 "$OUT/herald-children.txt"
echo "== PostgreSQL: running statements (10 ms samples)"; cat "$OUT/pg-top.txt"
if [ -n "$STATEMENTS" ]; then
  echo "== PostgreSQL: statements over the window (calls|rows|exec ms|plan ms|query)"
  cat "$OUT/pg-statements.txt"
fi
echo "== WAL records/full-page images/bytes before, after"
cat "$OUT/wal-before.txt" "$OUT/wal-after.txt"
echo "== AMQP messages published (and messages accepted) before, after"
cat "$OUT/amqp-before.txt" "$OUT/amqp-after.txt"
echo "== herald_peers commits/inserted/updated/deleted/fetched before, after"; cat "$OUT/pg-before.txt" "$OUT/pg-after.txt"
grep -E 'accepted|end to end|latency|accept \(|delivered' "$OUT/run/herald-1.txt" || true
say "results in $OUT"
