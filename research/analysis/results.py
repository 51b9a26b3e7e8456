"""Loading a results directory: every task-record file under it, read into a per-trial
summary (one row per trial: identity, metrics, context), with the files that could not be
analysed and why; and the statistics over repeats.

File metadata only adds context (trial status, parameters, environment) when it is there.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from .. import schema
from .metrics import (
    METRICS,
    TrialSamples,
    check_stamps,
    metrics_and_samples,
    n_workers_of,
    read_records,
    task_times,
    trial_model,
)
from .parallel import default_jobs, run_ordered

#: Columns that identify a trial in the summary.
ID_COLUMNS: tuple[str, ...] = (
    "experiment", "trial_id", "scheduler", "workload", "n_workers", "repeat",
)
#: The scheduler's schedule model for the trial's task list (:data:`.models.SCHEDULER_MODELS`):
#: its makespan and what was modelled; right after the metrics.
MODEL_COLUMNS: tuple[str, ...] = ("model_s", "model")
#: Numbers aggregated over repeats by :func:`group_summary`.
GROUP_METRICS: tuple[str, ...] = (*METRICS, "model_s")
#: Context columns after the metrics (from the file metadata when present).
CONTEXT_COLUMNS: tuple[str, ...] = (
    "params_variant", "shape", "task_s_mean", "body", "sleep_error_median_s", "sleep_error_p95_s",
    "timer_slack_ns", "trial_status", "trial_error", "note", "first_error",
    "oversubscribed", "host", "scheduler_options", "receive_stamps", "source",
)
#: What a group of repeats is keyed by. ``params_variant`` separates trials that share the
#: other keys but ran different workload parameters (serial runs once per parameter set at
#: n_workers=1); it names the parameters that differ, and is '' almost always.
GROUP_KEYS: tuple[str, ...] = (
    "experiment", "workload", "n_workers", "params_variant", "scheduler",
)


def scheduler_rank(name: str) -> tuple[int, str]:
    """Sort key in the registry's display order, option variants (``mp-map[chunksize=4]``)
    after their plain scheduler; unknown names last, alphabetically. The second item is ''
    for a plain registry name."""
    from ..schedulers import REGISTRY

    order = list(REGISTRY)
    base, bracket, _ = str(name).partition("[")
    if base in order:
        return order.index(base), str(name) if bracket else ""
    return len(order), str(name)


def sort_trials(df: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """Sort by ``keys`` with schedulers in display order and worker labels naturally."""

    def key(col: pd.Series) -> pd.Series:
        if col.name == "scheduler":
            return col.map(lambda x: scheduler_rank(str(x)))
        return col

    return df.sort_values(list(keys), key=key, kind="stable").reset_index(drop=True)


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
    #: Per ``source`` of a file that holds one trial: its records, :func:`.metrics.task_times`
    #: and file metadata as :func:`load_results` read them, so that the calibration, the
    #: predictions and the figures need not read and time them again.
    kept: dict[str, tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]] = field(
        default_factory=dict, repr=False)

    def path_of(self, source: str) -> Path:
        """The file a summary row came from."""
        return self.results_dir / source.split("#", 1)[0]

    def records(self, source: str) -> pd.DataFrame:
        """The task records of one summary row (as read by :func:`load_results`, else re-read
        from its file)."""
        if source in self.kept:
            return self.kept[source][0].copy(deep=False)  # copy on write: ours stays as read
        rel, _, tid = source.partition("#")
        df = read_records(self.results_dir / rel)
        return df[df["trial_id"].astype(str) == tid] if tid else df

    def task_times(self, source: str) -> pd.DataFrame:
        """:func:`.metrics.task_times` of one summary row's records."""
        if source in self.kept:
            return self.kept[source][1].copy(deep=False)
        return task_times(self.records(source))

    def metadata(self, source: str) -> dict[str, Any]:
        """The metadata of the file a summary row came from (:func:`schema.read_metadata`)."""
        if source in self.kept:
            return self.kept[source][2]
        return schema.read_metadata(self.path_of(source))


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
    check_stamps(df)  # raises TypeError naming the column
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
    path: Path, rel: str, df: pd.DataFrame, meta: dict[str, Any], meta_note: str | None,
    kept: dict[str, tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]] | None = None,
) -> Iterable[tuple[dict[str, Any], TrialSamples, dict[str, Any]]]:
    """One summary row per trial in a file (files from other writers may hold several);
    ``kept`` gets the records, task times and metadata of a file of one trial."""
    trial = meta.get("trial") or {}
    system = meta.get("system") or {}
    ids = df["trial_id"].astype(object).where(df["trial_id"].notna(), path.stem)
    groups = list(df.groupby(ids, sort=False)) if ids.nunique() > 1 else [(None, df)]
    for tid, part in groups:
        use_meta = tid is None or tid == trial.get("trial_id")
        ident = _identity(part, trial if use_meta else {}, use_meta)
        times = task_times(part)
        if tid is None and meta_note is None and kept is not None:
            kept[rel] = (part, times, meta)  # rel is this row's source
        m, samples = metrics_and_samples(part, ident["n_workers"], times)
        tmeta = trial if use_meta else {}
        options = tmeta.get("options")
        label = str(ident["scheduler"] or "")
        model = trial_model(times, n_workers_of(part, ident["n_workers"]), label,
                            options if isinstance(options, dict) else None)
        errors = part.loc[part["status"].astype(str) != schema.STATUS_OK, "error"].dropna()
        errors = errors[errors.astype(str) != ""]
        hosts = part["host"].dropna()
        row = {
            **ident,
            "experiment": ident["experiment"] or path.parent.name,
            "trial_id": ident["trial_id"] or (tid if tid is not None else path.stem),
            **{k: m[k] for k in METRICS},
            "model_s": model.makespan_s,
            "model": model.label,
            "params_variant": "",
            "shape": tmeta.get("shape") or ident["workload"],
            "task_s_mean": m["task_s_mean"],
            **sleep_accuracy(part),
            "timer_slack_ns": _slack_text(tmeta.get("timer_slack_ns")),
            "trial_status": tmeta.get("trial_status") or "unknown",
            "trial_error": tmeta.get("trial_error") or "",
            "note": "; ".join(x for x in (m["note"], meta_note) if x),
            "first_error": str(errors.iloc[0]) if len(errors) else "",
            "oversubscribed": bool(tmeta.get("oversubscribed", False)),
            "host": system.get("host") or (str(hosts.iloc[0]) if len(hosts) else ""),
            "scheduler_options": json.dumps(options, sort_keys=True, default=str)
            if isinstance(options, dict) else "",
            # What ran: how results came back (one fetch for all, per task, per block).
            "receive_stamps": str((tmeta.get("run_info") or {}).get("receive_stamps", "")),
            "source": rel if tid is None else f"{rel}#{tid}",
            "_params": json.dumps(tmeta.get("params", {}), sort_keys=True, default=str),
        }
        yield row, samples, _env_row(system)


