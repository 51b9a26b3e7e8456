"""Fitting each scheduler's costs, and the versioned calibration file they live in.

The costs are fitted per scheduler from the studies named in :data:`CALIBRATION_STUDIES` (the
no-op overhead study and the granularity sweep), never from the trial being predicted: body
costs (sleep overshoot, CPU stretch, no-op length; and per planned length, the sleep and CPU
curves) and the last result's return latency are means of what those trials measured (a wall
time adds them up: :func:`body_costs`), the first start's latency a robust line against the
task count (:func:`start_line`); ``dispatch_s``,
``worker_s``, ``requeue_s``, ``result_s`` (and ``unit_s`` where the policy cuts chunks) are
chosen by a coordinate search over a grid, then refined in finer steps, that minimises the
mean (:func:`capped_mean`) of |log(predicted / measured)| of their makespans and wall
times, once with the scheduler pushing the list and once pulling (``pull``: where the policy's
units wait for a free slot), keeping the better of the two; then, where
no-ops ran on a second worker count, how much the per-task costs stretch when the cores are
busy (``contention``: :meth:`Costs.under_load`; searched on every calibration trial with a
worker's own cost, and the client's dispatch with it, taken as busy and as a wait,
``worker_load`` and ``dispatch_load`` (not searched apart), kept only where it fits them
better than the same search without it and leaves the second count's no-ops within 5% or no
worse), and where the costs miss those no-ops, their growth per worker
(``dispatch_per_worker_s``, ``worker_per_worker_s``: :meth:`Costs.at`), held beyond the
largest worker count of the trials it was fitted on (``growth_workers``); then ``cpu_share_s``
and, where the costs stretch, ``body_load`` on the CPU trials alone.

The file (JSON)::

    {"format": "research.calibration", "version": 9, "label": "...", "source": "RESULTS",
     "created": "ISO time", "studies": ["overhead", "granularity"],
     "schedulers": {"NAME": {"costs": {"dispatch_s": ..., "worker_s": ..., "start_s": ...,
                                       "start_per_task_s": ..., "requeue_s": ..., "pull": 0,
                                       "return_s": ..., "result_s": ..., "sleep_overshoot_s": ...,
                                       "cpu_scale": ..., "noop_s": ..., "cpu_share_s": ...,
                                       "unit_s": ..., "dispatch_per_worker_s": ...,
                                       "worker_per_worker_s": ..., "growth_workers": 4,
                                       "contention": ...,
                                       "worker_load": ..., "dispatch_load": 1,
                                       "body_load": ...,
                                       "sleep_curve": [[planned_s, overshoot_s], ...],
                                       "cpu_curve": [[planned_s, stretch], ...]},
                             "n_trials": 21, "fit_error": 0.03, "trials": ["trial_id", ...]}},
     "default": {"costs": {...}}}

Version 1 files (no curves, no ``start_per_task_s``, ``requeue_s`` or ``pull``) still load: what
they lack is 0 or empty, and the scalar body costs serve every length. Version 2 files (no
``cpu_share_s``, added in version 3: the cores' time a CPU-bound task loses to the client) load
with it 0, as they were fitted; likewise ``unit_s`` (a worker's cost per chunk, also new in
version 3). Version 3 files (no ``dispatch_per_worker_s`` or ``worker_per_worker_s``, added
in version 4: how the shared and the per-worker cost grow with the workers, :meth:`Costs.at`)
load with both 0. Version 4 files (no ``contention``, added in version 5: the per-task costs
stretched by the load of the cores, :meth:`Costs.under_load`) load with it 0: the same costs
at every load, as they were fitted. Version 5 files (no ``worker_load``, added in version 6:
whether a worker's own per-task cost loads its core or is a wait) load with it 1, as they
were fitted. Version 6 files (no ``growth_workers``, added in version 7: the worker count
beyond which the growth per worker is held, not extrapolated) load with it 0: the growth
extrapolated to every count, as they were fitted. Version 7 files (no ``dispatch_load``,
added in version 8: the client's and the scheduler's per-unit cost counted in the load of the
cores that ``contention`` reads, :func:`~research.simulate.core.core_load`) load with it 0:
the load of the workers' own costs alone, as they were fitted. Version 8 files (no
``body_load``, added in version 9: the share of a CPU task's time on its core, its body and
the client's share ``cpu_share_s``, that counts in that load) load with it 1: a CPU task
counts whole, as they were fitted. ``default`` (the median
of the fitted schedulers' numbers; no curves) serves a scheduler the file does not know.
:data:`SHIPPED` is the package's own file (its label says what it was fitted on).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .core import BUSY_BODIES, STRETCHED, Costs, _receive, loaded_schedule
from .policies import base_name, policy_for

FORMAT = "research.calibration"
VERSION = 9
#: Versions :func:`load` reads (1: no body curves, the scalars serve every length; 2: no
#: ``cpu_share_s`` or ``unit_s``, 0; 3: no ``dispatch_per_worker_s`` or
#: ``worker_per_worker_s``, 0: the costs hold on every worker count, as they were fitted;
#: 4: no ``contention``, 0: the costs hold at every load of the cores; 5: no
#: ``worker_load``, 1: a worker's own cost counts as busy, as it was fitted; 6: no
#: ``growth_workers``, 0: the growth per worker extrapolated to every count; 7: no
#: ``dispatch_load``, 0: the load of the cores counts the workers' own costs alone; 8: no
#: ``body_load``, 1: a CPU body counts whole in the load, as it was fitted).
READABLE_VERSIONS: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 8, 9)
CALIBRATION_STUDIES: tuple[str, ...] = ("overhead", "granularity")
SHIPPED = Path(__file__).with_name("default_calibration.json")
#: Values tried for dispatch_s and worker_s (seconds): 0 and a log grid from 1 us to 30 ms
#: (about 1.6x apart).
GRID: tuple[float, ...] = (0.0, *(float(x) for x in np.logspace(-6, math.log10(0.03), 23)))


@dataclass
class TrialData:
    """What the simulator needs of one measured trial."""

    trial_id: str
    experiment: str
    scheduler: str
    workload: str
    n_workers: int
    options: dict[str, Any]
    bodies: list[str]
    planned: list[float]
    makespan_s: float
    wall_s: float
    counts: list[int] = field(default_factory=list)
    body_s: list[float] = field(default_factory=list)  # measured end - start (NaN if untimed)
    first_start_s: float = math.nan  # first start - first submit
    last_return_s: float = math.nan  # last receive - last end
    #: What the simulator does not model in this trial (tasks arriving over time, payloads),
    #: or "" (a batch without payloads).
    unmodelled: str = ""
    #: The cores it could run on (its file's ``cpu_usable``, else ``cpu_count``; 0: unknown,
    #: then this machine's): what the load of :attr:`Costs.contention` is a share of.
    cores: int = 0


@dataclass
class Calibration:
    """Costs per scheduler, with where they came from."""

    schedulers: dict[str, dict[str, Any]]
    default: Costs
    label: str
    source: str = ""
    created: str = ""
    studies: tuple[str, ...] = CALIBRATION_STUDIES
    path: Path | None = None

    def costs(self, scheduler: str) -> tuple[Costs, bool]:
        """(costs of ``scheduler``, whether they were fitted for it rather than the default)."""
        entry = self.schedulers.get(base_name(scheduler))
        if entry is None:
            return self.default, False
        return Costs.from_dict(entry["costs"]), True

    def trials(self, scheduler: str) -> set[str]:
        """The trial ids the costs of ``scheduler`` were fitted on."""
        entry = self.schedulers.get(base_name(scheduler)) or {}
        return set(entry.get("trials", []))

    def to_json(self) -> dict[str, Any]:
        """The file's content."""
        return {"format": FORMAT, "version": VERSION, "label": self.label,
                "source": self.source, "created": self.created, "studies": list(self.studies),
                "schedulers": self.schedulers, "default": {"costs": self.default.to_dict()}}

    def write(self, path: Path) -> Path:
        """Write the file (pretty-printed, stable key order)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=1, sort_keys=True) + "\n")
        return path


def load(path: Path | str | None = None) -> Calibration:
    """Read a calibration file; None reads the package's shipped defaults. Raises ValueError
    naming the file and the problem when it is not a calibration file of a known version."""
    p = Path(path) if path is not None else SHIPPED
    try:
        doc = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{p}: cannot read a calibration file: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError(f"{p}: not a calibration file (format must be {FORMAT!r})")
    if doc.get("version") not in READABLE_VERSIONS:
        raise ValueError(f"{p}: calibration version {doc.get('version')!r}; this package "
                         f"reads versions {', '.join(map(str, READABLE_VERSIONS))}")
    label = str(doc.get("label", ""))
    if path is None:
        label = f"shipped defaults ({label})" if label else "shipped defaults"
    return Calibration(dict(doc.get("schedulers", {})),
                       Costs.from_dict(doc.get("default", {}).get("costs", {})), label,
                       str(doc.get("source", "")), str(doc.get("created", "")),
                       tuple(doc.get("studies", CALIBRATION_STUDIES)), p)


# ---------------------------------------------------------------------------------------------
# Reading trials


def trial_data(results: Any, row: pd.Series) -> TrialData | None:
    """The simulator's view of one summary row of a :class:`~research.analysis.results.Results`
    (None when the trial has no timed task)."""
    from ..analysis.metrics import tasks_per_worker

    df = results.records(row["source"])
    if df.empty:
        return None
    t = results.task_times(row["source"])  # as load_results computed them
    if not t["timed"].any():
        return None
    meta = results.metadata(row["source"]).get("trial", {})
    bodies = (df.sort_values("task_id")["body"].astype(str).tolist() if "body" in df.columns
              else ["sleep"] * len(df))
    planned = t["planned_s"].astype(float).tolist()
    measured = (t["end_s"] - t["start_s"]).astype(float).tolist()
    n = int(row["n_workers"])
    return TrialData(
        str(row["trial_id"]), str(row["experiment"]), str(row["scheduler"]),
        str(row["workload"]), n, dict(meta.get("options") or {}), bodies, planned,
        float(row["makespan_s"]), float(row["wall_s"]),
        [int(c) for c in tasks_per_worker(t, n)], measured,
        float(t["start_s"].min() - t["submit_s"].min()),
        float(t["receive_s"].max() - t["end_s"].max()),
        unmodelled(meta.get("params") or {}),
        _cores(results.metadata(row["source"]).get("system") or {}))


def _cores(system: dict[str, Any]) -> int:
    """The cores the trial could run on, from its file's system metadata: ``cpu_usable`` (its
    affinity), else ``cpu_count``; 0 when neither is there."""
    for key in ("cpu_usable", "cpu_count"):
        v = system.get(key)
        if isinstance(v, int | float) and math.isfinite(v) and v > 0:
            return int(v)
    return 0


def unmodelled(params: dict[str, Any]) -> str:
    """What of a workload's ``params`` the simulator does not model ("" if nothing)."""
    parts = []
    if params.get("arrival", "batch") != "batch":
        parts.append(f"tasks arrive over time ({params['arrival']})")
    if params.get("input_bytes") or params.get("output_bytes"):
        parts.append("payloads")
    return " and ".join(parts)


