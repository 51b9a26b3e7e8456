"""METG(50%), Task Bench's yardstick for per-task overhead (Slaughter et al., SC'20).

Per trial of the granularity sweep: efficiency = planned task time / (workers x wall) and
granularity = workers x wall / tasks, with wall from the first submit to the last receive.
METG(50%) is the smallest granularity at which a system still reaches 50% efficiency,
interpolated linearly between the two sweep points around 50%.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

#: The study the METG is read from, and the efficiency threshold.
STUDY = "granularity"
THRESHOLD = 0.5
METG_COLUMNS: tuple[str, ...] = ("scheduler", "body", "n_workers", "metg_s", "note", "points",
                                 "min_granularity_s", "max_efficiency", "well_posed",
                                 "metg_low_s", "metg_high_s", "crossing")
#: How a row's efficiency meets 50% (column ``crossing``): a reason code beside the ``note``
#: text, for code that must tell the cases apart.
CROSSED, ABOVE, NEVER, NO_POINTS = "crossed", "above throughout", "never reaches", "no points"
#: A METG is well posed when the efficiency climbs clearly past 50%: its best point at least
#: this high. Below it the curve runs flat near 50% and where it first touches 50% is decided
#: by a few percent of noise, anywhere along the sweep; such a METG is reported, marked, and
#: not held to a prediction goal. (A system that cannot pass 50% at all, two threads sharing
#: one GIL on CPU bodies, is ill-posed whatever its peak: :func:`efficiency_cap`.)
WELL_POSED_PEAK = 0.6


def efficiency_cap(scheduler: str, body: str, n_workers: int,
                   options: Mapping[str, Any] | None = None) -> float:
    """The most efficiency the system can reach by construction: ``1 / n_workers`` for CPU
    bodies on a scheduler whose workers share one GIL (:meth:`Scheduler.traits` under the
    trial's ``options``, the recorded ones over those written in the label, so
    ``dask-local[scheduler=threads]`` too, and a ``scheduler = "threads"`` fixed for a whole
    sweep, which no label shows: N threads do one core's work), 1 otherwise (and for a
    scheduler the registry does not know). Where it is at most 50% the METG is ill-posed
    whatever the curve shows: a peak above the cap is the CPU body's rate, measured in the
    client before the trial, being off by that much, not the system's speed."""
    from ..schedulers import REGISTRY, get_scheduler
    from .models import label_options

    name = str(scheduler).partition("[")[0]  # an option variant: its adapter's class
    if body != "cpu" or n_workers <= 1 or name not in REGISTRY:
        return 1.0
    opts = {**label_options(str(scheduler)), **dict(options or {})}
    shares = get_scheduler(name).traits(opts).shares_gil
    return 1.0 / n_workers if shares else 1.0


def _recorded_options(g: pd.DataFrame) -> dict[str, Any]:
    """The scheduler options the trials of one METG row recorded (their files' JSON; the
    first that parses: a row's trials share their label, so all but per-map options)."""
    if "scheduler_options" not in g.columns:
        return {}
    for raw in g["scheduler_options"]:
        try:
            parsed = json.loads(str(raw)) if raw and str(raw) != "nan" else None
        except ValueError:
            continue
        if isinstance(parsed, dict):
            return parsed
    return {}


#: Published numbers to read ours beside, with what differs from this setup.
ANCHORS: tuple[tuple[str, str, str], ...] = (
    ("Task Bench: Dask METG(50%)", "about 14 ms",
     "Slaughter et al., SC'20: no dependencies, one 32-core node (Cori), 2019 Dask; ours: no "
     "dependencies, this machine's workers, today's Dask"),
    ("Dask documentation", "about 1 ms of overhead per task",
     "a rule of thumb for the distributed scheduler, no machine stated"),
    ("Parsl paper (Babuji et al., HPDC'19)", "IPyParallel 330 tasks/s, Parsl HTEX 1,181 tasks/s",
     "no-op throughput on a cluster; ours: no-op throughput in the overhead study "
     "(1 / per-task wall) on this machine"),
)


