"""The sweep: run every trial of one or more experiments and write one parquet file per trial.

A cluster is started once per (scheduler, n_workers, options) and reused for all its trials;
it is restarted only if a failure left it broken. Each trial file is written the moment its
trial ends (its native witness first, the trial file last, so a trial file always has its
witness), so a kill loses at most the trial in flight. What is known only when a cluster has
shut down (its shutdown seconds) goes into a per-cluster file,
``<out>/<experiment>/.clusters/<cluster_id>.json`` (:func:`write_cluster_file`); the trial
files name their cluster by ``cluster.cluster_id``.

A run holds a lock on its results directory, marks every process it starts with a token
(:mod:`research.guard`), gives them a temp dir of its own and keeps a watchdog
(:mod:`research.watchdog`) that stops them and removes it if the run process is killed; SIGTERM
and SIGHUP stop it like Ctrl-C.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import reprlib
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from . import guard, metadata, schema
from .config import Experiment, TrialSpec
from .schedulers import RunOutput, Scheduler, get_scheduler
from .schedulers.base import TRIAL_GC_THRESHOLD, Arrivals, gc_frozen, stop_pacing
from .tasks import Outcome, Task, calibrate_spin, ensure_path, timer_slack_ns
from .workloads import arrival_offsets, build_tasks

SUPERSEDED_DIR = ".superseded"
#: Seconds of the CPU body's rate measurement before each CPU trial (:func:`calibrate_spin`'s
#: target: about a quarter to one of it per run, best of three).
CPU_CALIBRATION_S = 0.04
#: A rate measured less than this many seconds ago serves the next CPU trial too: the METG
#: sweep runs its short CPU trials back to back (a few per second), and this VM's speed drifts
#: over tens of seconds, not one.
CPU_RATE_REUSE_S = 1.0
#: Per-cluster files (shutdown seconds and the trials each cluster ran), per experiment dir.
CLUSTERS_DIR = ".clusters"


@dataclass
class SweepResult:
    """What a sweep did."""

    written: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (trial_id, reason)
    #: Existing trials measured by other code or other library versions (see --rerun-stale).
    stale: list[Path] = field(default_factory=list)
    #: Trial files of an earlier definition of a trial written now (:func:`replaced_by`),
    #: moved to ``.superseded/`` (where they went).
    replaced: list[Path] = field(default_factory=list)


@dataclass
class _Done:
    spec: TrialSpec
    rows: pd.DataFrame
    trial_meta: dict[str, Any]
    native: Any = None


def build_rows(spec: TrialSpec, tasks: Sequence[Task], out: RunOutput) -> pd.DataFrame:
    """One record per planned task, whether or not its outcome came back."""
    by_id = {o.task_id: o for o in out.outcomes}
    lost = f"no result: {out.error}" if out.error else "no result"
    rows = []
    for t in tasks:
        o = by_id.get(t.task_id)
        rows.append({
            "experiment": spec.experiment, "trial_id": spec.trial_id, "repeat": spec.repeat,
            "scheduler": spec.label, "workload": spec.workload, "n_workers": spec.n_workers,
            "task_id": t.task_id, "planned_s": t.planned_s,
            "worker": o.worker if o else None, "pid": o.pid if o else None,
            "host": o.host if o else None, "submit_ns": out.submit_ns.get(t.task_id),
            "start_ns": o.start_ns if o else None, "end_ns": o.end_ns if o else None,
            "receive_ns": out.receive_ns.get(t.task_id) if o else None,
            "status": o.status if o else schema.STATUS_ERROR,
            "error": o.error if o else lost,
            "body": t.body,
            "result": None if o is None or o.result is None else result_repr(o.result),
            "result_type": _type_name(o.result) if o and o.status == schema.STATUS_OK else None,
            "result_bytes": (_result_bytes(o) if o and o.status == schema.STATUS_OK
                             else None),
            # What reached the worker, as it measured it (None: no outcome came back).
            "input_bytes": _input_bytes(o, t) if o else None,
            "output_bytes": (len(o.payload) if o.payload is not None else 0) if o else None,
        })
    # No tasks (the list could not be built): still every column, so the failed trial is written.
    return pd.DataFrame(rows, columns=_ROW_COLUMNS) if not rows else pd.DataFrame(rows)


_ROW_COLUMNS = [*schema.COLUMNS, "body", "result", "result_type", "result_bytes", "input_bytes",
                "output_bytes"]


#: Longest ``result`` text kept per task: a record is a summary, not the result itself.
RESULT_REPR_CHARS = 300


def result_repr(value: Any, limit: int = RESULT_REPR_CHARS) -> str:
    """``value``'s repr for the ``result`` column, bounded: containers are abbreviated as
    :mod:`reprlib` does (20 items, 3 levels), anything longer is cut to ``limit`` characters
    (ending in ``...``); a repr that raises is ``<repr failed: ...>`` rather than the end of
    the sweep."""
    try:
        text = _BoundedRepr(limit).repr(value)
    except Exception as exc:  # the user's __repr__: its failure is not the sweep's
        return f"<repr failed: {type(exc).__name__}: {_cut(str(exc), limit // 2)}>"
    return _cut(text, limit)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _BoundedRepr(reprlib.Repr):
    """reprlib's abbreviations, but a failing ``__repr__`` raises (to be reported as such)
    instead of reprlib's ``<X instance at ...>``, and other objects are cut, not refused."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.maxstring = self.maxother = self.maxlong = limit
        self.maxlist = self.maxtuple = self.maxdict = self.maxset = self.maxfrozenset = 20
        self.maxdeque = self.maxarray = 20
        self.maxlevel = 3

    def repr_instance(self, x: Any, level: int) -> str:
        return _cut(repr(x), self.maxother)