def collect(results: Any, experiments: Iterable[str] | None = None) -> list[TrialData]:
    """Every completed trial of ``results`` (of ``experiments`` if given) as :class:`TrialData`."""
    s = results.summary
    if s.empty:
        return []
    s = s[s["trial_status"].astype(str) != "failed"]
    if experiments is not None:
        s = s[s["experiment"].isin(list(experiments))]
    out = []
    for _, row in s.iterrows():
        if not np.isfinite(pd.to_numeric(row["makespan_s"], errors="coerce")):
            continue
        d = trial_data(results, row)
        if d is not None:
            out.append(d)
    return out


# ---------------------------------------------------------------------------------------------
# Fitting


def _median(values: Sequence[float], default: float) -> float:
    v = [x for x in values if math.isfinite(x)]
    return float(statistics.median(v)) if v else default


def _mean(values: Sequence[float], default: float) -> float:
    v = [x for x in values if math.isfinite(x)]
    return float(statistics.fmean(v)) if v else default


def body_costs(trials: Sequence[TrialData]) -> dict[str, Any]:
    """Sleep overshoot, CPU stretch and no-op length: means over the trials' tasks, overall
    and per planned length (the curves: one knot per length with at least
    :data:`KNOT_TASKS` tasks); the overall CPU stretch is the CPU bodies' total time over
    their total planned time, from 1 ms up.

    Means, not medians: a worker's share of a makespan is the sum of its tasks' lengths, and
    what a sum grows by is the mean. With as many CPU-bound workers as cores, most bodies run
    at their planned speed while a few lose a time slice or more to the other processes on the
    cores (mp-map's 0.45 ms bodies on 2 workers: median stretch 0.97, mean 1.64); a median
    drops exactly the part that lengthens the trial (with medians, the full run of 56f0e73 had
    the METGs of mp-map's and Parsl's CPU sweeps predicted at 0.26x and 0.66x; with means,
    1.06x and 0.74x)."""
    over, noop = [], []
    spun, planned = 0.0, 0.0  # the CPU bodies of 1 ms and more: measured and planned time
    by_sleep: dict[float, list[float]] = {}
    by_cpu: dict[float, list[float]] = {}
    for d in trials:
        for b, p, m in zip(d.bodies, d.planned, d.body_s, strict=True):
            if not math.isfinite(m):
                continue
            if b == "sleep" and math.isfinite(p) and p > 0:
                over.append(m - p)
                by_sleep.setdefault(p, []).append(m - p)
            elif b == "cpu" and math.isfinite(p) and p > 0:
                if p >= 1e-3:
                    spun, planned = spun + m, planned + p
                by_cpu.setdefault(p, []).append(m / p)
            elif b == "noop":
                noop.append(m)
    # The scalar stretch: total time over total planned (a mean of ratios would weigh a 1 ms
    # body as much as a 1 s one); each curve knot is one length, where the two agree.
    return {"sleep_overshoot_s": max(0.0, _mean(over, 0.0)),
            "cpu_scale": spun / planned if planned > 0 else 1.0,
            "noop_s": max(0.0, _mean(noop, 0.0)),
            "sleep_curve": _curve(by_sleep, lambda v: max(0.0, v)),
            "cpu_curve": _curve(by_cpu, lambda v: max(1e-3, v))}


