"""The Dask adapter: settings that really reach the scheduler, failures, labels, the native
witness, balancing, and an existing cluster that we use but never stop."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import psutil
import pytest

from research import config, schema
from research.errors import ParamError
from research.runner import run_sweep
from research.schedulers import get_scheduler
from research.schedulers.base import Scheduler
from research.tasks import Task
from research.witness import NATIVE_COLUMNS, compare
from research.workloads import worst_case

from procs import scheduler_children, wait_no_children

Dask = get_scheduler("dask")
PY = Path(sys.executable)


def _sleeps(durations: Sequence[float]) -> list[Task]:
    return [Task(i, "sleep", d, d) for i, d in enumerate(durations)]


def _makespan(outcomes: Sequence) -> float:
    return (max(o.end_ns for o in outcomes) - min(o.start_ns for o in outcomes)) / 1e9


def greedy_makespan(durations: Sequence[float], n_workers: int) -> float:
    """List scheduling in index order: each task goes to the worker that frees up first."""
    free = [0.0] * n_workers
    for d in durations:
        i = free.index(min(free))
        free[i] += d
    return max(free)


# -- no cluster needed ---------------------------------------------------------------------

def test_import_and_construction_start_nothing() -> None:
    # A fresh interpreter: importing the adapter imports no Dask and spawns no process, and
    # `import dask` inside research/schedulers/dask.py is the library, not this module.
    code = textwrap.dedent("""
        import sys, psutil
        from research.schedulers import get_scheduler
        cls = get_scheduler("dask")
        assert "distributed" not in sys.modules and "dask" not in sys.modules, "imported"
        cls(2)
        assert not psutil.Process().children(recursive=True), "spawned at construction"
        import dask, distributed
        import research.schedulers.dask as ours
        assert dask is not ours and hasattr(dask, "config") and hasattr(distributed, "Client")
        print("ok")
    """)
    out = subprocess.run([str(PY), "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


@pytest.mark.parametrize("value", [math.inf, "inf", "Inf"])
def test_worker_saturation_may_be_infinite(value: object) -> None:
    assert Dask.validate_options({"worker_saturation": value})["worker_saturation"] == "inf"


def test_options_are_checked() -> None:
    opts = Dask.validate_options({})
    assert opts == {"work_stealing": None, "worker_saturation": None, "address": None,
                    "security": False, "receive": "together"}
    assert Dask.validate_options({"worker_saturation": 1e9})["worker_saturation"] == 1e9
    for bad, key in [({"worker_saturation": 0}, "worker_saturation"),
                     ({"worker_saturation": -math.inf}, "worker_saturation"),
                     ({"worker_saturation": "lots"}, "worker_saturation"),
                     ({"work_stealing": "no"}, "work_stealing"),
                     ({"address": " "}, "address"),
                     ({"receive": "later"}, "receive"),
                     ({"threads_per_worker": 2}, "threads_per_worker")]:
        with pytest.raises(ParamError) as err:
            Dask.validate_options(bad)
        assert err.value.key == key


def test_toml_inf_reaches_the_trial(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(textwrap.dedent("""
        [experiment]
        name = "t"
        n_workers = 2
        schedulers = ["dask"]
        [workloads.u]
        shape = "uniform"
        n_tasks = 2
        duration_s = 0.01
        [scheduler_options.dask]
        worker_saturation = inf
        work_stealing = false
    """))
    (trial,) = config.load(path).trials
    assert trial.options == {"work_stealing": False, "worker_saturation": "inf", "address": None,
                             "security": False, "receive": "together"}
    json.dumps(trial.metadata(), allow_nan=False)  # stored as strict JSON


def test_preflight_without_address_does_nothing() -> None:
    Dask.preflight(3, Dask.validate_options({}))


def test_preflight_names_an_unreachable_address(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    import research.schedulers.dask as mod

    monkeypatch.setattr(mod, "CONNECT_TIMEOUT_S", 2.0)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    addr = f"tcp://127.0.0.1:{port}"
    with pytest.raises(ParamError, match="cannot connect") as err:
        Dask.preflight(2, Dask.validate_options({"address": addr}))
    assert err.value.key == "address" and addr in str(err.value)


# -- a local cluster ---------------------------------------------------------------------

@pytest.mark.slow
def test_settings_reach_scheduler_and_workers(tmp_path: Path, no_leaks: None) -> None:
    opts = {"work_stealing": False, "worker_saturation": 2.0}
    with Dask(2, opts, workdir=tmp_path) as sched:
        client = sched.client
        assert client.scheduler.address.startswith("tcp://127.0.0.1:")
        assert client.run_on_scheduler(
            lambda dask_scheduler: "stealing" in dask_scheduler.extensions) is False
        assert client.run_on_scheduler(
            lambda dask_scheduler: dask_scheduler.WORKER_SATURATION) == 2.0
        seen = client.run(lambda: __import__("dask").config.get(
            "distributed.scheduler.work-stealing"))
        assert list(seen.values()) == [False, False]  # the nannies passed the config on
        dirs = client.run(lambda dask_worker: dask_worker.local_directory)
        assert all(Path(d).is_relative_to(tmp_path) for d in dirs.values()), dirs
        # no dashboard; the scheduler's plain HTTP routes on a free local port, not 8787
        http = client.run_on_scheduler(lambda dask_scheduler: (
            dask_scheduler.http_server.address, dask_scheduler.http_server.port))
        assert http[0] == "127.0.0.1" and http[1] != 8787, http
        for pid in client.run(os.getpid).values():  # workers listen on loopback only
            for conn in psutil.Process(pid).net_connections("inet"):
                if conn.status == psutil.CONN_LISTEN:
                    assert conn.laddr.ip == "127.0.0.1", conn
    # shutdown waited for the worker processes: none left even before any polling
    assert not scheduler_children(), scheduler_children()
    # the block restored the parent's config: the next cluster gets the library's defaults
    import dask

    assert dask.config.get("distributed.scheduler.work-stealing") is True
    info = sched.info()
    assert info["work_stealing"] is False and info["worker_saturation"] == 2.0
    assert info["allowed_failures"] == 0 and info["existing_cluster"] is False
    assert info["worker_processes"] == 2 and info["worker_threads"] == 2
    assert info["shutdown_s"] is not None and info["shutdown_s"] < 15


@pytest.fixture
def local(tmp_path: Path) -> Iterator[Scheduler]:
    with Dask(2, workdir=tmp_path) as sched:
        yield sched
    left = wait_no_children()
    assert not left, f"left after shutdown: {left}"


@pytest.mark.slow
def test_defaults_are_the_librarys(local: Scheduler) -> None:
    assert local.settings == {"work_stealing": True, "worker_saturation": 1.1,
                              "allowed_failures": 0}


@pytest.mark.slow
def test_native_witness_rows_per_task_and_fresh_keys(local: Scheduler) -> None:
    local.warm()
    tasks = _sleeps([0.2, 0.1, 0.1, 0.05, 0.05, 0.1])
    first = local.run(tasks, 60)
    second = local.run(tasks, 60)  # same task ids again: must run again, not hit the cache
    for out in (first, second):
        assert out.error is None and len(out.outcomes) == len(tasks)
        native = out.native
        assert set(NATIVE_COLUMNS) <= set(native.columns)
        assert sorted(native.task_id) == [t.task_id for t in tasks]  # warm-up tasks absent
        assert (native.source == "dask.task_stream").all()
        by_id = {o.task_id: o for o in out.outcomes}
        # our label is the worker address: the native worker column names the same worker
        assert all(by_id[r.task_id].worker == r.worker for r in native.itertuples())
        assert set(native.worker) <= set(local._workers)
        rows = _rows(tasks, out)
        cmp = compare(rows, native)
        assert cmp["matched"] == len(tasks)
        # A few ms apart on a quiet machine (Dask shifts worker clocks by an estimated
        # offset); 69 ms seen on a 2-core machine at load 8. A wrong match (another task's
        # record, seconds or units off) is far beyond 100 ms.
        assert cmp["start_abs_median_ms"] < 100 and cmp["end_abs_median_ms"] < 100, cmp
    assert set(first.native.key).isdisjoint(second.native.key)
    starts = {o.task_id: o.start_ns for o in first.outcomes}
    assert all(o.start_ns > max(starts.values()) for o in second.outcomes)


@pytest.mark.slow
def test_receive_together_and_each(local: Scheduler) -> None:
    # The default: one gather for all, one receive stamp after the last end; "each": the short
    # tasks' results are fetched long before the long one's.
    local.warm()
    tasks = _sleeps([0.6, 0.05, 0.05, 0.05])
    together = local.run(tasks, 60)
    assert together.error is None and len(together.outcomes) == len(tasks)
    assert len(set(together.receive_ns.values())) == 1
    assert min(together.receive_ns.values()) >= max(o.end_ns for o in together.outcomes)
    assert together.info["receive_stamps"].startswith("one for all")
    local.options["receive"] = "each"
    try:
        each = local.run(tasks, 60)
    finally:
        local.options["receive"] = "together"
    assert each.error is None and each.info["receive_stamps"] == "per task"
    rows = _rows(tasks, each)
    assert (rows.end_ns <= rows.receive_ns).all()
    # (A short task may queue behind the long one on its worker: the first of them does not.)
    assert rows.receive_ns[1:].min() < rows.receive_ns[0] - 0.2e9
    assert rows.receive_ns.nunique() > 1


def _rows(tasks: Sequence[Task], out) -> object:
    from research.config import TrialSpec
    from research.runner import build_rows

    spec = TrialSpec("t", "dask", {}, "w", "explicit", {}, 2, 0, 60.0, "-", "")
    return build_rows(spec, tasks, out)


@pytest.mark.slow
def test_dead_worker_fails_the_run_fast_and_warm_relabels(local: Scheduler) -> None:
    local.warm()
    before = dict(local._workers)
    tasks = _sleeps([0.3, 0.3, 0.1, 0.1])
    tasks.append(Task(len(tasks), "crash", 0, 0.0))
    t0 = time.monotonic()
    out = local.run(tasks, 60)
    assert time.monotonic() - t0 < 15  # no retry on (and killing of) the other worker
    assert out.error and "KilledWorker" in out.error
    # the crashed task is named; tasks queued behind it on the same worker may fail with it
    failed = json.loads(out.error.split("(ids ")[1].split(")")[0])
    assert len(tasks) - 1 in failed
    assert local.broken
    assert not set(failed) & {o.task_id for o in out.outcomes}
    assert len(failed) + len(out.outcomes) == len(tasks)
    assert all(o.status == "ok" for o in out.outcomes)  # what arrived is kept

    local.broken = False  # the runner would restart; the nanny restarted the worker anyway
    local.warm()
    after = dict(local._workers)
    assert len(after) == 2 and after != before  # one new address, labelled
    out = local.run(_sleeps([0.2] * 4), 60)
    assert out.error is None
    assert {o.worker for o in out.outcomes} == set(after)
    assert {(o.worker, o.pid) for o in out.outcomes} == set(after.items())


@pytest.mark.slow
def test_timeout_then_bounded_shutdown(tmp_path: Path, no_leaks: None) -> None:
    sched = Dask(2, workdir=tmp_path)
    with sched:
        sched.warm()
        out = sched.run(_sleeps([30.0, 0.1]), timeout_s=1.0)
        assert out.error and "timeout" in out.error and sched.broken
        assert [o.task_id for o in out.outcomes] == [1]
    # a task still sleeps in a worker: close kills it after a few seconds, never 30
    assert sched.shutdown_s is not None and sched.shutdown_s < 15, sched.shutdown_s


@pytest.mark.slow
def test_worst_case_balances_near_greedy(tmp_path: Path,
                                         record_property: pytest.RecordProperty) -> None:
    """Long tasks first on 2 workers. With the defaults (work stealing on, saturation 1.1) the
    map is root-ish and queues on the scheduler, so idle workers pull the next task: the
    makespan is the greedy one plus Dask's per-task overhead (seen here: 2.11-2.15 s against
    2.10). The other settings are recorded, not held to a number: stealing off gave the same
    2.11-2.13 s (queuing, not stealing, balances this map), saturation inf with stealing off
    2.91 s (everything assigned up front); on a machine busy with other work one run took 4.9 s.
    """
    durations = worst_case(26, 0.5, 0.1, 4)
    greedy = greedy_makespan(durations, 2)
    assert greedy == pytest.approx(2.1)
    slack = 0.1 + 0.005 * len(durations)  # ~1-2 ms per task in Dask, plus a noisy machine
    seen: dict[str, list[float]] = {}
    for label, opts, runs in [
            ("default", {}, 3),
            ("no-stealing", {"work_stealing": False}, 2),
            ("inf-no-stealing", {"work_stealing": False, "worker_saturation": "inf"}, 2)]:
        with Dask(2, opts, workdir=tmp_path) as sched:
            spans = []
            for _ in range(runs):
                sched.warm()
                out = sched.run(_sleeps(durations), 60)
                assert out.error is None and len(out.outcomes) == len(durations)
                spans.append(_makespan(out.outcomes))
            assert sched.info()["work_stealing"] is (label == "default")
        seen[label] = spans
        record_property(f"dask_makespan_{label}", spans)
        print(f"dask {label}: makespans {[round(s, 3) for s in spans]} (greedy {greedy:.2f})")
    # the best of three: one run can be hit by other work on a shared 2-core machine
    assert min(seen["default"]) <= greedy + slack, seen


@pytest.mark.slow
def test_sweep_writes_native_table_and_settings(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(textwrap.dedent("""
        [experiment]
        name = "d"
        n_workers = 2
        schedulers = ["dask"]
        [workloads.wc]
        shape = "worst_case"
        n_tasks = 6
        long_s = 0.2
        short_s = 0.05
        [scheduler_options.dask]
        work_stealing = false
    """))
    res = run_sweep([config.load(path)], tmp_path / "out", progress=False, log=lambda s: None)
    assert not res.failed and len(res.written) == 1
    meta = schema.read_metadata(res.written[0])
    trial = meta["trial"]
    assert trial["cluster"]["work_stealing"] is False
    assert trial["cluster"]["worker_saturation"] == 1.1
    assert trial["witness"]["matched"] == 6
    native = res.written[0].with_name(res.written[0].stem + schema.NATIVE_SUFFIX)
    assert native.exists()
    assert not wait_no_children()


# -- an existing cluster -------------------------------------------------------------------

def _dask_cli() -> list[str]:
    exe = PY.parent / "dask"
    return [str(exe)] if exe.exists() else [str(PY), "-m", "dask"]


@pytest.fixture
def existing(tmp_path: Path) -> Iterator[tuple[str, list[subprocess.Popen]]]:
    """A scheduler and two single-threaded workers started by the test, not by the adapter."""
    sfile = tmp_path / "scheduler.json"
    log = (tmp_path / "cluster.log").open("w")
    procs: list[subprocess.Popen] = []
    try:
        procs.append(subprocess.Popen(
            [*_dask_cli(), "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
             "--scheduler-file", str(sfile)], stdout=log, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + 60
        while not sfile.exists() or not sfile.read_text().strip():
            assert procs[0].poll() is None, "scheduler exited"
            assert time.monotonic() < deadline, "scheduler did not start"
            time.sleep(0.1)
        for i in range(2):
            procs.append(subprocess.Popen(
                [*_dask_cli(), "worker", "--nthreads", "1", "--host", "127.0.0.1",
                 "--no-dashboard", "--name", f"ext-{i}", "--scheduler-file", str(sfile),
                 "--local-directory", str(tmp_path / f"w{i}")],
                stdout=log, stderr=subprocess.STDOUT))
        address = json.loads(sfile.read_text())["address"]
        _wait_workers(address, 2, deadline)
        yield address, procs
    finally:
        for p in reversed(procs):  # workers first: their nannies stop their worker processes
            p.terminate()
        for p in reversed(procs):
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        log.close()
        left = wait_no_children()
        assert not left, f"left after the test cluster stopped: {left}"


def _wait_workers(address: str, n: int, deadline: float) -> None:
    import distributed

    with distributed.Client(address, timeout=30, set_as_default=False) as client:
        client.wait_for_workers(n, timeout=max(1.0, deadline - time.monotonic()))


@pytest.mark.slow
def test_existing_cluster_is_used_and_left_running(
        existing: tuple[str, list[subprocess.Popen]], monkeypatch: pytest.MonkeyPatch) -> None:
    import research.schedulers.dask as mod

    monkeypatch.setattr(mod, "WORKER_WAIT_S", 1.0)  # how long a short cluster is waited for
    address, procs = existing
    opts = Dask.validate_options({"address": address})
    Dask.preflight(2, opts)
    with pytest.raises(ParamError) as err:
        Dask.preflight(3, opts)
    assert err.value.key == "n_workers"
    assert "2 worker process(es) with 2 thread(s)" in str(err.value)
    assert "n_workers = 3" in str(err.value)
    # its settings cannot be changed from here: asking for others is refused up front
    with pytest.raises(ParamError, match="work_stealing = True.*False") as err:
        Dask.preflight(2, Dask.validate_options({"address": address, "work_stealing": False}))
    assert err.value.key == "work_stealing"
    Dask.preflight(2, Dask.validate_options({"address": address, "work_stealing": True}))

    with Dask(2, opts) as sched:
        sched.warm()
        tasks = _sleeps([0.2, 0.1, 0.1, 0.05])
        out = sched.run(tasks, 60)
        assert out.error is None and len(out.outcomes) == len(tasks)
        assert {o.worker for o in out.outcomes} <= set(sched._workers)
        assert len(out.native) == len(tasks)
        assert sched.cluster is None
    info = sched.info()
    assert info["existing_cluster"] is True and info["address"] == address
    assert info["worker_processes"] == 2 and info["worker_threads"] == 2
    assert info["allowed_failures"] == 3  # the scheduler's own default, recorded as is

    # our shutdown closed only our client: the cluster still runs and still has its workers
    time.sleep(0.5)
    assert all(p.poll() is None for p in procs)
    _wait_workers(address, 2, time.monotonic() + 10)
    # and a second adapter on the same scheduler uses fresh keys
    with Dask(2, opts) as again:
        out = again.run(_sleeps([0.05, 0.05]), 60)
        assert out.error is None and len(out.outcomes) == 2
    assert all(p.poll() is None for p in procs)


@pytest.mark.slow
def test_security_runs_the_cluster_over_tls_on_loopback(tmp_path: Path, no_leaks: None) -> None:
    with get_scheduler("dask")(2, {"security": True}, tmp_path) as sched:
        assert sched.client.scheduler.address.startswith("tls://127.0.0.1:")
        for addr in sched.client.nthreads():
            assert addr.startswith("tls://127.0.0.1:"), addr
        sched.warm(60)
        out = sched.run(_sleeps([0.05] * 6), 60)
        assert out.error is None and len(out.outcomes) == 6
        assert all(o.status == schema.STATUS_OK for o in out.outcomes)
        assert sched.info()["security"] is True


def test_security_is_refused_for_an_existing_scheduler() -> None:
    with pytest.raises(ParamError, match="security"):
        get_scheduler("dask").preflight(2, {"address": "tcp://127.0.0.1:1", "security": True})
