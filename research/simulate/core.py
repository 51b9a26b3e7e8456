"""The event bookkeeping every policy shares; a policy overrides :meth:`Policy.pick` (or how
the list is cut, :meth:`Policy.units`).

The model of one trial: the client hands the task list over in *units* (one task, a chunk, a
batch or a contiguous block), one after the other, each unit costing ``dispatch_s`` (one
message: serialisation and the scheduler's bookkeeping, a rate limit on the whole cluster; a
chunk pays it once, which is why chunking pays). The first unit leaves ``start_s +
start_per_task_s x tasks`` after the first submit (the client prepares the whole list first). A
unit goes to the worker the policy picks: a fixed one (blocks, round robin, Celery's nodes) or
whichever is free first (greedy), where a worker may hold ``prefetch`` units at once (a bounded
queue: ipp-lb's hwm) and a freed slot is refilled ``requeue_s`` later (the scheduler hears of
the end, then sends). A worker pays ``unit_s`` for a unit it receives (one message), then
runs its tasks in order, paying ``worker_s`` before each (deserialising, bookkeeping, its
share of the result's way back); a CPU-bound task also loses ``cpu_share_s`` of its core to
the client. Each body lasts its planned
time, adjusted per body kind: ``sleep`` bodies overshoot (``sleep_curve`` by planned length, or
``sleep_overshoot_s``), ``cpu`` bodies are stretched (``cpu_curve`` or ``cpu_scale``), ``noop``
bodies last ``noop_s``. Results reach the client ``return_s`` after their end, and the client
takes them in one at a time, ``result_s`` each. Times start at the first submit (0).
``dispatch_s`` and ``worker_s`` are those in force on the trial's worker count
(:meth:`Costs.at`: each may grow per worker, fitted where no-ops ran on two counts), and the
per-task costs those at the trial's load of the cores (:attr:`Costs.contention`,
:func:`loaded_schedule`: stretched where CPU bodies, no-ops, the workers' own costs and the
client's sends keep the cores busy, :func:`core_load`).
"""

from __future__ import annotations

import bisect
import heapq
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any


