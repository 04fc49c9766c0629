#!/usr/bin/env python3
"""Remove what killed test runs left behind: RabbitMQ queues and exchanges
named herald_t_* and PostgreSQL databases herald_t_*. A test removes its own
when it ends; a run that was killed cannot. Run only when no test runs (CI
does, before its tests): it does not know which leftovers are still in use.
Needs rabbitmqctl (local broker), psql and the pika package."""

import subprocess
import sys

try:
    import pika
except ImportError:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "pika"], check=False)
    import pika


def names(kind):
    out = subprocess.run(
        ["rabbitmqctl", "-q", f"list_{kind}", "name"],
        capture_output=True, text=True, timeout=120,
    ).stdout.split("\n")
    return [n.strip() for n in out if n.strip().startswith("herald_t_")]


def main():
    queues, exchanges = names("queues"), names("exchanges")
    if queues or exchanges:
        conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", 5672))
        for q in queues:
            ch = conn.channel()
            try:
                ch.queue_delete(q)
            except Exception:
                pass
            if ch.is_open:
                ch.close()
        for x in exchanges:
            ch = conn.channel()
            try:
                ch.exchange_delete(x)
            except Exception:
                pass
            if ch.is_open:
                ch.close()
        conn.close()
    dbs = subprocess.run(
        ["psql", "-h", "127.0.0.1", "-U", "postgres", "-Atc",
         "SELECT datname FROM pg_database WHERE datname LIKE 'herald\\_t\\_%'"],
        capture_output=True, text=True, timeout=60,
    ).stdout.split()
    for db in dbs:
        subprocess.run(
            ["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc",
             f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'],
            capture_output=True, timeout=60,
        )
    if queues or exchanges or dbs:
        print(f"clean-test-leftovers: removed {len(queues)} queues, "
              f"{len(exchanges)} exchanges, {len(dbs)} databases", file=sys.stderr)


if __name__ == "__main__":
    main()