def _type_name(value: Any) -> str:
    cls = type(value)
    name = cls.__qualname__
    return name if cls.__module__ == "builtins" else f"{cls.__module__}.{name}"


def _input_bytes(o: Outcome, t: Task) -> int:
    # An outcome from an adapter that predates the field (or rebuilt from JSON without it):
    # the task's own payload, which is what was sent.
    if o.input_bytes is not None:
        return int(o.input_bytes)
    return len(t.payload) if t.payload is not None else 0


def _result_bytes(o: Outcome) -> int | None:
    """The result's pickled size: as the worker measured it (calls), else pickled here."""
    return o.result_bytes if o.result_bytes is not None else _pickled_size(o.result)


def _pickled_size(value: Any) -> int | None:
    """Bytes of ``value`` pickled (what a process-based scheduler sends back, about)."""
    try:
        return len(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))
    except Exception:  # an in-process result need not be picklable
        return None


def trial_is_done(path: Path) -> bool:
    """A trial counts as done when its file exists and the trial did not fail."""
    if not path.exists():
        return False
    try:
        return schema.read_metadata(path)["trial"].get("trial_status") == schema.TRIAL_OK
    except Exception:  # an unreadable file is redone, the old one kept aside
        return False


def supersede(path: Path) -> Path:
    """Move an old trial file aside (never delete or overwrite results)."""
    dest = path.parent / SUPERSEDED_DIR / f"{path.stem}.{time.time_ns()}{path.suffix}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(path, dest)
    native = path.with_name(path.stem + schema.NATIVE_SUFFIX)
    if native.exists():
        os.replace(native, dest.with_name(dest.stem + schema.NATIVE_SUFFIX))
    return dest


