"""Trial metrics: what one trial's task records say about how well the load was balanced.

Everything here works from the record columns alone (see :mod:`research.schema`); file
metadata only adds context (trial status, parameters, environment) when it is there.

Conventions:

* A task is *timed* when it has both ``start_ns`` and ``end_ns``. Timing metrics use timed
  tasks only, whatever their ``status``: a task that raised still occupied its worker.
  ``n_errors`` counts rows whose ``status`` is not ``ok``.
* Times are made relative to the trial's first in-task start before they become floats, so
  nanosecond stamps keep their precision.
* ``lower_bound_s`` and ``greedy_s`` describe the workload, not the run: they use the planned
  duration of every task, and the measured one where the plan is unknown (NaN).
"""

from __future__ import annotations

import hashlib
import heapq
import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from . import schema

#: Per-trial metrics, in the column order of ``summary.csv``.
METRICS: tuple[str, ...] = (
    "n_tasks", "makespan_s", "wall_s", "busy_s", "lower_bound_s", "greedy_s", "efficiency",
    "tasks_per_worker_min", "tasks_per_worker_max", "workers_used", "mean_gap_s", "max_gap_s",
    "start_latency_median_s", "return_latency_median_s", "n_errors",
)
#: Columns that identify a trial in the summary.
ID_COLUMNS: tuple[str, ...] = (
    "experiment", "trial_id", "scheduler", "workload", "n_workers", "repeat",
)
#: Context columns after the metrics (from the file metadata when present).
CONTEXT_COLUMNS: tuple[str, ...] = (
    "params_variant", "shape", "task_s_mean", "trial_status", "trial_error", "note", "first_error",
    "oversubscribed", "host", "source",
)
#: What a group of repeats is keyed by. ``params_variant`` separates trials that share the
#: other keys but ran different workload parameters (serial runs once per parameter set at
#: n_workers=1); it names the parameters that differ, and is '' almost always.
GROUP_KEYS: tuple[str, ...] = (
    "experiment", "workload", "n_workers", "params_variant", "scheduler",
)
#: Per-trial samples kept for distribution figures are capped to bound memory on big sweeps.
MAX_SAMPLES = 5000

_NS_COLUMNS = ("submit_ns", "start_ns", "end_ns", "receive_ns")
_NATURAL = re.compile(r"(\d+)")


def natural_key(label: str) -> tuple[Any, ...]:
    """Sort key that puts ``engine-2`` before ``engine-10``."""
    return tuple(int(p) if p.isdigit() else p for p in _NATURAL.split(str(label)))


def scheduler_rank(name: str) -> tuple[int, str]:
    """Sort key in the registry's display order, option variants (``mp-map[chunksize=4]``)
    after their plain scheduler; unknown names last, alphabetically. The second item is ''
    for a plain registry name."""
    from .schedulers import REGISTRY

    order = list(REGISTRY)
    base, bracket, _ = str(name).partition("[")
    if base in order:
        return order.index(base), str(name) if bracket else ""
    return len(order), str(name)


def read_records(path: Path) -> pd.DataFrame:
    """Read a record file with int64 columns as exact nullable ``Int64``.

    (A plain ``to_pandas`` turns an int64 column with nulls into float64, which rounds
    epoch nanoseconds to about 256 ns.)
    """
    return pq.read_table(path).to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)


