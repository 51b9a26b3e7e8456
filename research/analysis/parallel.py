"""Sharing independent jobs (figures to draw, files to read) between this process and a few
worker processes, with the outcomes in job order whatever the sharing.

Workers are *spawned* (nothing of this process's state leaks into them, and no server process
outlives the call) and take jobs from the end of the list while this process takes them from
the start, so neither waits for the other. Whatever a worker could not do (a worker that
cannot start, or dies) is done here, in this process.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")
U = TypeVar("U")


def default_jobs() -> int:
    """Processes to share work between: the CPUs this process may run on, at most 4; 1 when
    a worker could not start without running this program again (:func:`spawn_safe`)."""
    if not spawn_safe():
        return 1
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        n = os.cpu_count() or 1
    return max(1, min(n, 4))


def spawn_safe() -> bool:
    """Whether a spawned worker can start without running this program's own code.

    A spawned worker imports the main module again: a module run with ``-m`` (``python -m
    research``, pytest) guards its work behind ``if __name__ == "__main__"``, an interactive
    session has no file to import, but a plain script may run everything at import.
    """
    main = sys.modules.get("__main__")
    if main is None or getattr(getattr(main, "__spec__", None), "name", None):
        return True
    return getattr(main, "__file__", None) is None


def run_ordered(here: Callable[[T], U], items: Sequence[T], n_jobs: int, *,
                worker: Callable[[T], U] | None = None,
                initializer: Callable[..., None] | None = None,
                initargs: tuple[Any, ...] = ()) -> list[U]:
    """``[here(item) for item in items]``, shared with ``n_jobs - 1`` worker processes.

    A worker runs ``worker(item)`` (default ``here``; both must give the same outcome, and a
    worker's must be picklable, as must ``items`` and ``initargs``) after
    ``initializer(*initargs)``. ``n_jobs`` <= 1, or fewer than two items: all here.
    """
    done: dict[int, U] = {}
    if n_jobs > 1 and len(items) > 1:
        try:
            with ProcessPoolExecutor(min(n_jobs, len(items)) - 1,
                                     mp_context=multiprocessing.get_context("spawn"),
                                     initializer=initializer, initargs=initargs) as pool:
                # Submitted last first: the workers start at the end of the list.
                futures: dict[int, Future[U]] = {
                    i: pool.submit(worker or here, items[i]) for i in reversed(range(len(items)))}
                for i, item in enumerate(items):
                    if futures[i].cancel():  # no worker has started it: ours
                        done[i] = here(item)
                for i, future in futures.items():
                    if i not in done:
                        done[i] = future.result()
        except Exception:  # the pool broke (a worker could not start, or died)
            pass  # what it did not do is done below, here
    return [done[i] if i in done else here(item) for i, item in enumerate(items)]


__all__ = ["default_jobs", "run_ordered"]
