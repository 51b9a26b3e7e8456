"""Chrome trace-event export: look at a trial in Perfetto (ui.perfetto.dev) or chrome://tracing.

Each trial is one trace *process* (pid 1, 2, ...) named after the trial; each worker is one
*thread* of it, in the timeline's row order; each timed task is one complete ("X") event with
``ts``/``dur`` in microseconds. Format: the Trace Event Format's JSON object form
(``{"traceEvents": [...], "displayTimeUnit": "ms"}``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import schema
from . import metrics as M
from . import results as R

TRACE_SUFFIX = ".trace.json"


def _meta(name: str, pid: int, tid: int, args: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "ph": "M", "pid": pid, "tid": tid, "args": args}


def trial_events(
    df: pd.DataFrame, pid: int = 1, *, label: str | None = None, offset_us: float = 0.0
) -> list[dict[str, Any]]:
    """Trace events of one trial's records: metadata events, then one "X" event per timed task.

    Times are microseconds from the trial's first start plus ``offset_us`` (to place several
    trials on one absolute axis). Tasks without start/end stamps get no event.
    """
    times = M.task_times(df)
    workers = M.worker_labels(times)
    first = df.iloc[0] if len(df) else None
    name = label or (f"{first['scheduler']} · {first['workload']} · {first['n_workers']} workers"
                     f" · {first['trial_id']}" if first is not None else "trial")
    events = [_meta("process_name", pid, 0, {"name": name}),
              _meta("process_sort_index", pid, 0, {"sort_index": pid})]
    for tid, worker in enumerate(workers, start=1):
        events.append(_meta("thread_name", pid, tid, {"name": worker}))
        events.append(_meta("thread_sort_index", pid, tid, {"sort_index": tid}))
    t = times[times["row"] >= 0]
    # Columns to Python lists once, not a pandas lookup per task: a 100,000-task trial takes
    # a second, not several (the report writes the trace of every timeline it draws).
    start = t["start_s"].to_numpy(dtype="float64")
    end = t["end_s"].to_numpy(dtype="float64")
    ts = np.round(offset_us + start * 1e6, 3).tolist()
    dur = np.round((end - start) * 1e6, 3).tolist()
    planned = _nums(t["planned_s"].to_numpy(dtype="float64"))
    start_lat = _nums(start - t["submit_s"].to_numpy(dtype="float64"))
    return_lat = _nums(t["receive_s"].to_numpy(dtype="float64") - end)
    for i, (task_id, order, row, status, error, os_pid, host) in enumerate(zip(
            t["task_id"].astype("int64").tolist(), t["order"].tolist(), t["row"].tolist(),
            _objects(t["status"]), _objects(t["error"]), _objects(t["pid"]),
            _objects(t["host"]), strict=True)):
        args: dict[str, Any] = {
            "task_id": task_id, "order": order, "status": status, "planned_s": planned[i],
            "start_latency_s": start_lat[i], "return_latency_s": return_lat[i],
        }
        if error:
            args["error"] = str(error)
        if os_pid is not None:
            args["os_pid"] = int(os_pid)
        if host is not None:
            args["host"] = str(host)
        events.append({
            "name": f"task {task_id}", "cat": "task", "ph": "X", "ts": ts[i], "dur": dur[i],
            "pid": pid, "tid": row + 1, "args": args,
        })
    return events


def _nums(x: np.ndarray) -> list[float | None]:
    """JSON-safe floats of an array: NaN and infinities become null (not valid JSON)."""
    return [v if math.isfinite(v) else None for v in x.tolist()]


def _objects(col: pd.Series) -> list[Any]:
    """Values as a list with None (not NaN or <NA>) for missing ones."""
    values = col.to_numpy(dtype=object)
    return [None if m else v for v, m in zip(values.tolist(), pd.isna(values).tolist(),
                                                strict=True)]


def trace_document(trials: Iterable[pd.DataFrame], *, absolute: bool = False) -> dict[str, Any]:
    """A trace of several trials, one process each.

    By default each trial starts at 0, so trials overlay for comparison; with ``absolute`` they
    keep their real order and spacing from the earliest start of all.
    """
    trials = list(trials)
    origins = [M.task_times(df).attrs["origin_ns"] for df in trials]
    t0 = min(origins) if origins else 0
    events: list[dict[str, Any]] = []
    for pid, (df, origin) in enumerate(zip(trials, origins, strict=True), start=1):
        offset = (origin - t0) / 1e3 if absolute else 0.0
        events.extend(trial_events(df, pid, offset_us=offset))
    return {"traceEvents": events, "displayTimeUnit": "ms",
            "otherData": {"source": "research.analysis.trace", "absolute": absolute,
                          "origin_ns": int(t0) if absolute else None}}


def default_output(path: Path) -> Path:
    """Beside the input: ``X.parquet`` -> ``X.trace.json``; a directory ``D`` ->
    ``D.trace.json`` next to it."""
    path = Path(path)
    if path.is_dir():
        return path.resolve().with_name(path.resolve().name + TRACE_SUFFIX)
    return path.with_name(path.name.removesuffix(".parquet") + TRACE_SUFFIX)


def export_trace(
    source: Path, out: Path | None = None, *, absolute: bool = False
) -> tuple[Path, int, list[R.BrokenFile]]:
    """Write the trace of a trial file or of every trial under a results directory.

    Returns (output path, number of task events, files that could not be read). Raises
    ``FileNotFoundError`` if there is nothing to export.
    """
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"{source}: does not exist")
    files = R.find_record_files(source)
    if not files:
        raise FileNotFoundError(f"{source}: no task-record parquet files found")
    trials, broken = [], []
    for f in files:
        try:
            missing = schema.missing_columns(f)
            if missing:
                raise ValueError(f"missing required column(s): {', '.join(missing)}")
            trials.append(M.read_records(f))
        except Exception as exc:
            broken.append(R.BrokenFile(f, str(exc)))
    if not trials:
        raise FileNotFoundError(f"{source}: no readable trial ("
                                + "; ".join(f"{b.path.name}: {b.reason}" for b in broken) + ")")
    doc = trace_document(trials, absolute=absolute)
    out = Path(out) if out else default_output(source)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, separators=(",", ":"), allow_nan=False))
    n = sum(1 for e in doc["traceEvents"] if e["ph"] == "X")
    return out, n, broken


__all__ = ["TRACE_SUFFIX", "default_output", "export_trace", "trace_document", "trial_events"]