def sleep_accuracy(part: pd.DataFrame) -> dict[str, Any]:
    """The trial's body (its most common ``body``) and, over its sleep tasks, how long each
    sleep lasted beyond its plan (in-task end - start - planned): median and 95th percentile."""
    bodies = part["body"].dropna().astype(str) if "body" in part.columns else pd.Series([])
    body = str(bodies.mode().iloc[0]) if len(bodies) else ""
    out: dict[str, Any] = {"body": body, "sleep_error_median_s": math.nan,
                           "sleep_error_p95_s": math.nan}
    if not len(bodies):
        return out
    sl = part[part["body"].astype(str) == "sleep"]
    ok = sl["start_ns"].notna() & sl["end_ns"].notna() & sl["planned_s"].notna()
    sl = sl[ok]
    if len(sl):
        dur = (sl["end_ns"].astype("int64") - sl["start_ns"].astype("int64")).to_numpy() / 1e9
        err = dur - sl["planned_s"].astype(float).to_numpy()
        out["sleep_error_median_s"] = float(np.median(err))
        out["sleep_error_p95_s"] = float(np.percentile(err, 95))
    return out


def _slack_text(slack: Any) -> str:
    """The timer slack a trial's workers ran with, from its metadata ('' if not recorded)."""
    if not isinstance(slack, dict) or not slack.get("workers"):
        return ""
    return "/".join(str(v) for v in slack["workers"])


#: From this many files on, :func:`load_results` reads in several processes (starting one
#: costs about a second).
MIN_PARALLEL_FILES = 64

