"""Workload shapes: pure, seeded functions from parameters to a list of planned durations.

Each shape is registered in :data:`SHAPES` with its parameter spec, so configs are validated
before anything runs. :func:`build_tasks` turns a validated parameter dict into :class:`Task`s.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ParamError
from .params import REQUIRED, Param, check_param
from .tasks import (
    SELECTABLE_BODIES,
    Call,
    Task,
    ensure_path,
    payload_bytes,
    resolve_function,
)

#: The talk's 15 numbers for the prime validation benchmark (see the seed digest).
TALK_PRIMES: tuple[int, ...] = (
    112272535095293, 112582705942171, 112272535095293, 115280095190773, 115797848077099,
    1099726899285419, 2669120158555979, 4199178838367599, 1922629667035087, 6822879205760977,
    4283424651555827, 4442577269950067, 3410579000484763, 5489761944588443, 4303055515665917,
)

#: Bodies a workload's ``body`` key may select (the table is :data:`research.tasks.BODIES`).
TASK_BODIES = SELECTABLE_BODIES


#: How tasks are handed to the scheduler: all at once (today's studies), at the times of a
#: Poisson process, or at a trace's ``arrival_s``.
ARRIVALS = ("batch", "poisson", "trace")

# Keys every workload table accepts besides its shape's own.
COMMON: dict[str, Param] = {
    "body": Param("str", "sleep", TASK_BODIES, "what each task does"),
    # Fault injection, for testing how a scheduler copes.
    "fail_ids": Param("ints", [], help="task ids that raise instead of running"),
    "crash_ids": Param("ints", [], help="task ids that kill their worker process"),
    # Data that travels with each task and back.
    "input_bytes": Param("int>=0", 0, help="bytes sent with each task (0: none)"),
    "output_bytes": Param("int>=0", 0, help="bytes each task sends back (0: none)"),
    # Arrivals over time.
    "arrival": Param("str", None, ARRIVALS,
                     help="batch (default; a trace with arrival_s: trace), poisson, trace"),
    "rate_per_s": Param("float>0", None, help="arrival = 'poisson': tasks per second"),
    "arrival_seed": Param("int>=0", None, help="arrival = 'poisson': seed (default 0)"),
}
#: Data files a ``calls`` or ``trace`` workload may name, by suffix.
TABLE_SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl",
                  ".ndjson": "jsonl"}


def uniform(n_tasks: int, duration_s: float) -> list[float]:
    """``n_tasks`` tasks of ``duration_s`` each: static blocks are optimal here."""
    return [float(duration_s)] * n_tasks


#: Where :func:`worst_case` puts its long tasks; each is the worst case of one static policy.
ORDERS = ("blocked", "strided", "shuffled")


def worst_case(n_tasks: int, long_s: float, short_s: float, n_long: int,
               order: str = "blocked", n_workers: int = 1, seed: int = 0) -> list[float]:
    """``n_long`` long tasks among short ones, placed by ``order``.

    ``blocked`` (the talk's): the long tasks first; contiguous blocks put every long task on the
    first worker (146 tasks, 12 x 1.0 s then 134 x 0.2 s on 12 engines).
    ``strided``: long tasks at positions 0, n_workers, 2 x n_workers, ...; round robin of single
    items (Ray's Pool with chunksize 1) puts every long task on the first worker, while
    contiguous blocks spread them evenly. When the stride runs past the end, the next long tasks
    go to positions 1, 1 + n_workers, ... (the second worker under round robin), and so on.
    ``shuffled``: the blocked list permuted by ``numpy.random.RandomState(seed)``.
    """
    n_long = min(n_long, n_tasks)
    durations = [float(long_s)] * n_long + [float(short_s)] * (n_tasks - n_long)
    if order == "blocked":
        return durations
    if order == "strided":
        stride = max(1, n_workers)
        positions = [i for offset in range(stride) for i in range(offset, n_tasks, stride)]
        out = [float(short_s)] * n_tasks
        for i in positions[:n_long]:
            out[i] = float(long_s)
        return out
    if order == "shuffled":
        perm = np.random.RandomState(seed).permutation(n_tasks)
        return [durations[i] for i in perm]
    # validated before, kept for direct callers
    raise ParamError("order", f"unknown {order!r}; allowed: {', '.join(ORDERS)}")


def random_durations(
    n_tasks: int, seed: int, unit_s: float, distribution: str, **dist: float
) -> list[float]:
    """Draws from ``numpy.random.RandomState(seed)`` times ``unit_s``.

    With gamma 7.5/0.5, seed 9527, 180 tasks and unit 0.1 s this is the talk's list (sum 66.71 s).
    """
    rs = np.random.RandomState(seed)
    if distribution == "gamma":
        draws = rs.gamma(shape=dist["gamma_shape"], scale=dist["gamma_scale"], size=n_tasks)
    elif distribution == "exponential":
        draws = rs.exponential(scale=dist["mean"], size=n_tasks)
    elif distribution == "lognormal":
        draws = rs.lognormal(mean=dist["mu"], sigma=dist["sigma"], size=n_tasks)
    elif distribution == "uniform":
        draws = rs.uniform(low=dist["low"], high=dist["high"], size=n_tasks)
    else:  # validated before, kept for direct callers
        raise ParamError("distribution", f"unknown {distribution!r}")
    return [float(d) * unit_s for d in draws]


def explicit(durations_s: list[float]) -> list[float]:
    """Replay a trace: the given durations, in order."""
    return [float(d) for d in durations_s]


@dataclass(frozen=True)
class Shape:
    """A registered workload shape."""

    name: str
    params: dict[str, Param]
    doc: str
    # Called with the validated params, n_workers and the :class:`Context` (where relative
    # files are, the config's pythonpath); returns (body, arg, planned) per task.
    make: Callable[..., list[tuple[str, Any, float]]] = field(repr=False)


RANDOM_DISTS: dict[str, tuple[str, ...]] = {
    "gamma": ("gamma_shape", "gamma_scale"),
    "exponential": ("mean",),
    "lognormal": ("mu", "sigma"),
    "uniform": ("low", "high"),
}


def _timed(durations: list[float], body: str) -> list[tuple[str, Any, float]]:
    # A noop body does no work whatever the duration says (validate() insists on zero).
    return [(body, d, 0.0 if body == "noop" else d) for d in durations]


SHAPES: dict[str, Shape] = {
    "uniform": Shape(
        "uniform",
        {"n_tasks": Param("int>0"), "duration_s": Param("float>=0")},
        "equal tasks (control case)",
        lambda p, n, ctx=None: _timed(uniform(p["n_tasks"], p["duration_s"]), p["body"]),
    ),
    "worst_case": Shape(
        "worst_case",
        {
            "n_tasks": Param("int>0"),
            "long_s": Param("float>=0"),
            "short_s": Param("float>=0"),
            "n_long": Param("int>=0", None, help="default n_tasks // n_workers"),
            "order": Param("str", "blocked", ORDERS,
                           help="where the long tasks go: first (worst for contiguous blocks), "
                           "every n_workers-th (worst for round robin), or shuffled by seed"),
            "seed": Param("int>=0", 0, help="permutation seed for order = 'shuffled'"),
        },
        "long tasks first (or strided, shuffled): each static policy's worst case",
        lambda p, n, ctx=None: _timed(
            worst_case(p["n_tasks"], p["long_s"], p["short_s"], p["n_long"],
                       p.get("order", "blocked"), n, p.get("seed", 0)),
            p["body"],
        ),
    ),
    "random": Shape(
        "random",
        {
            "n_tasks": Param("int>0"),
            "seed": Param("int>=0"),
            "unit_s": Param("float>=0"),
            "distribution": Param("str", REQUIRED, tuple(RANDOM_DISTS)),
            "gamma_shape": Param("float>0", None),
            "gamma_scale": Param("float>0", None),
            "mean": Param("float>0", None),
            "mu": Param("float", None),
            "sigma": Param("float>=0", None),
            "low": Param("float>=0", None),
            "high": Param("float>=0", None),
        },
        "seeded random durations (gamma, exponential, lognormal, uniform)",
        lambda p, n, ctx=None: _timed(
            random_durations(
                p["n_tasks"], p["seed"], p["unit_s"], p["distribution"],
                **{k: p[k] for k in RANDOM_DISTS[p["distribution"]]},
            ),
            p["body"],
        ),
    ),
    "explicit": Shape(
        "explicit",
        {"durations_s": Param("floats>=0")},
        "replay a list of durations",
        lambda p, n, ctx=None: _timed(explicit(p["durations_s"]), p["body"]),
    ),
    "calls": Shape(
        "calls",
        {
            "function": Param("str", help="'package.module:function'"),
            "args": Param("list", None, help="one entry per task: a list (positional "
                          "arguments) or a table (keyword arguments; planned_s optional)"),
            "args_file": Param("str", None, help="csv, parquet or JSON lines: one row per "
                               "task, columns are keyword arguments (planned_s optional)"),
        },
        "your function: one call per task (planned time unknown unless planned_s says it)",
        lambda p, n, ctx=None: _calls(p, ctx or Context()),
    ),
    "trace": Shape(
        "trace",
        {"path": Param("str", help="csv or parquet with duration_s (and optional arrival_s)")},
        "replay a trace file: duration_s per task, arrival_s (optional) when it arrives",
        lambda p, n, ctx=None: _timed(_trace(p, ctx or Context())[0], p["body"]),
    ),
    "primes": Shape(
        "primes",
        {"numbers": Param("ints", list(TALK_PRIMES), help="default: the talk's 15 numbers")},
        "trial division of each number (real CPU work; planned time unknown)",
        lambda p, n, ctx=None: [("prime", int(x), math.nan) for x in p["numbers"]],
    ),
}


def validate(shape_name: str, raw: Mapping[str, Any], n_workers: int,
             ctx: Context | None = None) -> dict[str, Any]:
    """Check a workload table against its shape; returns params with defaults filled in.

    ``ctx`` says where relative data files are and the config's pythonpath (``calls``,
    ``trace``). Raises :class:`ParamError` naming the key and what is allowed.
    """
    ctx = ctx or Context()
    if shape_name not in SHAPES:
        raise ParamError("shape", f"unknown shape {shape_name!r}; allowed: {', '.join(SHAPES)}")
    shape = SHAPES[shape_name]
    specs = {**shape.params, **COMMON}
    unknown = sorted(set(raw) - set(specs))
    if unknown:
        raise ParamError(
            unknown[0], f"not a parameter of shape {shape_name!r}; allowed: {', '.join(specs)}"
        )
    out: dict[str, Any] = {}
    for key, spec in specs.items():
        if key in raw:
            out[key] = check_param(key, spec, raw[key])
        elif spec.default is REQUIRED:
            raise ParamError(key, f"missing; shape {shape_name!r} needs {_required(shape)}")
        else:
            out[key] = spec.default
    if shape_name == "random":
        for key in RANDOM_DISTS[out["distribution"]]:
            if out[key] is None:
                raise ParamError(key, f"missing; distribution {out['distribution']!r} needs "
                                      f"{', '.join(RANDOM_DISTS[out['distribution']])}")
        if out["distribution"] == "uniform" and out["high"] < out["low"]:
            raise ParamError("high", f"must be >= low ({out['low']}), got {out['high']}")
    if shape_name == "worst_case":
        if out["n_long"] is None:
            out["n_long"] = out["n_tasks"] // n_workers
        _worst_case_order(raw, out)
    if out["body"] == "noop":
        _check_noop(shape_name, out)
    if shape_name == "primes" and not out["numbers"]:
        raise ParamError("numbers", "expected a non-empty list of integers")
    if shape_name == "primes" and out["body"] == "cpu":
        raise ParamError("body", "primes always runs trial division; omit 'body'")
    if shape_name == "calls":
        if "body" in raw:
            raise ParamError("body", "a 'calls' workload runs its function; omit 'body'")
        out["body"] = "call"
        _validate_calls(out, ctx)
    has_trace_arrivals = False
    if shape_name == "trace":
        out["sha256"] = file_sha256(_resolve(ctx, "path", out["path"]))
        durations, arrivals = _trace(out, ctx)
        out["n_tasks"] = len(durations)
        has_trace_arrivals = arrivals is not None
        if out["body"] == "noop" and any(d != 0 for d in durations):
            raise ParamError("body", "a 'noop' body has no duration: the trace's duration_s "
                                     "must all be 0 (or body = 'sleep')")
    _validate_arrival(raw, out, has_trace_arrivals)
    # Keys at their defaults are left out, so trial keys (hashes of the params) of workloads
    # that use none of them stay what they were (stored results stay resumable).
    for key in ("input_bytes", "output_bytes"):
        if out[key] == 0:
            del out[key]
    return out


@dataclass(frozen=True)
class Context:
    """Where a workload's relative data files are (the config file's directory) and the
    config's ``[experiment] pythonpath`` (absolute directories)."""

    base_dir: Path = field(default_factory=Path.cwd)
    pythonpath: tuple[str, ...] = ()


