"""Synthetic task records for the analysis tests (built by hand, never by running schedulers).

Times are given in seconds relative to :data:`T0` and stored as exact integer nanoseconds.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from research import schema

#: An epoch-scale origin, so tests exercise nanosecond precision at realistic magnitudes.
T0 = 1_790_000_000_123_456_789
SYSTEM = {
    "host": "testhost", "os": "Linux-test", "cpu_model": "Test CPU 3000", "cpu_count": 4,
    "memory_total_gib": 16.0, "python_version": "3.11.7",
    "libraries": {"numpy": "2.0", "pandas": "2.2", "ipyparallel": "9.0"}, "git_commit": "abc123",
}


def ns(seconds: float | None) -> int | None:
    """Seconds after T0 as int nanoseconds (None stays None)."""
    return None if seconds is None else T0 + round(seconds * 1e9)


def task(task_id: int, worker: str | None, start: float | None, end: float | None, *,
         planned: float = math.nan, submit: float | None = 0.0, receive: float | None = None,
         status: str = schema.STATUS_OK, error: str = "") -> dict[str, Any]:
    """One task's times in seconds; ``receive`` defaults to ``end``."""
    if receive is None and end is not None and status == schema.STATUS_OK:
        receive = end
    return {"task_id": task_id, "worker": worker, "start": start, "end": end,
            "planned": planned, "submit": submit, "receive": receive, "status": status,
            "error": error}


def records(tasks: Sequence[dict[str, Any]], *, scheduler: str = "sched", workload: str = "wl",
            n_workers: int = 2, repeat: int = 0, experiment: str = "exp",
            trial_id: str | None = None) -> pd.DataFrame:
    """Record rows (the schema's columns) from :func:`task` dicts."""
    tid = trial_id or f"{scheduler}_{workload}_w{n_workers}_r{repeat}"
    rows = []
    for t in tasks:
        w = t["worker"]
        rows.append({
            "experiment": experiment, "trial_id": tid, "repeat": repeat, "scheduler": scheduler,
            "workload": workload, "n_workers": n_workers, "task_id": t["task_id"],
            "planned_s": t["planned"], "worker": w,
            "pid": (1000 + int(w.rsplit("-", 1)[-1])) if w and w[-1].isdigit() else None,
            "host": "testhost" if w else None, "submit_ns": ns(t["submit"]),
            "start_ns": ns(t["start"]), "end_ns": ns(t["end"]), "receive_ns": ns(t["receive"]),
            "status": t["status"], "error": t["error"], "body": "sleep", "result": None,
        })
    df = pd.DataFrame(rows)
    for col in ("submit_ns", "start_ns", "end_ns", "receive_ns", "pid"):
        # Python ints in an object column: a float64 detour (None -> NaN) would lose
        # nanoseconds, and schema.records_table cannot take pandas' <NA>.
        df[col] = pd.Series([r[col] for r in rows], dtype=object)
    return df


def trial_meta(df: pd.DataFrame, *, status: str = schema.TRIAL_OK, error: str | None = None,
               params: dict[str, Any] | None = None, shape: str = "explicit") -> dict[str, Any]:
    """File metadata for a trial, as the runner writes it."""
    first = df.iloc[0]
    return {
        "trial_id": first["trial_id"], "key": "k" * 64, "experiment": first["experiment"],
        "scheduler": first["scheduler"], "options": {}, "workload": first["workload"],
        "shape": shape, "params": params or {}, "n_workers": int(first["n_workers"]),
        "repeat": int(first["repeat"]), "trial_status": status, "trial_error": error,
        "cluster": {"startup_s": 0.1, "shutdown_s": 0.1, "rss_mib": 10.0,
                    "n_workers": int(first["n_workers"]), "existing_cluster": False,
                    "cluster_id": "c1"},
        "oversubscribed": False, "cpu_iters_per_s": None,
    }


def write(df: pd.DataFrame, directory: Path, **meta: Any) -> Path:
    """Write a trial file as the runner does (metadata included)."""
    path = Path(directory) / df["experiment"].iloc[0] / f"{df['trial_id'].iloc[0]}.parquet"
    return schema.write_trial(df, path, trial_meta(df, **meta), SYSTEM, "[experiment]\n")


def write_bare(df: pd.DataFrame, path: Path) -> Path:
    """Write records without any research metadata (as another tool might)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path)
    return path


def list_schedule(durations: Sequence[float], n_workers: int, gap: float = 0.0,
                  ) -> list[dict[str, Any]]:
    """Tasks run by a dynamic scheduler: each goes to the worker free first (+ ``gap``)."""
    free = [(0.0, w) for w in range(n_workers)]
    out = []
    for i, d in enumerate(durations):
        t, w = heapq.heappop(free)
        out.append(task(i, f"worker-{w}", t, t + d, planned=d, receive=t + d + 0.001))
        heapq.heappush(free, (t + d + gap, w))
    return out


def static_blocks(durations: Sequence[float], n_workers: int) -> list[dict[str, Any]]:
    """Tasks run in contiguous blocks, one per worker; the first ``n % q`` get one extra
    (how a DirectView map splits a list)."""
    q, r = divmod(len(durations), n_workers)
    out, i = [], 0
    for w in range(n_workers):
        t = 0.0
        for _ in range(q + (1 if w < r else 0)):
            d = durations[i]
            out.append(task(i, f"worker-{w}", t, t + d, planned=d, receive=t + d + 0.001))
            t += d
            i += 1
    return sorted(out, key=lambda x: x["task_id"])


def talk_worst_case(n_workers: int = 12) -> list[float]:
    """The talk's experiment 1: 146 tasks, the first 12 of 1.0 s, the rest 0.2 s."""
    total = n_workers * n_workers + 2
    return [1.0 if i < total // n_workers else 0.2 for i in range(total)]


def build_results_dir(root: Path) -> Path:
    """A small sweep: ipp-direct and ipp-lb on two workloads at 2 and 3 workers, 2 repeats."""
    workloads = {"worst": [0.4, 0.4, 0.1, 0.1, 0.1, 0.1, 0.1],
                 "rand": [0.12, 0.3, 0.05, 0.2, 0.07, 0.15, 0.09, 0.11]}
    for wl, durations in workloads.items():
        for n in (2, 3):
            for rep in range(2):
                for sched, make in (("ipp-direct", static_blocks), ("ipp-lb", list_schedule)):
                    df = records(make(durations, n), scheduler=sched, workload=wl,
                                 n_workers=n, repeat=rep)
                    write(df, root, params={"durations_s": durations})
    return root
