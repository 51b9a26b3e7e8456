"""Threads: ``concurrent.futures.ThreadPoolExecutor``, one submit per task."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from ..tasks import Task, execute_in_thread, noop
from .base import RunOutput, Scheduler
from .pool import submit_and_collect


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
