"""The serial baseline: every task in order, in the client process."""

from __future__ import annotations

import time
from collections.abc import Sequence

from ..tasks import Outcome, Task, execute_here, noop
from .base import RunOutput, Scheduler, paced, timeout_error


class Serial(Scheduler):
    """Runs tasks one after another in this process (always one worker)."""

    name = "serial"
    description = "one task after another in the client process (baseline)"
    max_workers = 1
    in_process = True
    can_stop_hung_task = False
    supports_arrivals = True

    def _start(self) -> None:
        pass

    def _shutdown(self) -> None:
        pass

    def warm(self, timeout_s: float = 60.0) -> None:
        pass

    def bare_noop(self, n_tasks: int) -> None:
        for i in range(n_tasks):
            noop(i)

    def run(self, tasks: Sequence[Task], timeout_s: float) -> RunOutput:
        deadline = time.monotonic() + timeout_s
        outcomes: list[Outcome] = []
        submit: dict[int, int] = {}
        receive: dict[int, int] = {}
        for task in paced(tasks, self.arrivals, submit, deadline):
            # A running task cannot be interrupted in-process; the deadline stops the rest.
            if time.monotonic() > deadline:
                return RunOutput(outcomes, submit, receive, error=timeout_error(timeout_s))
            outcomes.append(execute_here(task))
            receive[task.task_id] = time.time_ns()
        if len(outcomes) < len(tasks):  # pacing reached the deadline
            return RunOutput(outcomes, submit, receive, error=timeout_error(timeout_s))
        return RunOutput(outcomes, submit, receive)