#: What :func:`_analyse_file` found in one file: its summary rows (with the ``_env_`` columns),
#: samples by source, what :attr:`Results.kept` keeps of it, and why it is broken (or None).
_FileOutcome = tuple[list[dict[str, Any]], list[tuple[str, TrialSamples]],
                     dict[str, tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]], str | None]


def _analyse_file(job: tuple[Path, Path]) -> _FileOutcome:
    """One record file (``job``: its path, the results directory) analysed; never raises."""
    path, base = job
    rel = path.relative_to(base).as_posix()
    rows: list[dict[str, Any]] = []
    samples_of: list[tuple[str, TrialSamples]] = []
    kept: dict[str, tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]] = {}
    try:
        df = _read_records(path)
    except Exception as exc:
        return rows, samples_of, kept, _reason(exc)
    meta, meta_note = _read_meta(path)
    if meta.get("kind") == schema.KIND_NATIVE:
        return rows, samples_of, kept, None  # a witness table under an ordinary name
    try:
        for row, samples, env in _trial_rows(path, rel, df, meta, meta_note, kept):
            rows.append({**row, **{f"_env_{k}": v for k, v in env.items()}})
            samples_of.append((row["source"], samples))
    except Exception as exc:  # keep going: one odd file must not sink the report
        kept.pop(rel, None)
        return rows, samples_of, kept, f"cannot analyse: {_reason(exc)}"
    return rows, samples_of, kept, None


def load_results(results_dir: Path | str, n_jobs: int | None = None) -> Results:
    """Read every task-record file under ``results_dir`` into a per-trial summary.

    Never raises for a bad file: it is listed in :attr:`Results.broken` with the reason.
    A missing directory or one without record files gives an empty summary and one broken entry.
    ``n_jobs`` processes read the files (default :func:`.parallel.default_jobs` from
    :data:`MIN_PARALLEL_FILES` files on, else 1); the result is the same whatever it is.
    """
    results_dir = Path(results_dir)
    base = results_dir if results_dir.is_dir() else results_dir.parent
    res = Results(base, pd.DataFrame(columns=[*ID_COLUMNS, *METRICS, *MODEL_COLUMNS,
                                                *CONTEXT_COLUMNS]))
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
    if n_jobs is None:
        n_jobs = default_jobs() if len(files) >= MIN_PARALLEL_FILES else 1
    outcomes = run_ordered(_analyse_file, [(path, base) for path in files], n_jobs)
    for path, (file_rows, samples_of, kept, error) in zip(files, outcomes, strict=True):
        rows += file_rows
        res.samples.update(samples_of)
        res.kept.update(kept)
        if error is not None:
            res.broken.append(BrokenFile(path, error))
    benches = results_dir.rglob(f"*{schema.BENCH_SUFFIX}") if results_dir.is_dir() else []
    for path in sorted(benches):
        if ".superseded" in path.parts:
            continue
        try:  # not task records, but read by the claims and the report: a bad one is listed
            pq.read_schema(path)
        except Exception as exc:
            res.broken.append(BrokenFile(path, f"cannot read benchmark table: {_reason(exc)}"))
    if rows:
        summary = _finish_summary(pd.DataFrame(rows))
        env_cols = [c for c in summary.columns if c.startswith("_env_")]
        res.environments = _environments(summary, env_cols)
        res.summary = summary.drop(columns=env_cols)
    return res


# ---------------------------------------------------------------------------------------------
# Task records of a whole directory (the notebook API's ``research.load``), and their summary

#: Columns :func:`load_records` adds to the record columns, one value per trial file, from the
#: file's metadata (missing when a file has none): what :func:`summarize_records` needs to give
#: the same per-trial rows as :func:`load_results`, and the setup the trial ran on.
METADATA_COLUMNS: tuple[str, ...] = (
    "source", "shape", "params", "scheduler_options", "trial_status", "trial_error",
    "oversubscribed", "timer_slack_ns", "trial_key", "run_host", "git_commit", "python_version",
    "cpu_model", "cpu_count", "receive_stamps",
)


