"""The joblib, ray-pool and dask-local adapters, each started for real with 2 workers: how they
assign work (the model in each module's docstring), worker reuse and labels, option refusals,
clean shutdown, and a missing library recorded as a failed start."""

from __future__ import annotations

import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import psutil
import pytest

from research import config
from research.errors import ConfigError, ParamError
from research.runner import run_sweep
from research.schedulers import get_scheduler
from research.tasks import Outcome, Task

from procs import wait_no_children

LONG_S, SHORT_S = 0.4, 0.05


def _sleeps(durations: Sequence[float]) -> list[Task]:
    return [Task(i, "sleep", d, d) for i, d in enumerate(durations)]


def _makespan(outcomes: Sequence[Outcome]) -> float:
    return (max(o.end_ns for o in outcomes) - min(o.start_ns for o in outcomes)) / 1e9


def _strided(n_workers: int, per_worker: int) -> list[float]:
    """A long task every ``n_workers``-th position: round robin's worst case."""
    return [LONG_S if i % n_workers == 0 else SHORT_S for i in range(n_workers * per_worker)]


def _by_worker(outcomes: Sequence[Outcome], tasks: Sequence[Task]) -> dict[str, float]:
    planned = {t.task_id: t.planned_s for t in tasks}
    load: Counter[str] = Counter()
    for o in outcomes:
        load[o.worker] += planned[o.task_id]
    return dict(load)


# -- option refusals, before anything starts ------------------------------------------------

@pytest.mark.parametrize(("name", "key", "value", "allowed"), [
    ("joblib", "backend", "dask", "loky"),
    ("joblib", "batch_size", "many", "auto"),
    ("joblib", "pre_dispatch", "lots", "n_jobs"),
    ("ray-pool", "method", "starmap", "imap_unordered"),
    ("dask-local", "scheduler", "distributed", "synchronous"),
])
def test_unknown_option_values_are_refused(name: str, key: str, value: str,
                                           allowed: str) -> None:
    with pytest.raises(ParamError) as err:
        get_scheduler(name)(2, {key: value})
    assert err.value.key == key and allowed in str(err.value)


def test_synchronous_dask_local_with_several_workers_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "sync.toml"
    path.write_text(textwrap.dedent("""
        [experiment]
        name = "s"
        n_workers = 2
        schedulers = ["dask-local"]
        [scheduler_options.dask-local]
        scheduler = "synchronous"
        [workloads.w]
        shape = "uniform"
        n_tasks = 2
        duration_s = 0.01
    """))
    with pytest.raises(ParamError) as err:
        run_sweep([config.load(path)], tmp_path / "out", progress=False, log=lambda s: None)
    assert err.value.key == "scheduler" and "2 workers" in str(err.value)
    assert not (tmp_path / "out" / "s").exists()  # nothing ran


def test_bad_method_in_a_config_names_file_and_values(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[experiment]\nname = "b"\nn_workers = 2\nschedulers = ["ray-pool"]\n'
                    '[scheduler_options.ray-pool]\nmethod = "apply"\n'
                    '[workloads.w]\nshape = "uniform"\nn_tasks = 2\nduration_s = 0.01\n')
    with pytest.raises(ConfigError) as err:
        config.load(path)
    assert "bad.toml" in str(err.value) and "imap_unordered" in str(err.value)


def test_missing_library_gives_failed_trials_with_the_reason(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "joblib", None)  # `import joblib` raises ImportError
    path = tmp_path / "m.toml"
    path.write_text('[experiment]\nname = "m"\nn_workers = 2\nschedulers = ["joblib"]\n'
                    '[workloads.w]\nshape = "uniform"\nn_tasks = 2\nduration_s = 0.01\n')
    res = run_sweep([config.load(path)], tmp_path / "out", progress=False, log=lambda s: None)
    assert len(res.failed) == 1
    assert "failed to start" in res.failed[0][1] and "joblib" in res.failed[0][1]


# -- joblib --------------------------------------------------------------------------------

def _loky_children() -> list[psutil.Process]:
    out = []
    for p in psutil.Process().children(recursive=True):
        try:
            if "loky" in " ".join(p.cmdline()) and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.Error:
            continue
    return out