@dataclass(frozen=True)
class Costs:
    """The calibrated costs of one scheduler (seconds; ``cpu_scale`` is a factor)."""

    dispatch_s: float = 0.0
    worker_s: float = 0.0
    start_s: float = 0.0
    #: The part of the first start's latency that grows with the list: the client prepares
    #: and hands over the whole list before the first task runs (Dask's and Parsl's graphs,
    #: ipyparallel's submits); the first unit leaves ``start_s + start_per_task_s x tasks``
    #: after the first submit.
    start_per_task_s: float = 0.0
    return_s: float = 0.0
    result_s: float = 0.0
    sleep_overshoot_s: float = 0.0
    cpu_scale: float = 1.0
    noop_s: float = 0.0
    #: A worker's round trip under a bounded queue: from the end of the unit that frees a slot
    #: until the scheduler has heard of it and a waiting unit can start there (ipp-lb's hwm:
    #: the result goes back before the next task comes). Paid only when the worker waits for
    #: the scheduler, unlike ``worker_s``; greedy policies (:meth:`Policy.pick`), and joblib's
    #: batches (from a batch's end to the callback that dispatches the next one).
    requeue_s: float = 0.0
    #: 1: the scheduler serves (pays ``dispatch_s`` for) a unit only once a worker has a free
    #: slot for it, one at a time (a central loop that hears of an end, then sends the next:
    #: its cost then lies between a worker's end and its next start whenever it is the
    #: bottleneck); 0: it pushes the list into a queue as fast as it can. Chosen per scheduler
    #: by the calibration (whichever fits the calibration studies better); bounded policies only.
    pull: float = 0.0
    #: (planned_s, overshoot_s) knots: the sleep overshoot as it depends on the planned length
    #: (timer slack, wake-up latency), interpolated in log(planned) and held flat beyond the
    #: ends; empty: ``sleep_overshoot_s`` for every length.
    sleep_curve: tuple[tuple[float, float], ...] = ()
    #: (planned_s, stretch) knots: the CPU stretch by planned length (short bodies run from
    #: cache, longer ones meet the GIL's switch interval or another process on the core);
    #: empty: ``cpu_scale`` for every length.
    cpu_curve: tuple[tuple[float, float], ...] = ()
    #: The cores' time a CPU-bound task loses to the client, per task (seconds): with as many
    #: CPU-bound workers as cores (the granularity study's CPU half), the client's own per-task
    #: work (submitting, taking results in, its broker threads) has no idle core to run on, so
    #: it runs in the workers' time slices; a worker is descheduled between its tasks (the gaps
    #: of the CPU sweep's timelines), which neither the in-task stamps (the body curves) nor a
    #: sleep body's trials show. Paid by ``cpu`` bodies only, after the body; fitted on the CPU
    #: trials of the calibration studies (0: no contention).
    cpu_share_s: float = 0.0
    #: A worker's cost per unit it receives (one message: deserialising it, starting it,
    #: sending its results back as one), paid once before a unit's first task; with one task
    #: per unit it is ``worker_s`` again, so it is fitted only for policies that cut chunks.
    unit_s: float = 0.0
    #: How much ``dispatch_s`` grows per worker (seconds per task per worker): the cost the
    #: scheduler pays for every task, serially for all workers, is not fixed where it serves
    #: more workers (heartbeats and bookkeeping per worker, its process sharing the cores
    #: with more worker processes). In force: ``dispatch_s + dispatch_per_worker_s x workers``.
    #: One worker count cannot tell it from ``dispatch_s``: fitted where the calibration
    #: studies hold two (the overhead study's no-ops on 2 and 4 workers), 0 otherwise.
    dispatch_per_worker_s: float = 0.0
    #: How much ``worker_s`` grows per worker: each worker's own per-task work (deserialising,
    #: the round trip to the scheduler) slows as more worker processes share the cores and the
    #: scheduler's attention. In force: ``worker_s + worker_per_worker_s x workers``; fitted
    #: like ``dispatch_per_worker_s``.
    worker_per_worker_s: float = 0.0
    #: The most workers the growth holds for: the largest worker count of the trials it was
    #: fitted on. Beyond it the costs in force are this count's; a growth seen between 2 and 4
    #: workers is not extrapolated to 12 (linear, it put ipp-lb's per-task cost on 12 workers
    #: at 8.8 ms where its 4-worker cost was 3.1 ms, and its 12-worker trials of short tasks
    #: 9-22% too slow).
    #: 0: no bound (calibration files before version 7, as they were fitted).
    growth_workers: float = 0.0
    #: How much the per-task costs stretch when the cores are busy: the scheduler's, the
    #: client's and the workers' own per-task work is done by processes that share the cores
    #: with whatever the workers run, so a cost fitted where the cores are busy (no-ops, CPU
    #: bodies on every core) is larger than the same cost beside sleeping workers. In force:
    #: ``dispatch_s``, ``worker_s``, ``unit_s``, ``requeue_s`` and ``result_s`` (and their
    #: growth) x (1 + contention x load), where load is the share of the cores the trial
    #: keeps busy (:func:`core_load`: the bodies that run on a core, the workers' own costs
    #: and the client's sends); the costs above are those of idle cores. 0: the costs are the
    #: same at every load (and calibration files before version 5).
    contention: float = 0.0
    #: The share of a task's ``worker_s`` that keeps a core busy, for the load ``contention``
    #: reads (:func:`core_load`): 1, a worker's per-task cost is work on its core (a prefork
    #: child's own bookkeeping); 0, it is a wait (a hand-over through the scheduler's queues
    #: and processes, which leaves the core to others). Fitted with ``contention`` (1 in
    #: calibration files before version 6).
    worker_load: float = 1.0
    #: The share of ``dispatch_s`` that keeps a core busy, for the load ``contention`` reads
    #: (:func:`core_load`), paid once per unit sent: the client's and the scheduler's per-task
    #: work (serialising, bookkeeping, the broker) runs on the same cores as the workers.
    #: Counted, the load tells a list of short tasks (the client sending all the time) from a
    #: list of long ones: Celery's long trials on 3 workers, which the calibration never saw,
    #: came out 5-13% too slow without it. From version 8 the calibration sets it with
    #: ``worker_load`` (1: work, 0: a hand-over that is a wait throughout); 0 (the load counts
    #: the workers' own costs alone) in older files, as they were fitted.
    dispatch_load: float = 0.0
    #: The share of a busy task's time on its core (a CPU task's body and the client's share,
    #: ``cpu_share_s``; a no-op's body) that counts in the load ``contention`` reads
    #: (:func:`core_load`): 1, a CPU task holds its core whole and the per-task costs stretch
    #: as on cores busy with the costs themselves (the no-ops, from which the stretch is
    #: fitted); below 1, the scheduler's processes get more of the cores beside CPU bodies
    #: than beside no-ops (the OS shares a core between a spinning body and a process that
    #: wakes up for a message). Fitted with ``cpu_share_s`` on the CPU trials alone (1 before
    #: version 9): Dask's stretch, x4.4 at full load from its no-ops and sleeps, put its CPU
    #: points' walls 16-29% too long at 1.4 and 4 ms and its CPU METG at 2.4x in the full run
    #: of d484059.
    body_load: float = 1.0

    def at(self, n_workers: int) -> Costs:
        """The costs in force on ``n_workers`` workers: ``dispatch_s`` and ``worker_s`` with
        their growth per worker added, up to ``growth_workers`` workers (and that growth then
        0); ``self`` when there is none."""
        if not (self.dispatch_per_worker_s or self.worker_per_worker_s):
            return self
        n = min(n_workers, self.growth_workers) if self.growth_workers > 0 else n_workers
        return replace(self, dispatch_s=self.dispatch_s + self.dispatch_per_worker_s * n,
                       worker_s=self.worker_s + self.worker_per_worker_s * n,
                       dispatch_per_worker_s=0.0, worker_per_worker_s=0.0)

    def under_load(self, load: float) -> Costs:
        """The costs in force where the trial keeps ``load`` (0-1) of the cores busy: the
        per-task costs stretched by ``1 + contention x load`` (and ``contention`` then 0);
        ``self`` without contention."""
        if not self.contention:
            return self
        f = self.stretch(load)
        return replace(self, **{k: getattr(self, k) * f for k in STRETCHED}, contention=0.0)

    def stretch(self, load: float) -> float:
        """The factor the per-task costs take at ``load`` (0-1): ``1 + contention x load``."""
        return 1.0 + self.contention * min(1.0, max(0.0, load))

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Costs:
        """The costs in ``raw`` (unknown keys ignored, missing ones default)."""
        out: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in raw:
                continue
            v = raw[f.name]
            if f.name in CURVES:
                out[f.name] = tuple(sorted((float(a), float(b)) for a, b in (v or ())))
            else:
                out[f.name] = float(v)
        return cls(**out)

    def to_dict(self) -> dict[str, Any]:
        """The costs as a plain dict (for the calibration file; curves as lists of pairs)."""
        d = asdict(self)
        for k in CURVES:
            d[k] = [list(x) for x in d[k]]
        return d

    def scalars(self) -> dict[str, float]:
        """The costs that are single numbers (what a default can take the median of)."""
        return {k: v for k, v in asdict(self).items() if k not in CURVES}

    def body_s(self, body: str, planned_s: float) -> float:
        """How long a body of ``planned_s`` lasts under these costs."""
        if body == "noop":
            return self.noop_s
        if not math.isfinite(planned_s):
            return 0.0
        if body == "cpu":
            if self.cpu_curve:
                return planned_s * _interp_log(self.cpu_curve, planned_s)
            return planned_s * self.cpu_scale
        if body == "sleep":
            if self.sleep_curve:
                return planned_s + _interp_log(self.sleep_curve, planned_s)
            return planned_s + self.sleep_overshoot_s
        return planned_s

    def task_s(self, body: str, planned_s: float) -> float:
        """How long a task holds its worker: the body (:meth:`body_s`) and, for a ``cpu``
        body, the share of the cores the client takes meanwhile (``cpu_share_s``)."""
        d = self.body_s(body, planned_s)
        return d + self.cpu_share_s if body == "cpu" and math.isfinite(planned_s) else d