def _validate_arrival(raw: Mapping[str, Any], out: dict[str, Any], trace_arrivals: bool) -> None:
    arrival = out["arrival"] or ("trace" if trace_arrivals else "batch")
    if arrival == "trace" and not trace_arrivals:
        raise ParamError("arrival", "'trace' needs shape 'trace' with an arrival_s column; "
                                    "allowed here: batch, poisson")
    if arrival == "poisson":
        if out["rate_per_s"] is None:
            raise ParamError("rate_per_s", "missing; arrival = 'poisson' needs rate_per_s (tasks "
                                           "per second, > 0)")
        if out["arrival_seed"] is None:
            out["arrival_seed"] = 0
    else:
        for key in ("rate_per_s", "arrival_seed"):
            if key in raw:
                raise ParamError(key, f"only used with arrival = 'poisson', not {arrival!r}")
            del out[key]
    if arrival == "batch":
        del out["arrival"]
    else:
        out["arrival"] = arrival


def arrival_offsets(params: Mapping[str, Any], n_tasks: int,
                    ctx: Context | None = None) -> list[float] | None:
    """Seconds from a trial's start at which each task is submitted; None for a batch (all
    at once). Poisson: exponential gaps drawn by ``RandomState(arrival_seed)`` at
    ``rate_per_s``, the first task at 0. Trace: its ``arrival_s`` column, shifted so that the
    first arrival is at 0."""
    arrival = params.get("arrival", "batch")
    if arrival == "batch":
        return None
    if arrival == "poisson":
        gaps = np.random.RandomState(params["arrival_seed"]).exponential(
            1.0 / params["rate_per_s"], size=n_tasks)
        return [0.0, *np.cumsum(gaps[:-1]).tolist()][:n_tasks]
    arrivals = _trace(params, ctx or Context())[1]
    assert arrivals is not None  # validated: arrival = 'trace' needs the column
    # Counted from the first arrival: a trace cut from a longer log (arrival_s starting at
    # 3600) does not make the trial wait an hour before its first task.
    return [a - arrivals[0] for a in arrivals]