@pytest.mark.usefixtures("no_leaks")
def test_joblib_reuses_labelled_workers_and_stops_them(tmp_path: Path) -> None:
    with get_scheduler("joblib")(2, workdir=tmp_path) as sched:
        sched.warm()
        tasks = _sleeps([0.05, LONG_S, 0.05, 0.05])
        first = sched.run(tasks, 30)
        second = sched.run(tasks, 30)
        assert first.error is None and second.error is None
        pids = {o.pid for o in first.outcomes}
        assert len(pids) == 2 and pids == {o.pid for o in second.outcomes}  # reused
        labels = {o.worker: o.pid for o in first.outcomes + second.outcomes}
        assert len(labels) == 2 and set(labels.values()) == pids  # one label per process
        # Results one by one: the short tasks are back well before the long one.
        recv = first.receive_ns
        assert recv[1] - min(recv[0], recv[2]) > (LONG_S - 0.2) * 1e9
        assert _loky_children(), "the loky workers run between trials"
    assert not _loky_children()  # workers and loky's resource tracker are gone
    assert not wait_no_children()


@pytest.mark.usefixtures("no_leaks")
def test_joblib_balances_a_strided_list(tmp_path: Path) -> None:
    durations = _strided(2, 4)  # 4 long tasks at even positions, 4 short ones
    tasks = _sleeps(durations)
    with get_scheduler("joblib")(2, workdir=tmp_path) as sched:
        sched.warm()
        out = sched.run(tasks, 30)
    assert out.error is None and len(out.outcomes) == len(tasks)
    load = _by_worker(out.outcomes, tasks)
    # Round robin would put all 4 long tasks (1.6 s) on one worker; dynamic dispatch splits them.
    assert max(load.values()) < 4 * LONG_S - 0.1, load
    assert _makespan(out.outcomes) < 4 * LONG_S, load


# -- dask-local ----------------------------------------------------------------------------

@pytest.mark.usefixtures("no_leaks")
def test_dask_local_processes_keep_one_pool_and_balance(tmp_path: Path) -> None:
    tasks = _sleeps(_strided(2, 4))
    with get_scheduler("dask-local")(2, {"chunksize": 1}, workdir=tmp_path) as sched:
        sched.warm()
        a = sched.run(tasks, 30)
        b = sched.run(tasks, 30)
        assert a.error is None and b.error is None
        pids = {o.pid for o in a.outcomes}
        assert len(pids) == 2 and pids == {o.pid for o in b.outcomes}  # one pool per cluster
        assert len({o.worker for o in a.outcomes}) == 2
        for out in (a, b):
            load = _by_worker(out.outcomes, tasks)
            assert max(load.values()) < 4 * LONG_S - 0.1, load
    assert not wait_no_children()


@pytest.mark.usefixtures("no_leaks")
def test_dask_local_threads_and_synchronous(tmp_path: Path) -> None:
    tasks = _sleeps([0.2, 0.2, 0.05, 0.05])
    with get_scheduler("dask-local")(2, {"scheduler": "threads"}, workdir=tmp_path) as sched:
        sched.warm()
        out = sched.run(tasks, 30)
        assert out.error is None and len({o.worker for o in out.outcomes}) == 2
        assert _makespan(out.outcomes) < 0.4 + 0.2
        crash = sched.run([Task(0, "crash", 0, 0.0)], 30)
        assert crash.error and "crash" in crash.error  # refused: it would kill the client
    with get_scheduler("dask-local")(1, {"scheduler": "synchronous"}) as sched:
        assert sched.effective_workers == 1
        out = sched.run(tasks, 30)
        assert out.error is None and {o.worker for o in out.outcomes} == {"dask-local-sync"}
        assert _makespan(out.outcomes) >= 0.5 - 1e-3  # one after another


# -- ray-pool ------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.usefixtures("no_leaks")
def test_ray_pool_deals_chunks_round_robin(tmp_path: Path) -> None:
    durations = _strided(2, 3)  # long at 0, 2, 4
    tasks = _sleeps(durations)
    with get_scheduler("ray-pool")(2, {"chunksize": 1, "witness": True},
                                  workdir=tmp_path) as sched:
        sched.warm()
        for method in ("map", "imap", "imap_unordered"):
            sched.options = {**sched.options, "method": method}
            out = sched.run(tasks, 60)
            assert out.error is None and len(out.outcomes) == len(tasks), method
            worker = {o.task_id: o.worker for o in out.outcomes}
            # Task k on actor k mod 2: every long task on the first actor, whatever was idle.
            assert len({worker[i] for i in (0, 2, 4)}) == 1, (method, worker)
            assert len({worker[i] for i in (1, 3, 5)}) == 1, (method, worker)
            assert worker[0] != worker[1]
            assert _makespan(out.outcomes) >= 3 * LONG_S - 1e-3, method
            if method != "map":  # results one by one
                assert len(set(out.receive_ns.values())) > 1
        # Chunks of 2: chunk k = tasks 2k, 2k+1 on actor k mod 2.
        sched.options = {**sched.options, "method": "map", "chunksize": 2}
        out = sched.run(tasks, 60)
        worker = {o.task_id: o.worker for o in out.outcomes}
        assert worker[0] == worker[1] == worker[4] == worker[5] != worker[2] == worker[3]
        # The native witness: Ray's own span of each chunk, on the actor that ran its tasks.
        native = out.native
        assert native is not None and len(native) == 3, native
        assert sorted(i for ids in native.task_ids for i in ids) == list(range(6))
        for ids, w, start, end in zip(native.task_ids, native.worker, native.start_ns,
                                      native.end_ns, strict=True):
            assert {worker[i] for i in ids} == {w}
            mine = [o for o in out.outcomes if o.task_id in ids]
            assert start <= min(o.start_ns for o in mine) + 5e6  # 5 ms of clock slack
            assert end >= max(o.end_ns for o in mine) - 5e6
    assert not wait_no_children()