#: A length needs this many measured tasks to become a knot of a body curve (fewer: too noisy
#: to trust a mean of, e.g. the two tasks of a 1 s point, unless no other knot is near).
KNOT_TASKS = 2


def _curve(by: dict[float, list[float]], clip: Any) -> tuple[tuple[float, float], ...]:
    """Knots (planned, mean) of the lengths measured often enough; () with fewer than two
    (the scalar then serves every length)."""
    knots = tuple((float(p), float(clip(statistics.fmean(v))))
                  for p, v in sorted(by.items()) if len(v) >= KNOT_TASKS)
    return knots if len(knots) >= 2 else ()


def start_line(trials: Sequence[TrialData]) -> tuple[float, float]:
    """(start_s, start_per_task_s): the first start's latency against the trial's task count,
    a line fitted robustly (Theil-Sen: the median of the slopes between trials of different
    lengths, not below 0; the intercept the median of what is left). Flat where the latency
    does not grow with the list (the slope's median is then about 0)."""
    pts = [(len(d.bodies), d.first_start_s) for d in trials if math.isfinite(d.first_start_s)]
    slopes = [(y2 - y1) / (n2 - n1) for i, (n1, y1) in enumerate(pts) for n2, y2 in pts[i + 1:]
              if n2 != n1]
    slope = max(0.0, _median(slopes, 0.0))
    return max(0.0, _median([y - slope * n for n, y in pts], 0.0)), slope