def _metadata_values(rel: str, meta: dict[str, Any]) -> dict[str, Any]:
    """The :data:`METADATA_COLUMNS` values of one file (None where its metadata says nothing)."""
    trial = meta.get("trial") or {}
    system = meta.get("system") or {}
    options = trial.get("options")
    count = system.get("cpu_count")
    return {
        "source": rel,
        "shape": trial.get("shape"),
        "params": json.dumps(trial["params"], sort_keys=True, default=str)
        if "params" in trial else None,
        "scheduler_options": json.dumps(options, sort_keys=True, default=str)
        if isinstance(options, dict) else None,
        "trial_status": trial.get("trial_status"),
        "trial_error": trial.get("trial_error"),
        "oversubscribed": bool(trial.get("oversubscribed", False)),
        "timer_slack_ns": _slack_text(trial.get("timer_slack_ns")) or None,
        "trial_key": trial.get("key"),
        "run_host": system.get("host"),
        "git_commit": system.get("git_commit"),
        "python_version": system.get("python_version"),
        "cpu_model": system.get("cpu_model"),
        "receive_stamps": (trial.get("run_info") or {}).get("receive_stamps"),
        "cpu_count": int(count) if isinstance(count, int | float) else None,
    }


def load_records(results_dir: Path | str) -> tuple[pd.DataFrame, list[BrokenFile]]:
    """Every task record under ``results_dir`` in one frame, and the files left out (why).

    One row per task with the record columns as stored (integers as exact nullable ``Int64``,
    extra columns kept), then :data:`METADATA_COLUMNS` (categorical: one value per file).
    Files are found, read and checked as :func:`load_results` does them. Raises
    ``FileNotFoundError`` when ``results_dir`` does not exist or holds no readable record file.
    """
    results_dir = Path(results_dir)
    if not results_dir.exists():
        raise FileNotFoundError(f"{results_dir}: no such results directory")
    base = results_dir if results_dir.is_dir() else results_dir.parent
    frames: list[pd.DataFrame] = []
    values: list[dict[str, Any]] = []
    broken: list[BrokenFile] = []
    for path in find_record_files(results_dir):
        try:
            df = _read_records(path)
        except Exception as exc:
            broken.append(BrokenFile(path, _reason(exc)))
            continue
        meta, _ = _read_meta(path)
        if meta.get("kind") == schema.KIND_NATIVE:
            continue  # a witness table under an ordinary name: not task records
        frames.append(df)
        values.append(_metadata_values(path.relative_to(base).as_posix(), meta))
    if not frames:
        why = "; ".join(f"{b.path.name}: {b.reason}" for b in broken)
        raise FileNotFoundError(
            f"{results_dir}: no readable task-record parquet files (looked for *.parquet, "
            "skipping *.native.parquet, hidden files and .superseded/)"
            + (f"; unreadable: {why}" if why else ""))
    out = pd.concat(frames, ignore_index=True)
    # Per-file values spread to the rows by codes: one copy of each value, not one per task.
    file_of_row = np.repeat(np.arange(len(frames)), [len(f) for f in frames])
    for col in METADATA_COLUMNS:
        if col in out.columns:  # never overwrite a record column of the same name
            continue
        per_file = [v[col] for v in values]
        if col == "oversubscribed":
            out[col] = np.asarray(per_file, dtype=bool)[file_of_row]
        elif col == "cpu_count":
            out[col] = pd.array(per_file, dtype="Int64")[file_of_row]
        else:
            codes, uniques = pd.factorize(pd.Series(per_file, dtype=object))
            out[col] = pd.Categorical.from_codes(codes[file_of_row], categories=uniques)
    return out, broken


def _value(part: pd.DataFrame, col: str) -> Any:
    """The first value of a per-file column of ``part`` (None if absent or missing)."""
    if col not in part.columns or not len(part):
        return None
    v = part[col].iloc[0]
    return None if pd.isna(v) else v


def _meta_from_columns(part: pd.DataFrame) -> dict[str, Any]:
    """The file metadata that :func:`_trial_rows` reads, rebuilt from :data:`METADATA_COLUMNS`.
    Identity columns are left out: the records' own columns give them."""
    trial: dict[str, Any] = {}
    for col in ("shape", "trial_status", "trial_error"):
        if _value(part, col) is not None:
            trial[col] = str(_value(part, col))
    if _value(part, "params") is not None:
        trial["params"] = json.loads(str(_value(part, "params")))
    if _value(part, "scheduler_options") is not None:
        trial["options"] = json.loads(str(_value(part, "scheduler_options")))
    if _value(part, "oversubscribed") is not None:
        trial["oversubscribed"] = bool(_value(part, "oversubscribed"))
    slack = _value(part, "timer_slack_ns")
    if slack is not None:  # stored as the summary's text, "a/b": the same text comes back
        trial["timer_slack_ns"] = {"workers": str(slack).split("/")}
    if _value(part, "receive_stamps") is not None:
        trial["run_info"] = {"receive_stamps": str(_value(part, "receive_stamps"))}
    host = _value(part, "run_host")
    return {"trial": trial, "system": {"host": str(host)} if host is not None else {}}