def sort_trials(df: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """Sort by ``keys`` with schedulers in display order and worker labels naturally."""

    def key(col: pd.Series) -> pd.Series:
        if col.name == "scheduler":
            return col.map(lambda x: scheduler_rank(str(x)))
        return col

    return df.sort_values(list(keys), key=key, kind="stable").reset_index(drop=True)


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


def _objects(col: pd.Series) -> np.ndarray:
    """Values as an object array with None (not NaN or <NA>) for missing ones."""
    values = col.to_numpy(dtype=object, copy=True)
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


def greedy_makespan(durations: Sequence[float] | np.ndarray, n_workers: int) -> float:
    """List scheduling in the given order: each task goes to the worker that frees up first.

    This is what an ideal dynamic (load-balanced) scheduler with zero overhead achieves.
    """
    d = np.asarray(durations, dtype="float64")
    d = d[np.isfinite(d)]
    if len(d) == 0 or n_workers < 1:
        return math.nan
    if n_workers == 1:
        return float(d.sum())
    if len(d) <= n_workers:
        return float(d.max())
    free = [0.0] * n_workers
    for x in d.tolist():
        heapq.heapreplace(free, free[0] + x)
    return float(max(free))


def lower_bound(durations: Sequence[float] | np.ndarray, n_workers: int) -> float:
    """``max(sum / n_workers, max)``: no schedule of these tasks on ``n_workers`` is shorter."""
    d = np.asarray(durations, dtype="float64")
    d = d[np.isfinite(d)]
    if len(d) == 0 or n_workers < 1:
        return math.nan
    return float(max(d.sum() / n_workers, d.max()))


def work_durations(times: pd.DataFrame) -> np.ndarray:
    """Each task's duration for the bounds: planned, else measured, in task order (NaN if none)."""
    planned = times["planned_s"].to_numpy(dtype="float64")
    measured = (times["end_s"] - times["start_s"]).to_numpy(dtype="float64")
    return np.where(np.isfinite(planned), planned, measured)


def worker_gaps(times: pd.DataFrame) -> np.ndarray:
    """Idle time between consecutive timed tasks on the same worker (clipped at 0)."""
    t = times[times["row"] >= 0].sort_values(["row", "start_s"], kind="stable")
    row = t["row"].to_numpy()
    same = row[1:] == row[:-1]
    gaps = t["start_s"].to_numpy()[1:][same] - t["end_s"].to_numpy()[:-1][same]
    # Two tasks overlapping on one label means the label is shared, not negative idle time.
    return np.clip(gaps, 0.0, None)


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


def _n_workers_of(df: pd.DataFrame, n_workers: int | None) -> int | None:
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
    return _metrics_and_samples(df, n_workers, times)[0]


def _metrics_and_samples(
    df: pd.DataFrame, n_workers: int | None, times: pd.DataFrame | None = None
) -> tuple[dict[str, Any], TrialSamples]:
    t = task_times(df) if times is None else times
    nw = _n_workers_of(df, n_workers)
    timed = t[t["timed"]]
    n_errors = int((t["status"].astype(str) != schema.STATUS_OK).sum())
    dur = (timed["end_s"] - timed["start_s"]).to_numpy()
    makespan = float(timed["end_s"].max() - timed["start_s"].min()) if len(timed) else math.nan
    busy = float(dur.sum()) if len(timed) else math.nan
    work = work_durations(t)
    gaps = worker_gaps(t)
    start_lat = (t["start_s"] - t["submit_s"]).to_numpy()
    ret_lat = (t["receive_s"] - t["end_s"]).to_numpy()
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
        "task_s_mean": float(np.nanmean(work)) if np.isfinite(work).any() else math.nan,
    }
    m["note"] = _note(len(t), len(timed), n_errors, nw, m["workers_used"])
    samples = TrialSamples(_cap(gaps), _cap(start_lat[np.isfinite(start_lat)]), counts)
    return m, samples


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
    return np.sort(x)[np.linspace(0, len(x) - 1, MAX_SAMPLES).astype(int)]


# ---------------------------------------------------------------------------------------------
# Loading a results directory


@dataclass
class BrokenFile:
    """A file that could not be analysed, and why."""

    path: Path
    reason: str