#: The per-task costs :attr:`Costs.contention` stretches (:meth:`Costs.under_load`).
STRETCHED: tuple[str, ...] = ("dispatch_s", "worker_s", "requeue_s", "result_s", "unit_s",
                              "dispatch_per_worker_s", "worker_per_worker_s")
#: The fields of :class:`Costs` that are curves, not numbers.
CURVES: tuple[str, ...] = ("sleep_curve", "cpu_curve")


def _interp_log(knots: Sequence[tuple[float, float]], x: float) -> float:
    """Piecewise-linear in log(x) through ``knots`` (sorted by x), flat beyond the ends."""
    if x <= knots[0][0] or len(knots) == 1:
        return knots[0][1]
    if x >= knots[-1][0]:
        return knots[-1][1]
    i = bisect.bisect_right([k[0] for k in knots], x)
    (x0, y0), (x1, y1) = knots[i - 1], knots[i]
    f = math.log(x / x0) / math.log(x1 / x0)
    return y0 + f * (y1 - y0)


@dataclass
class SimResult:
    """A simulated trial: per-task worker, start and end, and what they add up to."""

    worker: list[int]
    start: list[float]
    end: list[float]
    receive: list[float]
    n_workers: int
    #: (lowest, highest) makespan over the task orders the policy tried where the order is the
    #: scheduler's own and new in every run (:attr:`Policy.spread`); None: one order.
    makespan_range: tuple[float, float] | None = None

    @property
    def makespan_s(self) -> float:
        """Last end - first start, as measured (in-task stamps)."""
        return max(self.end) - min(self.start) if self.start else math.nan

    @property
    def wall_s(self) -> float:
        """Last receive - first submit (0)."""
        return max(self.receive) if self.receive else math.nan

    @property
    def counts(self) -> list[int]:
        """Tasks per worker, sorted (as in the summary's tasks_per_worker)."""
        c = [0] * self.n_workers
        for w in self.worker:
            c[w] += 1
        return sorted(c)


