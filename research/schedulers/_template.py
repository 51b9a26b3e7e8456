"""TEMPLATE for a cluster adapter: copy to ``<library>.py``, fill in the ``TODO``s, register it.

Not registered, and importable on purpose (the tests import it, so it stays in step with the
helpers). Read research/schedulers/README.md (the rules and the checklist) first. What is left
here is the library's own calls and its options; processes, the work dir, worker counts and
the timeout text come from :mod:`research.schedulers.cluster`.

Replace this docstring with: how the library assigns tasks to workers, what each receive stamp
marks (per task, per message, or one for the whole map), and what the native witness is.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from ..params import Param
from ..tasks import Outcome, Task, execute, noop
from .base import RunOutput, stamp_all, timeout_error
from .cluster import LOOPBACK, ClusterScheduler, check_worker_count


class Template(ClusterScheduler):
    """TODO: one line: the library call that runs the tasks and how it hands them out."""

    name = "template"  # TODO: the registry name (also the config's scheduler name)
    description = "TODO: what `python -m research list` shows"
    distributions = ()  # TODO: PyPI names whose versions go into the metadata, e.g. ("celery",)
    process_names = ()  # TODO: specific command-line marks of its processes (leak checks)
    # slow_start = True  # inherited: a cluster takes seconds to start (contract tests: slow)
    options_spec = {
        # TODO: the library's knobs; None = "the library's default", written in the help.
        "address": Param("str", None, help="a running cluster to use instead of starting one"),
    }
    existing_keys = ("address",)  # options that select an existing cluster
    # run_options = frozenset({"chunksize"})  # per-map options: trials share one cluster

    def __init__(self, n_workers: int, options: Mapping[str, Any] | None = None,
                 workdir: Any = None) -> None:
        super().__init__(n_workers, options, workdir)
        self.client: Any = None

    @classmethod
    def preflight(cls, n_workers: int, options: Mapping[str, Any]) -> None:
        """An existing cluster must have ``n_workers`` workers (before any trial runs)."""
        if options.get("address"):
            found = n_workers  # TODO: connect (raise ParamError("address", ...) if you cannot)
            check_worker_count(n_workers, found, f"the cluster at {options['address']}")

    def match_process(self, cmd: str) -> bool:
        # TODO: narrow down if the harness may spawn unrelated children meanwhile.
        return True

    def _start_cluster(self) -> None:
        # import thelibrary  # TODO: the library, imported here only (never at module level)
        if self.existing:
            # TODO: connect; count workers; check_worker_count(self.n_workers, found, ...)
            return
        # Its files and logs go here: the run's work dir, or an own temp dir removed at shutdown.
        self.state_dir = self.dir.make(self.workdir, self.name, prefix=f"research-{self.name}-")
        # TODO: start it bound to LOOPBACK with its state in self.state_dir. A server or worker
        # of your own: self.server = start_process([..., "--host", LOOPBACK], log=...) here,
        # stop_process(self.server) in _stop_cluster. Then wait until n_workers registered.
        self.host = LOOPBACK

    def _stop_cluster(self) -> None:
        # TODO: close the client; stop what _start_cluster started (never an existing cluster).
        # Processes still there afterwards are reaped (bounded wait, then kill) by the base.
        self.client = None

    def warm(self, timeout_s: float = 60.0) -> None:
        # TODO: label each worker process with research.tasks.set_worker_label (the `worker`
        # column), and run a trivial task on every worker. The base runs one sleep per worker.
        super().warm(timeout_s)

    def run(self, tasks: Sequence[Task], timeout_s: float) -> RunOutput:
        submit = stamp_all(tasks, time.time_ns())  # TODO: per task if submitted one by one
        outcomes: list[Outcome] = [execute(t) for t in tasks]  # TODO: the library's map/submit
        receive = {o.task_id: time.time_ns() for o in outcomes}  # TODO: as each result arrives
        if len(outcomes) < len(tasks):  # TODO: the deadline passed: cancel what is left
            self.broken = True  # the runner restarts the cluster before the next trial
            return RunOutput(outcomes, submit, receive, error=timeout_error(timeout_s))
        return RunOutput(outcomes, submit, receive)  # TODO: native=<its own timing records>

    def bare_noop(self, n_tasks: int) -> None:
        # TODO: the same library calls as run(), with research.tasks.noop and no stamps.
        for i in range(n_tasks):
            noop(i)
