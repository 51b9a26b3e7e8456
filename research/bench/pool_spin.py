"""The standard library's ``Pool`` with and without its worker handler's wake-ups on results.

    python analysis/pool_spin.py [--tasks 400] [--runs 12] [--workers 2]

Runs ``Pool.imap_unordered`` of no-ops (chunksize 1), the plain library and nothing of the
harness, once through the stock pool and once through :class:`research.schedulers.mp.QuietPool`,
and prints per run the wall time, the parent's CPU time and each pool thread's CPU time (Linux:
``/proc/self/task/<tid>/stat``; elsewhere the threads' column is empty). The stock pool's
worker-handler thread waits on the result pipe too, and loops while a result waits there unread:
its CPU time is that loop's (README, "A finding behind the standard library's misses").
"""

from __future__ import annotations

import argparse
import multiprocessing
import multiprocessing.pool
import os
import statistics
import threading
import time
from collections.abc import Sequence
from typing import Any

from ..schedulers.mp import QuietPool

#: The pools compared, by the name printed.
POOLS: dict[str, type[multiprocessing.pool.Pool]] = {
    "stock": multiprocessing.pool.Pool, "quiet": QuietPool}


def _noop(x: Any) -> Any:
    return x


def thread_cpu_ms() -> dict[str, float]:
    """CPU time (user + system, ms) of each live thread of this process, by thread name
    ({} where /proc is not there)."""
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    out = {}
    for t in threading.enumerate():
        try:
            with open(f"/proc/self/task/{t.native_id}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[t.name] = (int(fields[11]) + int(fields[12])) * 1e3 / tick
    return out


def measure(pool_cls: type[multiprocessing.pool.Pool], n_tasks: int, runs: int,
            n_workers: int) -> list[dict[str, Any]]:
    """One row per run: wall_ms, parent_cpu_ms, and the CPU ms of the pool's worker-handler,
    task-handler and result-handler threads (NaN where unknown)."""
    ctx = multiprocessing.get_context("forkserver")
    rows = []
    with pool_cls(n_workers, context=ctx) as pool:
        list(pool.imap_unordered(_noop, range(n_workers * 4)))  # the workers are up
        names = {"worker_handler": pool._worker_handler.name,  # type: ignore[attr-defined]
                 "task_handler": pool._task_handler.name,  # type: ignore[attr-defined]
                 "result_handler": pool._result_handler.name}  # type: ignore[attr-defined]
        items = [(i, "x" * 50, None) for i in range(n_tasks)]
        for _ in range(runs):
            before, cpu0, t0 = thread_cpu_ms(), time.process_time(), time.perf_counter()
            for _ in pool.imap_unordered(_noop, items, chunksize=1):
                pass
            wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
            after = thread_cpu_ms()
            row: dict[str, Any] = {"wall_ms": wall * 1e3, "parent_cpu_ms": cpu * 1e3}
            for key, name in names.items():
                row[f"{key}_cpu_ms"] = (after[name] - before[name]
                                        if name in after and name in before else float("nan"))
            rows.append(row)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    """Measure both pools and print a line per run and a median per pool."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", type=int, default=400)
    ap.add_argument("--runs", type=int, default=12)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)
    print(f"{args.tasks} no-ops through Pool.imap_unordered (chunksize 1) on {args.workers} "
          f"workers, {args.runs} runs per pool; CPU in ms (thread times tick at 10 ms)")
    for name, cls in POOLS.items():
        rows = measure(cls, args.tasks, args.runs, args.workers)
        for r in rows:
            print(f"  {name:5s} wall {r['wall_ms']:7.1f} ms  parent cpu {r['parent_cpu_ms']:7.1f}"
                  f"  worker handler {r['worker_handler_cpu_ms']:5.0f}"
                  f"  result handler {r['result_handler_cpu_ms']:5.0f}")
        walls = [r["wall_ms"] for r in rows]
        print(f"{name}: wall median {statistics.median(walls):.1f} ms, min {min(walls):.1f}, "
              f"max {max(walls):.1f}")
    return 0
