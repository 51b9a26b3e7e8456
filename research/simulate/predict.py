"""Predictions: every trial of a results directory against what it measured, and the
predicted makespans of a config that has not run."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

import pandas as pd

from .calibration import CALIBRATION_STUDIES, Calibration, TrialData, collect, unmodelled
from .core import simulate
from .policies import policy_for

PREDICTION_COLUMNS: tuple[str, ...] = (
    "trial_id", "experiment", "scheduler", "workload", "n_workers", "policy",
    "predicted_makespan_s", "measured_makespan_s", "error", "predicted_wall_s", "measured_wall_s",
    "wall_error", "predicted_tasks_per_worker", "measured_tasks_per_worker", "in_calibration",
    "costs", "note", "predicted_makespan_low_s", "predicted_makespan_high_s", "counts_error",
)


def counts_error(predicted: Sequence[int], measured: Sequence[int]) -> float:
    """The share of a trial's tasks that ran on other workers than predicted: half the summed
    differences of the per-worker counts, both sorted (workers are interchangeable), over
    the tasks (the larger of the two totals, should they differ; 0: the same counts, at most
    1 - 1/workers). NaN without tasks. Why not only exact matches: a dynamic scheduler's
    counts differ by a task or two from run to run, and an exact match says nothing of how
    far a policy's imbalance is from the one measured."""
    n = max(sum(predicted), sum(measured))
    if n <= 0:
        return math.nan
    width = max(len(predicted), len(measured))
    # A worker missing from one side got nothing there: the least loaded.
    p = sorted([*predicted, *[0] * (width - len(predicted))])
    m = sorted([*measured, *[0] * (width - len(measured))])
    return sum(abs(a - b) for a, b in zip(p, m, strict=True)) / (2 * n)


def predict_trial(d: TrialData, cal: Calibration) -> dict[str, Any]:
    """One row of predictions.csv; ``error`` = predicted / measured - 1."""
    costs, fitted = cal.costs(d.scheduler)
    policy = policy_for(d.scheduler, d.options)
    sim = simulate(policy, d.bodies, d.planned, d.n_workers, costs, d.cores or None)
    unknown = sum(1 for b, p in zip(d.bodies, d.planned, strict=True)
                  if b != "noop" and not math.isfinite(p))
    note = ""
    if unknown:
        # The model times bodies from their plan; a body without one (a prime test) is not
        # predicted rather than predicted as instant.
        note = f"{unknown} task(s) without a planned duration ({d.bodies[0]} bodies): not predicted"
    if d.unmodelled:
        # The model hands a whole batch over at once and moves no data: no prediction, rather
        # than a wrong one that would count in the error summary.
        note = f"{d.unmodelled}: the simulator models neither; not predicted"
    skip = bool(unknown or d.unmodelled)
    pm = math.nan if skip else sim.makespan_s
    pw = math.nan if skip else sim.wall_s
    return {
        "trial_id": d.trial_id, "experiment": d.experiment, "scheduler": d.scheduler,
        "workload": d.workload, "n_workers": d.n_workers, "policy": policy.name,
        "predicted_makespan_s": pm, "measured_makespan_s": d.makespan_s,
        "error": pm / d.makespan_s - 1 if d.makespan_s > 0 else math.nan,
        "predicted_wall_s": pw, "measured_wall_s": d.wall_s,
        "wall_error": pw / d.wall_s - 1 if d.wall_s > 0 else math.nan,
        # Not predicted: no counts either (the schedule simulated is not the trial's).
        "predicted_tasks_per_worker": "" if skip else _counts(sim.counts),
        "measured_tasks_per_worker": _counts(d.counts),
        "in_calibration": d.trial_id in cal.trials(d.scheduler),
        "costs": "fitted" if fitted else "default (scheduler not calibrated)",
        "note": note,
        # Where the scheduler's task order is new in every run (Dask's local scheduler), the
        # makespans over the orders the model tried; else the prediction itself.
        **_range(sim.makespan_range, pm),
        "counts_error": math.nan if skip else counts_error(sim.counts, d.counts),
    }


def _range(span: tuple[float, float] | None, predicted: float) -> dict[str, float]:
    lo, hi = span if span is not None and math.isfinite(predicted) else (predicted, predicted)
    return {"predicted_makespan_low_s": lo, "predicted_makespan_high_s": hi}


def _counts(c: Sequence[int]) -> str:
    return " ".join(str(x) for x in c)


def predictions(results: Any, cal: Calibration) -> pd.DataFrame:
    """predictions.csv: one row per completed trial of ``results``."""
    rows = [predict_trial(d, cal) for d in collect(results)]
    return pd.DataFrame(rows, columns=list(PREDICTION_COLUMNS))


