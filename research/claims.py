"""The talk's claims, checked against measured results, one verdict each.

Each claim compares a measured value with what a simple model of the schedule predicts for the
task list that was actually run: contiguous blocks for a DirectView, list scheduling (greedy)
for a load-balanced scheduler, greedy over chunks for chunked maps. For the talk's own task lists
the models give the talk's numbers (12.2 s, 3.4 s, 6.46 s), so a full run is compared with the
talk directly; a quick run, with smaller task lists, is compared with the same models.

A verdict comes from measured data only: ``reproduced``, ``not reproduced``, or ``not run``
(with the reason: the study was not run, its trials failed, or its data is missing).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from . import schema
from .metrics import greedy_makespan
from .talkbench import TALK_SECONDS

REPRODUCED, NOT_REPRODUCED, NOT_RUN = "reproduced", "not reproduced", "not run"
COLUMNS = ("claim_id", "claim", "talk_value", "expected", "our_value", "tolerance", "verdict",
           "note")

STDLIB_PROCESS = ("mp-dynamic", "futures", "mp-map")


# -- schedule models ------------------------------------------------------------------------
def block_sizes(n_tasks: int, n_workers: int) -> list[int]:
    """Contiguous block sizes of a DirectView map: the first ``n % q`` engines get one extra."""
    q, r = divmod(n_tasks, n_workers)
    return [q + 1 if i < r else q for i in range(n_workers)]


def block_makespan(durations: Sequence[float], n_workers: int) -> float:
    """Makespan of contiguous blocks, one per worker (a DirectView map)."""
    sums, i = [], 0
    for size in block_sizes(len(durations), n_workers):
        sums.append(float(sum(durations[i:i + size])))
        i += size
    return max(sums)


def pool_map_chunksize(n_tasks: int, n_workers: int) -> int:
    """``multiprocessing.Pool.map``'s default chunk size: ceil(n / (4 * workers))."""
    size, extra = divmod(n_tasks, n_workers * 4)
    return max(1, size + (1 if extra else 0))


def chunked_greedy(durations: Sequence[float], n_workers: int, chunksize: int) -> float:
    """Makespan when contiguous chunks are handed to whichever worker is free first."""
    chunks = [float(sum(durations[i:i + chunksize])) for i in range(0, len(durations), chunksize)]
    return greedy_makespan(chunks, n_workers)


def greedy_counts(durations: Sequence[float], n_workers: int) -> list[int]:
    """Tasks per worker under list scheduling in index order."""
    free = [(0.0, w) for w in range(n_workers)]
    counts = [0] * n_workers
    for d in durations:
        free.sort()
        t, w = free[0]
        free[0] = (t + d, w)
        counts[w] += 1
    return counts


# -- evaluation context ---------------------------------------------------------------------
@dataclass
class Context:
    """What the claims read: the per-trial summary and the results directory."""

    summary: pd.DataFrame
    results_dir: Path

    def trials(self, experiment: str, scheduler: str) -> tuple[pd.DataFrame, str]:
        """Successful trials of a scheduler in a study, or an empty frame and why."""
        s = self.summary
        if s.empty or "experiment" not in s:
            return s, "no results"
        sel = s[(s["experiment"] == experiment) & (s["scheduler"] == scheduler)]
        if sel.empty:
            return sel, f"study '{experiment}' has no {scheduler} trials in {self.results_dir}"
        failed = sel["trial_status"].astype(str).eq("failed")
        ok = sel[~failed & sel["makespan_s"].notna()]
        if ok.empty:
            errors = sel["trial_error"].astype(str).replace("", np.nan).dropna()
            why = errors.iloc[0] if len(errors) else "no timed task"
            return ok, f"every {scheduler} trial in '{experiment}' failed: {why}"
        return ok, ""

    def planned(self, row: pd.Series) -> list[float]:
        """Planned durations of a trial's tasks, in task order."""
        rel, _, tid = str(row["source"]).partition("#")
        df = pq.read_table(self.results_dir / rel, columns=["trial_id", "task_id", "planned_s"])
        df = df.to_pandas()
        if tid:
            df = df[df["trial_id"].astype(str) == tid]
        return df.sort_values("task_id")["planned_s"].astype(float).tolist()

    def bench(self) -> tuple[pd.DataFrame | None, str]:
        """The talk's timeit prime benchmark table, preferring a full run over a quick one."""
        found = sorted(self.results_dir.rglob(f"talk_primes*{schema.BENCH_SUFFIX}"))
        if not found:
            return None, f"no talk_primes benchmark in {self.results_dir} " \
                         "(python -m research talk-primes)"
        full = [p for p in found if "_quick" not in p.name]
        path = (full or found)[0]
        return pq.read_table(path).to_pandas(), path.name


