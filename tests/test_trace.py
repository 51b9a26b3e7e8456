"""Chrome trace export: valid JSON, one event per task, tracks per worker, microseconds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from research.analysis import trace
from research.cli import main

from analysis_data import build_results_dir, list_schedule, records, task, write, write_bare


def _load(path: Path) -> list[dict]:
    doc = json.loads(path.read_text())
    assert doc["displayTimeUnit"] == "ms"
    return doc["traceEvents"]


def test_one_x_event_per_task_in_microseconds(tmp_path: Path) -> None:
    df = records([task(0, "worker-0", 0.0, 1.0, planned=1.0), task(1, "worker-1", 0.25, 0.5),
                  task(2, "worker-0", 1.5, 1.500002), task(3, None, None, None, status="error")],
                 n_workers=2)
    path = write(df, tmp_path)
    out, n, broken = trace.export_trace(path)
    assert out == path.with_name(path.stem + ".trace.json") and n == 3 and broken == []
    events = _load(out)
    xs = sorted((e for e in events if e["ph"] == "X"), key=lambda e: e["args"]["task_id"])
    assert [(e["ts"], e["dur"], e["tid"]) for e in xs] == [
        (0.0, 1e6, 1), (250000.0, 250000.0, 2), (1500000.0, 2.0, 1)]
    assert xs[0]["args"]["planned_s"] == 1.0 and xs[1]["args"]["planned_s"] is None
    assert {e["pid"] for e in events} == {1}
    threads = {e["tid"]: e["args"]["name"] for e in events if e["name"] == "thread_name"}
    assert threads == {1: "worker-0", 2: "worker-1"}
    (proc,) = [e for e in events if e["name"] == "process_name"]
    assert "sched" in proc["args"]["name"] and "2 workers" in proc["args"]["name"]


def test_directory_gives_one_process_per_trial(tmp_path: Path) -> None:
    root = build_results_dir(tmp_path / "res")
    write_bare(records([task(0, "w", 0, 1)]).drop(columns=["end_ns"]),
               root / "exp" / "broken.parquet")
    out, n, broken = trace.export_trace(root, tmp_path / "all.json", absolute=True)
    events = _load(out)
    assert len({e["pid"] for e in events}) == 16
    assert n == sum(1 for e in events if e["ph"] == "X") == 8 * 7 + 8 * 8
    assert [b.path.name for b in broken] == ["broken.parquet"]


def test_large_trial_event_count(tmp_path: Path) -> None:
    df = records(list_schedule([0.001] * 3000, 16), n_workers=16)
    events = trace.trial_events(df)
    assert sum(e["ph"] == "X" for e in events) == 3000
    assert sum(e["name"] == "thread_name" for e in events) == 16


def test_nothing_to_export(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no task-record parquet"):
        trace.export_trace(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        trace.export_trace(tmp_path / "missing.parquet")


def test_trace_command_and_script(tmp_path: Path) -> None:
    path = write(records([task(0, "worker-0", 0, 1)], n_workers=1), tmp_path)
    assert main(["trace", str(path), "--out", str(tmp_path / "t.json")]) == 0
    assert len([e for e in _load(tmp_path / "t.json") if e["ph"] == "X"]) == 1
    assert main(["trace", str(tmp_path / "nothing")]) == 1
    script = Path(__file__).resolve().parents[1] / "analysis" / "trace.py"
    done = subprocess.run([sys.executable, str(script), str(path), "--out",
                           str(tmp_path / "s.json")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert _load(tmp_path / "s.json") == _load(tmp_path / "t.json")
