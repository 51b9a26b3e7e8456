"""Your own workload (issue 12): a function from a module outside the package with arguments
from a file, a trace with arrival times, payloads and tasks arriving over time.

The fast tests check validation (every bad input refused before anything runs, naming the file,
the key and what was expected), the task lists and the pacing helper. The slow ones run the
whole thing on real clusters of 2 workers (mp-dynamic, dask, ray, ipp-lb) and check the
records.
"""

from __future__ import annotations

import math
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from research import config, schema, workloads
from research.errors import ConfigError
from research.runner import run_sweep
from research.schedulers import REGISTRY, get_scheduler
from research.schedulers.base import Arrivals, paced
from research.tasks import Call, Task, execute

# -- a user's project, outside the package --------------------------------------------------

MODULE = '''
from dataclasses import dataclass


@dataclass
class Scored:
    label: str
    value: float


def score(n, label, scale=1.0):
    """Sum of squares below n, scaled; a user type comes back."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    return Scored(str(label), scale * sum(i * i for i in range(int(n))))


def pair(a, b):
    return [a, b]


def handle(n):
    """n itself, except for n == 1: a lock (which cannot be pickled)."""
    import threading
    return threading.Lock() if n == 1 else n


class Sulky:
    def __repr__(self):
        raise RuntimeError("no repr today")


def odd(n):
    """0: a small int; 1: an object whose repr raises; 2: a huge list; 3: a huge string."""
    return [0, Sulky(), list(range(100_000)), "z" * 100_000][n]
'''


def project(tmp: Path, n_rows: int = 6, planned: bool = True) -> tuple[Path, str]:
    """A module in ``tmp/src`` (a unique name: modules stay imported in this process), an
    args CSV and a trace CSV; returns (directory, module name)."""
    mod = f"labwork_{uuid.uuid4().hex[:8]}"
    (tmp / "src").mkdir(exist_ok=True)
    (tmp / "src" / f"{mod}.py").write_text(MODULE)
    rows = {"n": [100 * (i + 1) for i in range(n_rows)], "label": [f"r{i}" for i in range(n_rows)]}
    if planned:
        rows["planned_s"] = [0.01 * (i + 1) for i in range(n_rows)]
    pd.DataFrame(rows).to_csv(tmp / "args.csv", index=False)
    pd.DataFrame({"duration_s": [0.02, 0.05, 0.01, 0.03, 0.02, 0.04],
                  "arrival_s": [0.0, 0.05, 0.12, 0.2, 0.21, 0.35]}).to_csv(tmp / "trace.csv",
                                                                             index=False)
    return tmp, mod


def write(tmp: Path, body: str, name: str = "c.toml") -> Path:
    (tmp / "src").mkdir(exist_ok=True)  # the pythonpath every config here names
    path = tmp / name
    path.write_text(textwrap.dedent(body))
    return path


def head(mod: str = "", schedulers: str = '["serial"]', extra: str = "") -> str:
    return f"""
        [experiment]
        name = "user"
        n_workers = 2
        schedulers = {schedulers}
        pythonpath = ["src"]
        trial_timeout_s = 60
        {extra}
        """