@dataclass
class Verdict:
    """One row of the claims table."""

    claim_id: str
    claim: str
    talk_value: str
    expected: str = ""
    our_value: str = ""
    tolerance: str = ""
    verdict: str = NOT_RUN
    note: str = ""


def _s(x: float) -> str:
    return f"{x:.2f} s" if math.isfinite(x) else "n/a"


def _median(x: pd.Series) -> float:
    return float(pd.to_numeric(x, errors="coerce").median())


def _quick_note(ctx: Context, row: pd.Series, talk_n: int, talk_workers: int) -> str:
    n, w = int(row["n_tasks"]), int(row["n_workers"])
    if (n, w) != (talk_n, talk_workers):
        return (f"run at reduced size ({n} tasks, {w} workers; the talk: {talk_n}, "
                f"{talk_workers}): compared with the same model for this task list")
    return ""


# -- the claims -----------------------------------------------------------------------------
def _direct_blocks(ctx: Context, v: Verdict, exp: str, sched: str, talk_n: int) -> Verdict:
    ok, why = ctx.trials(exp, sched)
    if ok.empty:
        v.note = why
        return v
    row = ok.iloc[0]
    model = block_makespan(ctx.planned(row), int(row["n_workers"]))
    ours = _median(ok["makespan_s"])
    tol = 0.1 * model + 0.3
    v.expected, v.our_value = f"{_s(model)} (largest block)", f"{_s(ours)} (median of {len(ok)})"
    v.tolerance = f"±{tol:.2f} s (10% + 0.3 s)"
    v.verdict = REPRODUCED if abs(ours - model) <= tol else NOT_REPRODUCED
    v.note = _quick_note(ctx, row, talk_n, 12)
    return v


def _near_greedy(ctx: Context, v: Verdict, exp: str, sched: str, talk_n: int) -> Verdict:
    ok, why = ctx.trials(exp, sched)
    if ok.empty:
        v.note = why
        return v
    row = ok.iloc[0]
    greedy = float(row["greedy_s"])
    bound = float(row["lower_bound_s"])
    ours = _median(ok["makespan_s"])
    limit = 1.15 * greedy + 0.3
    v.expected = f"{_s(greedy)} (greedy; lower bound {_s(bound)})"
    v.our_value = f"{_s(ours)} (median of {len(ok)})"
    v.tolerance = f"<= {limit:.2f} s (greedy + 15% + 0.3 s)"
    v.verdict = REPRODUCED if ours <= limit else NOT_REPRODUCED
    v.note = _quick_note(ctx, row, talk_n, 12)
    return v


def _speedup_ratio(ctx: Context, v: Verdict) -> Verdict:
    d, why_d = ctx.trials("seed_worst_case", "ipp-direct")
    lb, why_lb = ctx.trials("seed_worst_case", "ipp-lb")
    if d.empty or lb.empty:
        v.note = why_d or why_lb
        return v
    planned = ctx.planned(d.iloc[0])
    n = int(d.iloc[0]["n_workers"])
    model = block_makespan(planned, n) / greedy_makespan(planned, n)
    ours = _median(d["makespan_s"]) / _median(lb["makespan_s"])
    v.expected, v.our_value = f"{model:.2f}x", f"{ours:.2f}x"
    v.tolerance = f">= {0.75 * model:.2f}x (75% of the model)"
    v.verdict = REPRODUCED if ours >= 0.75 * model else NOT_REPRODUCED
    return v