def log_error(pred: float, measured: float) -> float:
    """|log(pred / measured)|; inf when either is not positive."""
    if not (pred > 0 and measured > 0):
        return math.inf
    return abs(math.log(pred / measured))


#: The largest error one trial adds to the mean (|log ratio| of 100x; inf or NaN count as it).
ERROR_CAP = math.log(100.0)


def capped_mean(errors: Sequence[float]) -> float:
    """The mean of ``errors``, each capped at :data:`ERROR_CAP` (inf if there are none).

    What the fit minimises. Not the median: half the calibration trials are long tasks whose
    error hardly moves with the per-task costs, so a median is flat over wide ranges of costs
    and left the short trials, the ones that place the costs (and METG), off by 2x. Nor a
    trimmed mean: the few no-op trials are the ones that pin the per-task cost down, and they
    are the first a trim drops (with a tenth trimmed, joblib's no-ops came out 2.8x slow). A
    trial no costs can predict (a zero makespan: log ratio inf) counts as the cap, so it
    cannot make every candidate equally infinite."""
    e = [min(x, ERROR_CAP) if x == x else ERROR_CAP for x in errors]
    return float(sum(e) / len(e)) if e else math.inf


def fit_error(trials: Sequence[TrialData], costs: Costs) -> float:
    """:func:`capped_mean` of the |log ratio| of predicted to measured makespan and wall over
    ``trials``."""
    return _Search(trials).error(costs)


class _Search:
    """:func:`fit_error` for one set of trials, remembering what it simulated.

    The coordinate search tries each ``result_s`` with the same schedule (``result_s`` and
    ``return_s`` only change when the client has the results) and comes back to cost vectors
    it has tried; both are simulated once. The numbers are those of :func:`simulate`.
    """

    def __init__(self, trials: Sequence[TrialData]) -> None:
        self.trials = list(trials)
        self.policies = [policy_for(d.scheduler, d.options) for d in self.trials]
        self.errors: dict[Costs, float] = {}
        # (trial index, costs up to the task ends) -> (makespan, ends, ends sorted or None,
        # the per-task costs' stretch at the trial's load)
        self.schedules: dict[tuple[int, Costs],
                             tuple[float, list[float], list[float] | None, float]] = {}
        self.durations: dict[tuple[Any, ...], list[float]] = {}

    def error(self, costs: Costs) -> float:
        """:func:`fit_error` of ``costs``."""
        err = self.errors.get(costs)
        if err is None:
            err = self.errors[costs] = self._error(costs)
        return err

    def _error(self, costs: Costs) -> float:
        key = replace(costs, return_s=0.0, result_s=0.0)
        errs = []
        for k, d in enumerate(self.trials):
            done = self.schedules.get((k, key))
            if done is None:
                _, start, end, load = loaded_schedule(
                    self.policies[k], self._durations(k, costs), max(1, d.n_workers), costs,
                    [b in BUSY_BODIES for b in d.bodies], d.cores or None)
                # As SimResult.makespan_s.
                makespan = max(end) - min(start) if start else math.nan
                finite = math.isfinite(sum(end))  # inf or NaN anywhere: not finite
                # The stretch of the per-task costs at this trial's load (1 without
                # contention): result_s is stretched alike (Costs.under_load).
                stretch = costs.stretch(load)
                done = self.schedules[(k, key)] = (makespan, end, sorted(end) if finite
                                                   else None, stretch)
            makespan, end, ends, stretch = done
            errs.append(log_error(makespan, d.makespan_s))
            errs.append(log_error(self._wall(end, ends, costs.return_s,
                                             costs.result_s * stretch), d.wall_s))
        return capped_mean(errs)

    def _durations(self, k: int, costs: Costs) -> list[float]:
        """The bodies of trial ``k`` under ``costs``, as :func:`simulate` computes them."""
        key = (k, costs.sleep_overshoot_s, costs.cpu_scale, costs.noop_s, costs.sleep_curve,
               costs.cpu_curve, costs.cpu_share_s)
        out = self.durations.get(key)
        if out is None:
            d = self.trials[k]
            out = self.durations[key] = [costs.task_s(b, p) for b, p in
                                         zip(d.bodies, d.planned, strict=True)]
        return out

    @staticmethod
    def _wall(end: list[float], ends: list[float] | None, return_s: float,
              result_s: float) -> float:
        """SimResult.wall_s: the last result taken in. The client takes the results in order
        of their end, so with finite ends and non-negative costs the last one it takes is the
        latest; otherwise as :func:`simulate` does it."""
        if ends is None or not (result_s >= 0 and math.isfinite(return_s + result_s)):
            receive = _receive(end, return_s, result_s)
            return max(receive) if receive else math.nan
        if not ends:
            return math.nan
        busy = 0.0
        for e in ends:
            busy = max(busy, e + return_s) + result_s
        return busy


