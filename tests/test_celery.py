"""The Celery adapter against real Redis servers and real ``celery worker`` processes: its own
cluster, a broker and workers started by the test (used, then left running), a worker and the
broker killed mid-trial, and bad options refused before anything starts."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from research import guard
from research.config import TrialSpec
from research.errors import ParamError
from research.runner import build_rows
from research.schedulers import celery as celery_adapter
from research.schedulers import get_scheduler
from research.schedulers.celery import Celery
from research.tasks import Task
from research.witness import compare

pytestmark = pytest.mark.slow

LOOPBACK = ("127.0.0.1", "::ffff:127.0.0.1", "::1")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spec(n: int) -> TrialSpec:
    return TrialSpec("celery-test", "celery", {}, "w", "explicit", {}, n, 0, 60.0, "-", "")


def _cluster_procs(sched: Celery) -> list[psutil.Process]:
    procs = []
    for popen in [sched.redis, *sched.workers]:
        assert popen is not None
        p = psutil.Process(popen.pid)
        procs += [p, *p.children(recursive=True)]
    return procs


def _wait(pred, timeout_s: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.1)
    return False


# -- bad input: refused before anything starts --------------------------------------------------
@pytest.mark.parametrize("options, key", [
    ({"pool": "gevent"}, "pool"),
    ({"prefetch_multiplier": -1}, "prefetch_multiplier"),
    ({"nodes": 0}, "nodes"),
    ({"acks_late": "yes"}, "acks_late"),
    ({"backend_url": "redis://127.0.0.1:1/1"}, "backend_url"),
    ({"broker_url": "amqp://guest@127.0.0.1//"}, "broker_url"),
    ({"colour": "blue"}, "colour"),
])
def test_bad_options_are_refused(options: dict[str, object], key: str) -> None:
    with pytest.raises(ParamError) as err:
        Celery.validate_options(options)
    assert err.value.key == key


def test_nodes_must_split_the_workers_evenly() -> None:
    with pytest.raises(ParamError, match="3 nodes cannot share 4 workers"):
        Celery.preflight(4, Celery.validate_options({"nodes": 3}))
    with pytest.raises(ParamError, match="solo"):
        Celery(2, {"pool": "solo", "nodes": 1})
    Celery.preflight(4, Celery.validate_options({"nodes": 2}))  # fine


def test_unreachable_broker_fails_preflight_without_its_password() -> None:
    password = secrets.token_hex(8)
    url = f"redis://:{password}@127.0.0.1:{_free_port()}/0"
    t0 = time.monotonic()
    with pytest.raises(ParamError) as err:
        Celery.preflight(2, Celery.validate_options({"broker_url": url}))
    assert time.monotonic() - t0 < 10
    assert password not in str(err.value)
    assert url.split("@")[1] in str(err.value)  # host, port and db are named


# -- a cluster of our own -----------------------------------------------------------------------
@pytest.fixture
def cluster(no_leaks: None) -> Iterator[Celery]:
    # witness: the event stream (off by default) is what test_records_witness_... checks.
    with get_scheduler("celery")(2, {"nodes": 2, "prefetch_multiplier": 1,
                                     "witness": True}) as sched:
        assert isinstance(sched, Celery)
        yield sched


def test_records_witness_and_loopback_only(cluster: Celery) -> None:
    procs = _cluster_procs(cluster)
    # redis-server, two worker nodes, one pool process each
    assert len(procs) == 5, [p.cmdline() for p in procs]
    cluster.warm()
    durations = [0.3, 0.1, 0.2, 0.1, 0.05, 0.15]
    tasks = [Task(i, "sleep", d, d) for i, d in enumerate(durations)]
    out = cluster.run(tasks, timeout_s=60)
    assert out.error is None
    rows = build_rows(_spec(2), tasks, out)
    assert (rows.status == "ok").all()
    assert rows.worker.nunique() == 2
    assert set(rows.worker.str.split("/").str[0]) == set(cluster.node_names)
    # one receive stamp per task, each after its own end, not one for the whole map
    assert rows.receive_ns.nunique() == len(tasks)
    assert (rows.receive_ns >= rows.end_ns).all()
    assert ((rows.receive_ns - rows.end_ns) / 1e9 < 0.5).all()

    native = out.native
    assert native is not None and sorted(native.task_id) == list(range(len(tasks)))
    assert set(native.worker) == set(cluster.node_names)
    assert (native.received_ns <= native.start_ns).all()
    w = compare(rows, native)
    assert w["matched"] == len(tasks)
    # events are stamped in the node's main process, after the pool process started / ended
    assert w["start_abs_median_ms"] < 100 and w["end_abs_median_ms"] < 100, w

    listening = []
    for p in procs:
        with contextlib.suppress(psutil.Error):
            listening += [c for c in p.net_connections(kind="inet")
                          if c.status == psutil.CONN_LISTEN]
    assert listening, "redis-server listens on a port"
    assert all(c.laddr.ip in LOOPBACK for c in listening), listening
    info = cluster.info()
    assert info["nodes"] == 2 and "***" in info["broker_url"]


def test_a_worker_killed_mid_trial_fails_the_trial(cluster: Celery) -> None:
    cluster.warm()
    victim = cluster.workers[1]
    threading.Timer(0.5, lambda: os.kill(victim.pid, signal.SIGKILL)).start()
    t0 = time.monotonic()
    out = cluster.run([Task(i, "sleep", 2.0, 2.0) for i in range(4)], timeout_s=60)
    assert time.monotonic() - t0 < 10
    assert out.error and "died" in out.error, out.error
    assert cluster.broken


def test_the_broker_killed_mid_trial_fails_the_trial(cluster: Celery) -> None:
    cluster.warm()
    redis_pid = cluster.redis.pid  # type: ignore[union-attr]
    threading.Timer(0.5, lambda: os.kill(redis_pid, signal.SIGKILL)).start()
    t0 = time.monotonic()
    out = cluster.run([Task(i, "sleep", 2.0, 2.0) for i in range(4)], timeout_s=60)
    assert time.monotonic() - t0 < 15
    assert out.error and "redis-server broker died" in out.error, out.error
    assert cluster.broken


def test_a_task_that_kills_its_process_fails_the_trial(cluster: Celery) -> None:
    cluster.warm()
    out = cluster.run([Task(0, "crash", 0, 0.0), Task(1, "sleep", 0.1, 0.1)], timeout_s=30)
    assert out.error and "WorkerLostError" in out.error, out.error
    assert [o.task_id for o in out.outcomes] == [1]


# -- an existing broker and workers, started by the test ----------------------------------------
@pytest.fixture
def existing(tmp_path: Path, no_leaks: None) -> Iterator[tuple[str, list[subprocess.Popen]]]:
    password = secrets.token_hex(8)
    port = _free_port()
    redis = subprocess.Popen(
        [celery_adapter.redis_server_binary(), "--bind", "127.0.0.1", "--port", str(port),
         "--requirepass", password, "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://:{password}@127.0.0.1:{port}/0"
    env = {**os.environ, celery_adapter.ENV_BROKER: url,
           "PYTHONPATH": celery_adapter.PACKAGE_ROOT}
    workers = [subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "research.schedulers.celery:worker_app",
         "worker", "-n", f"ext{i}@localhost", "-c", "1", "-E", "--without-heartbeat",
         "--without-gossip", "--without-mingle", "-l", "WARNING"],
        env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for i in range(2)]
    procs = [redis, *workers]
    try:
        assert _wait(lambda: celery_adapter._redis_ping(url), 15)
        app = celery_adapter._make_app(url, url)
        try:
            assert _wait(lambda: len(app.control.ping(timeout=0.5) or []) == 2, 60)
        finally:
            app.close()
        yield url, procs
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)


def test_existing_broker_and_workers_are_used_and_left_running(
        existing: tuple[str, list[subprocess.Popen]]) -> None:
    url, procs = existing
    opts = Celery.validate_options({"broker_url": url})
    with pytest.raises(ParamError) as err:
        Celery.preflight(3, opts)
    assert "n_workers = 3" in str(err.value) and "has 2 pool process(es)" in str(err.value)
    assert url.split("@")[0].split(":")[-1] not in str(err.value)  # no password
    Celery.preflight(2, opts)
    with Celery(2, opts) as sched:
        sched.warm()
        out = sched.run([Task(i, "sleep", 0.1, 0.1) for i in range(6)], timeout_s=60)
        assert out.error is None and len(out.outcomes) == 6
        assert {o.worker.split("/")[0] for o in out.outcomes} == {"ext0@localhost",
                                                                  "ext1@localhost"}
        assert sched.info()["existing_cluster"] is True
    time.sleep(0.5)
    assert all(p.poll() is None for p in procs), "the test's broker and workers still run"
    app = celery_adapter._make_app(url, url)
    try:
        assert len(app.control.ping(timeout=1.0) or []) == 2
    finally:
        app.close()


def test_harness_killed_by_sigterm_takes_its_cluster_along(
        tmp_path: Path, short_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A script using the adapter directly (no run: no signal handling, no watchdog) killed by
    SIGTERM: its Redis and worker nodes die with it; its state dir, which nothing was left to
    remove, is taken by the next run's sweep (research.guard.sweep_temp_dirs)."""
    script = tmp_path / "harness.py"
    script.write_text(
        "import sys, time, psutil\n"
        "from research.schedulers.celery import Celery\n"
        "s = Celery(2)\n"
        "s.start()\n"
        "print(' '.join(str(c.pid) for c in psutil.Process().children(recursive=True)),"
        " flush=True)\n"
        "time.sleep(120)\n")
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": celery_adapter.PACKAGE_ROOT,
                                 "TMPDIR": str(short_tmp)})
    try:
        assert proc.stdout is not None
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert len(pids) >= 3  # redis-server, a worker node, its pool processes
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)

        def gone() -> bool:
            return not [p for p in pids if psutil.pid_exists(p)
                        and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]

        assert _wait(gone, 15), [p for p in pids if psutil.pid_exists(p)]
        left = list(short_tmp.glob("research-celery-*"))
        assert len(left) == 1
        monkeypatch.setattr(guard, "SWEEP_MIN_AGE_S", 0.0)
        assert guard.sweep_temp_dirs(str(short_tmp)) == left and not any(short_tmp.iterdir())
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
