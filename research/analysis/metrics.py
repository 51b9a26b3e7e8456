"""Per-trial metrics: what one trial's task records say about how well the load was balanced.

Everything here works from the record columns alone (see :mod:`research.schema`).

Conventions:

* A task is *timed* when it has both ``start_ns`` and ``end_ns``. Timing metrics use timed
  tasks only, whatever their ``status``: a task that raised still occupied its worker.
  ``n_errors`` counts rows whose ``status`` is not ``ok``.
* Times are made relative to the trial's first in-task start before they become floats, so
  nanosecond stamps keep their precision.
* ``lower_bound_s`` and ``greedy_s`` describe the workload, not the run: they use the planned
  duration of every task, and the measured one where the plan is unknown (NaN).
* ``response_*`` is receive - submit and ``queueing_*`` start - submit, per task (median and
  95th percentile over the tasks that have both stamps): with tasks arriving over time
  (``arrival = "poisson"`` or a trace's ``arrival_s``) each task has its own submit stamp, so
  these are the queueing-theory quantities; in a batch every task shares one submit stamp.
* ``input_bytes``/``output_bytes``: the payload per task (median over tasks; 0 in files
  written before schema 1.1, which had no payloads).
* :func:`trial_model` gives the summary's ``model_s``: the same durations under the trial's
  scheduler's own model (:data:`~.models.SCHEDULER_MODELS`), which needs the scheduler's name
  and options, so :mod:`.results` calls it beside the metrics.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .. import schema
from .models import ModelValue, TrialTasks, greedy_makespan, lower_bound, model_for_trial

#: Per-trial metrics, in the column order of ``summary.csv``.
METRICS: tuple[str, ...] = (
    "n_tasks", "makespan_s", "wall_s", "busy_s", "lower_bound_s", "greedy_s", "efficiency",
    "tasks_per_worker_min", "tasks_per_worker_max", "workers_used", "mean_gap_s", "max_gap_s",
    "start_latency_median_s", "return_latency_median_s", "n_errors",
    "response_median_s", "response_p95_s", "queueing_median_s", "queueing_p95_s",
    "input_bytes", "output_bytes", "submit_span_s",
)

#: Per-trial samples kept for distribution figures are capped to bound memory on big sweeps.
MAX_SAMPLES = 5000

_NS_COLUMNS = ("submit_ns", "start_ns", "end_ns", "receive_ns")
_NATURAL = re.compile(r"(\d+)")


def natural_key(label: str) -> tuple[Any, ...]:
    """Sort key that puts ``engine-2`` before ``engine-10``."""
    return tuple(int(p) if p.isdigit() else p for p in _NATURAL.split(str(label)))



def read_records(path: Path) -> pd.DataFrame:
    """Read a record file with int64 columns as exact nullable ``Int64``.

    (A plain ``to_pandas`` turns an int64 column with nulls into float64, which rounds
    epoch nanoseconds to about 256 ns.)
    """
    return pq.read_table(path).to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)



def _ns_int(col: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(int64 values, valid mask) of a nanosecond column; other writers may use floats or
    datetimes. Raises TypeError naming the column if it holds something else."""
    valid = col.notna().to_numpy()
    if not valid.any():
        return np.zeros(len(col), dtype=np.int64), valid
    if pd.api.types.is_datetime64_any_dtype(col):
        if isinstance(col.dtype, pd.DatetimeTZDtype):
            col = col.dt.tz_convert(None)
        values = col.to_numpy(dtype="datetime64[ns]").view(np.int64)
    elif pd.api.types.is_float_dtype(col):
        values = np.round(col.to_numpy(dtype="float64", na_value=0.0)).astype(np.int64)
    elif pd.api.types.is_integer_dtype(col):
        values = col.to_numpy(dtype="int64", na_value=0)
    else:
        try:  # object columns of Python ints (exact), or digit strings
            values = col.astype("Int64").to_numpy(dtype="int64", na_value=0)
        except (TypeError, ValueError):
            raise TypeError(f"column {col.name} is not numeric (dtype {col.dtype})") from None
    return np.where(valid, values, 0), valid