def _resolve(ctx: Context, key: str, name: str) -> Path:
    path = Path(name).expanduser()
    path = path if path.is_absolute() else ctx.base_dir / path
    if not path.is_file():
        raise ParamError(key, f"no such file: {str(path)!r} (relative paths resolve against the "
                              "config file's directory)")
    if path.suffix.lower() not in TABLE_SUFFIXES:
        raise ParamError(key, f"{str(path)!r}: unknown file type; expected "
                              f"{', '.join(TABLE_SUFFIXES)}")
    return path


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes (part of a trial's key: a changed file reruns)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


_TABLES: dict[tuple[str, str], Any] = {}


def read_table(path: Path, key: str, expect_sha256: str | None = None) -> Any:
    """A data file as a pandas DataFrame (read once per content); ParamError if unreadable,
    or if its content is not the one ``expect_sha256`` (the trial key's hash) says."""
    import pandas as pd

    sha = file_sha256(path)
    if expect_sha256 is not None and sha != expect_sha256:
        raise ParamError(key, f"{str(path)!r} changed after the config was read (its content "
                              "hash is part of the trial key, so this trial is not the one "
                              "its key names); run again to measure the new content")
    cached = _TABLES.get((str(path), sha))
    if cached is not None:
        return cached
    kind = TABLE_SUFFIXES[path.suffix.lower()]
    try:
        if kind == "csv":
            df = pd.read_csv(path)
        elif kind == "parquet":
            df = pd.read_parquet(path)
        else:
            df = pd.read_json(path, lines=True)
    except Exception as exc:  # any parse failure is the user's file: say so, with the cause
        raise ParamError(key, f"{str(path)!r}: cannot read it as {kind}: "
                              f"{type(exc).__name__}: {exc}") from None
    if not len(df):
        raise ParamError(key, f"{str(path)!r}: no rows; expected one row per task")
    _TABLES[(str(path), sha)] = df
    return df


def _trace(p: Mapping[str, Any], ctx: Context) -> tuple[list[float], list[float] | None]:
    """A trace file's durations and arrival times (None without an arrival_s column)."""
    path = _resolve(ctx, "path", p["path"])
    df = read_table(path, "path", p.get("sha256"))
    if "duration_s" not in df.columns:
        raise ParamError("path", f"{str(path)!r}: column 'duration_s' missing (seconds per task); "
                                 f"columns: {', '.join(map(str, df.columns))}")
    durations = _seconds(df["duration_s"], path, "duration_s")
    arrivals = None
    if "arrival_s" in df.columns:
        arrivals = _seconds(df["arrival_s"], path, "arrival_s")
        bad = next((i for i in range(1, len(arrivals)) if arrivals[i] < arrivals[i - 1]), None)
        if bad is not None:
            raise ParamError("path", f"{str(path)!r}: arrival_s must not decrease (row {bad}: "
                                     f"{arrivals[bad]} after {arrivals[bad - 1]}); sort the rows "
                                     "by arrival")
    return durations, arrivals


def _seconds(col: Any, path: Path, name: str) -> list[float]:
    out = []
    for i, v in enumerate(col.tolist()):
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
            raise ParamError("path", f"{str(path)!r}: {name} in row {i} must be a finite number "
                                     f">= 0, got {v!r}")
        out.append(float(v))
    return out


def _call_rows(p: Mapping[str, Any], ctx: Context) -> list[tuple[tuple[Any, ...], dict[str, Any],
                                                                 float]]:
    """(positional args, keyword args, planned_s) per task of a ``calls`` workload."""
    rows: list[tuple[tuple[Any, ...], dict[str, Any], float]] = []
    if p.get("args") is not None:
        for i, item in enumerate(p["args"]):
            if isinstance(item, list):
                rows.append((tuple(item), {}, math.nan))
            elif isinstance(item, dict):
                kw = dict(item)
                rows.append(((), kw, _planned(kw.pop("planned_s", math.nan), f"args[{i}]")))
            else:
                raise ParamError(f"args[{i}]", f"expected a list (positional arguments) or a "
                                               f"table (keyword arguments), got {item!r}")
        return rows
    path = _resolve(ctx, "args_file", p["args_file"])
    df = read_table(path, "args_file", p.get("args_sha256"))
    for i, rec in enumerate(df.to_dict("records")):
        kw = {str(k): v for k, v in rec.items()}
        rows.append(((), kw, _planned(kw.pop("planned_s", math.nan), f"args_file row {i}")))
    return rows


def _planned(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ParamError("planned_s", f"{where}: expected a number of seconds, got {value!r}")
    if not math.isnan(value) and (not math.isfinite(value) or value < 0):
        raise ParamError("planned_s", f"{where}: must be finite and >= 0, got {value!r}")
    return float(value)


def _validate_calls(out: dict[str, Any], ctx: Context) -> None:
    """Import the function, read the arguments, bind every row to its signature."""
    if (out["args"] is None) == (out["args_file"] is None):
        raise ParamError("args", "give exactly one of 'args' (inline, one entry per task) and "
                                 "'args_file' (csv, parquet or JSON lines)")
    ref = out["function"]
    module, sep, attr = ref.partition(":")
    if not sep or not module or not attr:
        raise ParamError("function", f"expected 'package.module:function', got {ref!r}")
    try:
        sha = module_sha256(module, ctx.pythonpath)
        fn = resolve_function(ref, ctx.pythonpath, sha)
    except Exception as exc:  # ImportError, AttributeError, or the module's own failure
        where = (f"; [experiment] pythonpath = {list(ctx.pythonpath)}" if ctx.pythonpath
                 else "; add its directory to [experiment] pythonpath")
        raise ParamError("function", f"cannot import {ref!r}: {type(exc).__name__}: {exc}"
                                     f"{where}") from None
    if not callable(fn):
        raise ParamError("function", f"{ref!r} is not callable")
    if sha:
        # The module's code is part of the trial key: an edited module reruns (and a process
        # that holds the old version reloads it: tasks.resolve_function).
        out["function_sha256"] = sha
    if out["args"] is None:
        del out["args"]
        out["args_sha256"] = file_sha256(_resolve(ctx, "args_file", out["args_file"]))
    else:
        del out["args_file"]
    rows = _call_rows(out, ctx)
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin without a signature: nothing to check
        sig = None
    if sig is not None:
        key = "args" if "args" in out else "args_file"
        for i, (args, kwargs, _) in enumerate(rows):
            try:
                sig.bind(*args, **kwargs)
            except TypeError as exc:
                given = (f"columns {', '.join(kwargs)}" if key == "args_file"
                         else f"{list(args) or kwargs!r}")
                raise ParamError(key, f"row {i} ({given}) does not fit {ref}{sig}: "
                                      f"{exc}") from None
    out["n_tasks"] = len(rows)


def module_sha256(module: str, pythonpath: Sequence[str] = ()) -> str:
    """The SHA-256 of the file that defines ``module`` (a package: its ``__init__``), found
    without running it where possible; "" when it has no file (builtin, namespace package).
    Only that file: modules it imports are not hashed."""
    ensure_path(pythonpath)
    # The file a fresh import would load now (sys.path searched, nothing imported), not the
    # one a module already in sys.modules came from: that may have moved or been edited.
    spec: Any = None
    search: Any = None
    parts = module.split(".")
    for i in range(len(parts)):
        spec = importlib.machinery.PathFinder.find_spec(".".join(parts[: i + 1]), search)
        if spec is None:
            break
        search = spec.submodule_search_locations
    if spec is None:  # not on a path (a zip, a custom finder): as the import system finds it
        spec = importlib.util.find_spec(module)
    origin = spec.origin if spec is not None else None
    if not origin or not Path(origin).is_file():
        return ""
    return file_sha256(Path(origin))


def _calls(p: Mapping[str, Any], ctx: Context) -> list[tuple[str, Any, float]]:
    sha = str(p.get("function_sha256", ""))
    return [("call", Call(p["function"], args, kwargs, ctx.pythonpath, sha), planned)
            for args, kwargs, planned in _call_rows(p, ctx)]


def _check_noop(shape_name: str, out: Mapping[str, Any]) -> None:
    """A noop task has no duration: only zero-length task lists may select it, so a planned
    time never claims work that did not run."""
    if shape_name == "trace":
        return  # its durations are in the file: checked when it is read
    if shape_name not in ("uniform", "explicit"):
        raise ParamError("body", f"'noop' needs shape 'uniform' or 'explicit' with zero "
                                 f"durations, not {shape_name!r}")
    durations = [out["duration_s"]] if shape_name == "uniform" else out["durations_s"]
    if any(d != 0 for d in durations):
        key = "duration_s" if shape_name == "uniform" else "durations_s"
        raise ParamError(key, "a 'noop' body has no duration: set it to 0 (or body = 'sleep')")


def _worst_case_order(raw: Mapping[str, Any], out: dict[str, Any]) -> None:
    """Keep ``order``/``seed`` in the params only where they change the list.

    Trial keys hash the params, so the talk's blocked case keeps the key it had before these
    keys existed (stored results stay resumable); a seed is refused where nothing is shuffled.
    """
    if out["order"] != "shuffled":
        if "seed" in raw:
            raise ParamError("seed", f"only used with order = 'shuffled', not {out['order']!r}")
        del out["seed"]
    if out["order"] == "blocked":
        del out["order"]


def _required(shape: Shape) -> str:
    return ", ".join(k for k, p in shape.params.items() if p.default is REQUIRED)


def build_tasks(
    shape_name: str, params: Mapping[str, Any], n_workers: int, cpu_rate: float | None = None,
    ctx: Context | None = None,
) -> list[Task]:
    """The task list for validated ``params``.

    ``cpu_rate`` (spin iterations per second, measured before each trial) turns planned
    seconds into a fixed amount of CPU work for the ``cpu`` body. ``ctx``: where relative data
    files are, and the pythonpath a ``calls`` task carries to its worker.
    """
    items = SHAPES[shape_name].make(dict(params), n_workers, ctx or Context())
    fail, crash = set(params.get("fail_ids", ())), set(params.get("crash_ids", ()))
    # One bytes object for every task: each scheduler still serializes it per task.
    payload = payload_bytes(params["input_bytes"]) if params.get("input_bytes") else None
    out_bytes = int(params.get("output_bytes", 0))
    tasks = []
    for i, (body, arg, planned) in enumerate(items):
        if body == "cpu":
            if cpu_rate is None:
                raise ValueError("cpu body needs a calibrated cpu_rate")
            arg = max(1, round(float(arg) * cpu_rate))
        if i in fail:
            body = "fail"
        elif i in crash:
            body = "crash"
        tasks.append(Task(i, body, arg, planned, payload, out_bytes))
    return tasks