# -- a worker that dies mid-trial: a failed run, not a hang ---------------------------------

@pytest.mark.parametrize(("name", "options"), [
    ("joblib", {}),
    ("dask-local", {}),
    pytest.param("ray-pool", {"method": "imap_unordered"}, marks=pytest.mark.slow),
])
@pytest.mark.usefixtures("no_leaks")
def test_a_dying_worker_fails_the_run(name: str, options: dict, tmp_path: Path) -> None:
    tasks = [Task(0, "sleep", 0.1, 0.1), Task(1, "crash", 0, 0.0), Task(2, "sleep", 0.1, 0.1),
             Task(3, "sleep", 0.1, 0.1)]
    with get_scheduler(name)(2, options, workdir=tmp_path) as sched:
        sched.warm()
        out = sched.run(tasks, 30)
        assert out.error and "timeout" not in out.error, out.error
        assert sched.broken
        assert all(isinstance(o, Outcome) for o in out.outcomes)
    assert not wait_no_children()


@pytest.mark.slow
@pytest.mark.usefixtures("no_leaks")
def test_ray_pool_cut_short_leaves_no_thread_that_restarts_ray(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A map cut short by its timeout leaves the pool's result thread polling Ray, and one
    cut short by a dead actor leaves it waiting for chunks that never come. Shutdown ends
    both kinds before ``ray.shutdown``, and Ray's auto-init is off while ours runs: a thread
    that polled after shutdown made Ray start a cluster of its own (``/tmp/ray``), whose
    driver then ended the whole process with ``_exit(1)`` 60 s after that cluster's GCS was
    killed (the test run died in a later file that way, with no traceback)."""
    import ray
    from ray._private import auto_init_hook
    from ray.util.multiprocessing.pool import ResultThread

    died: list[str] = []  # a thread that polled Ray after shutdown dies of it (auto-init off)
    monkeypatch.setattr(threading, "excepthook",
                        lambda a: died.append(f"{a.thread}: {a.exc_type.__name__}"))
    monkeypatch.setattr(auto_init_hook, "enable_auto_connect", True)  # Ray's default
    tasks = _sleeps([30.0, 30.0, 0.1, 0.1, 0.1])  # imap: the last three are never sent
    with get_scheduler("ray-pool")(2, {}, workdir=tmp_path) as sched:
        assert auto_init_hook.enable_auto_connect is False
        sched.warm()
        for method in ("map", "imap_unordered"):
            sched.options = {**sched.options, "method": method}
            out = sched.run(tasks, 1.0)
            assert out.error and "timeout" in out.error, method
        threads = [t for t in threading.enumerate() if isinstance(t, ResultThread)]
        assert len([t for t in threads if t.is_alive()]) >= 2  # the cut-short maps' run on
    # An idle one: a chunk failed with its actor, the imap stopped, and its thread has every
    # result it was given and waits for chunks that never come.
    tasks = [Task(0, "sleep", 0.1, 0.1), Task(1, "crash", 0, 0.0), Task(2, "sleep", 0.1, 0.1),
             Task(3, "sleep", 0.1, 0.1)]
    with get_scheduler("ray-pool")(2, {"method": "imap_unordered"}, workdir=tmp_path) as sched:
        sched.warm()
        out = sched.run(tasks, 30)
        assert out.error and "timeout" not in out.error, out.error
        idle = [t for t in threading.enumerate() if isinstance(t, ResultThread)]
        assert [t for t in idle if t.is_alive() and t not in threads]
        threads += idle
    assert not [t for t in threads if t.is_alive()]
    time.sleep(0.5)  # longer than the threads' 0.1 s poll
    assert not died, died  # they ended before ray.shutdown, not by polling after it
    assert not ray.is_initialized()
    assert auto_init_hook.enable_auto_connect is True  # put back
    assert not wait_no_children()
