"""Experiment configs (TOML): load, validate before anything runs, expand into trials.

The sweep is schedulers x workloads x n_workers x repeats. A workload table may narrow
``schedulers``, ``n_workers`` or ``repeats`` for itself. ``[scheduler_options.NAME]`` passes
options to one scheduler; a list of values sweeps that option (each value is a variant,
labelled ``NAME[key=value]`` in the records' ``scheduler`` column; ``"default"`` stands for the
library's default). ``n_workers`` may say ``"cores"`` (this machine's usable cores).
``single_repeat`` lists schedulers run once whatever ``repeats`` says (a slow serial baseline).
An optional ``[quick]`` table holds overrides for a reduced run
(``--quick``): ``[quick.experiment]``, ``[quick.workloads.NAME]`` and
``[quick.scheduler_options.NAME]`` keys replace the ones above (a shorter list of option values
sweeps fewer variants); a quick run always uses one repeat unless ``[quick.experiment]`` says
otherwise.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import schema, workloads
from .errors import ConfigError, ParamError
from .schedulers import REGISTRY, get_scheduler

DEFAULT_TRIAL_TIMEOUT_S = 300.0
EXPERIMENT_KEYS = ("name", "description", "repeats", "n_workers", "schedulers", "trial_timeout_s",
                   "single_repeat", "allow_oversubscribe", "pythonpath")
SWEEP_OVERRIDES = ("schedulers", "n_workers", "repeats")
TOP_TABLES = ("experiment", "workloads", "scheduler_options", "quick")
QUICK_TABLES = ("experiment", "workloads", "scheduler_options")
#: Experiment and workload names: they become directory and file names.
NAME_RE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}")
NAME_RULE = "1-100 characters: letters, digits, -, _, . (not first)"
#: Longest file name most file systems take.
MAX_FILE_NAME = 255
#: Trials one config may expand to (a typo such as repeats = 1000000 is refused at once).
MAX_TRIALS = 100_000
#: Rough memory per task of a trial: the task list, the outcomes and the records (bytes).
BYTES_PER_TASK = 4096
#: Rough memory per worker: a process (interpreter and the task code), or a thread's stack.
BYTES_PER_PROCESS_WORKER = 30 * 2**20
BYTES_PER_THREAD_WORKER = 2**20
#: Share of the available memory one trial may plan to use.
MEMORY_SHARE = 0.5


def check_name(where: str, key: str, name: Any) -> str:
    """A name that becomes a directory or file name; raises :class:`ConfigError`."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise ConfigError(where, key, f"{name!r} is not a valid name ({NAME_RULE})")
    return name


def available_memory() -> int:
    """Bytes of memory available now."""
    import psutil

    return int(psutil.virtual_memory().available)


def _n_tasks(params: Mapping[str, Any]) -> int:
    """How many tasks a workload's trial has, from its validated parameters (no task list)."""
    for key in ("n_tasks", "durations_s", "numbers"):  # calls and trace: n_tasks (derived)
        if key in params and params[key] is not None:
            v = params[key]
            return len(v) if isinstance(v, list) else int(v)
    return 0


