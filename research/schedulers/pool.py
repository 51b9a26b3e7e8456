"""What the local pool adapters share (threads, ``concurrent.futures``, ``multiprocessing``):
start methods, and running a task list one submit per task with per-task receive stamps."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor, Future

from ..params import Param
from ..tasks import Outcome, Task
from .base import ReceiveStamps, RunOutput, paced, timeout_error

#: ``multiprocessing`` start methods a process pool accepts; forkserver is the default (fork is
#: unsafe with threads in the client, spawn re-imports everything per worker).
START_METHODS = ("forkserver", "spawn", "fork")
#: The ``start_method`` option of a process pool adapter.
START_METHOD_OPTION = Param("str", "forkserver", START_METHODS)


def submit_and_collect(
    pool: Executor, fn: Callable[[Task], Outcome], tasks: Sequence[Task], timeout_s: float,
    arrivals: Mapping[int, float] | None = None,
) -> RunOutput:
    """Submit one future per task (each when it arrives: :func:`paced`), then wait for all of
    them until the deadline.

    The receive stamp is taken by a done-callback (:class:`ReceiveStamps`), which runs in the
    client process the moment the result is there.
    """
    submit: dict[int, int] = {}
    futures: dict[Future[Outcome], int] = {}
    stamps = ReceiveStamps(len(tasks))
    deadline = time.monotonic() + timeout_s
    for task in paced(tasks, arrivals, submit, deadline):
        fut = pool.submit(fn, task)
        fut.add_done_callback(stamps.callback(task.task_id))
        futures[fut] = task.task_id
    receive = stamps.wait(deadline - time.monotonic())
    done = [f for f in futures if f.done()]
    pending = [f for f in futures if not f.done()]
    outcomes: list[Outcome] = []
    error = timeout_error(timeout_s) if pending or len(futures) < len(tasks) else None
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