def summarize_records(records: pd.DataFrame) -> pd.DataFrame:
    """One row per trial of task records, as :func:`load_results` summarises files.

    ``records`` is :func:`load_records`'s frame or any subset of its rows; without its
    ``source`` column trials are told apart by ``trial_id`` alone. Trials are computed by the
    same code as the report's summary, so the rows are the same.
    """
    missing = [c for c in schema.COLUMNS if c not in records.columns]
    if missing:
        raise ValueError(f"not task records: missing column(s) {', '.join(missing)}")
    if records.empty:
        return pd.DataFrame(columns=[*ID_COLUMNS, *METRICS, *MODEL_COLUMNS, *CONTEXT_COLUMNS])
    by = "source" if "source" in records.columns else "trial_id"
    rows = []
    for key, part in records.groupby(by, sort=False, observed=True, dropna=False):
        rel = str(key) if by == "source" else ""
        part = part.reset_index(drop=True)
        meta = _meta_from_columns(part) if by == "source" else {"trial": {}, "system": {}}
        for row, _samples, _env in _trial_rows(Path(rel), rel, part, meta, None):
            rows.append(row)
    return _finish_summary(pd.DataFrame(rows))


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
    cols = [*GROUP_KEYS, "shape", "task_s_mean", "model", "n_trials", "n_failed"] + [
        f"{m}_{s}" for m in GROUP_METRICS for s in ("median", "min", "max")]
    if summary.empty:
        return pd.DataFrame(columns=cols)
    s = summary.reset_index(drop=True)  # a copy; the index gives positions below
    s["_failed"] = s["trial_status"].astype(str).eq(schema.TRIAL_FAILED)
    # Each metric as floats once (NaN where missing): per group it is only indexing.
    values = {m: pd.to_numeric(s[m], errors="coerce").astype("float64").to_numpy()
              for m in GROUP_METRICS if m in s}
    failed = s["_failed"].to_numpy(dtype=bool)
    rows = []
    for key, g in s.groupby(list(GROUP_KEYS), sort=True, dropna=False):
        row: dict[str, Any] = dict(zip(GROUP_KEYS, key, strict=True))
        row["shape"] = str(g["shape"].iloc[0])
        row["task_s_mean"] = float(pd.to_numeric(g["task_s_mean"]).median())
        row["model"] = str(g["model"].iloc[0]) if "model" in g else ""
        pos = g.index.to_numpy()
        good = pos[~failed[pos]]
        row["n_trials"], row["n_failed"] = len(g), int(failed[pos].sum())
        for m in GROUP_METRICS:
            v = values[m][good] if m in values else np.empty(0)
            v = v[~np.isnan(v)]
            row[f"{m}_median"] = float(np.median(v)) if len(v) else math.nan
            row[f"{m}_min"] = float(v.min()) if len(v) else math.nan
            row[f"{m}_max"] = float(v.max()) if len(v) else math.nan
        rows.append(row)
    return sort_trials(pd.DataFrame(rows, columns=cols), GROUP_KEYS)


def summary_for_csv(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary with the brief's columns first: identity, metrics, the model, then
    context."""
    lead = [c for c in (*ID_COLUMNS, *METRICS, *MODEL_COLUMNS) if c in summary.columns]
    return summary[lead + [c for c in summary.columns if c not in lead]]


__all__ = [
    "CONTEXT_COLUMNS", "GROUP_KEYS", "GROUP_METRICS", "ID_COLUMNS", "METADATA_COLUMNS",
    "MODEL_COLUMNS", "BrokenFile", "Results", "find_record_files", "group_summary",
    "load_records", "load_results", "scheduler_rank", "sort_trials", "summarize_records",
    "summary_for_csv",
]