def check_stamps(df: pd.DataFrame) -> None:
    """Raise TypeError naming the first nanosecond column that is not numeric."""
    for col in _NS_COLUMNS:
        _ns_int(df[col])


def _objects(col: pd.Series) -> np.ndarray:
    """Values as an object array with None (not NaN or <NA>) for missing ones."""
    values: np.ndarray = col.to_numpy(dtype=object, copy=True)
    values[pd.isna(values)] = None
    return values


def task_times(df: pd.DataFrame) -> pd.DataFrame:
    """Per-task times in seconds relative to the trial's first in-task start.

    Returns one row per input row, in ``task_id`` order, with ``task_id``, ``worker``,
    ``planned_s``, ``submit_s``, ``start_s``, ``end_s``, ``receive_s`` (NaN when missing),
    ``status``, ``error``, ``pid``, ``host``, ``timed`` (has start and end), ``order``
    (0-based position of a timed task among its worker's tasks by start; -1 if untimed) and
    ``row`` (the worker's row in a timeline, natural label order; -1 if untimed or no worker).
    ``attrs['origin_ns']`` holds the origin as int nanoseconds (the first start, or the first
    stamp of any kind if no task ran); ``attrs['workers']`` the worker labels by row.
    """
    df = df.sort_values("task_id", kind="stable") if "task_id" in df.columns else df
    ints = {c: _ns_int(df[c]) for c in _NS_COLUMNS}
    starts, start_ok = ints["start_ns"]
    if start_ok.any():
        origin = int(starts[start_ok].min())
    else:
        stamps = [v[m] for v, m in ints.values() if m.any()]
        origin = int(min(s.min() for s in stamps)) if stamps else 0
    out = pd.DataFrame({
        "task_id": df["task_id"].to_numpy() if "task_id" in df.columns else np.arange(len(df)),
        "worker": _objects(df["worker"]),
        "planned_s": pd.to_numeric(df["planned_s"], errors="coerce").to_numpy(dtype="float64"),
    })
    for col, (values, valid) in ints.items():
        sec = (values - origin).astype("float64") / 1e9
        sec[~valid] = np.nan
        out[col.replace("_ns", "_s")] = sec
    out["status"] = _objects(df["status"])
    out["error"] = _objects(df["error"]) if "error" in df.columns else np.full(len(df), None,
                                                                               object)
    for col in ("pid", "host"):
        out[col] = _objects(df[col]) if col in df.columns else np.full(len(df), None, object)
    out["timed"] = start_ok & ints["end_ns"][1]
    _add_rows_and_order(out)
    out.attrs["origin_ns"] = origin
    return out


def _add_rows_and_order(t: pd.DataFrame) -> None:
    timed = t["timed"].to_numpy()
    labels = t["worker"].to_numpy()
    has_worker = pd.notna(labels)
    use = timed & has_worker
    workers = sorted({str(w) for w in labels[use]}, key=natural_key)
    code = {w: i for i, w in enumerate(workers)}
    row = np.full(len(t), -1, dtype=np.int64)
    row[use] = [code[str(w)] for w in labels[use]]
    order = np.full(len(t), -1, dtype=np.int64)
    idx = np.flatnonzero(use)
    if len(idx):
        # Sort by (row, start); a task's order is its position within its row's run.
        srt = idx[np.lexsort((t["start_s"].to_numpy()[idx], row[idx]))]
        r = row[srt]
        first = np.r_[True, r[1:] != r[:-1]]
        run_start = np.maximum.accumulate(np.where(first, np.arange(len(srt)), 0))
        order[srt] = np.arange(len(srt)) - run_start
    t["row"] = row
    t["order"] = order
    t.attrs["workers"] = workers


def worker_labels(times: pd.DataFrame) -> list[str]:
    """Worker labels in timeline row order (from :func:`task_times`)."""
    return list(times.attrs.get("workers", []))