def error_summary(pred: pd.DataFrame) -> pd.DataFrame:
    """Median and max |error| of the makespan per scheduler, over the trials the calibration
    never saw (``out of sample``) and over all, with the trial counts."""
    cols = ["scheduler", "trials", "unseen trials", "median |error| unseen",
            "max |error| unseen", "median |error| all", "counts match", "counts error",
            "repeat noise"]
    if pred.empty:
        return pd.DataFrame(columns=cols)
    noise = repeat_noise(pred)
    rows = []
    for sched, g in pred.groupby("scheduler", sort=False):
        err = g["error"].abs()
        unseen = g[~g["in_calibration"].astype(bool)]["error"].abs()
        # Over the trials predicted (the others have no predicted counts).
        said = g["predicted_tasks_per_worker"].fillna("").astype(str).str.strip() != ""
        match = ((g["predicted_tasks_per_worker"] == g["measured_tasks_per_worker"])[said].mean()
                 if said.any() else math.nan)
        moved = (pd.to_numeric(g["counts_error"], errors="coerce") if "counts_error" in g
                 else pd.Series(dtype=float))
        rows.append({"scheduler": sched, "trials": len(g), "unseen trials": len(unseen),
                     "median |error| unseen": _med(unseen), "max |error| unseen":
                     float(unseen.max()) if len(unseen) else math.nan,
                     "median |error| all": _med(err), "counts match": float(match),
                     "counts error": _med(moved),
                     "repeat noise": noise.get(str(sched), math.nan)})
    from ..analysis.results import sort_trials

    return sort_trials(pd.DataFrame(rows, columns=cols), ["scheduler"])


def repeat_noise(pred: pd.DataFrame) -> dict[str, float]:
    """Per scheduler: the |error| that a model predicting each trial's typical makespan
    exactly would still show, from the trials run more than once (same experiment, workload,
    worker count and task count): per such trial, the median over pairs of its runs of
    |log(makespan_i / makespan_j)| over sqrt(2) (one run's distance from the typical one,
    where the two runs of a pair each add theirs); then the median over those trials.
    Schedulers without repeated trials are left out.

    Which trials run more than once is the suite's choice: in the default one the granularity
    sweep's short points and the overhead study's no-ops (both calibration studies) and the
    batching study, so it is the spread of short trials, a yardstick for the errors beside it
    rather than their own noise. Why: on a small shared machine, two runs of the same task
    list can differ by tens of percent."""
    m = pd.to_numeric(pred["measured_makespan_s"], errors="coerce")
    n_tasks = (pred["measured_tasks_per_worker"].map(_count_sum)
               if "measured_tasks_per_worker" in pred.columns else 0)
    per_trial: dict[str, list[float]] = {}
    keys = ["scheduler", "experiment", "workload", "n_workers", "_n"]
    for key, g in pred.assign(_m=m, _n=n_tasks).groupby(keys, sort=False, dropna=False):
        x = [float(v) for v in g["_m"] if math.isfinite(float(v)) and v > 0]
        pairs = [abs(math.log(a / b)) / math.sqrt(2) for i, a in enumerate(x) for b in x[i + 1:]]
        if pairs:
            per_trial.setdefault(str(key[0]), []).append(float(statistics.median(pairs)))
    return {k: float(statistics.median(v)) for k, v in per_trial.items()}


def _count_sum(text: Any) -> int:
    """The task count of a tasks-per-worker string ("3 4 5" -> 12; -1 if unreadable)."""
    try:
        return sum(int(x) for x in str(text).split())
    except ValueError:
        return -1


def _med(x: pd.Series) -> float:
    v = [float(a) for a in x if math.isfinite(float(a))]
    return float(statistics.median(v)) if v else math.nan


def predict_config(path: str, cal: Calibration, quick: bool = False) -> pd.DataFrame:
    """Predicted makespan and wall of every trial of a config, without running it."""
    from .. import config
    from ..workloads import SHAPES

    exp = config.load(path, quick=quick)
    rows = []
    for t in exp.trials:
        items = SHAPES[t.shape].make(dict(t.params), t.n_workers, t.context())
        bodies = [b for b, _, _ in items]
        planned = [p for _, _, p in items]
        costs, fitted = cal.costs(t.label)
        policy = policy_for(t.label, t.options)
        sim = simulate(policy, bodies, planned, t.n_workers, costs)
        skip = unmodelled(t.params)  # arrivals over time, payloads: not modelled
        rows.append({"trial_id": t.trial_id, "scheduler": t.label, "workload": t.workload,
                     "n_workers": t.n_workers, "repeat": t.repeat, "n_tasks": len(items),
                     "policy": f"not modelled: {skip}" if skip else policy.name,
                     "predicted_makespan_s": math.nan if skip else sim.makespan_s,
                     **_range(sim.makespan_range, math.nan if skip else sim.makespan_s),
                     "predicted_wall_s": math.nan if skip else sim.wall_s,
                     "predicted_tasks_per_worker": "" if skip else _counts(sim.counts),
                     "costs": "fitted" if fitted else "default"})
    return pd.DataFrame(rows)


__all__ = ["CALIBRATION_STUDIES", "PREDICTION_COLUMNS", "counts_error", "error_summary",
           "predict_config", "predict_trial", "predictions", "repeat_noise"]