def points(summary: pd.DataFrame, experiment: str = STUDY) -> pd.DataFrame:
    """One row per completed trial of the sweep: scheduler, body, n_workers, trial_id, task_s,
    n_tasks, wall_s, efficiency, granularity_s, repeat (0 where the summary has none). No-op
    trials are left out: a no-op has no planned length, so no efficiency to read a METG from
    (a sweep may run them beside its points, e.g. experiments/extra/quiet_pool.toml)."""
    cols = ["scheduler", "body", "n_workers", "trial_id", "task_s", "n_tasks", "wall_s",
            "efficiency", "granularity_s", "repeat", "scheduler_options"]
    if summary.empty:
        return pd.DataFrame(columns=cols)
    s = summary[(summary["experiment"] == experiment)
                & (summary["trial_status"].astype(str) != "failed")].copy()
    if "body" in s.columns:
        s = s[s["body"].astype(str) != "noop"]
    if s.empty:
        return pd.DataFrame(columns=cols)
    n = pd.to_numeric(s["n_tasks"]).astype(float)
    w = pd.to_numeric(s["n_workers"]).astype(float)
    wall = pd.to_numeric(s["wall_s"], errors="coerce").astype(float)
    task = pd.to_numeric(s["task_s_mean"], errors="coerce").astype(float)
    out = pd.DataFrame({
        "scheduler": s["scheduler"].astype(str), "body": s.get("body", "sleep"),
        "n_workers": w.astype(int), "trial_id": s["trial_id"], "task_s": task, "n_tasks": n,
        "wall_s": wall, "efficiency": task * n / (w * wall), "granularity_s": w * wall / n,
        "repeat": pd.to_numeric(s["repeat"], errors="coerce") if "repeat" in s.columns else 0,
        # The options each trial ran with (JSON, from its file): what its workers are
        # (efficiency_cap) may hang on one that no label shows.
        "scheduler_options": (s["scheduler_options"].fillna("").astype(str)
                              if "scheduler_options" in s.columns else "")})
    return out[np.isfinite(out["efficiency"])].reset_index(drop=True)


def metg_of(gran: Sequence[float], eff: Sequence[float]) -> tuple[float, str]:
    """(METG in seconds, '') or (NaN, why): the smallest granularity with efficiency >= 50%,
    interpolated linearly with the next smaller point, which is below 50%."""
    m, why, _ = metg_crossing(gran, eff)
    return m, why


def metg_crossing(gran: Sequence[float], eff: Sequence[float]) -> tuple[float, str, str]:
    """:func:`metg_of` with its reason code: :data:`CROSSED`, :data:`ABOVE` (at or above 50%
    down to the smallest granularity: the METG lies below it), :data:`NEVER` or
    :data:`NO_POINTS`."""
    g, e = np.asarray(gran, float), np.asarray(eff, float)
    order = np.argsort(g, kind="stable")
    g, e = g[order], e[order]
    if len(g) == 0:
        return math.nan, "no points", NO_POINTS
    above = np.flatnonzero(e >= THRESHOLD)
    if len(above) == 0:
        return (math.nan, f"never reaches 50% (best {e.max():.0%} at {g[np.argmax(e)]:.3g} s)",
                NEVER)
    i = int(above[0])
    if i == 0:
        return math.nan, (f"at or above 50% down to the smallest granularity measured "
                          f"({g[0]:.3g} s): METG below that"), ABOVE
    g1, e1, g2, e2 = g[i - 1], e[i - 1], g[i], e[i]  # e1 < 0.5 <= e2
    return float(g1 + (THRESHOLD - e1) * (g2 - g1) / (e2 - e1)), "", CROSSED


def metg_table(pts: pd.DataFrame) -> pd.DataFrame:
    """METG per (scheduler, body, n_workers), with why where 50% is never crossed (``note``,
    and the reason code ``crossing``), the median efficiency per task length over repeats,
    ``well_posed`` (the efficiency passes :data:`WELL_POSED_PEAK` somewhere and the system can
    pass 50% at all, :func:`efficiency_cap`; else the note says why the crossing is noise),
    and ``metg_low_s``/``metg_high_s``, the METG's range over the sweep's repeats
    (:func:`_repeat_range`)."""
    rows: list[dict[str, Any]] = []
    if pts.empty:
        return pd.DataFrame(columns=list(METG_COLUMNS))
    for (sched, body, n), g in pts.groupby(["scheduler", "body", "n_workers"], sort=False):
        # Repeats: the median efficiency per task length.
        per = g.groupby("task_s").agg(granularity_s=("granularity_s", "median"),
                                      efficiency=("efficiency", "median")).reset_index()
        m, why, crossing = metg_crossing(per["granularity_s"], per["efficiency"])
        peak = float(per["efficiency"].max())
        cap = efficiency_cap(str(sched), str(body), int(n), _recorded_options(g))
        posed = bool(math.isfinite(m) and peak >= WELL_POSED_PEAK and cap > THRESHOLD)
        if math.isfinite(m) and cap <= THRESHOLD:
            why = (f"ill-posed: {int(n)} workers sharing one GIL do one core's work, so the "
                   f"efficiency is at most {cap:.0%} by construction (it peaks at {peak:.0%}: "
                   "the CPU body's measured rate is off by the rest; where it first reaches "
                   "50% is that error)")
        elif math.isfinite(m) and not posed:
            why = (f"ill-posed: the efficiency peaks at {peak:.0%}, within noise of 50% "
                   f"(a flat curve: where it first reaches 50% is noise)")
        low, high = _repeat_range(g, per)
        rows.append({"scheduler": sched, "body": body, "n_workers": int(n), "metg_s": m,
                     "note": why, "points": len(per),
                     "min_granularity_s": float(per["granularity_s"].min()),
                     "max_efficiency": peak, "well_posed": posed,
                     "metg_low_s": low, "metg_high_s": high, "crossing": crossing})
    from .results import sort_trials

    return sort_trials(pd.DataFrame(rows, columns=list(METG_COLUMNS)), ["body", "scheduler"])