@dataclass
class State:
    """What :meth:`Policy.pick` may look at when it places a unit."""

    n_workers: int
    free_at: list[float]  # when each worker finishes what it was given
    slots: list[list[float]] = field(default_factory=list)  # end times of its last units
    n_units: list[int] = field(default_factory=list)
    starts: list[list[float]] = field(default_factory=list)  # start times of its units
    requeue_s: float = 0.0  # Costs.requeue_s: a freed slot takes this long to be refilled
    #: The index of the last unit each worker was given (-1: none yet), for a pick that
    #: breaks ties by the least recently used worker (ipyparallel's); kept by
    #: :meth:`Policy.schedule`'s scan, not by its fast path (:meth:`Policy.pick` does not read it).
    given: list[int] = field(default_factory=list)


class Policy:
    """Greedy over single tasks: each task goes to whichever worker can take it first.

    Subclasses override :meth:`units` (how the list is cut) and/or :meth:`pick` (where a unit
    goes); :meth:`run` does the bookkeeping.
    """

    name = "greedy"
    description = "greedy: each task to the first free worker"
    #: Whether units wait at the scheduler for a free slot (then a freed slot is refilled
    #: ``Costs.requeue_s`` later); False where they are dealt out ahead, whatever the workers do.
    bounded = True
    #: Set by :meth:`schedule` of a policy whose task order is random (new in every run of the
    #: scheduler): the (lowest, highest) makespan over the orders it tried; None otherwise.
    spread: tuple[float, float] | None = None
    #: Set by :meth:`schedule`: how many units (messages) the client sent, each paying
    #: ``dispatch_s``; what :func:`core_load` counts the dispatch by. A policy whose own
    #: ``schedule`` leaves it unset is counted one send per task (:func:`loaded_schedule`).
    sent: int = 0

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        self.options = dict(options or {})

    @property
    def prefetch(self) -> int:
        """Units a worker may hold at once (1: it asks for the next when it is free)."""
        return 1

    @property
    def greedy(self) -> bool:
        """Whether :meth:`pick` is :class:`Policy`'s own (then :meth:`schedule` takes its fast
        path); a subclass whose ``pick`` falls back to it for some options may say so."""
        return type(self).pick is Policy.pick

    def units(self, n_tasks: int, n_workers: int) -> list[list[int]]:
        """How the task list is handed over: one unit per task."""
        return [[i] for i in range(n_tasks)]

    def pick(self, unit_index: int, ready_s: float, state: State) -> int:
        """The worker that gets unit ``unit_index`` (handed over at ``ready_s``): the one that
        can accept it first (a free slot of its bounded queue), lowest index on ties."""
        best, best_t = 0, math.inf
        for w in range(state.n_workers):
            s = state.slots[w]
            accept = s[-self.prefetch] + state.requeue_s if len(s) >= self.prefetch else 0.0
            t = max(accept, ready_s)
            if t < best_t - 1e-15:
                best, best_t = w, t
        return best

    def run(self, durations: Sequence[float], n_workers: int, costs: Costs,
            busy: Sequence[bool] | None = None, cores: int | None = None) -> SimResult:
        """Simulate the task list (body durations already costed) on ``n_workers``; with
        ``costs.contention``, ``busy`` says which tasks keep their core busy and ``cores`` how
        many the machine has (:func:`loaded_schedule`)."""
        self.spread = None
        worker, start, end, load = loaded_schedule(self, durations, n_workers, costs, busy,
                                                   cores)
        receive = _receive(end, costs.return_s, costs.result_s * costs.stretch(load))
        return SimResult(worker, start, end, receive, n_workers, self.spread)

    def schedule(self, durations: Sequence[float], n_workers: int,
                 costs: Costs) -> tuple[list[int], list[float], list[float]]:
        """Per task: (worker, start, end). Needs only the costs up to the task's end
        (``dispatch_s``, ``start_s``, ``worker_s``, in force on ``n_workers``: :meth:`Costs.at`);
        :meth:`run` adds the client's side. The costs as given, whatever ``contention`` says:
        :func:`loaded_schedule` stretches them by the load first."""
        costs = costs.at(n_workers)
        n = len(durations)
        units = self.units(n, n_workers)
        self.sent = len(units)
        if (self.greedy and costs.dispatch_s >= 0 and costs.requeue_s >= 0
                and math.isfinite(costs.dispatch_s + costs.start_s + costs.worker_s + costs.unit_s
                                  + costs.start_per_task_s + costs.requeue_s)
                and math.isfinite(sum(durations))):  # inf or NaN anywhere: not finite
            return self._schedule_greedy(durations, n_workers, costs, units)
        hold = costs.requeue_s if self.bounded else 0.0
        pull = self.bounded and costs.pull >= 0.5
        lead = costs.start_s + costs.start_per_task_s * n
        state = State(n_workers, [0.0] * n_workers, [[] for _ in range(n_workers)],
                      [0] * n_workers, [[] for _ in range(n_workers)], hold, [-1] * n_workers)
        worker, start, end = [0] * n, [0.0] * n, [0.0] * n
        sent = 0.0
        p = self.prefetch
        for u, unit in enumerate(units):
            if pull:
                # The scheduler serves a unit once it is free and a worker has a free slot.
                look = max(sent, lead)
                w = self.pick(u, look, state)
                s = state.slots[w]
                sent = max(look, s[-p] + hold if len(s) >= p else 0.0) + costs.dispatch_s
                ready = sent
            else:
                sent += costs.dispatch_s
                ready = sent + lead
                w = self.pick(u, ready, state)
                s = state.slots[w]
            t = max(state.free_at[w], ready, s[-p] + hold if hold and len(s) >= p else 0.0)
            state.starts[w].append(t)
            t += costs.unit_s
            for i in unit:
                t += costs.worker_s
                worker[i], start[i] = w, t
                t += durations[i]
                end[i] = t
            state.free_at[w] = t
            state.slots[w].append(t)
            state.n_units[w] += 1
            state.given[w] = u
        return worker, start, end

    def _schedule_greedy(self, durations: Sequence[float], n_workers: int, costs: Costs,
                         units: list[list[int]]) -> tuple[list[int], list[float], list[float]]:
        """:meth:`schedule` with :meth:`pick` as :class:`Policy` defines it, in O(log workers)
        a unit instead of a scan of every worker; the same schedule, float for float.

        A worker can accept its next unit at ``accept`` (the end of its ``prefetch``-th last
        unit, 0 before that). Units are handed over at non-decreasing ``ready`` times, so a
        worker whose accept time has passed stays acceptable until it is picked: those wait in
        ``idle`` (a heap of indices: the lowest index wins, as in :meth:`pick`), the others in
        ``busy`` (a heap of (accept, index)). :meth:`pick` compares with a tolerance of 1e-15,
        so where another worker's time lies within a few 1e-15 of the best (a near tie that
        is not an exact one) the scan itself decides, as :meth:`pick` would.
        """
        n, p = len(durations), self.prefetch
        dispatch_s, worker_s, unit_s = costs.dispatch_s, costs.worker_s, costs.unit_s
        start_s = costs.start_s + costs.start_per_task_s * n
        hold = costs.requeue_s
        state = State(n_workers, [0.0] * n_workers, [[] for _ in range(n_workers)],
                      [0] * n_workers, [[] for _ in range(n_workers)], hold)
        free_at, slots = state.free_at, state.slots
        worker, start, end = [0] * n, [0.0] * n, [0.0] * n
        accept = [0.0] * n_workers
        idle: list[int] = []
        busy = [(0.0, w) for w in range(n_workers)]  # already a heap
        heappush, heappop = heapq.heappush, heapq.heappop
        sent = 0.0
        pull = costs.pull >= 0.5
        for u, unit in enumerate(units):
            if pull:
                ready = sent if sent >= start_s else start_s  # when the scheduler can serve
            else:
                sent += dispatch_s
                ready = sent + start_s
            while busy and busy[0][0] <= ready:
                heappush(idle, heappop(busy)[1])
            if idle:
                # Every idle worker can take it at ``ready``; the lowest index, unless a busy
                # one comes within the tolerance.
                if busy and busy[0][0] <= ready + _near(ready):
                    w = self._pick_scan(u, ready, state, idle, busy, accept)
                else:
                    w = heappop(idle)
            else:
                best = heappop(busy)
                ties = []
                while busy and busy[0][0] == best[0]:
                    ties.append(heappop(busy))
                if busy and busy[0][0] <= best[0] + _near(best[0]):
                    heappush(busy, best)
                    for x in ties:
                        heappush(busy, x)
                    w = self._pick_scan(u, ready, state, idle, busy, accept)
                else:
                    w = best[1]
                    for x in ties:
                        heappush(busy, x)
            if pull:
                # Served once both the scheduler and a slot of w are free.
                sent = (ready if ready >= accept[w] else accept[w]) + dispatch_s
                ready = sent
            t = free_at[w] if free_at[w] >= ready else ready  # max(free_at[w], ready)
            if accept[w] > t:  # a full queue: the slot is refilled a round trip later
                t = accept[w]
            state.starts[w].append(t)
            t += unit_s
            for i in unit:
                t += worker_s
                worker[i] = w
                start[i] = t
                t += durations[i]
                end[i] = t
            free_at[w] = t
            s = slots[w]
            s.append(t)
            state.n_units[w] += 1
            a = s[-p] + hold if len(s) >= p else 0.0
            accept[w] = a
            heappush(busy, (a, w))
        return worker, start, end

    def _pick_scan(self, unit_index: int, ready_s: float, state: State, idle: list[int],
                   busy: list[tuple[float, int]], accept: list[float]) -> int:
        """:meth:`pick` itself, for a near tie; takes the worker it picks off its heap."""
        w = self.pick(unit_index, ready_s, state)
        if w in idle:
            idle.remove(w)
            heapq.heapify(idle)
        else:
            busy.remove((accept[w], w))
            heapq.heapify(busy)
        return w