def replaced_by(spec: TrialSpec, out: Path,
                names: Iterable[str] | None = None) -> list[Path]:
    """Trial files under ``out`` that an earlier definition of ``spec`` wrote: the same
    experiment, scheduler label, workload, worker count and repeat, another key (the
    workload's parameters, the options or the schema changed: a config edited between runs
    into the same directory, such as the METG sweep's 50 tasks per point becoming 200). Left
    beside the new file, both would count as the same point of the study. ``names``: the
    file names in the trial's experiment directory, where the caller keeps a listing (else
    the directory is listed). Not a slot that no trial has any more (a workload renamed, a
    repeat dropped): only a trial run or skipped now replaces files."""
    path = spec.path(out)
    prefix = path.name[: -len(f"{spec.key[:10]}.parquet")]
    if names is None:
        names = os.listdir(path.parent) if path.parent.is_dir() else ()
    found = []
    for name in names:
        rest = name[len(prefix):]
        if (name.startswith(prefix) and name != path.name
                and len(rest) == len(".parquet") + 10 and rest.endswith(".parquet")
                and all(c in "0123456789abcdef" for c in rest[:10])):
            found.append(path.parent / name)
    return sorted(found)


def _groups(trials: Sequence[TrialSpec]) -> list[list[TrialSpec]]:
    """Trials that can share one cluster: same scheduler (or cluster family), worker count
    and cluster options. A group's first trial's scheduler starts the cluster."""
    groups: dict[tuple[str, int, str], list[TrialSpec]] = {}
    for t in trials:
        cls = get_scheduler(t.scheduler)
        cluster_opts = cls.cluster_options(t.options)
        key = (cls.cluster_family or t.scheduler, t.n_workers,
               json.dumps(cluster_opts, sort_keys=True, default=str))
        groups.setdefault(key, []).append(t)
    return list(groups.values())


def stale_reason(old_system: dict[str, Any], now: dict[str, Any],
                 libraries: Sequence[str]) -> str | None:
    """Why a trial measured on ``old_system`` was measured by other code than ``now`` (a
    different commit or dirty flag, or another version of one of ``libraries``); None if not."""
    for key in ("git_commit", "git_dirty"):
        if old_system.get(key) != now.get(key):
            return f"{key} {old_system.get(key)!r} -> {now.get(key)!r}"
    old_libs, new_libs = old_system.get("libraries", {}), now.get("libraries", {})
    for lib in libraries:
        if old_libs.get(lib) != new_libs.get(lib):
            return f"{lib} {old_libs.get(lib)} -> {new_libs.get(lib)}"
    return None


