"""What the harness costs: no-op tasks per second through our adapters and through bare loops
of the same library calls, side by side, and the cost of the in-task wrapper alone.

    python -m research bench [--tasks 2000] [--workers 2] [--repeats 5] [--extra-repeats 6]
                             [--schedulers ...]
                             [--out results/bench/overhead.csv] [--run-seconds 2]
                             [--min-run-seconds 0.25]
    make bench

Goal (issue 13): the harness costs at most max(5%, 5 us) per task over the bare loop, at
default settings, for every scheduler. Each row has its verdict; the table is printed in
markdown and written to a CSV and a markdown file (the README cites one from a real run).
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import sys
import time
import timeit
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ..schedulers import get_scheduler
from ..schedulers.base import gc_frozen
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
#: security is TLS on every message; Celery's witness is three task events per task.
COSTLY_OPTIONS: dict[str, tuple[dict[str, Any], ...]] = {
    "ray": ({"witness": True}, {"receive": "each"}),
    "dask": ({"security": True}, {"receive": "each"}),
    "celery": ({"witness": True},),
}


def variants(names: Sequence[str]) -> list[tuple[str, dict[str, Any]]]:
    """(scheduler, options) to benchmark: each at its defaults, then each costly option."""
    return [(n, opts) for n in names for opts in ({}, *COSTLY_OPTIONS.get(n, ()))]



#: The goal (issue 13): the harness costs at most max(5% of the bare time, 5 us) per task.
GOAL_PCT = 5.0
GOAL_US = 5.0
#: Where the table is written besides stdout (``--out``): this CSV and a markdown twin.
DEFAULT_OUT = Path("results") / "bench" / "overhead.csv"
#: Verdicts: the median pair within the allowance; every pair above it; or the median above
#: but not every pair, so that this run cannot tell (the machine's noise at this size: rerun).
MEETS, MISSES, UNCLEAR = "meets", "misses", "unclear (noise)"
#: No-ops run before the pairs (their time sets the task count under ``run_s``).
WARM_TASKS = 100
#: The fewest tasks a row runs when ``run_s`` cuts the count.
MIN_TASKS = 200
#: ``make bench``'s bound on one run (seconds), so that the slow schedulers (Celery, ipp-lb:
#: milliseconds per no-op) keep the whole benchmark within about five minutes.
DEFAULT_RUN_S = 2.0
#: The shortest run worth timing (seconds): a fast scheduler (a few us per no-op) runs more
#: tasks, up to :data:`MAX_TASKS`, so that a pair is not decided by one context switch (2,000
#: tasks through Pool.map take about 1 ms: a single scheduling hiccup doubled its time).
DEFAULT_MIN_RUN_S = 0.25
MAX_TASKS = 50_000
#: Pairs per row by default (``--repeats``): the median of five is robust to one bad pair.
DEFAULT_REPEATS = 5
#: More pairs for a row that five leave unclear (``--extra-repeats``): the slow schedulers'
#: runs vary by 5-10% from one to the next here (Celery, Parsl: a few ms per no-op), as much
#: as the allowance, and the median of 11 halves the median's spread.
DEFAULT_EXTRA_REPEATS = 6

#: What a row compares, where the harness does more than the bare loop by the nature of its
#: records (shown in the table's ``note`` column). Keys are scheduler names.
NOTES: dict[str, str] = {
    "serial": "bare: a loop of calls; harness: execute() + 2 stamps per task (no library cost "
              "to compare with)",
    "threads": "per-task receive stamps taken by the pool's threads as each result is set; "
               "bare: submit + result()",
    "mp-map": "Pool.map both, the same chunks (the harness cuts them as Pool.map would and runs "
              "each with one call); one receive stamp for all",
    "mp-dynamic": "imap_unordered both; per-task receive stamps",
    "futures": "submit per task both; per-task receive stamps by done-callback",
    "ipp-direct": "DirectView.map both, one block per engine (the harness cuts them as the "
                  "view would); receive stamps per block (ipyparallel's own)",
    "ipp-lb": "LoadBalancedView.map both; receive stamps per message from ipyparallel's own "
              "metadata",
    "dask": "client.map + one gather both (receive = together); tasks as plain tuples",
    "ray": "remote calls + one ray.get both (receive = together); tasks as plain tuples",
    "joblib": "Parallel generator_unordered both; per-task receive stamps",
    "ray-pool": "Pool.map both, the same chunks (cut by the harness, one call each); one "
                "receive stamp for all",
    "dask-local": "dask.compute both, tasks sent as their fields; one receive stamp for all",
    "parsl": "app calls both; per-task receive stamps by done-callback",
    "celery": "send_task per task both; per-task receive stamps from join_native's "
              "on_message",
}


def _label(name: str, options: dict[str, Any] | None) -> str:
    if not options:
        return name
    return name + "[" + ",".join(f"{k}={v}" for k, v in options.items()) + "]"


def allowance_us(bare_us_per_task: float) -> float:
    """What the harness may cost per task: max(:data:`GOAL_PCT` of the bare time,
    :data:`GOAL_US`)."""
    return max(GOAL_PCT / 100 * bare_us_per_task, GOAL_US)


def verdict(cost_us: float, bare_us_per_task: float, pairs_min_us: float | None = None) -> str:
    """:data:`MEETS` when ``cost_us`` per task (the median pair's) is within
    :func:`allowance_us`; otherwise :data:`MISSES` when even the cheapest pair
    (``pairs_min_us``) is above it, :data:`UNCLEAR` when it is not (one run cannot tell)."""
    allowed = allowance_us(bare_us_per_task)
    if cost_us <= allowed:
        return MEETS
    if pairs_min_us is not None and pairs_min_us <= allowed:
        return UNCLEAR
    return MISSES


def tasks_for(per_task_s: float, n_tasks: int, run_s: float | None,
              min_run_s: float | None = None) -> int:
    """``n_tasks``, or fewer where one run of them would take longer than ``run_s`` seconds
    at ``per_task_s`` each (never below :data:`MIN_TASKS`): slow schedulers keep the
    benchmark's time bounded. With ``min_run_s``, more where one run would be shorter than
    that (never above :data:`MAX_TASKS`): fast schedulers are timed over long enough runs."""
    if per_task_s <= 0:
        return n_tasks
    if min_run_s and n_tasks * per_task_s < min_run_s:
        return max(n_tasks, min(MAX_TASKS, math.ceil(min_run_s / per_task_s)))
    if not run_s:
        return n_tasks
    return max(min(n_tasks, MIN_TASKS), min(n_tasks, int(run_s / per_task_s)))


def _verdict_of(pairs: Sequence[tuple[float, float]], n_tasks: int) -> str:
    """:func:`verdict` of (bare s, harness s) pairs of ``n_tasks`` tasks each."""
    costs = [(h - b) / n_tasks * 1e6 for b, h in pairs]
    bare_us = statistics.median(b for b, _ in pairs) / n_tasks * 1e6
    return verdict(statistics.median(costs), bare_us, min(costs))


def throughput(name: str, n_workers: int, n_tasks: int, repeats: int = DEFAULT_REPEATS,
               timeout_s: float = 300.0, options: dict[str, Any] | None = None,
               run_s: float | None = None, min_run_s: float | None = None,
               extra_repeats: int = 0) -> dict[str, Any]:
    """Harness vs bare on one cluster: ``repeats`` pairs (bare, then harness, so drift hits
    both alike); tasks per second are medians, the cost per task the median of the pairs'
    differences (with their spread, the noise). A row still :data:`UNCLEAR` after them gets
    ``extra_repeats`` more pairs, once (a fixed second stage, not a stop at the first pair
    that agrees), and its verdict is taken over all of them. With ``run_s``, a scheduler slower than
    ``run_s / n_tasks`` per task (timed on the warm-up) runs fewer tasks, with ``min_run_s``
    one faster than ``min_run_s / n_tasks`` more (:func:`tasks_for`)."""
    pairs: list[tuple[float, float]] = []  # (bare s, harness s)
    cpu: list[float] = []  # client CPU seconds, harness minus bare, per pair
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    with get_scheduler(name)(n_workers, options) as sched:
        # Witness tables are read after a trial's last result, outside its timeline.
        sched.collect_native = False
        sched.warm()
        n_warm = min(n_tasks, WARM_TASKS)
        sched.run([Task(i, "noop", 0, 0.0) for i in range(n_warm)], timeout_s)
        t0 = time.perf_counter()  # the first calls' costs are out of the way; time a second
        sched.bare_noop(n_warm)
        n_tasks = tasks_for((time.perf_counter() - t0) / n_warm, n_tasks, run_s, min_run_s)
        if min_run_s and n_tasks < MAX_TASKS:
            # A short warm-up overstates the time per task of a system with a fixed cost per
            # map (a DirectView's round trip): time the chosen count once and scale again.
            t0 = time.perf_counter()
            sched.bare_noop(n_tasks)
            took = time.perf_counter() - t0
            if 0 < took < min_run_s:
                n_tasks = min(MAX_TASKS, math.ceil(n_tasks * min_run_s / took))
        tasks = [Task(i, "noop", 0, 0.0) for i in range(n_tasks)]
        for k in range(repeats + extra_repeats):
            if k == repeats and _verdict_of(pairs, n_tasks) != UNCLEAR:
                break  # clear after the first stage: no second one
            out = None  # the last pair's records are garbage before this pair starts
            # As in a trial (the runner does the same): no collector pass over the whole heap.
            with gc_frozen():
                c0, t0 = time.process_time(), time.perf_counter()
                sched.bare_noop(n_tasks)
                c1, t1 = time.process_time(), time.perf_counter()
                out = sched.run(tasks, timeout_s)
                c2, t2 = time.process_time(), time.perf_counter()
            if out.error:
                raise RuntimeError(f"{name}: {out.error}")
            if len(out.outcomes) != n_tasks or len(out.receive_ns) != n_tasks:
                raise RuntimeError(f"{name}: {len(out.outcomes)} outcomes and "
                                   f"{len(out.receive_ns)} receive stamps for {n_tasks} tasks")
            pairs.append((t1 - t0, t2 - t1))
            cpu.append((c2 - c1) - (c1 - c0))
    repeats = len(pairs)
    bare_s = statistics.median(b for b, _ in pairs)
    harness_s = statistics.median(h for _, h in pairs)
    costs = [(h - b) / n_tasks * 1e6 for b, h in pairs]
    cost_us = statistics.median(costs)
    bare_us = bare_s / n_tasks * 1e6
    return {"scheduler": _label(name, options), "n_workers": sched.effective_workers,
            "n_tasks": n_tasks, "repeats": repeats,
            "harness_tasks_per_s": n_tasks / harness_s, "bare_tasks_per_s": n_tasks / bare_s,
            "bare_us_per_task": bare_us, "harness_us_per_task": cost_us,
            "harness_cost_pct": cost_us / bare_us * 100,
            "pairs_us_min": min(costs), "pairs_us_max": max(costs),
            "client_cpu_us_per_task": statistics.median(cpu) / n_tasks * 1e6,
            "allowed_us": allowance_us(bare_us), "verdict": verdict(cost_us, bare_us, min(costs)),
            "load_1min": load, "note": NOTES.get(name, "")}


def run_all(names: Sequence[str], n_workers: int, n_tasks: int, repeats: int = DEFAULT_REPEATS,
            run_s: float | None = DEFAULT_RUN_S,
            min_run_s: float | None = DEFAULT_MIN_RUN_S,
            extra_repeats: int = DEFAULT_EXTRA_REPEATS) -> list[dict[str, Any]]:
    """:func:`throughput` for each scheduler; a scheduler that fails is a row with its error
    (verdict ``error``), not fatal."""
    rows = []
    default: dict[str, dict[str, Any]] = {}
    for name, opts in variants(names):
        try:
            row = throughput(name, n_workers, n_tasks, repeats, options=opts, run_s=run_s,
                             min_run_s=min_run_s, extra_repeats=extra_repeats)
        except Exception as exc:
            rows.append({"scheduler": _label(name, opts), "verdict": "error",
                         "note": f"{type(exc).__name__}: {exc}"})
            continue
        if not opts:
            default[name] = row
        elif name in default:
            # A costly option slows the system itself (its bare loop runs on the same cluster):
            # what it costs is its harness throughput against the default's.
            row["option_cost_pct"] = (default[name]["harness_tasks_per_s"]
                                      / row["harness_tasks_per_s"] - 1) * 100
            row["note"] = (f"costly option (off by default), on a cluster of its own; "
                           f"option_cost_pct: harness throughput vs {name} at defaults")
        rows.append(row)
    return rows


#: Columns of the printed table and the CSV, in order.
COLUMNS = ("scheduler", "n_workers", "n_tasks", "repeats", "harness_tasks_per_s",
           "bare_tasks_per_s", "bare_us_per_task", "harness_us_per_task", "harness_cost_pct",
           "pairs_us_min", "pairs_us_max", "client_cpu_us_per_task", "allowed_us", "verdict",
           "option_cost_pct", "load_1min", "note")


def table(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """The rows as a frame with :data:`COLUMNS` (missing values empty)."""
    return pd.DataFrame(list(rows)).reindex(columns=list(COLUMNS))


def markdown(df: pd.DataFrame, header: str = "") -> str:
    """The table in markdown (numbers rounded for reading), under ``header``."""
    shown = df.copy()
    for col in ("harness_tasks_per_s", "bare_tasks_per_s"):
        shown[col] = shown[col].map(lambda x: "" if pd.isna(x) else f"{x:,.0f}")
    for col in ("bare_us_per_task", "harness_us_per_task", "harness_cost_pct", "pairs_us_min",
                "pairs_us_max", "client_cpu_us_per_task", "allowed_us", "option_cost_pct",
                "load_1min"):
        shown[col] = shown[col].map(lambda x: "" if pd.isna(x) else f"{x:,.1f}")
    for col in ("n_workers", "n_tasks", "repeats"):
        shown[col] = shown[col].map(lambda x: "" if pd.isna(x) else f"{int(x)}")
    lines = ["| " + " | ".join(shown.columns) + " |",
             "|" + "---|" * len(shown.columns)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |"
              for row in shown.itertuples(index=False)]
    return (header + "\n\n" if header else "") + "\n".join(lines) + "\n"


def machine_line(n_workers: int, n_tasks: int, repeats: int, wrapper_us: float,
                 run_s: float | None, min_run_s: float | None = None,
                 extra_repeats: int = 0) -> str:
    """One line on where and how the table was measured (for the markdown file)."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else ()
    return (f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {os.cpu_count()} CPUs; "
            f"load average {', '.join(f'{x:.2f}' for x in load) or 'n/a'} (at the end); "
            f"Python {platform.python_version()}; {n_tasks} no-op tasks (fewer where one "
            f"run would pass {run_s or 0:g} s, more, up to {MAX_TASKS:,}, where it would be "
            f"shorter than {min_run_s or 0:g} s: `n_tasks`) on {n_workers} workers, "
            f"{repeats} pairs (bare, then harness) per scheduler, {extra_repeats} more for a "
            f"row that is unclear after them (`repeats`: the pairs a row ran); task wrapper "
            f"{wrapper_us:.2f} us per task. Goal: harness cost per task <= max({GOAL_PCT:g}% "
            f"of the bare time, {GOAL_US:g} us) (`allowed_us`); `harness_us_per_task` is the "
            "median of the pairs' differences, `pairs_us_min`/`max` their spread (noise); "
            "`client_cpu_us_per_task` the same difference in this process's CPU time (less "
            "sensitive to other jobs; in-process schedulers only: all of their work).")


def print_benchmark(names: Sequence[str], n_workers: int, n_tasks: int,
                    repeats: int = DEFAULT_REPEATS, out: Path | None = DEFAULT_OUT,
                    run_s: float | None = DEFAULT_RUN_S,
                    min_run_s: float | None = DEFAULT_MIN_RUN_S,
                    extra_repeats: int = DEFAULT_EXTRA_REPEATS) -> int:
    """Print the wrapper cost and the table (markdown), and write it to ``out`` (CSV) and
    ``out`` with suffix ``.md`` (markdown with a line on the machine) unless ``out`` is None.

    Returns 0: a scheduler that cannot run here is a row with its error, not a failure."""
    w = wrapper_cost_us()
    print(f"task wrapper: {w['wrapper_us']:.2f} us per task "
          f"(execute {w['wrapped_us']:.2f} us, bare call {w['bare_us']:.2f} us)\n")
    df = table(run_all(names, n_workers, n_tasks, repeats, run_s, min_run_s, extra_repeats))
    print(markdown(df))
    met = int((df.verdict == MEETS).sum())
    unclear = int((df.verdict == UNCLEAR).sum())
    missed = int((df.verdict == MISSES).sum())
    print(f"{met} of {len(df)} rows meet the goal (harness cost <= max({GOAL_PCT:g}%, "
          f"{GOAL_US:g} us) per task), {missed} miss it in every pair, {unclear} cannot tell "
          "(the median pair above, another within: noise at this size; rerun)")
    for row in df.itertuples(index=False):
        if row.verdict == "error":
            print(f"{row.scheduler}: {row.note}", file=sys.stderr)
    if out is not None:
        from ..guard import critical

        out.parent.mkdir(parents=True, exist_ok=True)
        md = out.with_suffix(".md")
        with critical():  # a stop signal waits: neither file is left half written
            df.to_csv(out, index=False)
            md.write_text(markdown(df, machine_line(n_workers, n_tasks, repeats,
                                                       w["wrapper_us"], run_s, min_run_s,
                                                       extra_repeats)))
        print(f"wrote {out} and {md}", file=sys.stderr)
    return 0
