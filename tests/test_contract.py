"""One contract every scheduler in the registry passes, each started for real with 2 workers."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from research import schema
from research.config import TrialSpec
from research.runner import build_rows
from research.schedulers import REGISTRY, Scheduler, get_scheduler
from research.tasks import Task

from procs import wait_no_children

SLOW = {"ipp-direct", "ipp-lb", "dask", "ray", "celery"}
PARAMS = [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in REGISTRY]

# Sleep bodies on a busy 2-core machine: a task never sleeps less than asked; it may be late.
LATE_TOLERANCE_S = 0.25
DURATIONS = [0.3, 0.1, 0.05, 0.2, 0.1, 0.05, 0.15, 0.05]


def _spec(name: str, n: int) -> TrialSpec:
    return TrialSpec("contract", name, {}, "w", "explicit", {}, n, 0, 60.0, "-", "")


@pytest.fixture(scope="module", params=PARAMS)
def cluster(request: pytest.FixtureRequest) -> Iterator[Scheduler]:
    cls = get_scheduler(request.param)
    with cls(2) as sched:
        yield sched
    left = wait_no_children()
    assert not left, f"{request.param}: child processes left after shutdown: {left}"


def test_records_complete_and_ordered(cluster: Scheduler) -> None:
    tasks = [Task(i, "sleep", d, d) for i, d in enumerate(DURATIONS)]
    tasks.append(Task(len(tasks), "fail", 0, 0.0))
    cluster.warm()
    out = cluster.run(tasks, timeout_s=60)
    assert out.error is None
    rows = build_rows(_spec(cluster.name, cluster.effective_workers), tasks, out)

    assert len(rows) == len(tasks) and sorted(rows.task_id) == list(range(len(tasks)))
    table = schema.records_table(rows)  # the schema accepts the rows as they are
    assert table.num_rows == len(tasks)
    ok = rows[rows.status == "ok"]
    assert len(ok) == len(DURATIONS)
    for col in ("worker", "pid", "host", "submit_ns", "start_ns", "end_ns", "receive_ns"):
        assert ok[col].notna().all(), col
    assert (ok.submit_ns <= ok.start_ns).all()
    assert (ok.start_ns <= ok.end_ns).all()
    assert (ok.end_ns <= ok.receive_ns).all()
    took = (ok.end_ns - ok.start_ns) / 1e9
    assert (took >= ok.planned_s - 1e-3).all(), took.tolist()
    assert (took <= ok.planned_s + LATE_TOLERANCE_S).all(), took.tolist()
    assert 1 <= ok.worker.nunique() <= cluster.effective_workers

    failed = rows[rows.status == "error"]
    assert failed.task_id.tolist() == [len(DURATIONS)]
    assert "InjectedFailure" in failed.error.iloc[0]


def test_workers_share_the_work(cluster: Scheduler) -> None:
    tasks = [Task(i, "sleep", 0.4, 0.4) for i in range(4)]
    cluster.warm()
    t0 = time.monotonic()
    out = cluster.run(tasks, timeout_s=60)
    wall = time.monotonic() - t0
    assert out.error is None and len(out.outcomes) == 4
    assert len({o.worker for o in out.outcomes}) == cluster.effective_workers
    if cluster.effective_workers == 1:  # serial: one after another
        assert wall >= 1.6
    else:  # one worker alone would need 1.6 s; two need 0.8 s plus overhead
        assert wall < 1.45, wall


def test_timeout_gives_a_failed_run_not_a_hang(cluster: Scheduler) -> None:
    if cluster.name == "serial":
        # A running task cannot be interrupted in-process; the deadline stops the tasks after it.
        tasks = [Task(0, "sleep", 0.6, 0.6), Task(1, "sleep", 0.1, 0.1)]
        out = cluster.run(tasks, timeout_s=0.3)
        assert out.error and "timeout" in out.error and len(out.outcomes) == 1
        return
    t0 = time.monotonic()
    out = cluster.run([Task(0, "sleep", 30.0, 30.0), Task(1, "sleep", 0.1, 0.1)], timeout_s=1.0)
    assert time.monotonic() - t0 < 10
    assert out.error and "timeout" in out.error
    assert cluster.broken


def test_serial_always_uses_one_worker() -> None:
    cls = get_scheduler("serial")
    assert cls(4).effective_workers == 1