def _equal_counts(ctx: Context, v: Verdict, sched: str) -> Verdict:
    ok, why = ctx.trials("seed_random", sched)
    if ok.empty:
        v.note = why
        return v
    spreads = (ok["tasks_per_worker_max"] - ok["tasks_per_worker_min"]).astype(int).tolist()
    v.expected = "max - min tasks per worker <= 1 (contiguous blocks)"
    v.our_value = f"spread {spreads} per repeat"
    v.tolerance = "<= 1 in every repeat"
    v.verdict = REPRODUCED if max(spreads) <= 1 else NOT_REPRODUCED
    return v


def _unequal_counts(ctx: Context, v: Verdict, sched: str) -> Verdict:
    ok, why = ctx.trials("seed_random", sched)
    if ok.empty:
        v.note = why
        return v
    row = ok.iloc[0]
    counts = greedy_counts(ctx.planned(row), int(row["n_workers"]))
    spreads = (ok["tasks_per_worker_max"] - ok["tasks_per_worker_min"]).astype(int).tolist()
    v.expected = f"spread {max(counts) - min(counts)} under greedy"
    v.our_value = f"spread {spreads} per repeat"
    v.tolerance = ">= 2 in every repeat"
    v.verdict = REPRODUCED if min(spreads) >= 2 else NOT_REPRODUCED
    return v


def _bench_speedup(ctx: Context, v: Verdict, method: str) -> Verdict:
    table, src = ctx.bench()
    if table is None:
        v.note = src
        return v
    t = table.set_index("method")
    if not {"straight", method} <= set(t.index):
        v.note = f"{src} lacks the {method} row"
        return v
    speed = float(t.loc["straight", "best_s"]) / float(t.loc[method, "best_s"])
    workers = int(t.loc[method, "workers"])
    v.our_value = (f"{speed:.2f}x ({float(t.loc['straight', 'best_s']):.2f} s / "
                   f"{float(t.loc[method, 'best_s']):.2f} s, {workers} workers)")
    n = int(t.loc[method, "n_numbers"])
    if method == "threads":
        v.expected, v.tolerance = "about 1x (the GIL)", "< 1.25x"
        v.verdict = REPRODUCED if speed < 1.25 else NOT_REPRODUCED
    else:
        cores = workers
        v.expected = f"between 1.3x and {cores}x (this machine's {cores} cores)"
        v.tolerance = f"1.3x to {cores * 1.1:.1f}x"
        v.verdict = REPRODUCED if 1.3 <= speed <= cores * 1.1 else NOT_REPRODUCED
        v.note = (f"the talk had 12 cores (5.3x, 44% of them); this machine has {cores}, so the "
                  f"claim is checked as 'processes speed up, up to the core count': "
                  f"{speed / cores:.0%} of the cores")
    if n != 15:
        v.note = f"quick run: {n} of the 15 numbers. " + v.note
    return v


def _demo(ctx: Context, v: Verdict) -> Verdict:
    table, src = ctx.bench()
    if table is None:
        v.note = src
        return v
    rows = table[table["method"] == "futures_demo_first6"]
    if rows.empty:
        v.note = f"{src} lacks the demo row"
        return v
    ours = str(rows["result"].iloc[0])
    v.expected = "[True, True, True, True, True, False]"
    v.our_value, v.tolerance = ours, "exact"
    v.verdict = REPRODUCED if ours == v.expected else NOT_REPRODUCED
    return v


def _per_task_us(ctx: Context, sched: str) -> tuple[float, str]:
    ok, why = ctx.trials("overhead", sched)
    if ok.empty:
        return math.nan, why
    per = pd.to_numeric(ok["wall_s"]) / pd.to_numeric(ok["n_tasks"]).astype(float)
    return float(per.median()) * 1e6, ""


