#!/usr/bin/env python3
"""Pressure stall information (Linux PSI) during one benchmark run.

    bench-pressure.py OUT START

Reads /proc/pressure/{cpu,io} every 100 ms until SIGTERM, then writes OUT
(JSON): for each second since START (a Unix time, the moment the load
generator was started), the milliseconds in that second during which

  cpu_some  at least one runnable task waited for a CPU,
  io_some   at least one task waited for the disk,
  io_full   every task that had work to do waited for the disk (a stall:
            nothing ran but the wait).

scripts/bench-peers-summary.py sets these beside each second's accept p99,
so a slow second can be told apart: CPU contention, or the disk. Without
/proc/pressure (an old kernel, or PSI disabled) it writes nothing.
"""

import json
import signal
import sys
import time

PERIOD = 0.1


def totals(path):
    """The `total=` counters (µs) of a pressure file: [some, full]."""
    out = []
    for line in open(path):
        for field in line.split():
            if field.startswith("total="):
                out.append(int(field[6:]))
    return out


def main():
    path, start = sys.argv[1], float(sys.argv[2])
    try:
        totals("/proc/pressure/io")
    except OSError:
        return
    samples = []

    def finish(*_):
        per = {"cpu_some": {}, "io_some": {}, "io_full": {}}
        for (t0, a), (t1, b) in zip(samples, samples[1:]):
            second = int(t1 - start)
            if second < 0:
                continue
            for i, key in enumerate(("cpu_some", "io_some", "io_full")):
                per[key][second] = per[key].get(second, 0) + (b[i] - a[i]) / 1000
        last = max((max(v) for v in per.values() if v), default=-1)
        result = {k: [round(v.get(s, 0.0), 1) for s in range(last + 1)] for k, v in per.items()}
        with open(path, "w") as f:
            json.dump(result, f)
        sys.exit(0)

    signal.signal(signal.SIGTERM, finish)
    while True:
        cpu, io = totals("/proc/pressure/cpu"), totals("/proc/pressure/io")
        samples.append((time.time(), [cpu[0], io[0], io[1]]))
        time.sleep(PERIOD)


if __name__ == "__main__":
    main()