def work_durations(times: pd.DataFrame) -> np.ndarray:
    """Each task's duration for the bounds: planned, else measured, in task order (NaN if none)."""
    planned = times["planned_s"].to_numpy(dtype="float64")
    measured = (times["end_s"] - times["start_s"]).to_numpy(dtype="float64")
    out: np.ndarray = np.where(np.isfinite(planned), planned, measured)
    return out


def worker_gaps(times: pd.DataFrame) -> np.ndarray:
    """Idle time between consecutive timed tasks on the same worker (clipped at 0)."""
    t = times[times["row"] >= 0].sort_values(["row", "start_s"], kind="stable")
    row = t["row"].to_numpy()
    same = row[1:] == row[:-1]
    gaps = t["start_s"].to_numpy()[1:][same] - t["end_s"].to_numpy()[:-1][same]
    # Two tasks overlapping on one label means the label is shared, not negative idle time.
    clipped: np.ndarray = np.clip(gaps, 0.0, None)
    return clipped


def tasks_per_worker(times: pd.DataFrame, n_workers: int | None) -> np.ndarray:
    """Sorted task counts: one per worker label seen, plus a zero for each of ``n_workers``
    that got no task. Counts rows with a worker label, timed or not (a task that failed
    without stamps but names its worker still went there)."""
    labels = times["worker"].dropna().astype(str).tolist()
    counts = np.array(sorted(pd.Series(labels, dtype=object).value_counts().tolist()), dtype=int)
    missing = (n_workers or 0) - len(counts)
    return np.concatenate([np.zeros(max(missing, 0), dtype=int), counts])


