"""The sweep: run every trial of one or more experiments and write one parquet file per trial.

A cluster is started once per (scheduler, n_workers, options) and reused for all its trials;
it is restarted only if a failure left it broken. Trial files are written after their cluster
has shut down, because each file records the cluster's shutdown seconds; on error or Ctrl-C the
cluster is still shut down and the trials that finished are still written, so a rerun resumes.
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from . import metadata, schema
from .config import Experiment, TrialSpec
from .schedulers import RunOutput, Scheduler, get_scheduler
from .tasks import Task, calibrate_spin, timer_slack_ns
from .workloads import build_tasks

SUPERSEDED_DIR = ".superseded"


@dataclass
class SweepResult:
    """What a sweep did."""

    written: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (trial_id, reason)


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
            "body": t.body, "result": None if o is None or o.result is None else repr(o.result),
        })
    return pd.DataFrame(rows)


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


@contextmanager
def _no_interrupt() -> Iterator[None]:
    """Hold Ctrl-C while a cluster shuts down and files are written; it is delivered after."""
    try:
        old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    except (AttributeError, ValueError):  # not the main thread, or no signals here
        yield
        return
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _groups(trials: Sequence[TrialSpec]) -> list[list[TrialSpec]]:
    """Trials that can share one cluster: same scheduler, worker count and cluster options."""
    groups: dict[tuple[str, int, str], list[TrialSpec]] = {}
    for t in trials:
        per_trial = get_scheduler(t.scheduler).run_options
        cluster_opts = {k: v for k, v in t.options.items() if k not in per_trial}
        key = (t.scheduler, t.n_workers, json.dumps(cluster_opts, sort_keys=True, default=str))
        groups.setdefault(key, []).append(t)
    return list(groups.values())


class Sweep:
    """Runs trials; see :func:`run_sweep`."""

    def __init__(self, out: Path, force: bool, progress: bool,
                 log: Callable[[str], None]) -> None:
        self.out, self.force, self.progress, self.log = out, force, progress, log
        self.system = metadata.collect_all()
        self.cpu_rate: float | None = None
        self.result = SweepResult()

    def _cpu_rate(self) -> float:
        if self.cpu_rate is None:
            self.cpu_rate = calibrate_spin()
            self.log(f"calibrated cpu body: {self.cpu_rate:,.0f} loop iterations per second")
        return self.cpu_rate

    def run(self, trials: Sequence[TrialSpec]) -> SweepResult:
        todo = []
        for t in trials:
            path = t.path(self.out)
            if not self.force and trial_is_done(path):
                self.result.skipped.append(path)
            else:
                todo.append(t)
        if self.result.skipped:
            self.log(f"skipping {len(self.result.skipped)} trial(s) already done (--force redoes)")
        for group in _groups(todo):
            get_scheduler(group[0].scheduler).preflight(group[0].n_workers, group[0].options)
        from tqdm import tqdm

        with tqdm(total=len(todo), unit="trial", disable=not self.progress, dynamic_ncols=True,
                  bar_format="{l_bar}{bar}| {n}/{total} trials [{elapsed}<{remaining}] {postfix}",
                  ) as bar:
            for group in _groups(todo):
                self._run_group(group, bar)
        return self.result

    def _run_group(self, group: list[TrialSpec], bar: Any) -> None:
        cls = get_scheduler(group[0].scheduler)
        with tempfile.TemporaryDirectory(prefix=f"research-{cls.name}-") as workdir:
            sched: Scheduler | None = None
            done: list[_Done] = []
            start_error: str | None = None
            try:
                for spec in group:
                    bar.set_postfix_str(f"{spec.scheduler} {spec.workload} w{spec.n_workers} "
                                        f"r{spec.repeat}")
                    if start_error is None and (sched is None or sched.broken):
                        if sched is not None:
                            self._close(sched, done)
                            sched, done = None, []
                        try:
                            sched = cls(spec.n_workers, spec.options, Path(workdir))
                            sched.start()
                        except Exception as exc:
                            start_error = f"cluster failed to start: {type(exc).__name__}: {exc}"
                            self.log(f"{cls.name} w{spec.n_workers}: {start_error}")
                    done.append(self._run_trial(spec, sched, start_error))
                    bar.update(1)
            finally:
                if sched is not None:
                    self._close(sched, done)
                else:
                    self._write_all(done, {})

    def _run_trial(self, spec: TrialSpec, sched: Scheduler | None,
                   start_error: str | None) -> _Done:
        body = spec.params.get("body", "sleep")
        rate = self._cpu_rate() if body == "cpu" else None
        tasks = build_tasks(spec.shape, spec.params, spec.n_workers, rate)
        oversubscribed = (body == "cpu" and sched is not None and not sched.shares_gil
                          and spec.n_workers > (self.system.get("cpu_usable") or 1))
        if oversubscribed:
            self.log(f"note: {spec.trial_id}: {spec.n_workers} workers run CPU-bodied tasks on "
                     f"{self.system.get('cpu_usable')} cores (oversubscribed; recorded as such)")
        started_at = time.time()
        slack: dict[str, Any] = {}
        if start_error is not None or sched is None:
            out = RunOutput([], {}, {}, error=start_error or "no cluster")
        else:
            sched.options = dict(spec.options)  # per-trial options (see Scheduler.run_options)
            try:
                sched.warm(min(spec.timeout_s, 120.0))
                slack = self._slack(sched)
                out = sched.run(tasks, spec.timeout_s)
            except Exception as exc:
                sched.broken = True
                out = RunOutput([], {}, {}, error=f"{type(exc).__name__}: {exc}")
        rows = build_rows(spec, tasks, out)
        status = schema.TRIAL_FAILED if out.error else schema.TRIAL_OK
        if out.error:
            self.result.failed.append((spec.trial_id, out.error))
            self.log(f"trial failed: {spec.trial_id}: {out.error}")
        meta = {
            **spec.metadata(),
            "trial_status": status, "trial_error": out.error,
            "started_at": started_at, "n_tasks": len(tasks),
            "cpu_iters_per_s": rate, "oversubscribed": oversubscribed,
            "run_info": out.info, "timer_slack_ns": slack,
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

    def _close(self, sched: Scheduler, done: list[_Done]) -> None:
        with _no_interrupt():
            try:
                sched.shutdown()
            finally:
                info = {**sched.info(), "cluster_id": uuid.uuid4().hex[:12]}
                self._write_all(done, info)

    def _write_all(self, done: list[_Done], cluster: dict[str, Any]) -> None:
        with _no_interrupt():
            for d in done:
                self._write(d, cluster)

    def _write(self, d: _Done, cluster: dict[str, Any]) -> None:
        path = d.spec.path(self.out)
        if path.exists():
            supersede(path)
        trial = {**d.trial_meta, "cluster": cluster}
        if d.native is not None and len(d.native):
            from .witness import compare

            trial["witness"] = compare(d.rows, d.native)
            schema.write_native(d.native, path.with_name(path.stem + schema.NATIVE_SUFFIX),
                                trial, self.system)
        schema.write_trial(d.rows, path, trial, self.system, d.spec.config_text)
        self.result.written.append(path)


def run_sweep(experiments: Sequence[Experiment], out: Path, *, force: bool = False,
              progress: bool = True, log: Callable[[str], None] | None = None) -> SweepResult:
    """Run all trials of ``experiments`` into ``out``; skip trials already done."""
    if log is None:
        from tqdm import tqdm

        log = tqdm.write
    trials = [t for e in experiments for t in e.trials]
    return Sweep(Path(out), force, progress, log).run(trials)


def cleanup_tmp(out: Path) -> None:
    """Remove temp files an earlier, killed run may have left (never real results)."""
    for tmp in Path(out).rglob(".*.tmp"):
        tmp.unlink(missing_ok=True)


__all__ = ["SweepResult", "build_rows", "cleanup_tmp", "run_sweep"]