def _overhead_order(ctx: Context, v: Verdict, low: Sequence[str], high: str) -> Verdict:
    lows = {s: _per_task_us(ctx, s) for s in low}
    hi, why = _per_task_us(ctx, high)
    measured = {s: x for s, (x, _) in lows.items() if math.isfinite(x)}
    if not measured or not math.isfinite(hi):
        v.note = why or "; ".join(w for _, w in lows.values() if w)
        return v
    best = min(measured, key=measured.__getitem__)
    v.expected = f"{'/'.join(low)} cheaper per task than {high}"
    v.our_value = (", ".join(f"{s} {x:,.0f} us" for s, x in measured.items())
                   + f"; {high} {hi:,.0f} us per task")
    v.tolerance = "strict order of the medians"
    v.verdict = REPRODUCED if measured[best] < hi else NOT_REPRODUCED
    v.note = "wall time / tasks for no-op tasks (study 'overhead')"
    return v


def _chunked(ctx: Context, v: Verdict, exp: str, sched: str, chunksize: int | None) -> Verdict:
    ok, why = ctx.trials(exp, sched)
    if ok.empty:
        v.note = why
        return v
    row = ok.iloc[0]
    planned, n = ctx.planned(row), int(row["n_workers"])
    cs = chunksize or pool_map_chunksize(len(planned), n)
    model = chunked_greedy(planned, n, cs)
    greedy = greedy_makespan(planned, n)
    ours = _median(ok["makespan_s"])
    v.expected = f"{_s(model)} (greedy over chunks of {cs}; one task at a time: {_s(greedy)})"
    v.our_value = f"{_s(ours)} (median of {len(ok)})"
    tol = 0.1 * model + 0.3
    v.tolerance = f"±{tol:.2f} s of the chunk model, and slower than greedy + 5%"
    worse = ours > 1.05 * greedy
    v.verdict = REPRODUCED if worse and abs(ours - model) <= tol else NOT_REPRODUCED
    if not model > 1.05 * greedy:
        v.note = "for this task list the chunk model itself is close to greedy"
    return v


def prime_speedups(results_dir: Path | str) -> pd.DataFrame | None:
    """The talk's prime benchmark beside ours: seconds and speedup over straight, per method.

    None when no ``talk-primes`` table is in ``results_dir``.
    """
    table, _ = Context(pd.DataFrame(), Path(results_dir)).bench()
    if table is None:
        return None
    t = table[table["method"].isin(["straight", "threads", "processes"])].set_index("method")
    ours_straight = float(t.loc["straight", "best_s"]) if "straight" in t.index else math.nan
    rows = []
    for method, row in t.iterrows():
        talk = float(row["talk_s"])
        rows.append({
            "method": method, "talk_s": talk,
            "talk_speedup": round(TALK_SECONDS["straight"] / talk, 2),
            "our_s": round(float(row["best_s"]), 3),
            "our_speedup": round(ours_straight / float(row["best_s"]), 2),
            "our_workers": int(row["workers"]), "numbers": int(row["n_numbers"]),
            "timing": f"best of {int(row['repeat'])} x {int(row['number'])} call(s)",
        })
    return pd.DataFrame(rows)


Claim = Callable[[Context], Verdict]


