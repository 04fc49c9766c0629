#!/usr/bin/env bash
# Make sure PostgreSQL (127.0.0.1:5432), RabbitMQ (127.0.0.1:5672, guest/guest)
# and Redis (127.0.0.1:6379) answer. Where one already answers nothing is
# changed; where one does not, it is installed from Debian packages (when
# missing) and started. Quiet when all is well; loud, and exit status 1, when
# a service cannot be brought up.
set -uo pipefail

answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() { # port seconds
  for _ in $(seq 1 "$2"); do answers "$1" && return 0; sleep 1; done
  return 1
}

say() { echo "services.sh: $*" >&2; }

APT_UPDATED=""
install() {
  if [ -z "$APT_UPDATED" ]; then
    say "apt-get update"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null || return 1
    APT_UPDATED=1
  fi
  say "installing $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

failed=0

# PostgreSQL
if ! answers 5432; then
  say "PostgreSQL is not answering on 127.0.0.1:5432; starting it"
  fresh=""
  if ! command -v pg_ctlcluster >/dev/null || [ -z "$(ls /etc/postgresql 2>/dev/null)" ]; then
    install postgresql || { say "could not install postgresql"; failed=1; }
    fresh=1
  fi
  version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -1)
  if [ -n "$version" ]; then
    hba=/etc/postgresql/$version/main/pg_hba.conf
    if [ -n "$fresh" ] && [ -f "$hba" ] && ! grep -q "herald: trust loopback" "$hba"; then
      # Herald's dev and test profiles connect as postgres without a password.
      sed -i '1i # herald: trust loopback\nhost all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
    fi
    pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null || true
  fi
  wait_for 5432 30 || { say "PostgreSQL did not come up"; failed=1; }
fi

# Redis
if ! answers 6379; then
  say "Redis is not answering on 127.0.0.1:6379; starting it"
  command -v redis-server >/dev/null || install redis-server || { say "could not install redis-server"; failed=1; }
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null 2>&1 || true
  wait_for 6379 15 || { say "Redis did not come up"; failed=1; }
fi

# RabbitMQ
if ! answers 5672; then
  say "RabbitMQ is not answering on 127.0.0.1:5672; starting it"
  command -v rabbitmq-server >/dev/null || install rabbitmq-server || { say "could not install rabbitmq-server"; failed=1; }
  # Each quorum queue holds files open: start with the open-files soft limit
  # raised to the hard limit (often 1024 vs far more), in a subshell.
  (ulimit -n "$(ulimit -Hn)" 2>/dev/null; rabbitmq-server -detached >/dev/null 2>&1) || true
  timeout 120 rabbitmqctl await_startup >/dev/null 2>&1 || true
  wait_for 5672 60 || { say "RabbitMQ did not come up"; failed=1; }
fi

if [ "$failed" != 0 ]; then
  say "some services could not be started (see above)"
  exit 1
fi
