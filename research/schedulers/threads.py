"""Threads: ``concurrent.futures.ThreadPoolExecutor``, one submit per task."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor

from ..tasks import Outcome, Task, execute_in_thread, noop
from .base import ReceiveStamps, RunOutput, Scheduler


def submit_and_collect(
    pool: Executor, fn: Callable[[Task], Outcome], tasks: Sequence[Task], timeout_s: float
) -> RunOutput:
    """Submit one future per task, then wait for all of them until the deadline.

    The receive stamp is taken by a done-callback (:class:`ReceiveStamps`), which runs in the
    client process the moment the result is there.
    """
    submit: dict[int, int] = {}
    futures: dict[Future[Outcome], int] = {}
    stamps = ReceiveStamps(len(tasks))
    for task in tasks:
        submit[task.task_id] = time.time_ns()
        fut = pool.submit(fn, task)
        fut.add_done_callback(stamps.callback(task.task_id))
        futures[fut] = task.task_id
    receive = stamps.wait(timeout_s)
    done = [f for f in futures if f.done()]
    pending = [f for f in futures if not f.done()]
    outcomes: list[Outcome] = []
    error = f"timeout after {timeout_s:g} s" if pending else None
    for fut in done:
        exc = fut.exception()
        if exc is not None:  # the pool itself failed (e.g. a worker process died)
            error = error or f"{type(exc).__name__}: {exc}"
            receive.pop(futures[fut], None)
        else:
            outcomes.append(fut.result())
    for fut in pending:
        fut.cancel()
    now = time.time_ns()  # a result that beat its callback to the deadline: stamped now
    return RunOutput(outcomes, submit, {o.task_id: receive.get(o.task_id, now) for o in outcomes},
                     error=error)


class Threads(Scheduler):
    """A thread pool: shares the GIL, so CPU bodies do not run in parallel."""

    name = "threads"
    description = "ThreadPoolExecutor, one submit per task"
    shares_gil = True
    in_process = True

    def _start(self) -> None:
        self.pool = ThreadPoolExecutor(self.n_workers, thread_name_prefix="worker")

    def _shutdown(self) -> None:
        # Threads cannot be killed; a hung task delays exit but never outlives the process.
        self.pool.shutdown(wait=not self.broken, cancel_futures=True)

    def bare_noop(self, n_tasks: int) -> None:
        for fut in [self.pool.submit(noop, i) for i in range(n_tasks)]:
            fut.result()

    def run(self, tasks: Sequence[Task], timeout_s: float) -> RunOutput:
        out = submit_and_collect(self.pool, execute_in_thread, tasks, timeout_s)
        self.broken = self.broken or out.error is not None
        return out
