"""The policy of each scheduler, as a small class overriding one method of
:class:`~research.simulate.core.Policy`; :data:`POLICIES` maps registry names to them."""

from __future__ import annotations

import math
import random
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
    bounded = False

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
    bounded = False

    def chunksize(self, n_tasks: int, n_workers: int) -> int:
        # imap and imap_unordered default to chunks of one; map to multiprocessing's formula.
        if self.options.get("method") in ("imap", "imap_unordered") and not isinstance(
                self.options.get("chunksize"), int):
            return 1
        return super().chunksize(n_tasks, n_workers)

    def pick(self, unit_index: int, ready_s: float, state: State) -> int:
        return unit_index % state.n_workers


class DaskChunks(ChunkedGreedy):
    """Greedy over chunks of ``chunksize`` (default 1): Dask's local scheduler and
    ``mp-dynamic`` (``imap_unordered`` with a chunksize)."""

    name = "greedy-chunks"
    description = "greedy over chunks of chunksize (default 1)"
    default_chunksize = None


class DaskLocal(DaskChunks):
    """Dask's local scheduler: its ready tasks leave in an order of its own (a new one in every
    run, not the submission order), cut in chunks of ``chunksize`` (default 1), greedy over
    the chunks. The order is modelled as a fixed pseudo-random permutation (seeded by the
    task count, so a prediction is reproducible): with chunks, which tasks share a chunk
    matters more than any one order."""

    name = "dask-local"
    description = "greedy over chunks of chunksize of a shuffled task list"

    def units(self, n_tasks: int, n_workers: int) -> list[list[int]]:
        size = self.chunksize(n_tasks, n_workers)
        order = list(range(n_tasks))
        if size > 1:
            random.Random(n_tasks).shuffle(order)
        return [order[i:i + size] for i in range(0, n_tasks, size)]


class CeleryNodes(Policy):
    """Celery: ``nodes`` worker nodes of ``n / nodes`` pool processes each. A node reserves
    messages while it holds fewer than ``prefetch_multiplier x processes`` not yet started
    (with ``acks_late``: not yet finished); its processes take its messages in order. The
    shared queue deals each message to the node that has room first, in turn on ties (the
    replay of :func:`~research.analysis.models.celery_prefetch`). One node is greedy."""

    name = "celery"
    description = "nodes reserve prefetch_multiplier x processes messages; greedy within"
    bounded = False  # the nodes fetch from the broker themselves: no hub to hear back from

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(options)
        self._turn = 0

    def layout(self, n_workers: int) -> tuple[int, int, float, bool]:
        """(nodes, processes per node, window, acks_late) for ``n_workers``."""
        nodes = self.options.get("nodes")
        nodes = nodes if isinstance(nodes, int) and nodes > 0 else 1
        if self.options.get("pool") == "solo":
            nodes = n_workers
        nodes = min(nodes, max(1, n_workers))
        per = max(1, n_workers // nodes)
        pm = self.options.get("prefetch_multiplier")
        pm = pm if isinstance(pm, int) and pm >= 0 else 4
        acks_late = str(self.options.get("acks_late")).lower() in ("true", "1")
        return nodes, per, (pm * per if pm > 0 else math.inf), acks_late

    @property
    def greedy(self) -> bool:
        n = self.options.get("nodes")
        return (n in (None, 1) and self.options.get("pool") != "solo")

    def pick(self, unit_index: int, ready_s: float, state: State) -> int:
        nodes, per, window, acks_late = self.layout(state.n_workers)
        if unit_index == 0:
            self._turn = 0
        best_k, best_t = 0, math.inf
        for j in range(nodes):
            k = (self._turn + j) % nodes
            held: list[float] = []  # when each message the node holds leaves the window
            for w in range(k * per, min((k + 1) * per, state.n_workers)):
                marks = state.slots[w] if acks_late else state.starts[w]
                for x in reversed(marks):  # non-decreasing per worker: the held ones last
                    if x <= ready_s:
                        break
                    held.append(x)
            m = len(held)
            t = ready_s if m < window else sorted(held)[m - int(window)]
            if t < best_t - 1e-15:
                best_k, best_t = k, t
        self._turn = (best_k + 1) % nodes
        ws = range(best_k * per, min((best_k + 1) * per, state.n_workers))
        return min(ws, key=lambda w: (state.free_at[w], w))


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
    "serial": Greedy, "threads": Greedy, "mp-dynamic": DaskChunks, "futures": Greedy,
    "dask": Greedy, "ray": Greedy, "parsl": Greedy, "dask-local": DaskLocal, "joblib": Greedy,
    "mp-map": ChunkedGreedy, "ipp-direct": Blocks, "ipp-lb": LoadBalanced,
    "ray-pool": RoundRobin, "celery": CeleryNodes,
}
DEFAULT_POLICY: type[Policy] = Greedy


def base_name(label: str) -> str:
    """``mp-map[chunksize=4]`` -> ``mp-map``."""
    return str(label).partition("[")[0]


def policy_for(scheduler: str, options: Mapping[str, Any] | None = None) -> Policy:
    """The policy of a scheduler (a registry name or a labelled variant) with its options."""
    return POLICIES.get(base_name(scheduler), DEFAULT_POLICY)(options)


__all__ = ["DEFAULT_POLICY", "POLICIES", "Blocks", "CeleryNodes", "ChunkedGreedy", "DaskChunks",
           "Greedy", "LoadBalanced",
           "Prefetching", "RoundRobin", "base_name", "policy_for"]