def _claims() -> list[Claim]:
    w, r = "seed_worst_case", "seed_random"
    return [
        lambda c: _direct_blocks(c, Verdict(
            "C1", "DirectView, worst case: all long tasks land on one engine", "12.2 s"),
            w, "ipp-direct", 146),
        lambda c: _near_greedy(c, Verdict(
            "C2", "LoadBalancedView, worst case: near the greedy schedule", "about 3.4 s"),
            w, "ipp-lb", 146),
        lambda c: _speedup_ratio(c, Verdict(
            "C3", "Worst case: load balancing is several times faster than DirectView",
            "3.5x (speedup 11.25 vs 3.21)")),
        lambda c: _direct_blocks(c, Verdict(
            "C4", "DirectView, random lengths: its largest block decides", "about 6.5 s"),
            r, "ipp-direct", 180),
        lambda c: _near_greedy(c, Verdict(
            "C5", "LoadBalancedView, random lengths: near the greedy schedule", "near 5.8 s"),
            r, "ipp-lb", 180),
        lambda c: _equal_counts(c, Verdict(
            "C6", "DirectView gives every engine the same number of tasks", "15 each"),
            "ipp-direct"),
        lambda c: _unequal_counts(c, Verdict(
            "C7", "LoadBalancedView does not: engines with long tasks run fewer", "unequal"),
            "ipp-lb"),
        lambda c: _bench_speedup(c, Verdict(
            "C8", "Threads give no speedup on the primes (GIL)", "42.10 vs 39.47 s (1.07x)"),
            "threads"),
        lambda c: _bench_speedup(c, Verdict(
            "C9", "Processes do, up to the core count", "42.10 vs 7.98 s (5.3x, 12 cores)"),
            "processes"),
        lambda c: _demo(c, Verdict(
            "C10", "ProcessPoolExecutor(4) on the first six numbers",
            "[True, True, True, True, True, False]")),
        lambda c: _overhead_order(c, Verdict(
            "C11", "Overhead: standard library small, ipyparallel medium",
            "small < medium"), STDLIB_PROCESS, "ipp-lb"),
        lambda c: _chunked(c, Verdict(
            "C12", "Pool.map's contiguous chunks inherit part of DirectView's weakness",
            "(not in the talk)"), w, "mp-map", None),
        lambda c: _chunked(c, Verdict(
            "C13", "LoadBalancedView with chunksize 8 inherits it too", "(not in the talk)"),
            "chunking", "ipp-lb[chunksize=8]", 8),
        # The same questions for today's schedulers.
        lambda c: _near_greedy(c, Verdict(
            "D1", "Dask, worst case: near the greedy schedule, like LoadBalancedView",
            "(LB: about 3.4 s)"), w, "dask", 146),
        lambda c: _near_greedy(c, Verdict(
            "D2", "Dask, random lengths: near the greedy schedule", "(LB: near 5.8 s)"),
            r, "dask", 180),
        lambda c: _unequal_counts(c, Verdict(
            "D3", "Dask gives engines with long tasks fewer tasks", "(LB: unequal)"), "dask"),
        lambda c: _overhead_order(c, Verdict(
            "D4", "Dask's per-task overhead: above the standard library's",
            "(not in the talk)"), STDLIB_PROCESS, "dask"),
        lambda c: _near_greedy(c, Verdict(
            "R1", "Ray, worst case: near the greedy schedule, like LoadBalancedView",
            "(LB: about 3.4 s)"), w, "ray", 146),
        lambda c: _near_greedy(c, Verdict(
            "R2", "Ray, random lengths: near the greedy schedule", "(LB: near 5.8 s)"),
            r, "ray", 180),
        lambda c: _unequal_counts(c, Verdict(
            "R3", "Ray gives engines with long tasks fewer tasks", "(LB: unequal)"), "ray"),
        lambda c: _overhead_order(c, Verdict(
            "R4", "Ray's per-task overhead: above the standard library's",
            "(not in the talk)"), STDLIB_PROCESS, "ray"),
    ]


def evaluate(summary: pd.DataFrame, results_dir: Path | str) -> pd.DataFrame:
    """Every claim's verdict, as a table with :data:`COLUMNS`.

    A claim whose check itself fails (odd data) is reported ``not run`` with the error, so the
    report always completes.
    """
    ctx = Context(summary, Path(results_dir))
    rows: list[dict[str, Any]] = []
    for claim in _claims():
        try:
            v = claim(ctx)
        except Exception as exc:  # one odd file must not hide the other verdicts
            v = Verdict("?", "claim could not be evaluated", "", note=f"{type(exc).__name__}: "
                        f"{exc}")
        rows.append(v.__dict__)
    return pd.DataFrame(rows, columns=list(COLUMNS))