def _median(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(np.median(x)) if len(x) else math.nan


def _p95(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(np.percentile(x, 95)) if len(x) else math.nan


def _bytes_per_task(df: pd.DataFrame, col: str) -> float:
    # No column, or a column with no values (records read from before schema 1.1, or from
    # elsewhere): no payload travelled.
    if col not in df.columns:
        return 0.0
    v = pd.to_numeric(df[col], errors="coerce").dropna()
    return float(v.median()) if len(v) else 0.0


def n_workers_of(df: pd.DataFrame, n_workers: int | None) -> int | None:
    """``n_workers`` if given, else the records' ``n_workers`` column (None if unknown)."""
    if n_workers is not None:
        return int(n_workers)
    if "n_workers" in df.columns:
        vals = pd.to_numeric(df["n_workers"], errors="coerce").dropna()
        if len(vals):
            return int(vals.iloc[0])
    return None


@dataclass
class TrialSamples:
    """Per-task values of one trial kept for distribution figures (capped, see MAX_SAMPLES)."""

    gaps_s: np.ndarray
    start_latency_s: np.ndarray
    tasks_per_worker: np.ndarray


def trial_metrics(
    df: pd.DataFrame, n_workers: int | None = None, *, times: pd.DataFrame | None = None
) -> dict[str, Any]:
    """The metrics of :data:`METRICS` for one trial's records, plus a ``note`` string.

    ``n_workers`` defaults to the ``n_workers`` column. A trial with no timed task gets NaN
    timing metrics and a note saying why; it never raises for that.
    """
    return metrics_and_samples(df, n_workers, times)[0]


def metrics_and_samples(
    df: pd.DataFrame, n_workers: int | None, times: pd.DataFrame | None = None
) -> tuple[dict[str, Any], TrialSamples]:
    """:func:`trial_metrics` and the per-task samples kept for distribution figures."""
    t = task_times(df) if times is None else times
    nw = n_workers_of(df, n_workers)
    timed = t[t["timed"]]
    n_errors = int((t["status"].astype(str) != schema.STATUS_OK).sum())
    dur = (timed["end_s"] - timed["start_s"]).to_numpy()
    makespan = float(timed["end_s"].max() - timed["start_s"].min()) if len(timed) else math.nan
    busy = float(dur.sum()) if len(timed) else math.nan
    work = work_durations(t)
    gaps = worker_gaps(t)
    start_lat = (t["start_s"] - t["submit_s"]).to_numpy()
    ret_lat = (t["receive_s"] - t["end_s"]).to_numpy()
    response = (t["receive_s"] - t["submit_s"]).to_numpy()
    counts = tasks_per_worker(t, nw)
    m: dict[str, Any] = {
        "n_tasks": len(t),
        "makespan_s": makespan,
        "wall_s": float(t["receive_s"].max() - t["submit_s"].min()),
        "busy_s": busy,
        "lower_bound_s": lower_bound(work, nw) if nw else math.nan,
        "greedy_s": greedy_makespan(work, nw) if nw else math.nan,
        "efficiency": (busy / (nw * makespan) if nw and makespan > 0 else math.nan),
        "tasks_per_worker_min": int(counts.min()) if len(counts) else 0,
        "tasks_per_worker_max": int(counts.max()) if len(counts) else 0,
        "workers_used": int(np.count_nonzero(counts)),
        "mean_gap_s": float(gaps.mean()) if len(gaps) else math.nan,
        "max_gap_s": float(gaps.max()) if len(gaps) else math.nan,
        "start_latency_median_s": _median(start_lat),
        "return_latency_median_s": _median(ret_lat),
        "n_errors": n_errors,
        "response_median_s": _median(response),
        "response_p95_s": _p95(response),
        "queueing_median_s": _median(start_lat),
        "queueing_p95_s": _p95(start_lat),
        "input_bytes": _bytes_per_task(df, "input_bytes"),
        "output_bytes": _bytes_per_task(df, "output_bytes"),
        # last submit - first: 0 for a batch; the arrivals' span when tasks arrive over time
        "submit_span_s": float(np.nanmax(t["submit_s"]) - np.nanmin(t["submit_s"]))
        if t["submit_s"].notna().any() else math.nan,
        "task_s_mean": float(np.nanmean(work)) if np.isfinite(work).any() else math.nan,
    }
    m["note"] = _note(len(t), len(timed), n_errors, nw, m["workers_used"])
    samples = TrialSamples(_cap(gaps), _cap(start_lat[np.isfinite(start_lat)]), counts)
    return m, samples


def trial_model(times: pd.DataFrame, n_workers: int | None, scheduler: str,
                options: Mapping[str, Any] | None) -> ModelValue:
    """The scheduler's schedule model (:data:`~.models.SCHEDULER_MODELS`) for one trial.

    Reads the durations of :func:`work_durations` (planned, else measured) in task order, and
    the trial's start stamps and worker labels (for the models that follow a scheduler's own
    order). ``options``: the trial's scheduler options (None: those written in the label).
    """
    if not n_workers:
        return ModelValue(math.nan, "n_workers unknown")
    starts = times["start_s"].to_numpy(dtype="float64")
    tasks = TrialTasks([float(x) for x in work_durations(times)], int(n_workers),
                       [float(x) for x in starts],
                       [None if w is None else str(w) for w in times["worker"]])
    return model_for_trial(scheduler, options, tasks)


def _note(n: int, n_timed: int, n_errors: int, nw: int | None, used: int) -> str:
    parts = []
    if n == 0:
        parts.append("no task rows: no metrics")
    elif n_timed == 0:
        parts.append(f"all {n} tasks failed or never ran: no timing metrics")
    elif n_timed < n:
        parts.append(f"{n - n_timed} of {n} tasks have no start/end stamps (left out of timings)")
    if n_errors and n_timed:
        parts.append(f"{n_errors} task(s) with status error")
    if nw is None:
        parts.append("n_workers unknown: no bounds or efficiency")
    elif n_timed and used < nw:
        parts.append(f"{nw - used} of {nw} workers ran no task")
    return "; ".join(parts)


def _cap(x: np.ndarray) -> np.ndarray:
    if len(x) <= MAX_SAMPLES:
        return x
    # Evenly spaced, not random: the figures are reproducible.
    picked: np.ndarray = np.sort(x)[np.linspace(0, len(x) - 1, MAX_SAMPLES).astype(int)]
    return picked



__all__ = [
    "MAX_SAMPLES", "METRICS", "TrialSamples", "check_stamps", "metrics_and_samples", "n_workers_of",
    "natural_key", "read_records", "task_times", "tasks_per_worker", "trial_metrics", "trial_model",
    "work_durations", "worker_gaps", "worker_labels",
]