def _near(t: float) -> float:
    """How close to ``t`` another time must be for :meth:`Policy.pick`'s tolerance (1e-15,
    absorbed by rounding above about 10 s) to possibly matter: with margin for both."""
    return 2e-15 + 4e-15 * abs(t)


def _receive(end: Sequence[float], return_s: float, result_s: float) -> list[float]:
    """When the client has each result: in arrival order, one at a time."""
    out = [0.0] * len(end)
    busy = 0.0
    for i in sorted(range(len(end)), key=end.__getitem__):
        busy = max(busy, end[i] + return_s) + result_s
        out[i] = busy
    return out


def core_load(durations: Sequence[float], busy: Sequence[bool], start: Sequence[float],
              end: Sequence[float], n_workers: int, costs: Costs, cores: int,
              n_units: int | None = None) -> float:
    """The share of ``cores`` a schedule keeps busy (0-1): the bodies that run on a core
    (``busy``: CPU tasks, with the client's share, and no-ops; their share ``body_load``),
    every task's own cost (``worker_s``, its share ``worker_load``) and every unit's dispatch
    (``dispatch_s``, its share ``dispatch_load``; ``n_units`` units, default one per task),
    over the cores' time from the first start to the last end. Sleeping bodies do not count:
    they leave their core to the scheduler and the client."""
    if not start:
        return 0.0
    span = max(end) - min(start)
    if not (span > 0 and math.isfinite(span)):
        return 1.0
    c = costs.at(n_workers)
    used = (sum(d for d, b in zip(durations, busy, strict=True) if b) * c.body_load
            + c.worker_s * c.worker_load * len(start)
            + c.dispatch_s * c.dispatch_load * (len(start) if n_units is None else n_units))
    return min(1.0, max(0.0, used / (max(1, cores) * span)))