@dataclass
class Results:
    """A results directory, analysed.

    ``summary`` has one row per trial (:data:`ID_COLUMNS`, :data:`METRICS`,
    :data:`CONTEXT_COLUMNS`); ``samples`` maps a summary ``source`` to its per-task samples;
    ``environments`` has one row per distinct machine/software setup; ``broken`` lists files
    that could not be read, each with a reason.
    """

    results_dir: Path
    summary: pd.DataFrame
    samples: dict[str, TrialSamples] = field(default_factory=dict)
    environments: pd.DataFrame = field(default_factory=pd.DataFrame)
    broken: list[BrokenFile] = field(default_factory=list)
    n_files: int = 0

    def path_of(self, source: str) -> Path:
        """The file a summary row came from."""
        return self.results_dir / source.split("#", 1)[0]

    def records(self, source: str) -> pd.DataFrame:
        """The task records of one summary row (re-read from its file)."""
        rel, _, tid = source.partition("#")
        df = read_records(self.results_dir / rel)
        return df[df["trial_id"].astype(str) == tid] if tid else df


def find_record_files(results_dir: Path) -> list[Path]:
    """Task-record files under ``results_dir`` (or the file itself), in a stable order.

    Skips native witness tables, hidden and temp files and anything under a hidden
    directory such as ``.superseded/``.
    """
    results_dir = Path(results_dir)
    if results_dir.is_file():
        return [results_dir] if schema.is_record_file(results_dir) else []
    found = []
    for p in results_dir.rglob("*.parquet"):
        rel = p.relative_to(results_dir)
        if any(part.startswith(".") for part in rel.parts[:-1]):
            continue
        if schema.is_record_file(p):
            found.append(p)
    return sorted(found)


def _read_meta(path: Path) -> tuple[dict[str, Any], str | None]:
    try:
        return schema.read_metadata(path), None
    except Exception as exc:  # other writers: analyse the columns anyway
        return {"trial": {}, "system": {}}, f"metadata unreadable ({type(exc).__name__})"


def _read_records(path: Path) -> pd.DataFrame:
    missing = schema.missing_columns(path)
    if missing:
        raise ValueError(f"missing required column(s): {', '.join(missing)}")
    df = read_records(path)
    for col in _NS_COLUMNS:
        _ns_int(df[col])  # raises TypeError naming the column
    return df


def _variant_labels(params: pd.Series, keys: pd.DataFrame) -> pd.Series:
    """A short label of the parameters that differ within each group of trials."""
    out = pd.Series("", index=params.index, dtype=object)
    for _, idx in keys.groupby(list(keys.columns), dropna=False).groups.items():
        dicts = [json.loads(params[i]) if params[i] else {} for i in idx]
        if len({json.dumps(d, sort_keys=True) for d in dicts}) < 2:
            continue
        differ = sorted({k for d in dicts for k in d if any(e.get(k) != d.get(k) for e in dicts)})
        for i, d in zip(idx, dicts, strict=True):
            out[i] = ", ".join(f"{k}={_short(d.get(k))}" for k in differ)
    return out


def _short(v: Any) -> str:
    s = json.dumps(v, default=str) if not isinstance(v, str) else v
    return s if len(s) <= 24 else hashlib.sha1(s.encode()).hexdigest()[:8]


def _env_row(system: dict[str, Any]) -> dict[str, Any]:
    libs = system.get("libraries") or {}
    lib_text = ", ".join(f"{k} {v}" for k, v in sorted(libs.items()) if v)
    mem = system.get("memory_total_gib")
    return {
        "host": system.get("host") or "unknown (no metadata)",
        "os": system.get("os") or "",
        "cpu_model": system.get("cpu_model") or "",
        "cpu_count": system.get("cpu_count") or "",
        "memory_total_gib": round(float(mem), 1) if mem else "",
        "python": system.get("python_version") or "",
        "libraries": lib_text,
        "git_commit": (str(system.get("git_commit"))[:12] + ("+dirty" if system.get("git_dirty")
                       else "")) if system.get("git_commit") else "",
    }


def _identity(part: pd.DataFrame, trial: dict[str, Any], use_meta: bool) -> dict[str, Any]:
    """Trial identity: from the file metadata when it describes this trial, else the columns."""
    first = part.iloc[0] if len(part) else None
    out = {}
    for col in ID_COLUMNS:
        value = trial.get(col) if use_meta else None
        if value is None and first is not None and col in part.columns and pd.notna(first[col]):
            value = first[col]
        out[col] = value
    return out