class Sweep:
    """Runs trials; see :func:`run_sweep`."""

    def __init__(self, out: Path, force: bool, progress: bool,
                 log: Callable[[str], None], rerun_stale: bool = False) -> None:
        self.out, self.force, self.progress, self.log = out, force, progress, log
        self.rerun_stale = rerun_stale
        self.system = metadata.collect_all()
        self.cpu_rate: float | None = None
        self._cpu_rate_at = -math.inf  # time.monotonic() of the last measurement
        self.result = SweepResult()
        #: The trial files this run's trials have (written or skipped): never an earlier
        #: definition of another, even where two share a slot (``serial`` on 2 and on 4
        #: workers runs on 1 both times, and their workloads may differ with the count).
        self._planned: set[Path] = set()
        self._listing: dict[Path, set[str]] = {}  # experiment dir -> its file names
        self._logged = 0  # how many of result.replaced were logged

    def _replace_earlier(self, spec: TrialSpec) -> None:
        """Move the files of earlier definitions of ``spec`` (:func:`replaced_by`) aside to
        ``.superseded/``, never one of this run's own trials; a move that fails is logged and
        the sweep goes on (the old file then stays, and counts). A trial of the new definition
        that failed replaces the old file too: it is what the config now asks for, and the old
        one measured something else."""
        folder = spec.path(self.out).parent
        if folder not in self._listing:
            self._listing[folder] = set(os.listdir(folder)) if folder.is_dir() else set()
        names = self._listing[folder]
        for old in replaced_by(spec, self.out, names):
            if old in self._planned:
                continue
            try:
                self.result.replaced.append(supersede(old))
            except OSError as exc:
                self.log(f"could not move {old.name} (an earlier definition of "
                         f"{spec.trial_id}) aside: {exc}")
                continue
            names.discard(old.name)
            names.discard(old.stem + schema.NATIVE_SUFFIX)

    def _cpu_rate(self) -> float:
        """The CPU body's loop iterations per second, measured now (before each CPU trial).

        The rate is measured in the client just before each CPU-bodied trial, so that a task's
        planned time (its iterations at this rate) holds at the time it runs. Measured once per
        run, it was taken as the speed of the whole run: on this 2-core VM a run began at 7.95 M
        iterations/s and its workers later spun at 13 M, which made CPU tasks 40% shorter than
        planned and put efficiencies above 100% in the METG sweep (another run measured 11.2 M
        and its workers later ran at 7 M: tasks 1.6x too long). A short measurement (about
        0.1 s; best of three) would cost some 45 s in the full suite's 400-odd CPU trials (the
        METG sweep's short points run three times), so one younger than
        :data:`CPU_RATE_REUSE_S` serves the next CPU trial too."""
        if self.cpu_rate is not None and time.monotonic() - self._cpu_rate_at < CPU_RATE_REUSE_S:
            return self.cpu_rate
        rate = calibrate_spin(CPU_CALIBRATION_S)
        self._cpu_rate_at = time.monotonic()
        if self.cpu_rate is None:
            self.log(f"calibrated cpu body: {rate:,.0f} loop iterations per second (measured "
                     "again before each CPU trial, or reused within "
                     f"{CPU_RATE_REUSE_S:g} s; each trial records its own)")
        self.cpu_rate = rate
        return rate

    def _is_stale(self, spec: TrialSpec, path: Path) -> str | None:
        try:
            old = schema.read_metadata(path)["system"]
        except Exception:
            return None
        libs = (*metadata.CORE_LIBRARIES, *get_scheduler(spec.scheduler).distributions)
        return stale_reason(old, self.system, libs)

    def run(self, trials: Sequence[TrialSpec]) -> SweepResult:
        todo, reasons = [], []
        self._planned = {t.path(self.out) for t in trials}
        for t in trials:
            path = t.path(self.out)
            if not self.force and trial_is_done(path):
                reason = self._is_stale(t, path)
                if reason:
                    reasons.append(f"{path.name}: {reason}")
                    self.result.stale.append(path)
                    if self.rerun_stale:
                        todo.append(t)
                        continue
                self.result.skipped.append(path)
                # Done already, perhaps by a run killed before it moved the old file aside.
                self._replace_earlier(t)
            else:
                todo.append(t)
        if self.result.skipped:
            self.log(f"skipping {len(self.result.skipped)} trial(s) already done (--force redoes)")
        self._log_replaced()
        if self.result.stale:
            verb = "rerunning them" if self.rerun_stale else "--rerun-stale reruns them"
            self.log(f"{len(self.result.stale)} existing trial(s) were measured by other code or "
                     f"other library versions (e.g. {reasons[0]}); {verb}")
        for group in _groups(todo):
            for spec in {t.scheduler: t for t in group}.values():
                get_scheduler(spec.scheduler).preflight(spec.n_workers, spec.options)
        from tqdm import tqdm

        with tqdm(total=len(todo), unit="trial", disable=not self.progress, dynamic_ncols=True,
                  bar_format="{l_bar}{bar}| {n}/{total} trials [{elapsed}<{remaining}] {postfix}",
                  ) as bar:
            for group in _groups(todo):
                self._run_group(group, bar)
        self._log_replaced()
        return self.result

    def _log_replaced(self) -> None:
        """Say how many files of earlier definitions were moved aside since the last time."""
        new = self.result.replaced[self._logged:]
        if new:
            self.log(f"moved {len(new)} trial file(s) of an earlier definition of this run's "
                     f"trials (their config changed) aside, to {SUPERSEDED_DIR}/ "
                     f"(e.g. {new[0].name})")
        self._logged = len(self.result.replaced)

    def _run_group(self, group: list[TrialSpec], bar: Any) -> None:
        # In the run's own temp dir (research.guard.RunTemp), named short: Ray's unix sockets
        # live under it.
        with tempfile.TemporaryDirectory(prefix=f"{get_scheduler(group[0].scheduler).name}-",
                                         dir=guard.run_temp_dir()) as workdir:
            sched: Scheduler | None = None
            cluster = _Cluster()
            start_error: str | None = None
            try:
                for spec in group:
                    bar.set_postfix_str(f"{spec.scheduler} {spec.workload} w{spec.n_workers} "
                                        f"r{spec.repeat}")
                    if start_error is None and (sched is None or sched.broken):
                        if sched is not None:
                            self._close(sched, cluster)
                            sched, cluster = None, _Cluster()
                        cls = get_scheduler(spec.scheduler)
                        try:
                            sched = cls(spec.n_workers, spec.options, Path(workdir))
                            sched.start()
                        except Exception as exc:
                            start_error = f"cluster failed to start: {type(exc).__name__}: {exc}"
                            self.log(f"{cls.name} w{spec.n_workers}: {start_error}")
                    # A cluster family's other adapter drives the same cluster (ipp-lb on the
                    # controller and engines ipp-direct started).
                    view = None if sched is None else sched.view_as(get_scheduler(spec.scheduler))
                    done = self._run_trial(spec, view, start_error)
                    # Listed first: a stop signal held during the write is raised right after it.
                    cluster.add(spec, self.out)
                    self._write(done, cluster.info(view))
                    bar.update(1)
            finally:
                if sched is not None:
                    self._close(sched, cluster)

    def _run_trial(self, spec: TrialSpec, sched: Scheduler | None,
                   start_error: str | None) -> _Done:
        body = spec.params.get("body", "sleep")
        rate = self._cpu_rate() if body == "cpu" else None
        ctx = spec.context()
        # The client unpickles results too: a user's function may return its own types.
        ensure_path(spec.pythonpath)
        build_error: str | None = None
        try:
            tasks = build_tasks(spec.shape, spec.params, spec.n_workers, rate, ctx)
            offsets = arrival_offsets(spec.params, len(tasks), ctx)
        except Exception as exc:  # a data file changed or vanished since the config was read
            tasks, offsets = [], None
            build_error = f"cannot build the task list: {type(exc).__name__}: {exc}"
        oversubscribed = (body == "cpu" and sched is not None
                          and not sched.traits(spec.options).shares_gil
                          and spec.n_workers > (self.system.get("cpu_usable") or 1))
        if oversubscribed:
            self.log(f"note: {spec.trial_id}: {spec.n_workers} workers run CPU-bodied tasks on "
                     f"{self.system.get('cpu_usable')} cores (oversubscribed; recorded as such)")
        started_at = time.time()
        slack: dict[str, Any] = {}
        if build_error is not None:
            out = RunOutput([], {}, {}, error=build_error)
        elif start_error is not None or sched is None:
            out = RunOutput([], {}, {}, error=start_error or "no cluster")
        else:
            sched.options = dict(spec.options)  # per-trial options (see Scheduler.run_options)
            sched.arrivals = None  # warm-up and probes go as a batch
            arrivals: Arrivals | None = None
            try:
                sched.warm(min(spec.timeout_s, 120.0))
                slack = self._slack(sched)
                if offsets is not None:
                    arrivals = Arrivals({t.task_id: s
                                         for t, s in zip(tasks, offsets, strict=True)})
                    sched.arrivals = arrivals
                with gc_frozen():  # no collector pass over the whole heap mid-trial
                    out = sched.run(tasks, spec.timeout_s)
            except Exception as exc:
                sched.broken = True
                out = RunOutput([], {}, {}, error=f"{type(exc).__name__}: {exc}")
            finally:
                # Ctrl-C or an error: a pacing thread (a pool's task handler) stops now, so
                # shutting the cluster down does not wait for the next task to be due.
                stop_pacing(arrivals)
                sched.arrivals = None
            if arrivals is not None:  # how late tasks were handed over after their due times
                out.info = {**out.info, **arrivals.info()}
        rows = build_rows(spec, tasks, out)
        status = schema.TRIAL_FAILED if out.error else schema.TRIAL_OK
        if out.error:
            self.result.failed.append((spec.trial_id, out.error))
            self.log(f"trial failed: {spec.trial_id}: {out.error}")
        if "receive_stamps" not in out.info and out.receive_ns:
            # What a receive stamp marks, for the report (adapters that know more say so).
            one = len(set(out.receive_ns.values())) == 1 and len(out.receive_ns) > 1
            out.info = {**out.info, "receive_stamps": "one for all" if one else "per task"}
        meta = {
            **spec.metadata(),
            "trial_status": status, "trial_error": out.error,
            "started_at": started_at, "n_tasks": len(tasks),
            "cpu_iters_per_s": rate, "oversubscribed": oversubscribed,
            "run_info": out.info, "timer_slack_ns": slack,
            # The client's collector during the trial (base.gc_frozen): heap frozen, and these
            # thresholds.
            "gc_threshold": list(TRIAL_GC_THRESHOLD),
            **({"arrival_span_s": offsets[-1] if offsets else math.nan,
                "arrival": spec.params.get("arrival")} if offsets is not None else {}),
        }
        return _Done(spec, rows, meta, out.native)

    def _slack(self, sched: Scheduler) -> dict[str, Any]:
        """The timer slack in force where tasks run (probed once per cluster, after its first
        warm-up, by one ``slack`` task per worker) and in the harness's own thread."""
        cached: dict[str, Any] | None = getattr(sched, "_research_slack", None)
        if cached is not None:
            return cached
        probe = [Task(-1000 - i, "slack", 0, 0.0) for i in range(sched.effective_workers)]
        try:
            res = sched.run(probe, 60.0)
            values = sorted({o.result for o in res.outcomes if isinstance(o.result, int)})
            found: dict[str, Any] = {"workers": values, "error": res.error or ""}
        except Exception as exc:  # a probe that fails must not cost the trial
            found = {"workers": [], "error": f"{type(exc).__name__}: {exc}"}
        found["harness"] = timer_slack_ns()
        sched._research_slack = found  # type: ignore[attr-defined]
        return found

    def _close(self, sched: Scheduler, cluster: _Cluster) -> None:
        with guard.critical():
            try:
                sched.shutdown()
            finally:
                cluster.close(sched)

    def _write(self, d: _Done, cluster: dict[str, Any]) -> None:
        with guard.critical():
            path = d.spec.path(self.out)
            native_path = path.with_name(path.stem + schema.NATIVE_SUFFIX)
            if path.exists():
                supersede(path)
            elif native_path.exists():  # a witness whose trial file was never written
                supersede_orphan(native_path)
            trial = {**d.trial_meta, "cluster": cluster}
            if d.native is not None and len(d.native):
                from .witness import compare

                trial["witness"] = compare(d.rows, d.native)
                schema.write_native(d.native, native_path, trial, self.system)
            # The trial file last: it is what marks the trial done.
            schema.write_trial(d.rows, path, trial, self.system, d.spec.config_text)
            self._listing.get(path.parent, set()).add(path.name)
            # Only now, with the new file written: an earlier definition of this trial is
            # moved aside, never deleted, and stays where it was if the run dies first (the
            # next run moves it, this trial then skipped as done).
            self._replace_earlier(d.spec)
        self.result.written.append(path)


