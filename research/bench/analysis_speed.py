"""Benchmark the analysis on synthetic results (no scheduler runs).

    make bench-analysis
    python analysis/bench_analysis.py [--tasks 100000] [--trials 1000] [--report]

Measures (1) the timeline of one trial of --tasks tasks (read, metrics, draw, PNG and SVG) and
(2) summary.csv for --trials trial files of 146 tasks each (the talk's worst case). Goals on
a 2-core machine: (1) under 10 s, (2) under 30 s. --report also times the whole report on (2).
"""

from __future__ import annotations

import argparse
import functools
import heapq
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

T0 = 1_790_000_000_000_000_000
SYSTEM = {"host": "bench", "os": "synthetic", "cpu_model": "none", "cpu_count": 1,
          "python_version": sys.version.split()[0], "libraries": {}}


def synthetic_trial(n_tasks: int, n_workers: int, scheduler: str, workload: str, repeat: int,
                    seed: int) -> Any:
    """Records of a greedy (load-balanced) run of gamma-distributed tasks, with small gaps."""
    import numpy as np
    import pandas as pd

    from .. import schema

    rng = np.random.default_rng(seed)
    dur = (rng.gamma(7.5, 0.5, n_tasks) * 1e6).astype(np.int64)  # ~3.75 ms each, in ns
    gap = rng.integers(20_000, 200_000, n_tasks)
    start, end = np.empty(n_tasks, np.int64), np.empty(n_tasks, np.int64)
    worker = np.empty(n_tasks, np.int64)
    free = [(0, w) for w in range(n_workers)]
    for i in range(n_tasks):
        t, w = heapq.heappop(free)
        start[i], end[i], worker[i] = t, t + dur[i], w
        heapq.heappush(free, (t + dur[i] + gap[i], w))
    tid = f"{scheduler}_{workload}_w{n_workers}_r{repeat}_{seed:010d}"
    return pd.DataFrame({
        "experiment": "bench", "trial_id": tid, "repeat": repeat, "scheduler": scheduler,
        "workload": workload, "n_workers": n_workers, "task_id": np.arange(n_tasks),
        "planned_s": dur / 1e9, "worker": [f"engine-{w}" for w in worker],
        "pid": 1000 + worker, "host": "bench", "submit_ns": np.full(n_tasks, T0),
        "start_ns": T0 + 1_000_000 + start, "end_ns": T0 + 1_000_000 + end,
        "receive_ns": T0 + 1_500_000 + end, "status": schema.STATUS_OK, "error": "",
    })


def write_trial(df: Any, root: Path) -> Path:
    """Write one synthetic trial with metadata, as the runner would."""
    from .. import schema

    first = df.iloc[0]
    meta = {"trial_id": first["trial_id"], "experiment": "bench",
            "scheduler": first["scheduler"], "workload": first["workload"],
            "shape": "random", "params": {}, "n_workers": int(first["n_workers"]),
            "repeat": int(first["repeat"]), "trial_status": schema.TRIAL_OK,
            "trial_error": None}
    path = root / "bench" / f"{first['trial_id']}.parquet"
    return schema.write_trial(df, path, meta, SYSTEM, "")


def timed(label: str, fn: Callable[[], Any]) -> tuple[float, Any]:
    """Run ``fn`` once and print its wall time."""
    t0 = time.perf_counter()
    out = fn()
    dt = time.perf_counter() - t0
    print(f"  {label:<44} {dt:7.2f} s", flush=True)
    return dt, out


def bench_timeline(root: Path, n_tasks: int) -> float:
    """Seconds to read a big trial, compute its metrics and write its timeline (PNG + SVG)."""
    from ..analysis import figures, metrics

    path = write_trial(synthetic_trial(n_tasks, 12, "ipp-lb", "big", 0, 1), root / "big")
    print(f"timeline of one {n_tasks:,}-task trial on 12 workers:")
    total = 0.0
    dt, df = timed("read records", lambda: metrics.read_records(path))
    total += dt
    dt, fig = timed("metrics + draw (one PolyCollection)", lambda: figures.timeline_figure(df))
    total += dt
    for fmt in ("png", "svg"):
        dt, _ = timed(f"save {fmt.upper()}", functools.partial(
            figures.save_figure, fig, root / "out" / "timeline_big", [fmt]))
        total += dt
    print(f"  {'total':<44} {total:7.2f} s  (goal < 10 s)")
    return total


def bench_summary(root: Path, n_trials: int, report: bool) -> float:
    """Seconds to build summary.csv from ``n_trials`` trial files."""
    from ..analysis import results

    res_dir = root / "many"
    t0 = time.perf_counter()
    scheds = ("ipp-direct", "ipp-lb", "mp-map", "mp-dynamic", "dask")
    for i in range(n_trials):
        sched, n = scheds[i % len(scheds)], (2, 4, 8, 12)[(i // len(scheds)) % 4]
        write_trial(synthetic_trial(146, n, sched, f"wl{i % 10}", i // 200, i), res_dir)
    print(f"(wrote {n_trials} trial files of 146 tasks in {time.perf_counter() - t0:.1f} s)")
    print(f"summary.csv for {n_trials:,} trials:")
    dt_load, res = timed("load_results (read + per-trial metrics)",
                         lambda: results.load_results(res_dir))
    dt_csv, _ = timed("write summary.csv", lambda: results.summary_for_csv(res.summary).to_csv(
        root / "summary.csv", index=False))
    total = dt_load + dt_csv
    print(f"  {'total':<44} {total:7.2f} s  (goal < 30 s)")
    if report:
        from ..analysis.report import build_report

        timed("whole report (figures, HTML, markdown)",
              lambda: build_report(res_dir, root / "report", results=res))
    return total


def main(argv: list[str] | None = None) -> int:
    """Entry point; exit status 1 if a goal is missed."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--report", action="store_true", help="also time the whole report")
    parser.add_argument("--keep", type=Path, default=None, help="keep the data in this dir")
    args = parser.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    print(f"python {sys.version.split()[0]}, matplotlib {matplotlib.__version__}, "
          f"{os.cpu_count()} CPU(s)")
    with tempfile.TemporaryDirectory(prefix="bench-analysis-") as tmp:
        root = args.keep or Path(tmp)
        t_line = bench_timeline(root, args.tasks)
        t_sum = bench_summary(root, args.trials, args.report)
    return 0 if t_line < 10 and t_sum < 30 else 1


if __name__ == "__main__":
    sys.exit(main())