def loaded_schedule(policy: Policy, durations: Sequence[float], n_workers: int, costs: Costs,
                    busy: Sequence[bool] | None = None, cores: int | None = None,
                    ) -> tuple[list[int], list[float], list[float], float]:
    """:meth:`Policy.schedule` with the costs in force at the schedule's own load
    (:attr:`Costs.contention`: ``costs.at(n_workers).under_load(load)``), and that load
    (0 without contention).

    The load depends on the schedule and the schedule on the costs: a first schedule with
    the idle cores' costs gives the load (:func:`core_load`), the second runs with the costs
    stretched by it. One step of the fixed point: the stretched costs lengthen the schedule
    a little, which a second step would lower the load by; not worth a third schedule."""
    if not costs.contention:
        worker, start, end = policy.schedule(durations, n_workers, costs)
        return worker, start, end, 0.0
    policy.sent = -1  # a schedule of a policy's own that does not count its sends: per task
    _, start, end = policy.schedule(durations, n_workers, costs)
    load = core_load(durations, busy if busy is not None else [False] * len(durations),
                     start, end, n_workers, costs, cores or _usable_cores(),
                     policy.sent if policy.sent >= 0 else None)
    worker, start, end = policy.schedule(durations, n_workers,
                                         costs.at(n_workers).under_load(load))
    return worker, start, end, load