def _trial_rows(
    path: Path, rel: str, df: pd.DataFrame, meta: dict[str, Any], meta_note: str | None
) -> Iterable[tuple[dict[str, Any], TrialSamples, dict[str, Any]]]:
    """One summary row per trial in a file (files from other writers may hold several)."""
    trial = meta.get("trial") or {}
    system = meta.get("system") or {}
    ids = df["trial_id"].astype(object).where(df["trial_id"].notna(), path.stem)
    groups = list(df.groupby(ids, sort=False)) if ids.nunique() > 1 else [(None, df)]
    for tid, part in groups:
        use_meta = tid is None or tid == trial.get("trial_id")
        ident = _identity(part, trial if use_meta else {}, use_meta)
        m, samples = _metrics_and_samples(part, ident["n_workers"])
        errors = part.loc[part["status"].astype(str) != schema.STATUS_OK, "error"].dropna()
        errors = errors[errors.astype(str) != ""]
        hosts = part["host"].dropna()
        tmeta = trial if use_meta else {}
        row = {
            **ident,
            "experiment": ident["experiment"] or path.parent.name,
            "trial_id": ident["trial_id"] or (tid if tid is not None else path.stem),
            **{k: m[k] for k in METRICS},
            "params_variant": "",
            "shape": tmeta.get("shape") or ident["workload"],
            "task_s_mean": m["task_s_mean"],
            "trial_status": tmeta.get("trial_status") or "unknown",
            "trial_error": tmeta.get("trial_error") or "",
            "note": "; ".join(x for x in (m["note"], meta_note) if x),
            "first_error": str(errors.iloc[0]) if len(errors) else "",
            "oversubscribed": bool(tmeta.get("oversubscribed", False)),
            "host": system.get("host") or (str(hosts.iloc[0]) if len(hosts) else ""),
            "source": rel if tid is None else f"{rel}#{tid}",
            "_params": json.dumps(tmeta.get("params", {}), sort_keys=True, default=str),
        }
        yield row, samples, _env_row(system)


def load_results(results_dir: Path | str) -> Results:
    """Read every task-record file under ``results_dir`` into a per-trial summary.

    Never raises for a bad file: it is listed in :attr:`Results.broken` with the reason.
    A missing directory or one without record files gives an empty summary and one broken entry.
    """
    results_dir = Path(results_dir)
    base = results_dir if results_dir.is_dir() else results_dir.parent
    res = Results(base, pd.DataFrame(columns=[*ID_COLUMNS, *METRICS, *CONTEXT_COLUMNS]))
    if not results_dir.exists():
        res.broken.append(BrokenFile(results_dir, "does not exist"))
        return res
    files = find_record_files(results_dir)
    res.n_files = len(files)
    if not files:
        res.broken.append(BrokenFile(results_dir, "no task-record parquet files found "
                                     "(looked for *.parquet, skipping *.native.parquet, "
                                     "hidden files and .superseded/)"))
        return res
    rows: list[dict[str, Any]] = []
    for path in files:
        rel = path.relative_to(base).as_posix()
        try:
            df = _read_records(path)
        except Exception as exc:
            res.broken.append(BrokenFile(path, _reason(exc)))
            continue
        meta, meta_note = _read_meta(path)
        if meta.get("kind") == schema.KIND_NATIVE:
            continue  # a witness table under an ordinary name: not task records
        try:
            for row, samples, env in _trial_rows(path, rel, df, meta, meta_note):
                rows.append({**row, **{f"_env_{k}": v for k, v in env.items()}})
                res.samples[row["source"]] = samples
        except Exception as exc:  # keep going: one odd file must not sink the report
            res.broken.append(BrokenFile(path, f"cannot analyse: {_reason(exc)}"))
    if rows:
        summary = _finish_summary(pd.DataFrame(rows))
        env_cols = [c for c in summary.columns if c.startswith("_env_")]
        res.environments = _environments(summary, env_cols)
        res.summary = summary.drop(columns=env_cols)
    return res


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ValueError | TypeError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _finish_summary(s: pd.DataFrame) -> pd.DataFrame:
    # A variant exists only where parameters differ within one (experiment, workload, n, sched).
    keys = s[["experiment", "workload", "n_workers", "scheduler"]].astype(str)
    s["params_variant"] = _variant_labels(s["_params"], keys)
    s = s.drop(columns="_params")
    for col in ("n_workers", "repeat", "n_tasks", "n_errors", "workers_used",
                "tasks_per_worker_min", "tasks_per_worker_max"):
        s[col] = pd.to_numeric(s[col], errors="coerce").astype("Int64")
    for col in ("experiment", "trial_id", "scheduler", "workload"):
        s[col] = s[col].astype(object).where(s[col].notna(), "?").astype(str)
    return sort_trials(s, [*GROUP_KEYS, "repeat", "trial_id"])


