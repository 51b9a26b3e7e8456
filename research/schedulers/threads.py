"""Threads: ``concurrent.futures.ThreadPoolExecutor``, one submit per task."""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

from ..tasks import Outcome, Task, execute_in_thread
from .base import RunOutput, Scheduler


def collect_futures(
    futures: dict[Future[Outcome], int], submit: dict[int, int], timeout_s: float
) -> RunOutput:
    """Gather futures as they complete, stamping each receive; stop at the deadline."""
    deadline = time.monotonic() + timeout_s
    outcomes: list[Outcome] = []
    receive: dict[int, int] = {}
    pending = set(futures)
    error = None
    while pending:
        left = deadline - time.monotonic()
        if left <= 0:
            error = f"timeout after {timeout_s:g} s"
            break
        done, pending = wait(pending, timeout=left, return_when=FIRST_COMPLETED)
        now = time.time_ns()
        for fut in done:
            exc = fut.exception()
            if exc is not None:  # the pool itself failed (e.g. a worker process died)
                error = error or f"{type(exc).__name__}: {exc}"
                continue
            outcomes.append(fut.result())
            receive[futures[fut]] = now
    for fut in pending:
        fut.cancel()
    return RunOutput(outcomes, submit, receive, error=error)


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

    def run(self, tasks: Sequence[Task], timeout_s: float) -> RunOutput:
        submit: dict[int, int] = {}
        futures: dict[Future[Outcome], int] = {}
        for task in tasks:
            submit[task.task_id] = time.time_ns()
            futures[self.pool.submit(execute_in_thread, task)] = task.task_id
        out = collect_futures(futures, submit, timeout_s)
        self.broken = self.broken or out.error is not None
        return out
