"""What the harness costs: no-op tasks per second through our adapters and through bare loops
of the same library calls, side by side, and the cost of the in-task wrapper alone.

    python -m research bench [--tasks 2000] [--workers 2] [--repeats 3] [--schedulers ...]
    make bench

Goal: the harness costs at most 5% of each system's own throughput, under 5 us per task in the
task wrapper. Prints a markdown table (the README shows one from a real run).
"""

from __future__ import annotations

import statistics
import sys
import time
import timeit
from collections.abc import Sequence
from typing import Any

import pandas as pd

from ..schedulers import get_scheduler
from ..tasks import Task, execute, noop


def wrapper_cost_us(n: int = 200_000) -> dict[str, float]:
    """Microseconds the task wrapper (:func:`research.tasks.execute`) adds to a no-op body."""
    task = Task(0, "noop", 0, 0.0)
    wrapped = min(timeit.repeat(lambda: execute(task), number=n, repeat=5)) / n
    bare = min(timeit.repeat(lambda: noop(0), number=n, repeat=5)) / n
    return {"wrapped_us": wrapped * 1e6, "bare_us": bare * 1e6,
            "wrapper_us": (wrapped - bare) * 1e6}


#: Options that make a scheduler slower than its users would see it (off by default): the
#: benchmark measures each beside the default. Ray's witness turns on RAY_PROFILING; Dask's
#: security is TLS on every message.
COSTLY_OPTIONS: dict[str, tuple[dict[str, Any], ...]] = {
    "ray": ({"witness": True},),
    "dask": ({"security": True},),
}


def variants(names: Sequence[str]) -> list[tuple[str, dict[str, Any]]]:
    """(scheduler, options) to benchmark: each at its defaults, then each costly option."""
    return [(n, opts) for n in names for opts in ({}, *COSTLY_OPTIONS.get(n, ()))]


def throughput(name: str, n_workers: int, n_tasks: int, repeats: int = 3,
               timeout_s: float = 300.0,
               options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Median tasks per second, harness and bare, alternating so drift hits both alike."""
    tasks = [Task(i, "noop", 0, 0.0) for i in range(n_tasks)]
    harness, bare = [], []
    label = name + ("[" + ",".join(f"{k}={v}" for k, v in options.items()) + "]"
                    if options else "")
    with get_scheduler(name)(n_workers, options) as sched:
        # Witness tables are read after a trial's last result, outside its timeline.
        sched.collect_native = False
        sched.warm()
        sched.run(tasks[: min(n_tasks, 100)], timeout_s)  # first-call costs out of the way
        sched.bare_noop(min(n_tasks, 100))
        for _ in range(repeats):
            t0 = time.perf_counter()
            sched.bare_noop(n_tasks)
            bare.append(n_tasks / (time.perf_counter() - t0))
            t0 = time.perf_counter()
            out = sched.run(tasks, timeout_s)
            harness.append(n_tasks / (time.perf_counter() - t0))
            if out.error:
                raise RuntimeError(f"{name}: {out.error}")
    h, b = statistics.median(harness), statistics.median(bare)
    return {"scheduler": label, "n_workers": sched.effective_workers, "n_tasks": n_tasks,
            "harness_tasks_per_s": h, "bare_tasks_per_s": b,
            "harness_cost_pct": (b / h - 1) * 100, "harness_us_per_task": (1 / h - 1 / b) * 1e6}


def run_all(names: Sequence[str], n_workers: int, n_tasks: int,
            repeats: int = 3) -> list[dict[str, Any]]:
    """:func:`throughput` for each scheduler; a scheduler that fails is reported, not fatal."""
    rows = []
    for name, opts in variants(names):
        try:
            rows.append(throughput(name, n_workers, n_tasks, repeats, options=opts))
        except Exception as exc:
            rows.append({"scheduler": name, "options": opts,
                         "error": f"{type(exc).__name__}: {exc}"})
    return rows


def print_benchmark(names: Sequence[str], n_workers: int, n_tasks: int, repeats: int = 3) -> int:
    """Print the wrapper cost and the throughput table (markdown if ``tabulate`` is there).

    Returns 0: a scheduler that cannot run here is a row with its error, not a failure."""
    w = wrapper_cost_us()
    print(f"task wrapper: {w['wrapper_us']:.2f} us per task "
          f"(execute {w['wrapped_us']:.2f} us, bare call {w['bare_us']:.2f} us)\n")
    rows = run_all(names, n_workers, n_tasks, repeats)
    table = pd.DataFrame(rows)
    print(table.to_markdown(index=False, floatfmt=",.1f") if _has_tabulate()
          else table.to_string(index=False, float_format=lambda x: f"{x:,.1f}"))
    for row in rows:
        if "error" in row:
            print(f"{row['scheduler']}: {row['error']}", file=sys.stderr)
    return 0


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True