class _Cluster:
    """One cluster's identity and the trials it ran; :meth:`close` writes its cluster file."""

    def __init__(self) -> None:
        self.cluster_id = uuid.uuid4().hex[:12]
        self.trials: dict[Path, list[str]] = {}  # experiment dir -> trial ids

    def info(self, sched: Scheduler | None) -> dict[str, Any]:
        """The ``cluster`` entry of a trial file's metadata (``shutdown_s`` is not known yet:
        it is in the cluster file)."""
        if sched is None:
            return {}
        return {**sched.info(), "cluster_id": self.cluster_id}

    def add(self, spec: TrialSpec, out: Path) -> None:
        self.trials.setdefault(out / spec.experiment, []).append(spec.trial_id)

    def close(self, sched: Scheduler) -> None:
        info = {**sched.info(), "cluster_id": self.cluster_id, "ended_at": time.time()}
        for exp_dir, trial_ids in self.trials.items():
            write_cluster_file(exp_dir, {**info, "trial_ids": trial_ids})


def write_cluster_file(exp_dir: Path, info: dict[str, Any]) -> Path:
    """Write ``<exp_dir>/.clusters/<cluster_id>.json`` atomically: the cluster's facts
    (``Scheduler.info()``: startup_s, shutdown_s, rss_mib...), ``cluster_id``, ``ended_at`` and
    the ``trial_ids`` it ran in this experiment."""
    path = exp_dir / CLUSTERS_DIR / f"{info['cluster_id']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.time_ns()}.tmp")
    tmp.write_text(json.dumps(info, default=str, sort_keys=True, indent=1))
    os.replace(tmp, path)
    return path