def _usable_cores() -> int:
    """The cores this process may run on (where a trial's own are unknown): as
    :func:`research.config.usable_cores`, not imported here because the config module loads
    every scheduler adapter and the simulator stands alone."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


#: The bodies that keep their core busy (:func:`core_load`).
BUSY_BODIES: frozenset[str] = frozenset({"cpu", "noop"})


def simulate(policy: Policy, bodies: Sequence[str], planned: Sequence[float], n_workers: int,
             costs: Costs, cores: int | None = None) -> SimResult:
    """Predict one trial: ``bodies`` and ``planned`` per task in submission order, on a
    machine of ``cores`` (default: the cores this process may use)."""
    durations = [costs.task_s(b, p) for b, p in zip(bodies, planned, strict=True)]
    return policy.run(durations, max(1, n_workers), costs, [b in BUSY_BODIES for b in bodies],
                      cores)


def greedy_free_times(durations: Sequence[float], n_workers: int) -> list[float]:
    """List scheduling's final worker free times (used by tests as an independent check)."""
    free = [0.0] * n_workers
    for d in durations:
        heapq.heapreplace(free, free[0] + d)
    return sorted(free)


__all__ = ["BUSY_BODIES", "CURVES", "STRETCHED", "Costs", "Policy", "SimResult", "State",
           "core_load", "greedy_free_times", "loaded_schedule", "simulate"]
