"""``concurrent.futures.ProcessPoolExecutor``, one submit per task."""

from __future__ import annotations

import multiprocessing
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor

from ..guard import init_worker
from ..tasks import Task, execute_packed, noop
from .base import RunOutput, Scheduler
from .pool import START_METHOD_OPTION, submit_and_collect


class Futures(Scheduler):
    """Process pool fed one task at a time (its call queue holds ``n_workers + 1`` items)."""

    name = "futures"
    description = "ProcessPoolExecutor, one submit per task"
    options_spec = {"start_method": START_METHOD_OPTION}
    supports_arrivals = True

    def _start(self) -> None:
        ctx = multiprocessing.get_context(self.options["start_method"])
        # Workers die with their parent even after a SIGKILL of the run, and leave Ctrl-C to
        # the harness (research.guard.init_worker).
        self.pool = ProcessPoolExecutor(self.n_workers, mp_context=ctx, initializer=init_worker)

    def _shutdown(self) -> None:
        # Killing first makes shutdown bounded even when a task hangs.
        procs = list(getattr(self.pool, "_processes", {}).values())
        if self.broken:
            for p in procs:
                p.kill()
        self.pool.shutdown(wait=True, cancel_futures=True)
        for p in procs:
            p.join(5)

    def bare_noop(self, n_tasks: int) -> None:
        for fut in [self.pool.submit(noop, i) for i in range(n_tasks)]:
            fut.result()

    def run(self, tasks: Sequence[Task], timeout_s: float) -> RunOutput:
        # Plain tuples on the wire: the pool pickles each task and outcome on its own.
        out = submit_and_collect(self.pool, execute_packed, tasks, timeout_s, self.arrivals,
                                 packed=True)
        self.broken = self.broken or out.error is not None
        return out
