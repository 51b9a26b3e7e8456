"""The Ray adapter against real Ray clusters: one local cluster shared by a test class, then an
existing cluster started by the test itself, a sweep through the CLI and a Ctrl-C."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from research import guard, schema, watchdog
from research.cli import main as cli_main
from research.config import TrialSpec
from research.errors import ParamError
from research.guard import TOKEN_ENV
from research.runner import build_rows, read_cluster_file
from research.schedulers import RunOutput, get_scheduler
from research.schedulers import ray as ray_adapter
from research.schedulers.cluster import is_running, reap
from research.schedulers.ray import Ray
from research.tasks import Outcome, Task, execute_packed
from research.witness import compare
from research.workloads import worst_case

from procs import wait_no_children

pytestmark = pytest.mark.slow

VENV_BIN = Path(sys.executable).parent
LOOPBACK = ("127.0.0.1", "::ffff:127.0.0.1", "::1")


def _spec(n: int) -> TrialSpec:
    return TrialSpec("ray-test", "ray", {}, "w", "explicit", {}, n, 0, 60.0, "-", "")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _procs_under(temp_dir: str) -> list[psutil.Process]:
    """Processes of the Ray cluster whose session lives in ``temp_dir``, with their children
    (workers and agents rename themselves ``ray::...`` and do not show the path)."""
    found: dict[int, psutil.Process] = {}
    for p in psutil.process_iter(["cmdline"]):
        if p.pid == os.getpid():
            continue
        with contextlib.suppress(psutil.Error):
            if temp_dir in " ".join(p.info["cmdline"] or []):
                found[p.pid] = p
                for c in p.children(recursive=True):
                    found[c.pid] = c
    return [p for p in found.values() if is_running(p)]


def _listen_addrs(procs: list[psutil.Process]) -> set[str]:
    out = set()
    for p in procs:
        with contextlib.suppress(psutil.Error):
            out |= {c.laddr.ip for c in p.net_connections("inet") if c.status == "LISTEN"}
    return out


def _makespan(out: RunOutput) -> float:
    starts = [o.start_ns for o in out.outcomes]
    ends = [o.end_ns for o in out.outcomes]
    return (max(ends) - min(starts)) / 1e9


def _greedy_makespan(durations: list[float], n_workers: int) -> float:
    """List scheduling in order: each task goes to the worker that frees first."""
    free = [0.0] * n_workers
    for d in durations:
        i = free.index(min(free))
        free[i] += d
    return max(free)


# -- without a cluster ------------------------------------------------------------------------
def test_registry_and_import_is_the_library() -> None:
    assert get_scheduler("ray") is Ray
    lib = ray_adapter.import_ray()
    assert lib.__name__ == "ray" and hasattr(lib, "remote")
    assert Path(lib.__file__).resolve() != Path(ray_adapter.__file__).resolve()
    assert "site-packages" in lib.__file__ or "dist-packages" in lib.__file__
    # The adapter module itself does not import Ray (nor pandas): listing stays cheap.
    code = "import sys, research.schedulers.ray; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_options_are_checked() -> None:
    with pytest.raises(ParamError, match="address"):
        Ray.validate_options({"adress": "127.0.0.1:6379"})
    assert Ray(2).options == {"address": None, "witness": False, "receive": "together"}
    with pytest.raises(ParamError, match="receive.*allowed: together, each"):
        Ray.validate_options({"receive": "first"})
    # The witness (RAY_PROFILING) slows every task: off unless asked for.
    assert not Ray(2).collect_native and Ray(2, {"witness": True}).collect_native
    Ray.preflight(2, {"address": None})  # a cluster we start needs no check


def test_task_wrapper_adds_under_5_us() -> None:
    from research import tasks

    task = Task(0, "noop", 0, 0.0)
    old = tasks.WORKER_LABEL
    tasks.WORKER_LABEL = "ray-test"  # as after the first call in a worker
    try:
        n = 20_000

        def per_call(fn: object, arg: object) -> float:
            best = float("inf")
            for _ in range(5):
                t0 = time.perf_counter()
                for _ in range(n):
                    fn(arg)  # type: ignore[operator]
                best = min(best, (time.perf_counter() - t0) / n)
            return best

        packed = tuple(task)
        extra = (per_call(ray_adapter.execute_labelled_packed, packed)
                 - per_call(execute_packed, packed))
        assert extra < 5e-6, f"wrapper adds {extra * 1e6:.2f} us per task"
        assert Outcome(*ray_adapter.execute_labelled_packed(packed)).worker == "ray-test"
    finally:
        tasks.WORKER_LABEL = old


def test_native_table_pairs_spans_with_inner_execute() -> None:
    Event = ray_adapter.Event
    tid = "worker:" + "ab" * 28
    events = [
        Event("task::execute_labelled", tid, 1_000_000, 9_000_000, "aa", "127.0.0.1"),
        Event("task:deserialize_arguments", tid, 1_000_100, 2_000_000, None, "127.0.0.1"),
        Event("task:execute", tid, 2_000_000, 8_000_000, None, "127.0.0.1"),
        Event("task::execute_labelled", tid, 10_000_000, 12_000_000, "bb", "127.0.0.1"),
        Event("task:execute", tid, 10_500_000, 11_500_000, None, "127.0.0.1"),
        Event("task::execute_labelled", tid, 20_000_000, 22_000_000, "warm", "127.0.0.1"),
    ]
    df = ray_adapter.native_table(events, {"aa": 0, "bb": 1})
    assert df.task_id.tolist() == [0, 1]
    assert df.start_ns.tolist() == [2_000_000, 10_500_000]
    assert df.end_ns.tolist() == [8_000_000, 11_500_000]
    assert df.span_start_ns.tolist() == [1_000_000, 10_000_000]
    assert set(df.worker) == {"ray-abababab"} and set(df.source) == {"ray.timeline"}
    assert ray_adapter.native_table(events, {"zz": 3}) is None


# -- one local cluster for the class ----------------------------------------------------------
@pytest.fixture(scope="class")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ray]:
    # A work dir too long for Ray's unix sockets: the adapter must use a short one in /tmp.
    workdir = tmp_path_factory.mktemp("a-work-dir-with-a-long-name-" + "x" * 40)
    home_before = {p.name for p in Path.home().iterdir()}
    env_before = {k: os.environ.get(k) for k in ray_adapter.CLUSTER_ENV}
    sched = Ray(2, {"witness": True}, workdir=workdir)
    with sched:
        sched.home_before = home_before  # type: ignore[attr-defined]
        yield sched
    temp_dir = sched.temp_dir
    assert temp_dir is not None and not temp_dir.startswith(str(workdir))
    assert not Path(temp_dir).exists(), "the short temp dir is removed at shutdown"
    assert not _procs_under(temp_dir)
    left = wait_no_children()
    assert not left, f"child processes left after shutdown: {left}"
    assert sched.shutdown_s is not None and sched.shutdown_s < 30
    assert {k: os.environ.get(k) for k in ray_adapter.CLUSTER_ENV} == env_before


@pytest.mark.timeout(300)
class TestLocalCluster:
    def test_started_on_loopback_inside_a_short_temp_dir(self, cluster: Ray) -> None:
        info = cluster.info()
        assert info["node_ip"] == "127.0.0.1" and info["address"].startswith("127.0.0.1:")
        assert info["existing_cluster"] is False and info["cluster_cpus"] == 2
        assert len(cluster.temp_dir) <= ray_adapter.MAX_TEMP_DIR_CHARS
        assert any(Path(cluster.temp_dir).glob("session_*"))
        procs = _procs_under(cluster.temp_dir)
        names = {p.name() for p in procs}
        assert {"gcs_server", "raylet"} <= names, names
        addrs = _listen_addrs(procs)
        assert addrs and addrs <= set(LOOPBACK), addrs
        assert cluster.startup_s is not None and cluster.rss_mib and cluster.rss_mib > 50
        # The adapter sets its environment for the cluster only.
        assert os.environ.get("RAY_USAGE_STATS_ENABLED") == "0"
        new_in_home = {p.name for p in Path.home().iterdir()} - cluster.home_before
        assert not any("ray" in n.lower() for n in new_in_home), new_in_home

    def test_warm_brings_every_worker_up(self, cluster: Ray) -> None:
        cluster.warm()
        out = cluster.run([Task(i, "sleep", 0.3, 0.3) for i in range(2)], timeout_s=30)
        assert out.error is None
        workers = {o.worker for o in out.outcomes}
        assert len(workers) == 2 and all(w.startswith("ray-") and len(w) == 12 for w in workers)
        assert len({o.pid for o in out.outcomes}) == 2

    def test_worst_case_is_balanced_like_the_greedy_schedule(self, cluster: Ray) -> None:
        # Two long tasks first, then short ones: contiguous blocks would give both long tasks
        # to one worker (1.7 s); handing each idle worker the next task gives 1.2 s.
        durations = worst_case(14, long_s=0.6, short_s=0.1, n_long=2)
        tasks = [Task(i, "sleep", d, d) for i, d in enumerate(durations)]
        cluster.warm()
        out = cluster.run(tasks, timeout_s=60)
        assert out.error is None and len(out.outcomes) == len(tasks)
        greedy = _greedy_makespan(durations, 2)
        blocks = sum(durations[:7])
        span = _makespan(out)
        assert greedy - 0.01 <= span <= greedy * 1.35 + 0.1, (span, greedy)
        assert span < blocks - 0.2, (span, blocks)
        by_id = {o.task_id: o for o in out.outcomes}
        assert by_id[0].worker != by_id[1].worker, "the two long tasks share a worker"
        busy: dict[str, float] = {}
        for o in out.outcomes:
            busy[o.worker] = busy.get(o.worker, 0.0) + (o.end_ns - o.start_ns) / 1e9
        assert len(busy) == 2 and abs(max(busy.values()) - min(busy.values())) <= 0.35, busy

    def test_receive_together_is_one_stamp_after_the_last_end(self, cluster: Ray) -> None:
        # The default: one ray.get for all, as a user's; every task gets its return.
        tasks = [Task(i, "sleep", d, d) for i, d in enumerate([0.4, 0.05, 0.05])]
        cluster.warm()
        out = cluster.run(tasks, timeout_s=60)
        assert out.error is None and len(out.outcomes) == 3
        assert len(set(out.receive_ns.values())) == 1
        assert min(out.receive_ns.values()) >= max(o.end_ns for o in out.outcomes)

    def test_receive_each_stamps_per_task(self, cluster: Ray) -> None:
        durations = [0.8, 0.1, 0.1, 0.1, 0.1]
        tasks = [Task(i, "sleep", d, d) for i, d in enumerate(durations)]
        cluster.warm()
        cluster.options["receive"] = "each"
        try:
            out = cluster.run(tasks, timeout_s=60)
        finally:
            cluster.options["receive"] = "together"
        assert out.error is None
        rows = build_rows(_spec(2), tasks, out)
        assert (rows.end_ns <= rows.receive_ns).all() and (rows.submit_ns <= rows.start_ns).all()
        lag_s = (rows.receive_ns - rows.end_ns) / 1e9
        assert lag_s.median() < 0.2, lag_s.tolist()
        # The short tasks came back long before the long one did.
        assert rows.receive_ns[1:].max() < rows.receive_ns[0] - 0.2e9
        assert len(set(out.submit_ns.values())) > 1

    def test_native_witness_matches_the_trial(self, cluster: Ray) -> None:
        tasks = [Task(i, "sleep", 0.1, 0.1) for i in range(6)]
        cluster.warm()
        out = cluster.run(tasks, timeout_s=60)
        assert out.error is None
        native = out.native
        assert native is not None and sorted(native.task_id) == list(range(6))  # no warm-up
        for col in ("task_id", "worker", "start_ns", "end_ns", "source"):
            assert col in native.columns
        assert str(native.start_ns.dtype) == "int64"
        assert (native.span_start_ns <= native.start_ns).all()
        assert (native.end_ns <= native.span_end_ns).all()
        ours = {o.task_id: o.worker for o in out.outcomes}
        assert all(ours[t] == w for t, w in zip(native.task_id, native.worker, strict=True))
        gaps = compare(build_rows(_spec(2), tasks, out), native)
        assert gaps["matched"] == 6 and gaps["source"] == "ray.timeline"
        assert gaps["start_abs_median_ms"] < 5 and gaps["end_abs_median_ms"] < 5, gaps
        # A later trial's table holds its own tasks only, though Ray's timeline keeps them all.
        again = cluster.run([Task(i, "noop", 0, 0.0) for i in range(3)], timeout_s=60)
        assert sorted(again.native.task_id) == [0, 1, 2]
        assert not set(again.native.ray_task_id) & set(native.ray_task_id)

    def test_a_second_adapter_is_refused_and_leaves_the_first_alone(self, cluster: Ray) -> None:
        with pytest.raises(RuntimeError, match="already connected"), Ray(2):
            pass
        out = cluster.run([Task(0, "sleep", 0.05, 0.05)], timeout_s=30)
        assert out.error is None and len(out.outcomes) == 1

    def test_a_task_that_raises_is_an_outcome(self, cluster: Ray) -> None:
        out = cluster.run([Task(0, "fail", 0, 0.0), Task(1, "sleep", 0.05, 0.05)], 30)
        assert out.error is None and not cluster.broken
        failed = [o for o in out.outcomes if o.status == "error"]
        assert len(failed) == 1 and "InjectedFailure" in failed[0].error

    def test_a_killed_worker_fails_the_run_and_ray_recovers(self, cluster: Ray) -> None:
        cluster.warm()
        seen_before = cluster.info()["worker_processes_seen"]
        tasks = [Task(0, "sleep", 0.2, 0.2), Task(1, "crash", 0, 0.0),
                 Task(2, "sleep", 0.2, 0.2), Task(3, "sleep", 0.2, 0.2)]
        t0 = time.monotonic()
        out = cluster.run(tasks, timeout_s=60)
        assert time.monotonic() - t0 < 30
        assert out.error and "WorkerCrashedError" in out.error, out.error
        assert sorted(o.task_id for o in out.outcomes) == [0, 2, 3]
        assert out.info.get("crashed_tasks") == 1
        rows = build_rows(_spec(2), tasks, out)
        assert rows.loc[rows.task_id == 1, "error"].iloc[0].startswith("no result:")
        # max_retries=0 loses the task; Ray itself starts a new worker process, so the cluster
        # stays usable and is not marked broken.
        assert not cluster.broken
        cluster.warm()
        after = cluster.run([Task(i, "sleep", 0.2, 0.2) for i in range(4)], timeout_s=60)
        assert after.error is None and len({o.worker for o in after.outcomes}) == 2
        assert cluster.info()["worker_processes_seen"] > seen_before


# -- an existing cluster, started and stopped by the test -------------------------------------
@pytest.fixture
def existing_cluster() -> Iterator[tuple[str, str]]:
    """``ray start --head`` from the venv on loopback, with its own temp dir and ports; only
    its own processes are stopped afterwards, by pid (``ray stop`` would stop every Ray of the
    user on this machine).

    The package never stops an existing cluster, so only this fixture's teardown does; a
    pytest killed before it (SIGKILL, a CI timeout) runs none. The cluster is therefore started
    with a token of its own and watched by the package's watchdog, which stops it if this
    process dies first."""
    import tempfile
    import uuid

    temp_dir = tempfile.mkdtemp(prefix="rx-", dir="/tmp")
    port = _free_port()
    token = f"existing-ray-{uuid.uuid4().hex}"
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled",
           "RAY_PROFILING": "1", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", TOKEN_ENV: token}
    env.pop("RAY_ADDRESS", None)
    cmd = [str(VENV_BIN / "ray"), "start", "--head", f"--port={port}", "--num-cpus=2",
           "--node-ip-address=127.0.0.1", f"--temp-dir={temp_dir}", "--include-dashboard=false",
           f"--dashboard-agent-listen-port={_free_port()}", "--disable-usage-stats"]
    dog = watchdog.start(token)
    try:
        subprocess.run(cmd, env=env, check=True, capture_output=True, text=True, timeout=120)
        yield f"127.0.0.1:{port}", temp_dir
    finally:
        procs = _procs_under(temp_dir)
        for p in procs:
            with contextlib.suppress(psutil.Error):
                p.terminate()
        reap(procs, 2)  # gcs_server and raylet ignore it: then killed, as --force does
        watchdog.stop(dog)
        import shutil

        shutil.rmtree(temp_dir, ignore_errors=True)
        assert not _procs_under(temp_dir)


@pytest.mark.timeout(300)
def test_existing_cluster_is_used_and_left_running(existing_cluster: tuple[str, str],
                                                  no_leaks: None) -> None:
    address, temp_dir = existing_cluster
    cluster_procs = [p for p in _procs_under(temp_dir) if p.name() in ("gcs_server", "raylet")]
    assert len(cluster_procs) == 2
    assert _listen_addrs(_procs_under(temp_dir)) <= set(LOOPBACK)
    # The fixture's watchdog finds them by their token if this test process is killed.
    assert all(p.environ().get(TOKEN_ENV, "").startswith("existing-ray-") for p in cluster_procs)

    Ray.preflight(2, {"address": address})
    with pytest.raises(ParamError) as err:
        Ray.preflight(3, {"address": address})
    assert err.value.key == "n_workers"
    assert "n_workers = 3" in str(err.value) and "has 2" in str(err.value), str(err.value)

    wrong = Ray(3, {"address": address})
    with pytest.raises(ParamError, match="has 2"), wrong:
        pass
    assert not wrong.started and not ray_adapter.import_ray().is_initialized()

    sched = Ray(2, {"address": address, "witness": True})
    with sched:
        sched.warm()
        tasks = [Task(i, "sleep", 0.2, 0.2) for i in range(6)]
        out = sched.run(tasks, timeout_s=60)
        assert out.error is None and len(out.outcomes) == 6
        assert len({o.worker for o in out.outcomes}) == 2
        info = sched.info()
        assert info["existing_cluster"] is True and info["cluster_cpus"] == 2
        assert info["address"] == address and sched.effective_workers == 2
        # Its workers report events every 1 s (Ray's default): run() waits for them.
        assert out.native is not None and sorted(out.native.task_id) == list(range(6))

    # Our side shut down; the cluster runs on and takes new drivers.
    assert all(is_running(p) for p in cluster_procs)
    Ray.preflight(2, {"address": address})
    assert all(is_running(p) for p in cluster_procs)


# -- through the CLI, as a user runs it -------------------------------------------------------
@pytest.mark.timeout(300)
def test_sweep_through_the_cli(tmp_path: Path, no_leaks: None) -> None:
    cfg = tmp_path / "ray.toml"
    cfg.write_text(textwrap.dedent("""
        [experiment]
        name = "t"
        repeats = 1
        n_workers = [2]
        schedulers = ["ray"]
        trial_timeout_s = 60

        [scheduler_options.ray]
        witness = true

        [workloads.worst]
        shape = "worst_case"
        n_tasks = 10
        long_s = 0.3
        short_s = 0.05

        [workloads.crashy]
        shape = "uniform"
        n_tasks = 6
        duration_s = 0.05
        crash_ids = [2]
    """))
    res = tmp_path / "res"
    assert cli_main(["run", str(cfg), "--out", str(res), "--no-progress"]) == 0
    files = sorted(p for p in res.rglob("*.parquet") if schema.is_record_file(p))
    assert len(files) == 2, files
    by_status = {}
    for path in files:
        meta = schema.read_metadata(path)
        trial = meta["trial"]
        by_status[trial["trial_status"]] = (path, trial)
        cluster = trial["cluster"]
        assert cluster["scheduler"] == "ray" and cluster["startup_s"] > 0
        assert cluster["rss_mib"] > 50
        cluster_file = read_cluster_file(path, cluster["cluster_id"])
        assert cluster_file is not None and cluster_file["shutdown_s"] is not None
        assert cluster["node_ip"] == "127.0.0.1" and cluster["existing_cluster"] is False
        # Ray's session lies in the run's own temp dir (the runner's work dir ray-XXXXXXXX
        # there, or an own dir there where the work dir's path is too long for its sockets),
        # or, where even that is too long (a long TMPDIR), in a short dir in /tmp.
        temp = Path(cluster["temp_dir"])
        assert any(p.name.startswith(guard.TEMP_PREFIX) for p in temp.parents) or (
            temp.parent == Path("/tmp") and temp.name.startswith("ray-")), temp
        assert len(str(temp)) <= ray_adapter.MAX_TEMP_DIR_CHARS
    assert set(by_status) == {schema.TRIAL_OK, schema.TRIAL_FAILED}

    path, trial = by_status[schema.TRIAL_OK]
    rows = schema.read_trial(path)
    assert len(rows) == 10 and (rows.status == "ok").all()
    assert rows.worker.nunique() == 2
    native = path.with_name(path.stem + schema.NATIVE_SUFFIX)
    assert native.exists()
    witness = trial["witness"]
    assert witness["matched"] == 10 and witness["start_abs_median_ms"] < 5, witness

    path, trial = by_status[schema.TRIAL_FAILED]
    assert "WorkerCrashedError" in trial["trial_error"]
    rows = schema.read_trial(path)
    assert (rows.status == "ok").sum() == 5


# -- Ctrl-C -----------------------------------------------------------------------------------
@pytest.mark.timeout(300)
def test_ctrl_c_mid_trial_leaves_no_process(tmp_path: Path) -> None:
    script = tmp_path / "interrupted.py"
    script.write_text(textwrap.dedent("""
        import sys
        from research.schedulers.ray import Ray
        from research.tasks import Task

        with Ray(2) as sched:
            sched.warm()
            print(sched.temp_dir, flush=True)
            try:
                sched.run([Task(i, "sleep", 30.0, 30.0) for i in range(4)], timeout_s=120)
            except KeyboardInterrupt:
                print("interrupted", flush=True)
                raise
    """))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        temp_dir = proc.stdout.readline().strip()  # type: ignore[union-attr]
        assert temp_dir, proc.stderr.read()  # type: ignore[union-attr]
        time.sleep(1.0)  # the sleeps are running
        assert _procs_under(temp_dir)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "interrupted" in out and proc.returncode != 0
    deadline = time.monotonic() + 15
    while _procs_under(temp_dir) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _procs_under(temp_dir)
    assert not Path(temp_dir).exists()
