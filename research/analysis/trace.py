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

import pandas as pd

from .. import schema
from . import metrics as M
from . import results as R

TRACE_SUFFIX = ".trace.json"


def _meta(name: str, pid: int, tid: int, args: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "ph": "M", "pid": pid, "tid": tid, "args": args}


def _num(x: Any) -> Any:
    """JSON-safe number: NaN becomes null (NaN is not valid JSON)."""
    return None if isinstance(x, float) and not math.isfinite(x) else x


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
    for rec in t.itertuples(index=False):
        args: dict[str, Any] = {
            "task_id": int(rec.task_id), "order": int(rec.order), "status": rec.status,
            "planned_s": _num(float(rec.planned_s)),
            "start_latency_s": _num(float(rec.start_s - rec.submit_s)),
            "return_latency_s": _num(float(rec.receive_s - rec.end_s)),
        }
        if pd.notna(rec.error) and rec.error:
            args["error"] = str(rec.error)
        if pd.notna(rec.pid):
            args["os_pid"] = int(rec.pid)
        if pd.notna(rec.host):
            args["host"] = str(rec.host)
        events.append({
            "name": f"task {int(rec.task_id)}", "cat": "task", "ph": "X",
            "ts": round(offset_us + rec.start_s * 1e6, 3),
            "dur": round((rec.end_s - rec.start_s) * 1e6, 3),
            "pid": pid, "tid": int(rec.row) + 1, "args": args,
        })
    return events


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