@dataclass(frozen=True)
class TrialSpec:
    """Everything that defines one trial; :attr:`key` hashes it, so a rerun can skip it."""

    experiment: str
    scheduler: str
    options: dict[str, Any]
    workload: str
    shape: str
    params: dict[str, Any]
    n_workers: int
    repeat: int
    timeout_s: float
    config_path: str
    config_text: str = field(repr=False)
    #: The ``scheduler`` column: the registry name, plus swept option values in brackets.
    label: str = ""
    #: ``[experiment] pythonpath``, absolute (not part of the key: moving a checkout must not
    #: rerun its trials; what the function is, and its arguments' file hash, are in params).
    pythonpath: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.label:
            object.__setattr__(self, "label", self.scheduler)

    @property
    def key(self) -> str:
        ident = {
            "experiment": self.experiment, "scheduler": self.scheduler, "options": self.options,
            "workload": self.workload, "shape": self.shape, "params": self.params,
            "n_workers": self.n_workers, "repeat": self.repeat,
            "schema": schema.SCHEMA_VERSION.split(".")[0],
        }
        blob = json.dumps(ident, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()

    @property
    def trial_id(self) -> str:
        safe = "".join(c if c.isalnum() or c in "-." else "-" for c in self.label).strip("-")
        return f"{safe}_{self.workload}_w{self.n_workers}_r{self.repeat}_{self.key[:10]}"

    def path(self, out: Path) -> Path:
        """Where this trial's record file lives under the results directory ``out``."""
        return out / self.experiment / f"{self.trial_id}.parquet"

    def metadata(self) -> dict[str, Any]:
        """The trial's defining facts, as stored in the file metadata."""
        return {
            "trial_id": self.trial_id, "key": self.key, "experiment": self.experiment,
            "scheduler": self.label, "scheduler_name": self.scheduler, "options": self.options,
            "workload": self.workload,
            "shape": self.shape, "params": self.params, "n_workers": self.n_workers,
            "repeat": self.repeat, "timeout_s": self.timeout_s, "config_path": self.config_path,
            **({"pythonpath": list(self.pythonpath)} if self.pythonpath else {}),
        }

    def context(self) -> workloads.Context:
        """Where this trial's relative data files are, and the pythonpath of its tasks."""
        return workloads.Context(Path(self.config_path).resolve().parent, self.pythonpath)


@dataclass
class Experiment:
    """A validated config file."""

    path: Path
    text: str
    name: str
    description: str
    trials: list[TrialSpec]


def _where(path: Path, table: str | None = None) -> str:
    return f"{path} [{table}]" if table else str(path)


def usable_cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _int_list(path: Path, table: str, key: str, value: Any) -> list[int]:
    values = value if isinstance(value, list) else [value]
    if not values:
        raise ConfigError(_where(path, table), key, "must list at least one worker count")
    values = [usable_cores() if v == "cores" else v for v in values]
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(_where(path, table), key,
                              f"worker counts must be integers >= 1, got {v!r}")
    return values


def _schedulers(path: Path, table: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(s, str) for s in value):
        raise ConfigError(_where(path, table), "schedulers",
                          f"expected a non-empty list of names; allowed: {', '.join(REGISTRY)}")
    for s in value:
        if s not in REGISTRY:
            raise ConfigError(_where(path, table), "schedulers",
                              f"unknown scheduler {s!r}; allowed: {', '.join(REGISTRY)}")
    return value


def _positive_int(path: Path, table: str, key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(_where(path, table), key, f"expected an integer >= 1, got {value!r}")
    return value


def load(path: str | Path, quick: bool = False) -> Experiment:
    """Read and validate a config; raises :class:`ConfigError` on the first problem.

    With ``quick``, the config's ``[quick]`` overrides are applied first.
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise ConfigError(str(path), "-", f"cannot read the file: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), "-", f"not UTF-8 text (byte {exc.start}: "
                                          f"{exc.object[exc.start:exc.start + 1]!r}); TOML "
                                          "files must be UTF-8") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), "-", f"not valid TOML: {exc}") from None
    if quick:
        doc = apply_quick(doc, path)
    return parse(doc, path, text)


def apply_quick(doc: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """The config with its ``[quick]`` overrides applied (one repeat by default)."""
    quick = doc.get("quick", {})
    if not isinstance(quick, dict):
        raise ConfigError(str(path), "quick", "expected a table")
    for key in quick:
        if key not in QUICK_TABLES:
            raise ConfigError(_where(path, "quick"), key,
                              f"unknown key; allowed: {', '.join(QUICK_TABLES)}")
    out = {k: v for k, v in doc.items() if k != "quick"}
    exp = dict(out.get("experiment", {}))
    exp["repeats"] = 1
    exp.update(quick.get("experiment", {}))
    out["experiment"] = exp
    wls = {name: dict(table) for name, table in out.get("workloads", {}).items()}
    for name, over in quick.get("workloads", {}).items():
        if name not in wls:
            raise ConfigError(_where(path, f"quick.workloads.{name}"), name,
                              f"no such workload; defined: {', '.join(wls)}")
        wls[name].update(over)
    out["workloads"] = wls
    opts = {name: dict(table) for name, table in out.get("scheduler_options", {}).items()}
    for name, over in quick.get("scheduler_options", {}).items():
        if not isinstance(over, dict):
            raise ConfigError(_where(path, f"quick.scheduler_options.{name}"), name,
                              "expected a table")
        opts.setdefault(name, {}).update(over)  # names are checked with the other options
    if opts:
        out["scheduler_options"] = opts
    return out


def parse(doc: Mapping[str, Any], path: Path, text: str = "") -> Experiment:
    """Validate a parsed config document and expand it into trials."""
    doc = {k: v for k, v in doc.items() if k != "quick"}
    for key in doc:
        if key not in TOP_TABLES:
            raise ConfigError(str(path), key, f"unknown table; allowed: {', '.join(TOP_TABLES)}")
    exp = doc.get("experiment")
    if not isinstance(exp, dict):
        raise ConfigError(str(path), "experiment", "missing [experiment] table")
    for key in exp:
        if key not in EXPERIMENT_KEYS:
            raise ConfigError(_where(path, "experiment"), key,
                              f"unknown key; allowed: {', '.join(EXPERIMENT_KEYS)}")
    for key in ("name", "n_workers", "schedulers"):
        if key not in exp:
            raise ConfigError(_where(path, "experiment"), key, "missing (required)")
    name = check_name(_where(path, "experiment"), "name", exp["name"])
    oversubscribe = exp.get("allow_oversubscribe", False)
    if not isinstance(oversubscribe, bool):
        raise ConfigError(_where(path, "experiment"), "allow_oversubscribe",
                          f"expected true or false, got {oversubscribe!r}")
    repeats = _positive_int(path, "experiment", "repeats", exp.get("repeats", 1))
    n_workers = _int_list(path, "experiment", "n_workers", exp["n_workers"])
    scheds = _schedulers(path, "experiment", exp["schedulers"])
    single = (_schedulers(path, "experiment", exp["single_repeat"])
              if exp.get("single_repeat") else [])
    timeout = exp.get("trial_timeout_s", DEFAULT_TRIAL_TIMEOUT_S)
    if (isinstance(timeout, bool) or not isinstance(timeout, int | float)
            or not math.isfinite(timeout) or timeout <= 0):
        raise ConfigError(_where(path, "experiment"), "trial_timeout_s",
                          f"expected a finite number of seconds > 0, got {timeout!r}")

    options = _scheduler_options(doc.get("scheduler_options", {}), path)
    pythonpath = _pythonpath(path, exp.get("pythonpath", []))
    ctx = workloads.Context(path.resolve().parent, pythonpath)

    wl = doc.get("workloads")
    if not isinstance(wl, dict) or not wl:
        raise ConfigError(str(path), "workloads", "at least one [workloads.NAME] table is needed")
    trials: list[TrialSpec] = []
    seen: set[str] = set()
    planned = 0
    for wname, table in wl.items():
        tname = f"workloads.{wname}"
        check_name(_where(path, tname), "workloads", wname)
        if not isinstance(table, dict):
            raise ConfigError(str(path), tname, "expected a table")
        raw = dict(table)
        shape = raw.pop("shape", None)
        if shape is None:
            raise ConfigError(_where(path, tname), "shape",
                              f"missing; allowed: {', '.join(workloads.SHAPES)}")
        w_scheds = (_schedulers(path, tname, raw.pop("schedulers"))
                    if "schedulers" in raw else scheds)
        w_workers = (_int_list(path, tname, "n_workers", raw.pop("n_workers"))
                     if "n_workers" in raw else n_workers)
        w_repeats = (_positive_int(path, tname, "repeats", raw.pop("repeats"))
                     if "repeats" in raw else repeats)
        variants = _variants(w_scheds, options)
        planned += len(w_workers) * len(variants) * w_repeats
        if planned > MAX_TRIALS:
            raise ConfigError(_where(path, tname), "repeats",
                              f"the sweep expands to more than {MAX_TRIALS:,} trials "
                              f"(schedulers x n_workers x repeats); split it up")
        for n in w_workers:
            try:
                params = workloads.validate(shape, raw, n, ctx)
            except ParamError as exc:
                raise ConfigError(_where(path, tname), exc.key, exc.problem) from None
            _check_fits(path, tname, params, n, variants, oversubscribe)
            _check_arrivals(path, tname, params, ctx, float(timeout))
            for sname, variant in variants:
                cls = get_scheduler(sname)
                eff = min(n, cls.max_workers or n)
                label, opts = variant
                refusal = cls.workload_refusal(params, opts)
                if refusal is not None:
                    raise ConfigError(_where(path, tname), refusal[0],
                                      f"scheduler {label!r}: {refusal[1]}")
                for r in range(1 if sname in single else w_repeats):
                    spec = TrialSpec(name, sname, opts, wname, shape, params, eff, r,
                                     float(timeout), str(path), text, label, pythonpath)
                    if len(spec.trial_id + schema.NATIVE_SUFFIX) > MAX_FILE_NAME:
                        raise ConfigError(_where(path, f"scheduler_options.{sname}"), "-",
                                          f"trial file names get too long ({spec.trial_id!r}); "
                                          "use shorter workload names or option values")
                    if spec.key not in seen:  # serial at several n_workers runs once
                        seen.add(spec.key)
                        trials.append(spec)
    return Experiment(path, text, name, str(exp.get("description", "")), trials)


def _pythonpath(path: Path, value: Any) -> tuple[str, ...]:
    """``[experiment] pythonpath``: directories, relative to the config file, made absolute."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(_where(path, "experiment"), "pythonpath",
                          f"expected a list of directories, got {value!r}")
    out = []
    for v in value:
        d = Path(v).expanduser()
        d = (d if d.is_absolute() else path.resolve().parent / d).resolve()
        if not d.is_dir():
            raise ConfigError(_where(path, "experiment"), "pythonpath",
                              f"{v!r} is not a directory ({d}; relative paths resolve against "
                              "the config file's directory)")
        out.append(str(d))
    return tuple(out)


def _check_arrivals(path: Path, table: str, params: Mapping[str, Any],
                    ctx: workloads.Context, timeout_s: float) -> None:
    """Refuse arrivals that outlast the trial's timeout (the last task could never run)."""
    offsets = workloads.arrival_offsets(params, _n_tasks(params), ctx)
    if offsets and offsets[-1] >= timeout_s:
        last = (f"the last task arrives {offsets[-1]:.1f} s into the trial, past [experiment] "
                f"trial_timeout_s = {timeout_s:g}")
        if params.get("arrival") == "poisson":
            raise ConfigError(_where(path, table), "rate_per_s",
                              f"{last}; raise rate_per_s or trial_timeout_s")
        raise ConfigError(_where(path, table), "path",
                          f"{last} (the trace's arrival_s, counted from its first arrival); "
                          "raise trial_timeout_s, or set arrival = \"batch\" to submit all "
                          "tasks at once")


def _check_fits(path: Path, table: str, params: Mapping[str, Any], n_workers: int,
                variants: list[tuple[str, tuple[str, dict[str, Any]]]],
                oversubscribe: bool) -> None:
    """Refuse a trial that cannot fit this machine: its tasks' and records' memory, its
    workers' memory, and CPU-bodied workers beyond the cores (unless allowed)."""
    where = _where(path, table)
    avail = available_memory()
    n_tasks = _n_tasks(params)
    # Payloads: the input is one shared object in the client, but every task's reply is its own.
    need = n_tasks * (BYTES_PER_TASK + params.get("output_bytes", 0)) + params.get(
        "input_bytes", 0)
    if need > MEMORY_SHARE * avail:
        raise ConfigError(where, "n_tasks",
                          f"{n_tasks:,} tasks need about {need / 2**30:.1f} GiB for the task list "
                          f"and records; {avail / 2**30:.1f} GiB are available")
    cores = usable_cores()
    for sname, (label, opts) in variants:
        cls = get_scheduler(sname)
        traits = cls.traits(opts)  # an option may change them (dask-local's scheduler)
        eff = min(n_workers, cls.max_workers or n_workers)
        per = BYTES_PER_THREAD_WORKER if traits.in_process else BYTES_PER_PROCESS_WORKER
        if eff * per > MEMORY_SHARE * avail:
            raise ConfigError(where, "n_workers",
                              f"{eff:,} workers of {label} need about {eff * per / 2**30:.1f} GiB; "
                              f"{avail / 2**30:.1f} GiB are available")
        if (params.get("body") == "cpu" and not traits.shares_gil and eff > cores
                and not oversubscribe):
            raise ConfigError(where, "n_workers",
                              f"{eff} workers of {label} run CPU-bodied tasks on {cores} cores: "
                              "oversubscribed timings; set [experiment] allow_oversubscribe = "
                              "true to run it anyway")


def _variants(
    schedulers: list[str], options: dict[str, list[tuple[str, dict[str, Any]]]]
) -> list[tuple[str, tuple[str, dict[str, Any]]]]:
    """(scheduler, (label, options)) for every scheduler and every swept option value."""
    out = []
    for sname in schedulers:
        for variant in options.get(sname) or [(sname, get_scheduler(sname).validate_options({}))]:
            out.append((sname, variant))
    return out


def _scheduler_options(
    table: Any, path: Path
) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """Validated options per scheduler: one (label, options) per variant of a sweep."""
    if not isinstance(table, dict):
        raise ConfigError(str(path), "scheduler_options", "expected a table of tables")
    out = {}
    for sname, raw in table.items():
        tname = f"scheduler_options.{sname}"
        if sname not in REGISTRY:
            raise ConfigError(str(path), tname,
                              f"unknown scheduler {sname!r}; allowed: {', '.join(REGISTRY)}")
        if not isinstance(raw, dict):
            raise ConfigError(str(path), tname, "expected a table")
        swept = {k: v for k, v in raw.items() if isinstance(v, list)}
        fixed = {k: v for k, v in raw.items() if k not in swept}
        variants = []
        for combo in itertools.product(*swept.values()):
            chosen = dict(zip(swept, combo, strict=True))
            values = {**fixed, **{k: None if v == "default" else v for k, v in chosen.items()}}
            try:
                opts = get_scheduler(sname).validate_options(values)
            except ParamError as exc:
                raise ConfigError(_where(path, tname), exc.key, exc.problem) from None
            # The library's defaults keep the plain name, so they line up with other studies.
            tag = ",".join(f"{k}={v}" for k, v in chosen.items() if v != "default")
            variants.append((f"{sname}[{tag}]" if tag else sname, opts))
        out[sname] = variants
    return out