def _repeat_range(g: pd.DataFrame, per: pd.DataFrame) -> tuple[float, float]:
    """(lowest, highest) METG over the sweep's repeats: repeat r's curve takes each task
    length's own run r where that length ran more than once, its median otherwise. A repeat
    at or above 50% down to the smallest point widens the range to 0 (its METG lies below
    that point), one that never reaches 50% to inf. NaN, NaN where fewer than two repeats ran
    or no length ran twice. The sweep's own spread: how far the METG moves between runs of
    the same points on this machine."""
    if ("repeat" not in g.columns or g["repeat"].nunique() < 2
            or g.groupby("task_s").size().max() < 2):
        return math.nan, math.nan
    base = per.set_index("task_s")
    found = []
    for r in sorted(g["repeat"].dropna().unique()):
        mine = g[g["repeat"] == r].groupby("task_s")[["granularity_s", "efficiency"]].median()
        curve = base[["granularity_s", "efficiency"]].copy()
        curve.loc[mine.index] = mine
        m, _, code = metg_crossing(curve["granularity_s"], curve["efficiency"])
        found.append(m if code == CROSSED else 0.0 if code == ABOVE else math.inf)
    return (min(found), max(found)) if found else (math.nan, math.nan)


def metg_figure(pts: pd.DataFrame, table: pd.DataFrame) -> Any:
    """Efficiency against granularity, one panel per body, the 50% line and each METG."""
    from .figures import new_figure, scheduler_color
    from .results import sort_trials

    bodies = sorted(pts["body"].astype(str).unique())
    fig = new_figure(6.0 * max(1, len(bodies)), 4.6)
    axes = fig.subplots(1, max(1, len(bodies)), squeeze=False)[0]
    for ax, body in zip(axes, bodies, strict=False):
        b = sort_trials(pts[pts["body"] == body], ["scheduler", "granularity_s"])
        for sched, g in b.groupby("scheduler", sort=False):
            per = g.groupby("task_s").agg(gr=("granularity_s", "median"),
                                          ef=("efficiency", "median")).sort_values("gr")
            color = scheduler_color(str(sched))
            ax.plot(per["gr"], per["ef"], marker=".", color=color, label=str(sched), lw=1)
            row = table[(table["scheduler"] == sched) & (table["body"] == body)]
            if len(row) and np.isfinite(row["metg_s"].iloc[0]):
                ax.plot([row["metg_s"].iloc[0]], [THRESHOLD], marker="o", ms=7, mfc="none",
                        color=color)
        ax.axhline(THRESHOLD, color="black", ls="--", lw=1)
        n = ", ".join(str(x) for x in sorted(b["n_workers"].unique()))
        ax.set_title(f"{body} bodies, {n} workers", fontsize="medium")
        ax.set_xscale("log")
        ax.set_ylim(0, 1.1)
        ax.set_xlabel("Granularity: workers × wall / tasks (s)")
        ax.set_ylabel("Efficiency: planned / (workers × wall)")
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize="x-small", ncol=2)
    fig.suptitle("METG(50%): circles mark where each system falls to 50% efficiency",
                 fontsize="medium")
    return fig


__all__ = ["ABOVE", "ANCHORS", "CROSSED", "METG_COLUMNS", "NEVER", "NO_POINTS", "STUDY",
           "THRESHOLD", "WELL_POSED_PEAK", "metg_crossing", "metg_figure", "metg_of", "metg_table",
           "points"]