def fit_scheduler(trials: Sequence[TrialData], passes: int = 3) -> tuple[Costs, float]:
    """Costs fitted to ``trials`` (one scheduler's), and their fit error."""
    noop_counts = [d.n_workers for d in trials if _all_noop(d)]
    main = (max(set(noop_counts), key=lambda w: (noop_counts.count(w), -w))
            if noop_counts else 0)
    # Everything but the growth per worker is fitted on the studies at their own worker counts
    # (the no-ops at the overhead study's main count, "cores"): the no-ops on a second count
    # are there to decide the growth below, not to move the start line, the medians or the
    # costs chosen without growth.
    own = [d for d in trials if not _all_noop(d) or d.n_workers == main]
    start_s, per_task = start_line(own)
    # The last result's way back: a mean, like the bodies (body_costs), since a wall time
    # takes it whole. Its spread is wide: mp-dynamic's last results reached the client 0.2 ms
    # after their end in one trial and 4-8 ms in the next of the same points, and a median of
    # 0.5 ms had put its METGs at 0.6x (the full run of 56f0e73).
    base = {**body_costs(own), "start_s": start_s, "start_per_task_s": per_task,
            "return_s": max(0.0, _mean([d.last_return_s for d in own], 0.0)),
            # The client's and the scheduler's dispatch load the cores too (version 8).
            "dispatch_load": 1.0}
    # Few tasks suffice to place the costs; long lists are cut to keep the search quick.
    search = _Search([_shortened(d, 400, per_task) for d in trials])
    first = _Search([_shortened(d, 400, per_task) for d in own])
    # A cost per unit (Costs.unit_s) only where the policy cuts the list into chunks.
    chunked = any(len(u) > 1 for d, pol in zip(search.trials, search.policies, strict=True)
                  for u in pol.units(len(d.bodies), max(1, d.n_workers)))
    keys = (*KEYS, "unit_s") if chunked else KEYS
    costs, err = _search_costs(first, base, passes, keys)
    if trials and policy_for(trials[0].scheduler, trials[0].options).bounded:
        # Push or pull (Costs.pull): a structural choice, made on the calibration trials too.
        pulled, pulled_err = _search_costs(first, {**base, "pull": 1.0}, passes, keys)
        if pulled_err < err - 1e-12:
            costs, err = pulled, pulled_err
    err = search.error(costs)
    noops = [d for d in search.trials if _all_noop(d)]
    second = _Search([d for d in noops if d.n_workers != main])
    if second.trials:
        # How the per-task costs stretch with the load of the cores (Costs.contention). The
        # no-ops and the CPU trials keep the cores busy, the sleep sweep's longer points leave
        # them idle: fitted without a stretch, the costs are the busy cores', and the sleeping
        # trials the calibration never saw (most of them) come out too slow (Celery's 2-worker
        # scaling trials by 5-20% in five full runs). Searched from the costs fitted without
        # it, on every calibration trial, and kept only where it fits them better than the
        # same search without it and leaves the no-ops on the second worker count (the
        # overhead study's other load: more workers on the same cores) within GROWTH_MISS or
        # no worse than the costs without it: a stretch that only absorbs the sweeps' noise
        # moves those no-ops. Without them there is nothing to check it on, so it is
        # searched only where they ran (and, kept, it moves the costs they see: the growth
        # below is then decided from there). The comparison is with the same search without
        # it (the other costs refitted on every trial too): the stretch must earn its place,
        # not the refit.
        #
        # Twice: with a worker's own per-task cost counted as work on its core, and as a
        # wait (Costs.worker_load 1 or 0). Which it is decides the no-ops' own load: taken as
        # busy, the stretch can only make the sleeping trials cheaper than the no-ops; taken
        # as waiting (Parsl's hand-over through its manager's queues), it makes the CPU
        # trials dearer, where the bodies hold both cores while the scheduler's processes
        # wait their turn. The dispatch goes with the worker's cost (Costs.dispatch_load):
        # counted as work where that is, as a wait where that is one (a hand-over whose
        # per-task costs are waits throughout: else the dispatch alone would load the
        # no-ops, and the premise below would not hold).
        flat_err = _search_costs(search, {**base, "pull": costs.pull}, passes, keys,
                                 costs.to_dict())[1]
        missed = second.error(costs)
        best: tuple[Costs, float] | None = None
        for share in WORKER_LOADS:
            # As a wait, the no-ops (whose bodies take next to nothing) and sleeps run at the
            # idle costs the search above fitted, so the stretch, which then moves the CPU
            # trials alone, is searched by itself; it must still beat the refit without it.
            fixed = {} if share else {k: getattr(costs, k) for k in keys}
            loaded, loaded_err = _search_costs(
                search, {**base, "pull": costs.pull, "worker_load": share,
                         "dispatch_load": share, **fixed}, passes,
                (*keys, "contention") if share else ("contention",), costs.to_dict())
            if (loaded.contention and loaded_err < flat_err - 1e-12
                    and loaded_err < (best[1] if best else math.inf) - 1e-12
                    and second.error(loaded) <= max(missed, GROWTH_MISS) + MOVED):
                best = loaded, loaded_err
        if best is not None:
            costs, err = best
    # The growth holds up to the most workers the calibration saw (Costs.growth_workers).
    base = {**base, "contention": costs.contention, "worker_load": costs.worker_load,
            "dispatch_load": costs.dispatch_load,
            "growth_workers": float(max((d.n_workers for d in trials), default=0))}
    if len(set(noop_counts)) >= 2:
        # Shared or per worker, and how either grows with the workers (Costs.at): only no-ops
        # on two worker counts show it (the per-task costs alone, no body to hide them; the
        # rate of a cost the scheduler pays for all workers stays put as workers are added,
        # that of one each worker pays grows with them). One count cannot tell them apart, so
        # the growth is searched only then, from the costs fitted without it, and kept only
        # where it fits the calibration better without fitting those no-ops worse: the fit
        # over the whole study would otherwise buy a growth the no-ops contradict (fitted on 2
        # and 4 workers, it is extrapolated to 12): it must fit the second count's no-ops better.
        start = _anchored_growth(search, costs, main)
        grown, grown_err = _search_costs(search, {**base, "pull": costs.pull}, passes,
                                         (*keys, *GROWTH_KEYS), start.to_dict())
        check = _Search(noops)  # the no-ops on every count: not to be fitted worse
        missed = second.error(costs)
        if (missed > GROWTH_MISS and grown_err < err - 1e-12
                and second.error(grown) < missed - 1e-12
                and check.error(grown) <= check.error(costs) + 1e-12):
            costs, err = grown, grown_err
    cpu = [d for d in search.trials if "cpu" in d.bodies]
    if cpu:
        # The client's share of the cores (Costs.cpu_share_s) and, where the costs stretch,
        # how much a CPU body loads the cores (Costs.body_load) show in the CPU trials only:
        # chosen on those, the other costs held, so the sleep and no-op trials that outnumber
        # them cannot outvote them (neither moves a sleep trial; a no-op's body takes next to
        # nothing); each kept only where it fits them better than none (a share of 0, a
        # whole body).
        # The share is searched for each load; a load below 1 is tried only where the
        # stretch was kept with a CPU task counted whole above (a stretch refused because it
        # made the CPU trials too slow never gets here), and kept only where it fits them
        # better than a whole one by more than BODY_GAIN: futures' and Celery's took 0.75 in
        # the run of d484059 for 0.01% and 0.05%, and fitted their makespans a little worse.
        sub = _Search(cpu)

        def best_share(load: float) -> tuple[float, float]:
            best_v, best_e = 0.0, sub.error(replace(costs, body_load=load, cpu_share_s=0.0))
            for v in GRID[1:]:
                e = sub.error(replace(costs, body_load=load, cpu_share_s=v))
                if e < best_e - 1e-12:
                    best_v, best_e = v, e
            return best_v, best_e

        share, whole = best_share(1.0)
        chosen = (1.0, share, whole)
        for load in BODY_LOADS[1:] if costs.contention else ():
            v, e = best_share(load)
            if e < chosen[2] - 1e-12 and e < whole - BODY_GAIN:
                chosen = (load, v, e)
        costs = replace(costs, body_load=chosen[0], cpu_share_s=chosen[1])
        err = search.error(costs)
    return costs, err


