"""The standard library's process pools (``mp-map``, ``mp-dynamic``), started for real with 2
workers: the ``quiet_handler`` what-if (research.schedulers.mp.QuietPool) against the stock
pool it changes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from research.schedulers import get_scheduler
from research.tasks import Task


def _handler_sentinels(pool: object) -> list[object]:
    """What the pool's worker-handler thread waits on besides the workers: the ``sentinels``
    argument of ``Pool._handle_workers`` (the second last; CPython 3.8 and later)."""
    return list(pool._worker_handler._args[-2])  # type: ignore[attr-defined]


@pytest.mark.slow  # starts process pools
@pytest.mark.parametrize("name", ["mp-map", "mp-dynamic"])
def test_quiet_handler_waits_for_workers_not_results(name: str, no_leaks: None,
                                                     tmp_path: Path) -> None:
    """The stock pool's worker handler waits on the result pipe (the premise of the option:
    if a Python release drops it, this fails and the option is moot); the quiet one waits on
    the pool's change notifier only, and still runs every task, replaces a worker that died
    in a task (its exit still wakes the handler) and shuts down with nothing left."""
    tasks = [Task(i, "sleep", 0.005, 0.005) for i in range(12)]
    for quiet in (False, True):
        with get_scheduler(name)(2, {"quiet_handler": quiet}, workdir=tmp_path) as sched:
            pool = sched.pool
            sentinels = _handler_sentinels(pool)
            results = pool._outqueue._reader  # type: ignore[attr-defined]
            notifier = pool._change_notifier._reader  # type: ignore[attr-defined]
            assert notifier in sentinels
            assert (results in sentinels) is not quiet, (quiet, sentinels)
            out = sched.run(tasks, 30)
            assert out.error is None
            assert sorted(o.task_id for o in out.outcomes) == list(range(12))
            assert set(out.receive_ns) == set(range(12))
            # A worker that dies in a task (not one killed while it waits for work: that one
            # holds the pool's read lock, and the stock pool then hangs either way).
            before = {p.pid for p in pool._pool}  # type: ignore[attr-defined]
            crashed = sched.run([Task(0, "crash", 0, 0.0)], 3)
            assert crashed.error
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                now = {p.pid for p in pool._pool if p.is_alive()}  # type: ignore[attr-defined]
                if len(now) == 2 and now != before:
                    break
                time.sleep(0.05)
            else:
                pytest.fail(f"quiet={quiet}: the dead worker was not replaced: {now}")
        assert not pool._worker_handler.is_alive()  # type: ignore[attr-defined]


@pytest.mark.slow  # starts a process pool
def test_shutdown_is_bounded_when_a_worker_died_holding_the_pool_lock(
        no_leaks: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers killed while they wait for work: the one holding the pool's read lock never
    frees it, and the stock ``Pool.terminate()`` waits for it forever. The adapter's shutdown
    gives up after its bound, kills the workers, frees the lock and says so; no process is
    left."""

    from research.schedulers import mp

    monkeypatch.setattr(mp, "TERMINATE_WAIT_S", 2.0)
    sched = get_scheduler("mp-dynamic")(2, workdir=tmp_path)
    with sched:
        assert sched.run([Task(i, "sleep", 0.005, 0.005) for i in range(4)], 30).error is None
        pool = sched.pool
        # Both idle: wait until one of them is blocked in the task pipe's read, holding its
        # lock (the lock cannot be taken from here).
        lock = pool._inqueue._rlock  # type: ignore[attr-defined]
        deadline = time.monotonic() + 20
        while lock.acquire(False):
            lock.release()
            assert time.monotonic() < deadline, "no idle worker took the pool's read lock"
            time.sleep(0.02)
        for proc in list(pool._pool):  # type: ignore[attr-defined]
            proc.kill()
            proc.join(5)
        t0 = time.monotonic()
        with pytest.warns(RuntimeWarning, match="terminate"):
            sched.shutdown()
        assert time.monotonic() - t0 < 30
    # Nothing the pool started is left (the no_leaks fixture). Its daemon threads usually end
    # too once the lock is freed, but not always on a loaded machine (1 run in 9 under a CPU
    # hog kept terminate() waiting): the warning says so, and they die with the process.


def test_quiet_handler_is_left_out_of_the_options_at_its_default() -> None:
    """An option added after results were stored: at its default it is not in the validated
    options, so the trial keys (which hash the options) of stored runs stay the same."""
    for name in ("mp-map", "mp-dynamic"):
        cls = get_scheduler(name)
        plain = cls.validate_options({})
        assert "quiet_handler" not in plain
        assert cls.validate_options({"quiet_handler": False}) == plain
        assert cls.validate_options({"quiet_handler": True}) == {**plain, "quiet_handler": True}


def test_the_what_if_config_loads(repo: Path) -> None:
    """experiments/extra/quiet_pool.toml (not in `make experiments`) is a valid config whose
    trials pair every stock pool (its plain label) with a quiet one."""
    from research import config

    exp = config.load(repo / "experiments" / "extra" / "quiet_pool.toml")
    labels = {t.label for t in exp.trials}
    for name in ("mp-map", "mp-dynamic"):
        assert {name, f"{name}[quiet_handler=True]"} <= labels
    stock = [t for t in exp.trials if t.label == "mp-map"]
    assert stock and all("quiet_handler" not in t.options for t in stock)


@pytest.mark.slow  # starts process pools
def test_pool_spin_benchmark_measures_both_pools(no_leaks: None,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """analysis/pool_spin.py's logic: a row per run for each pool, with the handler threads'
    CPU read where /proc has it."""
    import math
    import sys

    from research.bench import pool_spin

    for cls in pool_spin.POOLS.values():
        rows = pool_spin.measure(cls, 20, 2, 2)
        assert len(rows) == 2
        for r in rows:
            assert r["wall_ms"] > 0 and r["parent_cpu_ms"] >= 0
            if sys.platform.startswith("linux"):
                assert math.isfinite(r["worker_handler_cpu_ms"]), r
    assert pool_spin.main(["--tasks", "10", "--runs", "1"]) == 0
    out = capsys.readouterr().out
    assert "stock: wall median" in out and "quiet: wall median" in out
