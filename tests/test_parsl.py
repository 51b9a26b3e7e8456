"""The Parsl adapter against real Parsl HighThroughputExecutors: one cluster shared by a test
class, then one started from a user's config file."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from research.config import TrialSpec
from research.errors import ParamError
from research.runner import build_rows
from research.schedulers import get_scheduler
from research.schedulers import parsl_ as parsl_adapter
from research.schedulers.parsl_ import Parsl
from research.tasks import Outcome, Task, execute

from procs import wait_no_children

LOOPBACK = ("127.0.0.1", "::ffff:127.0.0.1", "::1")


def _spec(n: int) -> TrialSpec:
    return TrialSpec("parsl-test", "parsl", {}, "w", "explicit", {}, n, 0, 60.0, "-", "")


def _procs_with(mark: str) -> list[psutil.Process]:
    """Running processes whose command line contains ``mark``, with their descendants (the
    worker pool is re-parented to init, so it is nobody's child here)."""
    found: dict[int, psutil.Process] = {}
    for p in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if p.pid != psutil.Process().pid and mark in " ".join(p.info["cmdline"] or []):
                found[p.pid] = p
                for c in p.children(recursive=True):
                    found[c.pid] = c
    return [p for p in found.values() if _running(p)]


def _running(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _listen_addrs(procs: list[psutil.Process]) -> set[str]:
    out = set()
    for p in procs:
        with contextlib.suppress(psutil.Error):
            out |= {c.laddr.ip for c in p.net_connections("inet") if c.status == "LISTEN"}
    return out


def _assert_all_gone(procs: list[psutil.Process], run_dir: str) -> None:
    deadline = time.monotonic() + 10
    while (left := [p for p in procs if _running(p)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, f"processes left after shutdown: {left}"
    assert not _procs_with(run_dir), _procs_with(run_dir)
    assert not wait_no_children()


# -- without a cluster ------------------------------------------------------------------------
def test_registry_and_module_does_not_import_parsl() -> None:
    assert get_scheduler("parsl") is Parsl
    assert Parsl.distributions == ("parsl",) and Parsl.slow_start
    lib = parsl_adapter.import_parsl()
    assert lib.__name__ == "parsl" and "site-packages" in lib.__file__
    code = "import sys, research.schedulers.parsl_; print('parsl' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_options_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ParamError, match="config_fil"):
        Parsl.validate_options({"config_fil": "x.py"})
    assert Parsl(2).options == {"config_file": None, "monitoring": False}
    Parsl.preflight(2, {"config_file": None})  # a cluster we start needs no check
    with pytest.raises(ParamError, match="no such file"):
        Parsl.preflight(2, {"config_file": str(tmp_path / "missing.py")})
    bad = tmp_path / "bad.py"
    bad.write_text("conf = 1\n")
    with pytest.raises(ParamError, match="must define `config`"):
        Parsl.preflight(2, {"config_file": str(bad)})


def test_preflight_names_both_worker_counts(tmp_path: Path) -> None:
    cfg = tmp_path / "three.py"
    cfg.write_text(textwrap.dedent("""
        from parsl.config import Config
        from parsl.executors import HighThroughputExecutor
        from parsl.providers import LocalProvider
        config = Config(executors=[HighThroughputExecutor(
            max_workers_per_node=3, address="127.0.0.1",
            provider=LocalProvider(init_blocks=1, max_blocks=1))])
    """))
    with pytest.raises(ParamError, match=r"three\.py.* has 3 worker\(s\), but the sweep asks for "
                       r"n_workers = 2"):
        Parsl.preflight(2, {"config_file": str(cfg)})
    Parsl.preflight(3, {"config_file": str(cfg)})
    assert not _procs_with(str(tmp_path))  # the check started nothing


def test_task_wrapper_labels_from_the_pool_environment(monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    from research import tasks

    monkeypatch.setattr(tasks, "WORKER_LABEL", None)
    monkeypatch.setenv("PARSL_WORKER_BLOCK_ID", "0")
    monkeypatch.setenv("PARSL_WORKER_RANK", "1")
    out = Outcome(*parsl_adapter.execute_labelled(tuple(Task(0, "noop", 0, 0.0))))
    assert out.worker == "parsl-0-1" and out.status == "ok" and out.task_id == 0
    assert execute(Task(1, "noop", 0, 0.0)).worker == "parsl-0-1"  # cached for the process


# -- a cluster we start -----------------------------------------------------------------------
@pytest.fixture(scope="class")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Parsl]:
    cwd = tmp_path_factory.mktemp("cwd")
    workdir = tmp_path_factory.mktemp("work")
    with contextlib.chdir(cwd), Parsl(2, workdir=workdir) as sched:
        sched.warm()
        sched.test_procs = sched.cluster_procs()  # type: ignore[attr-defined]
        yield sched
        assert not list(cwd.iterdir()), "Parsl wrote into the current directory"
    run_dir = sched.run_dir
    assert run_dir is not None and run_dir.startswith(str(workdir))
    _assert_all_gone(sched.test_procs, run_dir)  # type: ignore[attr-defined]


@pytest.mark.slow
class TestLocalCluster:
    def test_processes_and_sockets(self, cluster: Parsl) -> None:
        procs = cluster.cluster_procs()
        cmds = [" ".join(p.cmdline()) for p in procs]
        assert any("interchange" in c for c in cmds), cmds
        assert any("process_worker_pool" in c for c in cmds), cmds
        for name in ("interchange", "process_worker_pool"):
            assert any(name in n for n in cluster.process_names)
        # The client's ZMQ ports (in this process) and the interchange's worker port.
        addrs = _listen_addrs([*procs, psutil.Process()])
        assert addrs, "no listening socket found"
        assert addrs <= set(LOOPBACK), addrs
        assert cluster.connected_workers() == 2
        assert cluster.run_dir and Path(cluster.run_dir, "000", "parsl.log").is_file()

    def test_records_and_labels(self, cluster: Parsl) -> None:
        tasks = [Task(i, "sleep", 0.1, 0.1) for i in range(6)] + [Task(6, "fail", 0, 0.0)]
        out = cluster.run(tasks, timeout_s=60)
        assert out.error is None and len(out.outcomes) == 7
        assert {o.worker for o in out.outcomes} == {"parsl-0-0", "parsl-0-1"}
        rows = build_rows(_spec(2), tasks, out)
        assert (rows.submit_ns <= rows.start_ns).all() and (rows.end_ns <= rows.receive_ns).all()
        assert rows.set_index("task_id").status[6] == "error"
        # Receive stamps are per task: not one stamp for the whole trial.
        assert len(set(out.receive_ns.values())) > 1

    def test_killed_worker_gives_a_failed_trial_not_a_hang(self, cluster: Parsl) -> None:
        tasks = [Task(0, "sleep", 0.2, 0.2), Task(1, "crash", 0, 0.0),
                 Task(2, "sleep", 0.2, 0.2), Task(3, "sleep", 0.2, 0.2)]
        t0 = time.monotonic()
        out = cluster.run(tasks, timeout_s=60)
        # The pool's watchdog looks every heartbeat_period (1 s here, 30 s by default).
        assert time.monotonic() - t0 < 15
        assert out.error and "WorkerLost" in out.error, out.error
        assert sorted(o.task_id for o in out.outcomes) == [0, 2, 3]
        assert out.info.get("lost_tasks") == 1
        rows = build_rows(_spec(2), tasks, out)
        assert rows.loc[rows.task_id == 1, "error"].iloc[0].startswith("no result:")
        # The pool replaces the dead worker: the cluster stays usable.
        assert not cluster.broken
        cluster.warm()
        after = cluster.run([Task(i, "sleep", 0.2, 0.2) for i in range(4)], timeout_s=60)
        assert after.error is None and len({o.worker for o in after.outcomes}) == 2
        cluster.test_procs = list({p.pid: p for p in  # type: ignore[attr-defined]
                                   [*cluster.test_procs, *cluster.cluster_procs()]}.values())

    def test_bare_baseline_runs(self, cluster: Parsl) -> None:
        cluster.bare_noop(50)
        assert cluster.info()["parsl_version"] and cluster.info()["run_dir"] == cluster.run_dir


# -- a user's config --------------------------------------------------------------------------
@pytest.mark.slow
def test_user_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_leaks: None,
                          short_tmp: Path) -> None:
    # A user's config starts its workers as it says, with the client's TMPDIR: the pymp-* dirs
    # of the workers Parsl terminates land there (inside a run, that is the run's own temp
    # dir). Here, a private one.
    monkeypatch.setenv("TMPDIR", str(short_tmp))
    cfg = tmp_path / "user_config.py"
    # A user's own config, as Parsl's docs write one: default run_dir ("runinfo") and bare
    # script names (not on PATH here: the venv is not activated in tests).
    cfg.write_text(textwrap.dedent("""
        from parsl.config import Config
        from parsl.executors import HighThroughputExecutor
        from parsl.providers import LocalProvider
        config = Config(executors=[HighThroughputExecutor(
            label="mine", max_workers_per_node=2, cores_per_worker=0.5,
            address="127.0.0.1", encrypted=False, heartbeat_period=1,
            provider=LocalProvider(init_blocks=1, min_blocks=1, max_blocks=1))],
            strategy="none")
    """))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    work = tmp_path / "work"
    Parsl.preflight(2, {"config_file": str(cfg)})
    with Parsl(2, {"config_file": str(cfg)}, workdir=work) as sched:
        sched.warm()
        procs = sched.cluster_procs()
        out = sched.run([Task(i, "sleep", 0.1, 0.1) for i in range(4)], timeout_s=60)
        assert out.error is None and len({o.worker for o in out.outcomes}) == 2
        assert sched.info()["executor"] == "mine"
    assert not list(cwd.iterdir()), "Parsl wrote ./runinfo into the current directory"
    assert sched.run_dir and sched.run_dir.startswith(str(work))
    _assert_all_gone(procs, sched.run_dir)


# -- the native witness -----------------------------------------------------------------------
def test_monitoring_only_for_a_cluster_we_start(tmp_path: Path) -> None:
    with pytest.raises(ParamError, match="monitoring"):
        Parsl(2, {"monitoring": True, "config_file": str(tmp_path / "c.py")})
    assert Parsl(2).options["monitoring"] is False


@pytest.mark.slow
def test_monitoring_database_is_the_native_witness(short_tmp: Path, no_leaks: None,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # A short work dir, as a run's: the workers then take the cluster's dir as TMPDIR (a long
    # one, such as pytest's, leaves them the client's). Nothing lands in the client's TMPDIR.
    work, tmpdir = short_tmp / "w", short_tmp / "t"
    tmpdir.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmpdir))
    tasks = [Task(i, "sleep", 0.05, 0.05) for i in range(6)]
    with Parsl(2, {"monitoring": True}, workdir=work) as sched:
        sched.warm()
        procs = sched.cluster_procs()
        cmds = " ".join(" ".join(p.cmdline()) for p in procs)
        assert "parsl: monitoring" in cmds, cmds
        assert _listen_addrs([*procs, psutil.Process()]) <= set(LOOPBACK)
        out = sched.run(tasks, timeout_s=60)
        assert out.error is None
        assert sched.monitoring_db and sched.monitoring_db.startswith(str(work))
    assert not list(tmpdir.iterdir())
    native = out.native
    assert native is not None and sorted(native.task_id) == list(range(6))
    assert set(native.source) == {"parsl.monitoring"} and set(native.worker) == {"parsl-0"}
    rows = build_rows(_spec(2), tasks, out).set_index("task_id")
    mine = native.set_index("task_id")
    # The worker-side wrapper stamps "running" just before calling our function and
    # "running_ended" just after it returns (microsecond resolution: 1 us slack).
    assert (mine.start_ns <= rows.start_ns + 1000).all()
    assert (mine.end_ns >= rows.end_ns - 1000).all()
    assert ((rows.start_ns - mine.start_ns) < 0.5e9).all()
    assert ((mine.end_ns - rows.end_ns) < 0.5e9).all()
    assert sched.run_dir is not None
    _assert_all_gone(procs, sched.run_dir)