def _anchored_growth(search: _Search, costs: Costs, main: int) -> Costs:
    """Each growth per worker tried along :data:`GRID` with the cost it grows held where it
    was on ``main`` workers (``dispatch_s`` lowered by the growth x ``main``): the fitted costs
    hold there already, so a growth alone would only make them worse there, and a coordinate
    search from them could never take it. The best of each, one after the other."""
    best, best_err = costs, search.error(costs)
    for key, cost in zip(GROWTH_KEYS, ("dispatch_s", "worker_s"), strict=True):
        held = getattr(costs, cost)
        for g in GRID[1:]:
            trial = replace(best, **{key: g, cost: max(0.0, held - g * main)})
            err = search.error(trial)
            if err < best_err - 1e-12:
                best, best_err = trial, err
    return best


def _all_noop(d: TrialData) -> bool:
    """Whether every task of ``d`` is a no-op (the per-task costs alone)."""
    return bool(d.bodies) and all(b == "noop" for b in d.bodies)


#: The costs the coordinate search chooses, in its order.
KEYS: tuple[str, ...] = ("dispatch_s", "worker_s", "requeue_s", "result_s")
#: The growth of the costs per worker (:meth:`Costs.at`), searched after :data:`KEYS`.
GROWTH_KEYS: tuple[str, ...] = ("dispatch_per_worker_s", "worker_per_worker_s")
#: A growth is searched only where the costs without it miss the no-ops on the second worker
#: count by more than this (:func:`fit_error`, about the 5% goal): below it a growth would
#: only absorb the grid's coarseness and the noise, and be extrapolated to 12 workers.
GROWTH_MISS = 0.05
#: How much worse a stretch may fit the second count's no-ops and still count as leaving them
#: where they were (:func:`fit_error`, a tenth of the 5% goal): their bodies take next to
#: nothing, so a stretch moves them a hair even where it is a wait; with no margin at all,
#: Parsl's stretch in the full run of f725b6c (its CPU trials 4% better fitted) was refused
#: for 0.005% on no-ops that missed by 12% either way, and its CPU METG came out at 0.52x.
MOVED = 0.005


