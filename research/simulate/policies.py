"""The policy of each scheduler, as a small class overriding one method of
:class:`~research.simulate.core.Policy`; :data:`POLICIES` maps registry names to them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..analysis.models import block_sizes, pool_map_chunksize
from .core import Policy, State


def _chunks(n_tasks: int, size: int) -> list[list[int]]:
    return [list(range(i, min(i + size, n_tasks))) for i in range(0, n_tasks, max(1, size))]


class Greedy(Policy):
    """Dynamic schedulers: one task at a time to the first free worker."""


class Blocks(Policy):
    """Contiguous blocks, one per worker, the first ``n % workers`` one task longer
    (ipyparallel's DirectView.map)."""

    name = "blocks"
    description = "contiguous blocks, one per worker"

    def units(self, n_tasks: int, n_workers: int) -> list[list[int]]:
        out, i = [], 0
        for size in block_sizes(n_tasks, n_workers):
            out.append(list(range(i, i + size)))
            i += size
        return out

    def pick(self, unit_index: int, ready_s: float, state: State) -> int:
        return unit_index % state.n_workers


class ChunkedGreedy(Policy):
    """Contiguous chunks to whichever worker is free first (``Pool.map``; ipp-lb with a
    chunksize). ``chunksize`` from the trial's options; unset: ``default_chunksize``."""

    name = "chunked-greedy"
    description = "greedy over contiguous chunks"
    #: None: one task per chunk; "pool": multiprocessing's ceil(n / (4 x workers)).
    default_chunksize: str | None = "pool"

    def chunksize(self, n_tasks: int, n_workers: int) -> int:
        """The chunk size in force."""
        size = self.options.get("chunksize")
        if isinstance(size, int) and size > 0:
            return size
        if self.default_chunksize == "pool":
            return pool_map_chunksize(n_tasks, n_workers)
        return 1

    def units(self, n_tasks: int, n_workers: int) -> list[list[int]]:
        return _chunks(n_tasks, self.chunksize(n_tasks, n_workers))


class LoadBalanced(ChunkedGreedy):
    """ipyparallel's LoadBalancedView: one message per item (or chunk), at most ``hwm``
    outstanding per engine (default 1)."""

    name = "ipp-lb"
    description = "greedy over chunks (default 1), bounded queue of hwm per engine"
    default_chunksize = None

    @property
    def prefetch(self) -> int:
        hwm = self.options.get("hwm")
        return hwm if isinstance(hwm, int) and hwm > 0 else 1


class RoundRobin(ChunkedGreedy):
    """Chunks dealt to workers in turn, whatever they are doing (Ray's multiprocessing Pool:
    actor = chunk number mod actors)."""

    name = "round-robin"
    description = "chunks dealt to workers in turn"

    def chunksize(self, n_tasks: int, n_workers: int) -> int:
        # imap and imap_unordered default to chunks of one; map to multiprocessing's formula.
        if self.options.get("method") in ("imap", "imap_unordered") and not isinstance(
                self.options.get("chunksize"), int):
            return 1
        return super().chunksize(n_tasks, n_workers)

    def pick(self, unit_index: int, ready_s: float, state: State) -> int:
        return unit_index % state.n_workers


class Prefetching(Greedy):
    """Greedy with a bounded per-worker queue of ``prefetch`` tasks (Celery: the prefetch
    multiplier, default 4)."""

    name = "prefetch"
    description = "greedy with a per-worker queue of `prefetch` tasks"

    @property
    def prefetch(self) -> int:
        p = self.options.get("prefetch_multiplier") or self.options.get("prefetch")
        return p if isinstance(p, int) and p > 0 else 4


#: Registry name -> policy class. Names not listed get :data:`DEFAULT_POLICY`.
POLICIES: dict[str, type[Policy]] = {
    "serial": Greedy, "threads": Greedy, "mp-dynamic": Greedy, "futures": Greedy,
    "dask": Greedy, "ray": Greedy, "parsl": Greedy, "dask-local": Greedy, "joblib": Greedy,
    "mp-map": ChunkedGreedy, "ipp-direct": Blocks, "ipp-lb": LoadBalanced,
    "ray-pool": RoundRobin, "celery": Prefetching,
}
DEFAULT_POLICY: type[Policy] = Greedy


def base_name(label: str) -> str:
    """``mp-map[chunksize=4]`` -> ``mp-map``."""
    return str(label).partition("[")[0]


def policy_for(scheduler: str, options: Mapping[str, Any] | None = None) -> Policy:
    """The policy of a scheduler (a registry name or a labelled variant) with its options."""
    return POLICIES.get(base_name(scheduler), DEFAULT_POLICY)(options)


__all__ = ["DEFAULT_POLICY", "POLICIES", "Blocks", "ChunkedGreedy", "Greedy", "LoadBalanced",
           "Prefetching", "RoundRobin", "base_name", "policy_for"]
