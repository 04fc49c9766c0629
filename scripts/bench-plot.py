#!/usr/bin/env python3
"""Latency over time from herald-loadtest JSON files (their `timeline`):
request -> completion p50 and p99 by the second each request was due in,
one line per system, and the completions per second below.

usage: bench-plot.py RESULTS_DIR OUT.png [ROUND]

Plots `<system>-<ROUND>.json` (default round 1) for every system found.
Needs matplotlib (pip install matplotlib).
"""
import glob
import json
import os
import re
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

out, png = sys.argv[1], sys.argv[2]
rnd = sys.argv[3] if len(sys.argv) > 3 else "1"
files = sorted(glob.glob(f"{out}/*-{rnd}.json"))
files = [f for f in files if re.match(rf"^[a-z-]+-{rnd}\.json$", os.path.basename(f))]
if not files:
    sys.exit(f"no <system>-{rnd}.json in {out}")

fig, (ax, bx) = plt.subplots(2, 1, figsize=(10, 7), sharex=True,
                             gridspec_kw={"height_ratios": [3, 2]})
for path in files:
    system = os.path.basename(path)[: -len(f"-{rnd}.json")]
    r = json.load(open(path))
    tl = [s for s in r["timeline"] if s.get("delivered")]
    label = f"{system} ({r['target_rate']:.0f}/s offered)"
    color = None
    if tl:
        t = [s["t"] for s in tl]
        line, = ax.plot(t, [s["delivered_p50_ms"] for s in tl], label=f"{label} p50")
        color = line.get_color()
        ax.plot(t, [s["delivered_p99_ms"] for s in tl], linestyle="--", color=color,
                label=f"{label} p99")
    # Completions per second of wall time (the cumulative `finals` counter).
    fin = [(s["t"], s["finals"]) for s in r["timeline"] if s.get("attempted") is not None]
    fin = sorted({t: f for t, f in fin if f or t}.items())
    rates = [(t1, f1 - f0) for (t0, f0), (t1, f1) in zip(fin, fin[1:]) if t1 == t0 + 1]
    if rates:
        kw = {"color": color} if color else {"linestyle": ":"}
        bx.plot([t for t, _ in rates], [v for _, v in rates], label=label, **kw)
ax.set_yscale("log")
ax.set_ylabel("request -> completion (ms, log)")
ax.set_title("Request -> completion by the second each request was due\n"
             "(Herald: delivered on stream + signed webhook; Kannel: final DLR callback)", fontsize=10)
ax.grid(True, which="both", alpha=0.3)
ax.legend(fontsize=7, ncol=2)
bx.set_ylabel("completions / s")
bx.set_xlabel("second of the run (sending, then draining)")
bx.grid(True, alpha=0.3)
bx.legend(fontsize=7)
fig.tight_layout()
fig.savefig(png, dpi=110)
print(png)