#: The factors the search refines the grid's best costs by, coarse to fine, and how many rounds
#: over the costs each may take.
REFINE_STEPS: tuple[float, ...] = (1.25, 1.1)
REFINE_ROUNDS = 6


def _search_costs(search: _Search, base: dict[str, Any], passes: int,
                  keys: tuple[str, ...] = KEYS,
                  start: dict[str, float] | None = None) -> tuple[Costs, float]:
    """The coordinate search over the grid for the costs not read off the trials (``keys``;
    from ``start``, else all 0)."""
    best: dict[str, Any] = {k: float((start or {}).get(k, 0.0)) for k in keys}
    best_err = search.error(Costs(**base, **best))
    for _ in range(passes):
        improved = False
        for key in keys:
            for v in CONTENTION_GRID if key == "contention" else GRID:
                trial = _set(best, key, v)
                err = search.error(Costs(**base, **trial))
                if err < best_err - 1e-12:
                    best, best_err, improved = trial, err, True
        if not improved:
            break
    # Then finer steps than the grid's 1.6x, from the best grid point: near a scheduler's
    # knee (where its efficiency passes 50%) one grid step of a per-task cost moves the
    # predicted efficiency by a third, and METG with it. The steps are factors, so a cost the
    # grid left at 0 stays 0.
    for step in REFINE_STEPS:
        for _ in range(REFINE_ROUNDS):
            improved = False
            for key in keys:
                v = best[key]
                for cand in (v * step, v / step):
                    if v <= 0:
                        continue
                    trial = _set(best, key, cand)
                    err = search.error(Costs(**base, **trial))
                    if err < best_err - 1e-12:
                        best, best_err, improved = trial, err, True
                        break
            if not improved:
                break
    return Costs(**base, **best), best_err


def _set(costs: dict[str, Any], key: str, value: float) -> dict[str, Any]:
    """``costs`` with ``key`` set to ``value``; a new ``contention`` divides the per-task costs
    it stretches by the change of their stretch at full load (1 + contention), so the costs
    in force on busy cores (what the no-ops pin down, their worker cost counted as busy) stay
    put: a coordinate step in contention then moves the idle cores' costs alone, which is the
    question it asks. (Only approximately where the no-ops' own load is below 1, e.g. held up
    by the dispatch: the search's other steps take up the rest. With the worker cost a wait
    the stretch is searched alone, the costs it stretches fixed: nothing here to divide.)"""
    out = {**costs, key: value}
    if key == "contention":
        f = (1.0 + value) / (1.0 + costs.get("contention", 0.0))
        for k in STRETCHED:
            if k in out:
                out[k] = out[k] / f
    return out