def load_error(tmp: Path, body: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        config.load(write(tmp, body))
    return info.value


# -- calls: validation ----------------------------------------------------------------------

def test_calls_task_list_from_csv_and_inline(tmp_path: Path) -> None:
    tmp, mod = project(tmp_path)
    exp = config.load(write(tmp, head() + f"""
        [workloads.f]
        shape = "calls"
        function = "{mod}:score"
        args_file = "args.csv"
        [workloads.g]
        shape = "calls"
        function = "{mod}:score"
        args = [[5, "a"], {{n = 3, label = "b", scale = 2.0, planned_s = 0.5}}]
        """))
    f, g = exp.trials
    tasks = workloads.build_tasks(f.shape, f.params, 2, ctx=f.context())
    assert [t.body for t in tasks] == ["call"] * 6
    assert [t.planned_s for t in tasks] == pytest.approx([0.01 * (i + 1) for i in range(6)])
    first = tasks[0].arg
    assert isinstance(first, Call)
    assert first.kwargs == {"n": 100, "label": "r0"} and first.args == ()
    assert first.pythonpath == (str((tmp / "src").resolve()),)
    assert f.params["args_sha256"] and "args" not in f.params
    gt = workloads.build_tasks(g.shape, g.params, 2, ctx=g.context())
    assert gt[0].arg.args == (5, "a") and math.isnan(gt[0].planned_s)
    assert gt[1].arg.kwargs == {"n": 3, "label": "b", "scale": 2.0} and gt[1].planned_s == 0.5
    out = execute(gt[1])  # the call body, in this process
    assert out.status == "ok" and type(out.result).__name__ == "Scored"
    assert out.result.value == 2.0 * (0 + 1 + 4)


def test_planned_unknown_without_a_planned_s_column(tmp_path: Path) -> None:
    tmp, mod = project(tmp_path, planned=False)
    (t,) = config.load(write(tmp, head() + f"""
        [workloads.f]
        shape = "calls"
        function = "{mod}:score"
        args_file = "args.csv"
        """)).trials
    tasks = workloads.build_tasks(t.shape, t.params, 2, ctx=t.context())
    assert all(math.isnan(x.planned_s) for x in tasks)


@pytest.mark.parametrize("suffix", ["parquet", "jsonl"])
def test_args_file_parquet_and_json_lines(tmp_path: Path, suffix: str) -> None:
    tmp, mod = project(tmp_path)
    df = pd.read_csv(tmp / "args.csv")
    if suffix == "parquet":
        df.to_parquet(tmp / "args.parquet")
    else:
        df.to_json(tmp / "args.jsonl", orient="records", lines=True)
    (t,) = config.load(write(tmp, head() + f"""
        [workloads.f]
        shape = "calls"
        function = "{mod}:score"
        args_file = "args.{suffix}"
        """)).trials
    tasks = workloads.build_tasks(t.shape, t.params, 2, ctx=t.context())
    assert [x.arg.kwargs["n"] for x in tasks] == df["n"].tolist()


@pytest.mark.parametrize("function, needle", [
    ("nosuchmodule_xyz:f", "cannot import 'nosuchmodule_xyz:f'"),
    ("{mod}:nosuchfunction", "has no attribute 'nosuchfunction'"),
    ("{mod}.score", "expected 'package.module:function'"),
])
def test_function_not_importable(tmp_path: Path, function: str, needle: str) -> None:
    tmp, mod = project(tmp_path)
    err = load_error(tmp, head() + f"""
        [workloads.f]
        shape = "calls"
        function = "{function.format(mod=mod)}"
        args = [[1, "a"]]
        """)
    assert err.key == "function" and needle in err.problem
    assert "c.toml [workloads.f]" in err.where


def test_module_needs_pythonpath(tmp_path: Path) -> None:
    tmp, mod = project(tmp_path)
    err = load_error(tmp, head().replace('pythonpath = ["src"]', "") + f"""
        [workloads.f]
        shape = "calls"
        function = "{mod}:score"
        args = [[1, "a"]]
        """)
    assert err.key == "function" and "pythonpath" in err.problem


def test_pythonpath_must_exist(tmp_path: Path) -> None:
    tmp, mod = project(tmp_path)
    err = load_error(tmp, head().replace('["src"]', '["nope"]') + f"""
        [workloads.f]
        shape = "calls"
        function = "{mod}:score"
        args = [[1, "a"]]
        """)
    assert err.key == "pythonpath" and "'nope' is not a directory" in err.problem


@pytest.mark.parametrize("args, key, needle", [
    ('args = [[1, "a", 2.0, 9]]', "args", "row 0"),                   # too many positionals
    ('args = [{n = 1, colour = "red", label = "x"}]', "args", "colour"),  # unknown keyword
    ('args = [[1]]', "args", "missing a required argument: 'label'"),
    ('args = [5]', "args[0]", "expected a list"),
    ('args_file = "missing.csv"', "args_file", "no such file"),
    ('args_file = "args.txt"', "args_file", "unknown file type"),
    ('args = [[1, "a"]]\nargs_file = "args.csv"', "args", "exactly one"),
])
def test_bad_arguments(tmp_path: Path, args: str, key: str, needle: str) -> None:
    tmp, mod = project(tmp_path)
    (tmp / "args.txt").write_text("n\n1\n")
    err = load_error(tmp, head() + f"""
        [workloads.f]
        shape = "calls"
        function = "{mod}:score"
        {args}
        """)
    assert err.key == key and needle in err.problem, err


def test_args_file_column_missing(tmp_path: Path) -> None:
    tmp, mod = project(tmp_path)
    pd.DataFrame({"n": [1, 2]}).to_csv(tmp / "short.csv", index=False)
    err = load_error(tmp, head() + f"""
        [workloads.f]
        shape = "calls"
        function = "{mod}:score"
        args_file = "short.csv"
        """)
    assert err.key == "args_file"
    assert "missing a required argument: 'label'" in err.problem and "columns n" in err.problem


def test_calls_refuse_a_body(tmp_path: Path) -> None:
    tmp, mod = project(tmp_path)
    err = load_error(tmp, head() + f"""
        [workloads.f]
        shape = "calls"
        function = "{mod}:score"
        args = [[1, "a"]]
        body = "cpu"
        """)
    assert err.key == "body"


# -- trace ----------------------------------------------------------------------------------

def test_trace_durations_arrivals_and_key(tmp_path: Path) -> None:
    tmp, _ = project(tmp_path)
    body = head() + """
        [workloads.t]
        shape = "trace"
        path = "trace.csv"
        """
    (t,) = config.load(write(tmp, body)).trials
    assert t.params["arrival"] == "trace"  # the column is there: used by default
    tasks = workloads.build_tasks(t.shape, t.params, 2, ctx=t.context())
    trace = pd.read_csv(tmp / "trace.csv")
    assert [x.planned_s for x in tasks] == trace["duration_s"].tolist()
    assert workloads.arrival_offsets(t.params, len(tasks), t.context()) == trace[
        "arrival_s"].tolist()
    # A changed trace is another trial: its content hash is in the key.
    trace.loc[0, "duration_s"] = 0.03
    trace.to_csv(tmp / "trace.csv", index=False)
    (t2,) = config.load(write(tmp, body)).trials
    assert t2.key != t.key
    # arrival = "batch" ignores the column.
    (t3,) = config.load(write(tmp, body + 'arrival = "batch"\n')).trials
    assert "arrival" not in t3.params


def test_trace_arrivals_count_from_the_first(tmp_path: Path) -> None:
    pd.DataFrame({"duration_s": [0.1, 0.1, 0.1],
                  "arrival_s": [3600.0, 3600.5, 3602.0]}).to_csv(tmp_path / "t.csv", index=False)
    (t,) = config.load(write(tmp_path, head() + """
        [workloads.t]
        shape = "trace"
        path = "t.csv"
        """)).trials  # not refused: the last task arrives 2 s in, not an hour
    assert workloads.arrival_offsets(t.params, 3, t.context()) == [0.0, 0.5, 2.0]


def test_trace_arrivals_past_the_timeout_say_so_without_a_rate(tmp_path: Path) -> None:
    pd.DataFrame({"duration_s": [0.1, 0.1],
                  "arrival_s": [0.0, 90.0]}).to_csv(tmp_path / "t.csv", index=False)
    err = load_error(tmp_path, head() + """
        [workloads.t]
        shape = "trace"
        path = "t.csv"
        """)
    assert err.key == "path" and "arrives 90.0 s into the trial" in err.problem
    assert "rate" not in err.problem and 'arrival = "batch"' in err.problem


def test_a_static_map_refusing_a_trace_says_what_to_write(tmp_path: Path) -> None:
    pd.DataFrame({"duration_s": [0.1, 0.1],
                  "arrival_s": [0.0, 1.0]}).to_csv(tmp_path / "t.csv", index=False)
    body = head(schedulers='["mp-map"]') + """
        [workloads.t]
        shape = "trace"
        path = "t.csv"
        """
    err = load_error(tmp_path, body)  # the user never wrote `arrival`: the column implies it
    assert err.key == "arrival" and "arrival_s column" in err.problem
    assert 'set arrival = "batch"' in err.problem
    assert "mp-dynamic" in err.problem and "dask" in err.problem
    (t,) = config.load(write(tmp_path, body + 'arrival = "batch"\n')).trials  # as it says
    assert "arrival" not in t.params


def test_trace_from_parquet_without_arrivals(tmp_path: Path) -> None:
    pd.DataFrame({"duration_s": [0.1, 0.2]}).to_parquet(tmp_path / "t.parquet")
    (t,) = config.load(write(tmp_path, head() + """
        [workloads.t]
        shape = "trace"
        path = "t.parquet"
        """)).trials
    assert "arrival" not in t.params and t.params["n_tasks"] == 2


@pytest.mark.parametrize("content, needle", [
    ("duration\n0.1\n", "column 'duration_s' missing"),
    ("duration_s\n-1\n", "finite number >= 0"),
    ("duration_s,arrival_s\n0.1,0.5\n0.1,0.2\n", "must not decrease"),
])
def test_bad_trace(tmp_path: Path, content: str, needle: str) -> None:
    (tmp_path / "t.csv").write_text(content)
    err = load_error(tmp_path, head() + """
        [workloads.t]
        shape = "trace"
        path = "t.csv"
        """)
    assert err.key == "path" and needle in err.problem and "t.csv" in err.problem


def test_trace_path_missing(tmp_path: Path) -> None:
    err = load_error(tmp_path, head() + """
        [workloads.t]
        shape = "trace"
        path = "nope.csv"
        """)
    assert err.key == "path" and "no such file" in err.problem


# -- arrivals and payloads: validation ------------------------------------------------------

UNIFORM = """
        [workloads.u]
        shape = "uniform"
        n_tasks = 20
        duration_s = 0.01
        """


@pytest.mark.parametrize("keys, key, needle", [
    ('arrival = "sometimes"', "arrival", "allowed: batch, poisson, trace"),
    ('arrival = "poisson"\nrate_per_s = 0', "rate_per_s", "must be > 0"),
    ('arrival = "poisson"\nrate_per_s = -3', "rate_per_s", "must be > 0"),
    ('arrival = "poisson"', "rate_per_s", "missing"),
    ("rate_per_s = 5", "rate_per_s", "only used with arrival = 'poisson'"),
    ('arrival = "trace"', "arrival", "needs shape 'trace'"),
    ('arrival = "poisson"\nrate_per_s = 0.1', "rate_per_s", "past [experiment] trial_timeout_s"),
    ("input_bytes = -1", "input_bytes", "must be >= 0"),
])
def test_bad_arrival_keys(tmp_path: Path, keys: str, key: str, needle: str) -> None:
    err = load_error(tmp_path, head() + UNIFORM + keys + "\n")
    assert err.key == key and needle in err.problem, err


STATIC = [n for n in REGISTRY if not get_scheduler(n).supports_arrivals]


def test_static_maps_refuse_arrivals(tmp_path: Path) -> None:
    # the schedulers that need the whole list up front; a new adapter refuses by default
    assert {"mp-map", "ipp-direct", "ray-pool", "dask-local", "joblib"} <= set(STATIC)
    for name in STATIC:
        err = load_error(tmp_path, head(schedulers=f'["{name}"]') + UNIFORM
                         + 'arrival = "poisson"\nrate_per_s = 50\n')
        assert err.key == "arrival" and f"scheduler '{name}'" in err.problem
        assert "mp-dynamic" in err.problem  # says which can


def test_ipp_lb_chunks_refuse_arrivals(tmp_path: Path) -> None:
    err = load_error(tmp_path, head(schedulers='["ipp-lb"]') + UNIFORM
                     + 'arrival = "poisson"\nrate_per_s = 50\n'
                     + "[scheduler_options.ipp-lb]\nchunksize = [1, 4]\n")
    assert err.key == "arrival" and "ipp-lb[chunksize=4]" in err.problem


def test_celery_refuses_payloads(tmp_path: Path) -> None:
    err = load_error(tmp_path, head(schedulers='["celery"]') + UNIFORM + "input_bytes = 10\n")
    assert err.key == "input_bytes" and "JSON" in err.problem


def test_defaults_leave_params_and_keys_alone(tmp_path: Path) -> None:
    (plain,) = config.load(write(tmp_path, head() + UNIFORM)).trials
    assert set(plain.params) == {"n_tasks", "duration_s", "body", "fail_ids", "crash_ids"}
    (batch,) = config.load(write(tmp_path, head() + UNIFORM + 'arrival = "batch"\n'
                                 "input_bytes = 0\n")).trials
    assert batch.key == plain.key


def test_poisson_offsets_are_seeded_and_at_the_rate() -> None:
    params = workloads.validate("uniform", {"n_tasks": 4000, "duration_s": 0.0,
                                            "arrival": "poisson", "rate_per_s": 200.0,
                                            "arrival_seed": 3}, 2)
    a = workloads.arrival_offsets(params, 4000)
    assert a == workloads.arrival_offsets(params, 4000)
    assert a is not None and a[0] == 0.0 and all(np.diff(a) >= 0)
    # mean gap of 3999 exponential draws: within 5% of 1/rate (about 3 standard errors)
    assert float(np.mean(np.diff(a))) == pytest.approx(1 / 200.0, rel=0.05)
    other = dict(params, arrival_seed=4)
    assert workloads.arrival_offsets(other, 4000) != a


def test_payload_travels_with_each_task() -> None:
    params = workloads.validate("uniform", {"n_tasks": 3, "duration_s": 0.0,
                                            "input_bytes": 1000, "output_bytes": 5000}, 2)
    tasks = workloads.build_tasks("uniform", params, 2)
    assert all(t.payload is not None and len(t.payload) == 1000 for t in tasks)
    assert len(set(tasks[0].payload or b"")) > 100  # random bytes: no compression shortcut
    out = execute(tasks[0])
    assert out.payload is not None and len(out.payload) == 5000


def test_input_bytes_is_what_the_worker_received() -> None:
    """The record's input_bytes is the worker's count (Outcome.input_bytes), not the
    configured size; a task whose outcome never came back has none."""
    from types import SimpleNamespace

    from research.runner import build_rows
    from research.schedulers import RunOutput

    params = workloads.validate("uniform", {"n_tasks": 2, "duration_s": 0.0,
                                            "input_bytes": 1000}, 2)
    tasks = workloads.build_tasks("uniform", params, 2)
    got = execute(tasks[0])
    assert got.input_bytes == 1000 and execute(Task(9, "noop", 0, 0.0)).input_bytes == 0
    # a transport that delivered less than was configured is recorded as such
    short = got._replace(input_bytes=600)
    spec = SimpleNamespace(experiment="e", trial_id="t", repeat=0, label="serial",
                           workload="w", n_workers=2)
    rows = build_rows(spec, tasks, RunOutput([short], {0: 1, 1: 1}, {0: 2}))  # type: ignore[arg-type]
    assert rows["input_bytes"].tolist()[0] == 600 and pd.isna(rows["input_bytes"].iloc[1])


# -- the pacing helper ----------------------------------------------------------------------

def test_paced_hands_tasks_over_at_their_times() -> None:
    tasks = [Task(i, "noop", 0, 0.0) for i in range(4)]
    offsets = {0: 0.0, 1: 0.05, 2: 0.05, 3: 0.15}
    submit: dict[int, int] = {}
    t0 = time.time_ns()
    seen = [(t.task_id, (time.time_ns() - t0) / 1e9) for t in paced(tasks, offsets, submit)]
    assert [i for i, _ in seen] == [0, 1, 2, 3]
    for i, at in seen:
        # never early; late by at most a scheduling hiccup on a loaded 2-core machine
        assert offsets[i] - 0.002 <= at <= offsets[i] + 0.05, (i, at)
        assert abs((submit[i] - t0) / 1e9 - at) < 0.01
    # a batch: all at once; a deadline: the tasks due after it are never handed over
    batch: dict[int, int] = {}
    assert len(list(paced(tasks, None, batch))) == 4 and len(batch) == 4
    cut: dict[int, int] = {}
    got = list(paced(tasks, offsets, cut, deadline=time.monotonic() + 0.1))
    assert [t.task_id for t in got] == [0, 1, 2]


def test_paced_stamps_due_times_when_the_consumer_is_busy() -> None:
    """A consumer that takes 0.1 s per task while tasks are due every 0.01 s: each submit
    stamp is still the task's due time, and the lateness of the hand-overs is recorded."""
    tasks = [Task(i, "noop", 0, 0.0) for i in range(4)]
    arrivals = Arrivals({i: 0.01 * i for i in range(4)})
    submit: dict[int, int] = {}
    for _ in paced(tasks, arrivals, submit):
        time.sleep(0.1)  # busy: asks for the next task only after this one
    t0 = submit[0]
    assert [submit[i] - t0 for i in range(4)] == [round(0.01 * i * 1e9) for i in range(4)]
    # task 3 was due at 0.03 s and handed over after 3 x 0.1 s of consumer work
    assert len(arrivals.lags) == 4 and arrivals.lags[3] >= 0.3 - 0.03 - 0.002
    info = arrivals.info()
    assert info["pacing_lag_max_s"] == max(arrivals.lags) and info["pacing_handed_over"] == 4
    assert 0 <= info["pacing_lag_median_s"] <= info["pacing_lag_max_s"]


def test_paced_stops_when_told() -> None:
    """The stop event ends the wait for a far-off task at once (Ctrl-C, an error)."""
    import threading

    tasks = [Task(0, "noop", 0, 0.0), Task(1, "noop", 0, 0.0)]
    arrivals = Arrivals({0: 0.0, 1: 60.0})
    threading.Timer(0.2, arrivals.stop.set).start()
    t0 = time.monotonic()
    got = [t.task_id for t in paced(tasks, arrivals, {})]
    assert got == [0] and time.monotonic() - t0 < 30  # not the 60 s to the next task


def _overload(tmp: Path, scheduler: str, n: int) -> tuple[pd.DataFrame, dict[str, Any], float]:
    """``n`` 50 ms sleeps arriving at 200 per second on ``scheduler``: far more work than
    the workers can do while the tasks arrive. Returns (records, trial metadata, span of the
    arrivals in seconds)."""
    cfg = write(tmp, head(schedulers=f'["{scheduler}"]') + f"""
        [workloads.over]
        shape = "uniform"
        n_tasks = {n}
        duration_s = 0.05
        arrival = "poisson"
        rate_per_s = 200
        arrival_seed = 1
        """, name=f"{scheduler}.toml")
    (spec,) = config.load(cfg).trials
    offsets = workloads.arrival_offsets(spec.params, n)
    assert offsets is not None
    res = run_sweep([config.load(cfg)], tmp / f"out-{scheduler}", progress=False,
                    log=lambda s: None)
    assert not res.failed, res.failed
    (path,) = res.written
    return schema.read_trial(path), schema.read_metadata(path)["trial"], offsets[-1]


@pytest.mark.slow  # runs a sweep
@pytest.mark.parametrize("scheduler, n", [("serial", 8), ("threads", 12)])
def test_queueing_delay_grows_under_overload(tmp_path: Path, scheduler: str, n: int) -> None:
    """Every task has arrived after ``span`` seconds, but the k-th task to start cannot
    start before k // workers earlier 50 ms sleeps have ended: its queueing delay (start -
    submit) is at least that minus ``span``. Serial hands task k over only when it is free:
    stamping the hand-over (not the arrival) would hide that wait."""
    df, meta, span = _overload(tmp_path, scheduler, n)
    workers = 1 if scheduler == "serial" else 2
    df = df.sort_values("start_ns")
    queueing = ((df["start_ns"] - df["submit_ns"]).astype(float) / 1e9).to_numpy()
    floor = np.array([(k // workers) * 0.05 - span - 0.002 for k in range(n)])
    assert np.all(queueing >= floor), (queueing, floor)
    assert queueing[-1] > 2 * queueing[: n // 2].mean() + 0.05  # grows as the queue builds
    info = meta["run_info"]
    assert info["pacing_handed_over"] == n
    if scheduler == "serial":  # serial took each task late, by its wait
        assert info["pacing_lag_max_s"] >= floor[-1]
    assert 0 <= info["pacing_lag_median_s"] <= info["pacing_lag_max_s"]


# -- end to end -----------------------------------------------------------------------------

def done_when_config(tmp: Path, mod: str, scheduler: str) -> Path:
    """The issue's "done when": a function outside the package with arguments from a CSV, a
    trace with arrival times, payloads and Poisson arrivals."""
    return write(tmp, head(schedulers=f'["{scheduler}"]') + f"""
        [workloads.calls]
        shape = "calls"
        function = "{mod}:score"
        args_file = "args.csv"
        input_bytes = 20000
        output_bytes = 50000
        arrival = "poisson"
        rate_per_s = 40
        arrival_seed = 2

        [workloads.trace]
        shape = "trace"
        path = "trace.csv"
        output_bytes = 1000

        [workloads.fails]
        shape = "calls"
        function = "{mod}:score"
        args = [[1, "a"], [-1, "b"], [2, "c"]]
        """)


def check_records(out: Path, tmp: Path, mod: str, scheduler: str) -> None:
    by_wl: dict[str, tuple[pd.DataFrame, dict[str, Any]]] = {}
    for path in sorted((out / "user").glob("*.parquet")):
        if schema.is_record_file(path):
            df = schema.read_trial(path)
            by_wl[str(df["workload"].iloc[0])] = (df, schema.read_metadata(path)["trial"])
    assert set(by_wl) == {"calls", "trace", "fails"}
    for df, meta in by_wl.values():
        assert meta["trial_status"] == schema.TRIAL_OK, meta["trial_error"]
        assert (df["scheduler"] == scheduler).all()
        timed = df.dropna(subset=["start_ns"])
        assert (timed["start_ns"] >= timed["submit_ns"]).all()
        assert (timed["receive_ns"] >= timed["end_ns"]).all()

    calls, meta = by_wl["calls"]
    args = pd.read_csv(tmp / "args.csv")
    assert (calls["status"] == "ok").all(), calls["error"].tolist()
    assert (calls["result_type"] == f"{mod}.Scored").all()
    assert (calls["result_bytes"] > 0).all()
    for row, n, label in zip(calls.itertuples(), args["n"], args["label"], strict=True):
        assert f"label='{label}'" in row.result and f"value={float(sum(i * i for i in range(n)))}" \
            in row.result
    assert calls["planned_s"].tolist() == pytest.approx(args["planned_s"].tolist())
    assert (calls["input_bytes"] == 20000).all() and (calls["output_bytes"] == 50000).all()
    # Poisson arrivals: every task submitted at its own time, never early, in order
    offsets = workloads.arrival_offsets(
        workloads.validate("uniform", {"n_tasks": len(calls), "duration_s": 0.0,
                                       "arrival": "poisson", "rate_per_s": 40.0,
                                       "arrival_seed": 2}, 2), len(calls))
    assert offsets is not None
    check_submits(calls, offsets)

    trace, _ = by_wl["trace"]
    tr = pd.read_csv(tmp / "trace.csv")
    assert (trace["status"] == "ok").all()
    assert trace["planned_s"].tolist() == tr["duration_s"].tolist()
    assert (trace["output_bytes"] == 1000).all() and (trace["input_bytes"] == 0).all()
    check_submits(trace, tr["arrival_s"].tolist())
    # in-task durations follow the trace (sleep bodies: never shorter)
    took = (trace["end_ns"] - trace["start_ns"]).astype(float) / 1e9
    assert (took >= tr["duration_s"] - 0.001).all()

    fails, _ = by_wl["fails"]
    assert fails["status"].tolist() == ["ok", "error", "ok"]
    assert "ValueError: n must be >= 0, got -1" in fails["error"].iloc[1]
    assert pd.isna(fails["result_type"].iloc[1])


def check_submits(df: pd.DataFrame, offsets: list[float]) -> None:
    # submit_ns is each task's due time (first hand-over + its offset): exact, whatever the
    # hand-over's lateness (that is in run_info's pacing_lag_*).
    df = df.sort_values("task_id")
    sub = (df["submit_ns"] - df["submit_ns"].min()).astype("int64").to_numpy()
    first = offsets[0]
    want = np.array([round((o - first) * 1e9) for o in offsets])
    assert np.abs(sub - want).max() <= 1, (sub, want)


@pytest.mark.slow
@pytest.mark.parametrize("scheduler", ["mp-dynamic", "dask", "ray", "ipp-lb"])
def test_done_when(tmp_path: Path, scheduler: str, no_leaks: None) -> None:
    tmp, mod = project(tmp_path)
    cfg = done_when_config(tmp, mod, scheduler)
    res = run_sweep([config.load(cfg)], tmp / "out", progress=False, log=lambda s: None)
    assert not res.failed, res.failed
    check_records(tmp / "out", tmp, mod, scheduler)


@pytest.mark.slow  # runs a sweep or builds claims: not in make test-fast
def test_done_when_in_process(tmp_path: Path) -> None:
    """The same config on the in-process schedulers (fast: no cluster)."""
    tmp, mod = project(tmp_path)
    for scheduler in ("serial", "threads"):
        cfg = done_when_config(tmp, mod, scheduler)
        out = tmp / f"out-{scheduler}"
        res = run_sweep([config.load(cfg)], out, progress=False, log=lambda s: None)
        assert not res.failed, res.failed
        check_records(out, tmp, mod, scheduler)


@pytest.mark.slow  # runs a sweep or builds claims: not in make test-fast
def test_summary_has_response_and_queueing(tmp_path: Path) -> None:
    from research.analysis.results import load_results

    tmp, mod = project(tmp_path)
    cfg = done_when_config(tmp, mod, "threads")
    run_sweep([config.load(cfg)], tmp / "out", progress=False, log=lambda s: None)
    summary = load_results(tmp / "out").summary.set_index("workload")
    row = summary.loc["calls"]
    assert 0 < row["queueing_median_s"] <= row["queueing_p95_s"]
    assert row["queueing_median_s"] < row["response_median_s"] <= row["response_p95_s"]
    assert row["input_bytes"] == 20000 and row["output_bytes"] == 50000
    assert summary.loc["fails", "input_bytes"] == 0


# -- the report's payload and arrivals section, and claim PL1 ---------------------------------

def _noop_trial(out: Path, scheduler: str, workload: str, n: int, wall_s: float,
                payload: int) -> None:
    """n no-op tasks on 2 workers whose last result arrives ``wall_s`` after the submit."""
    from analysis_data import records, task, write

    rows = [task(i, f"w-{i % 2}", 0.001, 0.001, planned=0.0,
                 receive=wall_s if i == n - 1 else 0.002) for i in range(n)]
    df = records(rows, scheduler=scheduler, workload=workload, n_workers=2,
                 experiment="payload")
    df["input_bytes"] = payload
    df["output_bytes"] = payload
    write(df, out)


@pytest.mark.slow  # runs a sweep or builds claims: not in make test-fast
def test_payload_table_and_claim(tmp_path: Path) -> None:
    from research.analysis import claims, results, workload_report

    # mp-dynamic: 1 ms per task without a payload, 10 ms with 10 MB: the payload is 90%.
    _noop_trial(tmp_path, "mp-dynamic", "p0", 10, 0.010, 0)
    _noop_trial(tmp_path, "mp-dynamic", "p10m", 10, 0.100, 10_000_000)
    summary = results.load_results(tmp_path).summary
    table = workload_report.payload_table(summary)
    big = table[table["payload_bytes"] == 10_000_000].iloc[0]
    assert big["per_task_ms"] == pytest.approx(10.0, rel=1e-3)
    assert big["extra_ms"] == pytest.approx(9.0, rel=1e-3)
    assert big["transfer_share"] == pytest.approx(0.9, rel=1e-3)
    assert big["mb_per_s"] == pytest.approx(20e6 / 9e-3 / 1e6, rel=1e-3)
    dom = workload_report.dominant_from(table)
    assert dom["dominates_from_bytes"].tolist() == [10_000_000]
    v = claims.evaluate(summary, tmp_path).set_index("claim_id").loc["PL1"]
    assert v["verdict"] == claims.REPRODUCED and "mp-dynamic 90%" in v["our_value"]
    assert "no dask trials" in v["note"]  # the schedulers that did not run are named
    # dask, where the payload is a third of the per-task time: not reproduced
    _noop_trial(tmp_path, "dask", "p0", 10, 0.020, 0)
    _noop_trial(tmp_path, "dask", "p10m", 10, 0.030, 10_000_000)
    summary = results.load_results(tmp_path).summary
    v = claims.evaluate(summary, tmp_path).set_index("claim_id").loc["PL1"]
    assert v["verdict"] == claims.NOT_REPRODUCED and "dask 33%" in v["our_value"]


@pytest.mark.parametrize("quick", [False, True])
def test_payload_study_runs_the_same_task_count_at_every_size(quick: bool) -> None:
    """wall / n_tasks carries the trial's fixed costs over n: sizes compare fairly only with
    the same n, and enough tasks per worker (three each) to amortise them."""
    exp = config.load(Path(__file__).resolve().parents[1] / "experiments" / "payload.toml",
                      quick=quick)
    for n_workers in {t.n_workers for t in exp.trials}:
        counts = {t.params["n_tasks"] for t in exp.trials if t.n_workers == n_workers}
        assert len(counts) == 1, counts
        assert counts.pop() >= 3 * n_workers
    sizes = {t.params.get("input_bytes", 0) for t in exp.trials}
    assert sizes == {0, 1_000, 100_000, 1_000_000, 10_000_000}


@pytest.mark.slow  # runs a sweep or builds claims: not in make test-fast
def test_arrivals_table_measures_the_offered_load(tmp_path: Path) -> None:
    """A real (in-process) run at a nominal 50% load: the measured rate and utilisation come
    from the submit stamps and land near it, and the report section is written."""
    from research.analysis import report, results, workload_report

    cfg = write(tmp_path, """
        [experiment]
        name = "arrivals"
        n_workers = 2
        schedulers = ["threads"]
        [workloads.rho50]
        shape = "uniform"
        n_tasks = 40
        duration_s = 0.02
        arrival = "poisson"
        rate_per_s = 50
        arrival_seed = 35
        """)
    run_sweep([config.load(cfg)], tmp_path / "out", progress=False, log=lambda s: None)
    res = results.load_results(tmp_path / "out")
    table = workload_report.arrivals_table(res.summary)
    row = table.iloc[0]
    params = workloads.validate("uniform", {"n_tasks": 40, "duration_s": 0.02,
                                            "arrival": "poisson", "rate_per_s": 50.0,
                                            "arrival_seed": 35}, 2)
    offsets = workloads.arrival_offsets(params, 40)
    assert offsets is not None
    drawn_rate = 39 / offsets[-1]  # what the seeded draws ask for
    assert row["rate_per_s"] == pytest.approx(drawn_rate, rel=0.1)
    assert row["utilisation"] == pytest.approx(drawn_rate * 0.02 / 2, rel=0.1)
    assert row["queueing_median_ms"] <= row["queueing_p95_ms"] < row["response_p95_ms"]
    doc = report._Doc()
    workload_report.workload_section(doc, res, tmp_path)
    assert (tmp_path / "arrivals.csv").exists() and (tmp_path / "figures" / "arrivals.png").exists()


@pytest.mark.slow  # starts process pools
def test_an_unpicklable_result_is_that_tasks_error(tmp_path: Path, no_leaks: None) -> None:
    """One result a process pool cannot send back fails its own task, not the trial; in the
    client process (serial) nothing is sent and the result is kept."""
    tmp, mod = project(tmp_path)
    cfg = write(tmp, head(schedulers='["serial", "mp-dynamic", "futures"]') + f"""
        [workloads.h]
        shape = "calls"
        function = "{mod}:handle"
        args = [[0], [1], [2], [3]]
        """)
    res = run_sweep([config.load(cfg)], tmp / "out", progress=False, log=lambda s: None)
    assert not res.failed, res.failed
    by: dict[str, pd.DataFrame] = {}
    for path in res.written:
        df = schema.read_trial(path).sort_values("task_id")
        by[str(df["scheduler"].iloc[0])] = df
    for name in ("mp-dynamic", "futures"):
        df = by[name]
        assert df["status"].tolist() == ["ok", "error", "ok", "ok"], (name, df["error"].tolist())
        assert df["error"].iloc[1].startswith("result cannot be pickled: TypeError")
        assert pd.isna(df["result"].iloc[1]) and pd.isna(df["result_bytes"].iloc[1])
        ok = df[df["status"] == "ok"]
        assert (ok["result_bytes"] > 0).all() and ok["result"].tolist() == ["0", "2", "3"]
    serial = by["serial"]
    assert (serial["status"] == "ok").all()
    assert serial["result_type"].iloc[1] == "_thread.lock"
    assert pd.isna(serial["result_bytes"].iloc[1]) and serial["result_bytes"].iloc[0] > 0


@pytest.mark.slow  # runs a sweep
def test_result_column_is_bounded_and_survives_a_failing_repr(tmp_path: Path) -> None:
    from research.runner import RESULT_REPR_CHARS

    tmp, mod = project(tmp_path)
    cfg = write(tmp, head() + f"""
        [workloads.odd]
        shape = "calls"
        function = "{mod}:odd"
        args = [[0], [1], [2], [3]]
        """)
    res = run_sweep([config.load(cfg)], tmp / "out", progress=False, log=lambda s: None)
    assert not res.failed and len(res.written) == 1, res.failed
    df = schema.read_trial(res.written[0]).sort_values("task_id")
    assert (df["status"] == "ok").all()
    text = df["result"].tolist()
    assert text[0] == "0"
    assert text[1] == "<repr failed: RuntimeError: no repr today>"
    assert text[2].startswith("[0, 1, 2") and text[2].endswith("...]")
    assert text[3].startswith("'zzz") and "..." in text[3]  # reprlib cuts the middle
    assert all(len(t) <= RESULT_REPR_CHARS for t in text)
    assert df["result_type"].tolist()[2:] == ["list", "str"]  # the type is still the truth


def test_an_edited_module_is_another_trial_and_runs_its_new_code(tmp_path: Path) -> None:
    """A rerun in the same process (a notebook) after the user edits their module: the
    module's hash is in the trial key, and the call runs the edited code, not the one this
    process imported first."""
    from research.tasks import execute_here, execute_in_thread

    tmp, mod = project(tmp_path)
    body = head() + f"""
        [workloads.f]
        shape = "calls"
        function = "{mod}:score"
        args = [[3, "a"]]
        """
    (before,) = config.load(write(tmp, body)).trials
    (task,) = workloads.build_tasks(before.shape, before.params, 2, ctx=before.context())
    assert execute(task).result.value == 5.0  # 0 + 1 + 4
    assert before.params["function_sha256"] == workloads.file_sha256(tmp / "src" / f"{mod}.py")
    (tmp / "src" / f"{mod}.py").write_text(MODULE.replace("scale * sum(", "scale * 100 * sum("))
    (after,) = config.load(write(tmp, body)).trials
    assert after.key != before.key
    assert after.params["function_sha256"] != before.params["function_sha256"]
    (task2,) = workloads.build_tasks(after.shape, after.params, 2, ctx=after.context())
    for run in (execute, execute_here, execute_in_thread):
        assert run(task2).result.value == 500.0, run
    # the old task asks for the old version: that one is gone; it runs what is there now
    assert execute(task).result.value == 500.0


@pytest.mark.slow  # starts a process pool, a Dask cluster
@pytest.mark.parametrize("scheduler", ["mp-dynamic", "dask"])
def test_ctrl_c_does_not_wait_for_the_next_arrival(scheduler: str, no_leaks: None) -> None:
    """Ctrl-C while the next task is due in 60 s: the trial and the cluster stop promptly
    (a pool's terminate() joins its task handler, which runs the pacing; Dask's consumer
    joins its submitting thread). 30 s is half the time to the next task: a loaded machine
    stays far inside it, waiting for the task does not."""
    import signal
    import threading

    sched = get_scheduler(scheduler)(2)
    main = threading.get_ident()
    with sched:
        sched.arrivals = Arrivals({0: 0.0, 1: 60.0})
        tasks = [Task(0, "sleep", 0.01, 0.01), Task(1, "sleep", 0.01, 0.01)]
        timer = threading.Timer(1.0, lambda: signal.pthread_kill(main, signal.SIGINT))
        t0 = time.monotonic()
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            sched.run(tasks, 120.0)
    assert time.monotonic() - t0 < 30  # the run and the shutdown
    assert not any(t.name == "research-dask-pacer" for t in threading.enumerate())


@pytest.mark.slow  # starts a Dask cluster
def test_dask_submitter_failure_is_raised_not_a_timeout(no_leaks: None) -> None:
    """An exception in Dask's submitting thread (here: an offset that is not a number) is
    the trial's error, raised in the consumer, not reported as a timeout."""
    sched = get_scheduler("dask")(2)
    with sched:
        sched.arrivals = Arrivals({0: 0.0, 1: "soon"})  # type: ignore[dict-item]
        t0 = time.monotonic()
        with pytest.raises(TypeError):
            sched.run([Task(0, "sleep", 0.01, 0.01), Task(1, "sleep", 0.01, 0.01)], 60.0)
        assert time.monotonic() - t0 < 30  # not the 60 s timeout


@pytest.mark.slow  # starts a process pool
def test_mp_dynamic_with_chunks(no_leaks: None) -> None:
    """chunksize > 1: contiguous chunks, one receive stamp per chunk, and the trial's
    timeout still holds (a hung chunk does not hang the run)."""
    sched = get_scheduler("mp-dynamic")(2, {"chunksize": 2})
    with sched:
        tasks = [Task(i, "sleep", 0.02, 0.02) for i in range(6)]
        out = sched.run(tasks, 60.0)
        assert out.error is None and sorted(o.task_id for o in out.outcomes) == list(range(6))
        for a, b in ((0, 1), (2, 3), (4, 5)):
            assert out.receive_ns[a] == out.receive_ns[b]  # one chunk, one message back
            by = {o.task_id: o for o in out.outcomes}
            assert by[a].pid == by[b].pid and by[b].start_ns >= by[a].end_ns
        t0 = time.monotonic()
        hung = sched.run([Task(0, "sleep", 0.01, 0.01), Task(1, "sleep", 60.0, 60.0)], 2.0)
        assert hung.error == "timeout after 2 s" and time.monotonic() - t0 < 30
        assert sched.broken


def test_mp_dynamic_chunks_refuse_arrivals(tmp_path: Path) -> None:
    err = load_error(tmp_path, head(schedulers='["mp-dynamic"]') + UNIFORM
                     + 'arrival = "poisson"\nrate_per_s = 50\n'
                     + "[scheduler_options.mp-dynamic]\nchunksize = [1, 4]\n")
    assert err.key == "arrival" and "mp-dynamic[chunksize=4]" in err.problem


def test_changed_args_file_reruns(tmp_path: Path) -> None:
    tmp, mod = project(tmp_path)
    body = head() + f"""
        [workloads.f]
        shape = "calls"
        function = "{mod}:score"
        args_file = "args.csv"
        """
    (before,) = config.load(write(tmp, body)).trials
    args = pd.read_csv(tmp / "args.csv")
    args.loc[0, "n"] = 7
    args.to_csv(tmp / "args.csv", index=False)
    (after,) = config.load(write(tmp, body)).trials
    assert after.key != before.key
    # moving the project keeps the key: paths are as written, not absolute
    moved = tmp_path.parent / f"{tmp_path.name}-moved"
    tmp_path.rename(moved)
    (again,) = config.load(moved / "c.toml").trials
    assert again.key == after.key and again.pythonpath != after.pythonpath


@pytest.mark.slow  # runs a sweep
def test_a_data_file_changed_after_loading_fails_its_trial(tmp_path: Path) -> None:
    """The config was read (and the trials keyed) with one content; the file changed before
    the trial ran: the trial fails saying so, rather than measuring other data under the old
    key."""
    tmp, mod = project(tmp_path)
    exp = config.load(write(tmp, head() + f"""
        [workloads.f]
        shape = "calls"
        function = "{mod}:score"
        args_file = "args.csv"
        [workloads.t]
        shape = "trace"
        path = "trace.csv"
        arrival = "batch"
        """))
    args = pd.read_csv(tmp / "args.csv")
    args.loc[0, "n"] = 7
    args.to_csv(tmp / "args.csv", index=False)
    trace = pd.read_csv(tmp / "trace.csv")
    trace.loc[0, "duration_s"] = 0.001
    trace.to_csv(tmp / "trace.csv", index=False)
    res = run_sweep([exp], tmp / "out", progress=False, log=lambda s: None)
    assert len(res.failed) == 2 and len(res.written) == 2
    for path in res.written:
        meta = schema.read_metadata(path)["trial"]
        assert meta["trial_status"] == schema.TRIAL_FAILED
        assert "changed after the config was read" in meta["trial_error"]
        assert ("args.csv" in meta["trial_error"]) != ("trace.csv" in meta["trial_error"])


def test_celery_says_why_it_refuses_arrivals(tmp_path: Path) -> None:
    err = load_error(tmp_path, head(schedulers='["celery"]') + UNIFORM
                     + 'arrival = "poisson"\nrate_per_s = 50\n')
    assert err.key == "arrival" and "one join after the last submission" in err.problem
