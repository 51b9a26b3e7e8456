"""The task-record schema: the one place that knows the parquet columns.

One row per task. The columns in :data:`COLUMNS` are a public interface: analysis code and
users build on their names and types. Add columns freely; renaming or dropping one needs a
new :data:`SCHEMA_VERSION`: its major number (part of every trial's key) changes only then;
its minor number counts added columns (1.1: ``result_type``, ``result_bytes``,
``input_bytes``, ``output_bytes``), so files of 1.0 stay readable and resumable.

Each trial is one parquet file. Run-level facts (config text, versions, host, cluster cost)
are stored once per file as key-value metadata, never repeated in the rows.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

SCHEMA_VERSION = "1.1"

#: Required record columns, in file order, with their Arrow types.
#: ``*_ns`` are ``time.time_ns()``; ``start_ns``/``end_ns``/``receive_ns`` are null for a task
#: that never ran or whose result never came back (its ``status`` is then ``error``).
COLUMNS: dict[str, pa.DataType] = {
    "experiment": pa.string(),
    "trial_id": pa.string(),
    "repeat": pa.int64(),
    "scheduler": pa.string(),
    "workload": pa.string(),
    "n_workers": pa.int64(),
    "task_id": pa.int64(),
    "planned_s": pa.float64(),
    "worker": pa.string(),
    "pid": pa.int64(),
    "host": pa.string(),
    "submit_ns": pa.int64(),
    "start_ns": pa.int64(),
    "end_ns": pa.int64(),
    "receive_ns": pa.int64(),
    "status": pa.string(),
    "error": pa.string(),
}

#: Extra columns this version writes (free to grow; readers must not require them).
EXTRA_COLUMNS: dict[str, pa.DataType] = {
    "body": pa.string(),
    "result": pa.string(),
    # 1.1: what came back, and the payloads that travelled (null where no outcome came back).
    "result_type": pa.string(),    # the result's type, ``module.qualname`` (builtins: bare)
    "result_bytes": pa.int64(),    # its pickled size (highest protocol), null if unpicklable
    "input_bytes": pa.int64(),     # payload bytes the worker received (0: none; null: lost)
    "output_bytes": pa.int64(),    # payload bytes that came back with its outcome
}

#: A task's ``status`` column.
STATUS_OK = "ok"
STATUS_ERROR = "error"
#: A trial's ``trial_status`` (file metadata): it completed, or it did not (timeout, dead
#: worker, a cluster that could not start). Tasks that raised still leave the trial ``ok``.
TRIAL_OK = "ok"
TRIAL_FAILED = "failed"

#: Parquet key-value metadata keys.
META_SCHEMA = b"research.schema_version"
META_KIND = b"research.kind"
META_TRIAL = b"research.trial"
META_SYSTEM = b"research.system"
META_CONFIG = b"research.config"

KIND_TASKS = "tasks"
KIND_NATIVE = "native"
NATIVE_SUFFIX = ".native.parquet"
#: Suffix of benchmark tables that are not task records (e.g. the talk's timeit benchmark).
BENCH_SUFFIX = ".bench.parquet"


def arrow_schema(metadata: Mapping[bytes, bytes] | None = None) -> pa.Schema:
    """The Arrow schema of a task-record file, with optional key-value metadata."""
    fields = [pa.field(n, t) for n, t in {**COLUMNS, **EXTRA_COLUMNS}.items()]
    return pa.schema(fields, metadata=dict(metadata) if metadata else None)


def records_table(rows: Iterable[Mapping[str, Any]] | pd.DataFrame) -> pa.Table:
    """Build an Arrow table of task records; missing optional columns become null."""
    df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    schema = arrow_schema()
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"task records lack required columns: {', '.join(missing)}")
    arrays = []
    for field in schema:
        if field.name in df.columns:
            # from_pandas: NaN and pandas NA become null, whatever the column's dtype
            arrays.append(pa.Array.from_pandas(df[field.name].astype(object), type=field.type))
        else:
            arrays.append(pa.nulls(len(df), type=field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def file_metadata(
    trial: Mapping[str, Any], system: Mapping[str, Any], config_text: str, kind: str = KIND_TASKS
) -> dict[bytes, bytes]:
    """Key-value metadata stored once per file."""
    return {
        META_SCHEMA: SCHEMA_VERSION.encode(),
        META_KIND: kind.encode(),
        META_TRIAL: json.dumps(trial, default=str, sort_keys=True).encode(),
        META_SYSTEM: json.dumps(system, default=str, sort_keys=True).encode(),
        META_CONFIG: config_text.encode(),
    }


def write_table_atomic(table: pa.Table, path: Path) -> Path:
    """Write ``table`` to ``path`` via a temporary file and a rename.

    A reader never sees a half-written file, and an interrupted write leaves only a temp file
    that is removed here. An existing ``path`` is never replaced: that is the caller's decision.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.time_ns()}.tmp")
    try:
        pq.write_table(table, tmp)
        # os.link fails if the target exists, so a file is never silently overwritten.
        os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_trial(
    rows: pd.DataFrame,
    path: Path,
    trial: Mapping[str, Any],
    system: Mapping[str, Any],
    config_text: str,
) -> Path:
    """Write one trial's task records with its metadata, atomically."""
    table = records_table(rows)
    table = table.replace_schema_metadata(file_metadata(trial, system, config_text))
    return write_table_atomic(table, path)


def write_native(
    native: pd.DataFrame, path: Path, trial: Mapping[str, Any], system: Mapping[str, Any]
) -> Path:
    """Write a scheduler's own timing records for a trial (the native witness table)."""
    table = pa.Table.from_pandas(native, preserve_index=False)
    meta = dict(table.schema.metadata or {})
    meta.update(file_metadata(trial, system, "", kind=KIND_NATIVE))
    return write_table_atomic(table.replace_schema_metadata(meta), path)


def read_metadata(path: Path) -> dict[str, Any]:
    """Decode the key-value metadata of a record file into plain Python values."""
    raw = pq.read_schema(path).metadata or {}

    def _json(key: bytes) -> Any:
        return json.loads(raw[key]) if key in raw else {}

    return {
        "schema_version": raw.get(META_SCHEMA, b"").decode() or None,
        "kind": raw.get(META_KIND, KIND_TASKS.encode()).decode(),
        "trial": _json(META_TRIAL),
        "system": _json(META_SYSTEM),
        "config": raw.get(META_CONFIG, b"").decode(),
    }


def missing_columns(path: Path) -> list[str]:
    """Required columns that the file at ``path`` does not have."""
    names = set(pq.read_schema(path).names)
    return [c for c in COLUMNS if c not in names]


def read_trial(path: Path) -> pd.DataFrame:
    """Read one record file; integer columns come back as nullable ``Int64``.

    The types mapper matters: converting via float64 (what pandas does for an int column with
    nulls) would round epoch nanoseconds by up to a few hundred ns.
    """
    return pq.read_table(path).to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)


def is_record_file(path: Path) -> bool:
    """True for a trial's task-record file (not a native table, not a temp file)."""
    name = path.name
    if name.startswith(".") or name.endswith((NATIVE_SUFFIX, BENCH_SUFFIX)):
        return False
    return name.endswith(".parquet") and ".superseded" not in path.parts