#: Values tried for :attr:`Costs.contention` (the stretch at full load less 1).
CONTENTION_GRID: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0)
#: Values tried for :attr:`Costs.body_load` (where the costs stretch), whole first.
BODY_LOADS: tuple[float, ...] = (1.0, 0.75, 0.5, 0.25, 0.0)
#: How much better (:func:`fit_error` of the CPU trials) a CPU task counted in part must fit
#: them than one counted whole to be kept: a tenth of the 5% goal, as :data:`MOVED`.
BODY_GAIN = 0.005
#: Values tried for :attr:`Costs.worker_load` (with the stretch): busy, or a wait.
WORKER_LOADS: tuple[float, ...] = (1.0, 0.0)


def _shortened(d: TrialData, most: int, start_per_task_s: float = 0.0) -> TrialData:
    """A no-op trial of many tasks, cut to ``most`` tasks with its times scaled alike (the
    first start's latency less what the dropped tasks added to it, ``start_per_task_s`` each,
    as the simulator times the shorter list)."""
    n = len(d.bodies)
    if n <= most or any(b != "noop" for b in d.bodies):
        return d
    f = most / n
    first = d.first_start_s - start_per_task_s * (n - most)
    return replace(d, bodies=d.bodies[:most], planned=d.planned[:most],
                   makespan_s=d.makespan_s * f,
                   # The span scales, the latencies at either end do not.
                   wall_s=d.wall_s * f + (1 - f) * (d.first_start_s + d.last_return_s)
                   - start_per_task_s * (n - most)
                   if math.isfinite(d.first_start_s) else d.wall_s * f,
                   body_s=d.body_s[:most], first_start_s=first)


def default_costs(scheds: dict[str, Any]) -> Costs:
    """The costs for a scheduler the calibration does not know: the median of each number
    over the fitted ones (``scheds``: name -> entry with ``costs``); the body curves stay per
    scheduler. ``worker_load`` is a choice (0 or 1) that goes with a stretch: the one most
    schedulers with a stretch made (1, as before it was a choice, where none has one or
    they tie), not a median that could fall between; ``dispatch_load`` goes with it."""
    if not scheds:
        return Costs()
    default = Costs.from_dict({k: _median([e["costs"][k] for e in scheds.values()], 0.0)
                               for k in Costs().scalars()})
    chosen = [e["costs"].get("worker_load", 1.0) for e in scheds.values()
              if e["costs"].get("contention", 0.0)]
    share = 0.0 if chosen.count(0.0) > len(chosen) / 2 else 1.0
    # The share of a CPU task in the load, like the worker's: over the stretched schedulers
    # only (the others keep 1, which says nothing).
    body = _median([e["costs"].get("body_load", 1.0) for e in scheds.values()
                    if e["costs"].get("contention", 0.0)], 1.0)
    # The dispatch goes with the worker's cost: work or a wait (fit_scheduler).
    return replace(default, worker_load=share, dispatch_load=share, body_load=body)


def fit(results: Any, studies: Sequence[str] = CALIBRATION_STUDIES,
        label: str = "", n_jobs: int | None = None) -> Calibration:
    """Fit every scheduler found in ``studies`` of ``results`` (a loaded results directory),
    the schedulers shared between ``n_jobs`` processes (default
    :func:`~research.analysis.parallel.default_jobs`); the same costs whatever it is."""
    from ..analysis.parallel import default_jobs, run_ordered

    data = collect(results, studies)
    by: dict[str, list[TrialData]] = {}
    for d in data:
        by.setdefault(base_name(d.scheduler), []).append(d)
    scheds: dict[str, dict[str, Any]] = {}
    ordered = sorted(by.items())
    fitted = run_ordered(fit_scheduler, [trials for _, trials in ordered],
                         default_jobs() if n_jobs is None else n_jobs)
    for (name, trials), (costs, err) in zip(ordered, fitted, strict=True):
        scheds[name] = {"costs": costs.to_dict(), "n_trials": len(trials),
                        "fit_error": err, "trials": sorted(d.trial_id for d in trials)}
    return Calibration(scheds, default_costs(scheds), label or f"fitted on {results.results_dir}",
                       str(results.results_dir),
                       _dt.datetime.now().isoformat(timespec="seconds"), tuple(studies))


__all__ = ["CALIBRATION_STUDIES", "FORMAT", "SHIPPED", "VERSION", "Calibration", "TrialData",
           "body_costs", "capped_mean", "collect", "default_costs", "fit", "fit_error",
           "fit_scheduler", "load",
           "log_error", "start_line", "trial_data"]