def _environments(summary: pd.DataFrame, env_cols: list[str]) -> pd.DataFrame:
    """One row per distinct machine/software setup, with the trials that ran on it."""
    envs = summary[[*env_cols, "experiment"]].rename(columns=lambda c: c.removeprefix("_env_"))
    keys = [c.removeprefix("_env_") for c in env_cols]
    out = (envs.astype(str).groupby(keys, sort=False)
           .agg(n_trials=("experiment", "size"),
                experiments=("experiment", lambda x: ", ".join(sorted(set(x)))))
           .reset_index())
    return out.sort_values("n_trials", ascending=False, kind="stable").reset_index(drop=True)


# ---------------------------------------------------------------------------------------------
# Over repeats


def group_summary(summary: pd.DataFrame) -> pd.DataFrame:
    """Median, min and max of each metric over the repeats of each group.

    Groups are :data:`GROUP_KEYS` (the brief's (scheduler, workload, n_workers), kept apart by
    experiment and ``params_variant``). Trials whose ``trial_status`` is ``failed`` are left out
    of the statistics and counted in ``n_failed``; ``n_trials`` counts all.
    """
    cols = [*GROUP_KEYS, "shape", "task_s_mean", "n_trials", "n_failed"] + [
        f"{m}_{s}" for m in METRICS for s in ("median", "min", "max")]
    if summary.empty:
        return pd.DataFrame(columns=cols)
    s = summary.copy()
    s["_failed"] = s["trial_status"].astype(str).eq("failed")
    rows = []
    for key, g in s.groupby(list(GROUP_KEYS), sort=True, dropna=False):
        row: dict[str, Any] = dict(zip(GROUP_KEYS, key, strict=True))
        row["shape"] = str(g["shape"].iloc[0])
        row["task_s_mean"] = float(pd.to_numeric(g["task_s_mean"]).median())
        row["n_trials"], row["n_failed"] = len(g), int(g["_failed"].sum())
        good = g[~g["_failed"]]
        for m in METRICS:
            v = pd.to_numeric(good[m], errors="coerce").astype("float64")
            row[f"{m}_median"] = float(v.median()) if v.notna().any() else math.nan
            row[f"{m}_min"] = float(v.min()) if v.notna().any() else math.nan
            row[f"{m}_max"] = float(v.max()) if v.notna().any() else math.nan
        rows.append(row)
    return sort_trials(pd.DataFrame(rows, columns=cols), GROUP_KEYS)


def summary_for_csv(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary with the brief's columns first: identity, metrics, then context."""
    lead = [c for c in (*ID_COLUMNS, *METRICS) if c in summary.columns]
    return summary[lead + [c for c in summary.columns if c not in lead]]


__all__ = [
    "CONTEXT_COLUMNS", "GROUP_KEYS", "ID_COLUMNS", "METRICS", "BrokenFile", "Results",
    "TrialSamples", "find_record_files", "greedy_makespan", "group_summary", "load_results",
    "lower_bound", "natural_key", "read_records", "scheduler_rank", "sort_trials",
    "summary_for_csv", "task_times", "tasks_per_worker", "trial_metrics", "work_durations",
    "worker_gaps", "worker_labels",
]