def read_cluster_file(trial_path: Path, cluster_id: str) -> dict[str, Any] | None:
    """The cluster file of a trial file's cluster (None if the run was killed before the
    cluster shut down)."""
    path = trial_path.parent / CLUSTERS_DIR / f"{cluster_id}.json"
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return None


def supersede_orphan(path: Path) -> Path:
    """Move a file without its trial file (a witness a killed run left) aside."""
    dest = path.parent / SUPERSEDED_DIR / f"{path.name}.orphan.{time.time_ns()}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(path, dest)
    return dest


def check_out_dir(out: Path) -> None:
    """Refuse a results directory that is a file or cannot be written, before anything runs."""
    from .errors import ConfigError

    if out.exists() and not out.is_dir():
        raise ConfigError(str(out), "--out", "is a file, not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(str(out), "--out", f"cannot create it: {exc.strerror}") from None
    try:  # a real write: os.access says yes to root on a read-only file system
        tempfile.TemporaryFile(dir=out).close()
    except OSError as exc:
        raise ConfigError(str(out), "--out", f"is not writable: {exc.strerror}") from None


def run_sweep(experiments: Sequence[Experiment], out: Path, *, force: bool = False,
              progress: bool = True, log: Callable[[str], None] | None = None,
              wait: bool = False, rerun_stale: bool = False) -> SweepResult:
    """Run all trials of ``experiments`` into ``out``; skip trials already done.

    Holds ``out``'s lock (:class:`research.guard.DirectoryBusy` if another run has it, unless
    ``wait``), marks the processes it starts with the run token, keeps a watchdog for them,
    gives them a temp dir of the run's own, and turns SIGTERM and SIGHUP into
    :class:`research.guard.Interrupted` like Ctrl-C (:func:`research.guard.run_scope`).
    """
    if log is None:
        from tqdm import tqdm

        log = tqdm.write
    out = Path(out)
    check_out_dir(out)
    trials = [t for e in experiments for t in e.trials]
    with guard.run_scope(out, wait):
        cleanup_tmp(out)
        return Sweep(out, force, progress, log, rerun_stale).run(trials)


def cleanup_tmp(out: Path) -> None:
    """Remove temp files that a run which is gone left (never real results, never the temp
    files of a run still writing)."""
    for tmp in Path(out).rglob(".*.tmp"):
        parts = tmp.name.split(".")
        pid = int(parts[-3]) if len(parts) >= 4 and parts[-3].isdigit() else None
        if pid is not None and pid != os.getpid() and guard.pid_alive(pid):
            continue
        tmp.unlink(missing_ok=True)


__all__ = [
    "CLUSTERS_DIR", "RESULT_REPR_CHARS", "SweepResult", "build_rows", "check_out_dir",
    "cleanup_tmp", "read_cluster_file", "replaced_by", "result_repr", "run_sweep", "stale_reason",
    "write_cluster_file",
]
