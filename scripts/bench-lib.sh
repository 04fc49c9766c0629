# Shared by the bench scripts (sourced, not run): starting Herald and
# creating tenants. The caller sets BIN, OUT, URL, ADMIN, the PIDS array,
# Herald's HERALD_* environment and a `say` function.

# start_herald DATABASE [keep]: drop DATABASE (unless "keep": a restart over
# what it holds), start `herald serve` (log appended to $OUT/herald.log, pid
# in HERALD_PID and PIDS), wait until it is ready and its carriers are bound
# (up to 30 s more).
start_herald() {
  [ "${2:-}" = keep ] || dropdb -h 127.0.0.1 -U postgres --if-exists "$1"
  "$BIN/herald" serve >>"$OUT/herald.log" 2>&1 &
  HERALD_PID=$!
  PIDS+=("$HERALD_PID")
  for _ in $(seq 1 90); do
    curl -fs "$URL/readyz" >/dev/null 2>&1 && break
    sleep 1
  done
  curl -fs "$URL/readyz" >/dev/null || { say "Herald did not become ready; see $OUT/herald.log"; exit 1; }
  for _ in $(seq 1 30); do
    curl -fs -H "Authorization: Bearer $ADMIN" "$URL/v1/admin/actors" | grep -q '"bound":true' && break
    sleep 1
  done
}

# new_tenant NAME CHANNELS RATE: create a tenant, print its API key.
new_tenant() {
  "$BIN/herald" tenant create --name "$1" --channels "$2" --rate "$3" |
    awk -F': *' '/api key:/ {print $2}'
}
