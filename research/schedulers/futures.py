"""``concurrent.futures.ProcessPoolExecutor``, one submit per task."""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor

from ..tasks import Outcome, Task, execute
from ..workloads import Param
from .base import RunOutput, Scheduler
from .threads import collect_futures

START_METHODS = ("forkserver", "spawn", "fork")


class Futures(Scheduler):
    """Process pool fed one task at a time (its call queue holds ``n_workers + 1`` items)."""

    name = "futures"
    description = "ProcessPoolExecutor, one submit per task"
    options_spec = {"start_method": Param("str", "forkserver", START_METHODS)}

    def _start(self) -> None:
        ctx = multiprocessing.get_context(self.options["start_method"])
        self.pool = ProcessPoolExecutor(self.n_workers, mp_context=ctx)

    def _shutdown(self) -> None:
        # Killing first makes shutdown bounded even when a task hangs.
        procs = list(getattr(self.pool, "_processes", {}).values())
        if self.broken:
            for p in procs:
                p.kill()
        self.pool.shutdown(wait=True, cancel_futures=True)
        for p in procs:
            p.join(5)

    def run(self, tasks: Sequence[Task], timeout_s: float) -> RunOutput:
        submit: dict[int, int] = {}
        futures: dict[Future[Outcome], int] = {}
        for task in tasks:
            submit[task.task_id] = time.time_ns()
            futures[self.pool.submit(execute, task)] = task.task_id
        out = collect_futures(futures, submit, timeout_s)
        self.broken = self.broken or out.error is not None
        return out
