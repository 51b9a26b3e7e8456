"""The Python API for notebooks: run a study, load its records, draw a timeline, summarise.

    import research
    research.run("experiments/seed_worst_case.toml", out="results", quick=True)
    df = research.load("results")            # one row per task, every trial
    research.summary(df)                     # one row per trial: makespan, bounds, balance...
    research.timeline(df[df.trial_id == df.trial_id.iloc[0]])

Each function is a thin layer over the code the command line and the report use
(:mod:`research.config`, :func:`research.runner.run_sweep`, :mod:`research.analysis.results`,
:mod:`research.analysis.figures`), so a notebook sees the same validation, the same records
and the same numbers as ``python -m research run`` and the report. ``import research`` stays
cheap: this module is imported on first use of one of these names (see ``research/__init__``).
"""

from __future__ import annotations

import json
import math
import numbers
import os
import re
import sys
import tomllib
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

from .errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes

    from .config import Experiment
    from .runner import SweepResult

#: What :func:`run` takes as one config: a TOML file's path, or a dict shaped like one.
ConfigSource: TypeAlias = "str | os.PathLike[str] | Mapping[str, Any]"
#: The ``where`` of errors in a config given as a dict (there is no file to name).
DICT_CONFIG = "<config dict>"


# ---------------------------------------------------------------------------------------------
# run


def run(
    config: ConfigSource | Sequence[ConfigSource],
    out: str | os.PathLike[str] = "results",
    *,
    quick: bool = False,
    force: bool = False,
    rerun_stale: bool = False,
    progress: bool = True,
    base_dir: str | os.PathLike[str] | None = None,
) -> SweepResult:
    """Run the trials of one or more experiment configs into the results directory ``out``.

    ``config`` is a path to a TOML file like ``experiments/*.toml``, a dict with the same
    tables (``{"experiment": {...}, "workloads": {"NAME": {...}}, ...}``), or a list of them.
    Every config is checked before anything runs, as ``python -m research run`` checks it: a
    bad one raises :class:`research.errors.ConfigError` naming the file (``<config dict>`` for
    a dict), the key and what is allowed. A dict is written as TOML text and read back, so it
    is validated exactly like a file, and that text is what the trial files keep as their
    config. Relative paths in a dict resolve against ``base_dir`` (default: the current
    directory), in a file against the file.

    In a script, call it under ``if __name__ == "__main__":``: process pools (forkserver,
    spawn) and Dask workers import the script again in each worker, and would rerun the call.
    A call from a script's top level outside that guard, or from inside a worker process, is
    refused with a ``RuntimeError`` saying so, before anything runs.

    ``quick`` applies the configs' ``[quick]`` overrides; ``force`` reruns trials already done;
    ``rerun_stale`` reruns those measured by other code or library versions; ``progress``
    shows a progress bar. Trials already in ``out`` are skipped, as on the command line.

    Returns the :class:`research.runner.SweepResult`: files written and skipped, and the
    trials that failed (recorded as failed trials, as the command line does; check
    ``.failed``). Raises :class:`research.guard.DirectoryBusy` if another run holds ``out``
    and ``KeyboardInterrupt`` on Ctrl-C (finished trials are kept, every cluster is stopped).
    """
    from .runner import run_sweep

    _check_main_guard(sys._getframe(1))
    experiments = [_experiment(c, quick, base_dir) for c in _configs(config)]
    return run_sweep(experiments, Path(out), force=force, progress=progress,
                     rerun_stale=rerun_stale)


#: What :func:`run` says when a script calls it without the ``__main__`` guard.
MAIN_GUARD_HELP = (
    "research.run() must be called under `if __name__ == \"__main__\":` in a script: process "
    "pools (forkserver, spawn) and Dask workers import the script again in every worker, and "
    "without the guard each of them would start the whole run again")


def _check_main_guard(caller: Any) -> None:
    """Refuse to run inside a worker process that is importing the user's script (it would
    start the sweep again, in every worker), and, in the parent, refuse a call from a script's
    top level that is not under ``if __name__ == "__main__":`` (the workers would), before
    anything starts."""
    import multiprocessing

    main = sys.modules.get("__main__")
    if (multiprocessing.parent_process() is not None
            or getattr(multiprocessing.current_process(), "_inheriting", False)
            or getattr(main, "__name__", "__main__") == "__mp_main__"):
        raise RuntimeError(f"research.run() was called in a worker process: {MAIN_GUARD_HELP}")
    if (caller.f_code.co_name != "<module>" or caller.f_globals.get("__name__") != "__main__"
            or not caller.f_globals.get("__file__")):
        return  # a function, a notebook or `python -c`: nothing re-imports the caller
    if not _under_main_guard(Path(caller.f_globals["__file__"]), caller.f_lineno):
        raise RuntimeError(MAIN_GUARD_HELP)


def _under_main_guard(script: Path, line: int) -> bool:
    """Whether ``line`` of ``script`` lies in an ``if __name__ == "__main__":`` block (True
    when the file cannot be read or parsed: then nothing is refused)."""
    import ast

    try:
        tree = ast.parse(script.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return True
    for node in ast.walk(tree):
        if (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
                and "__name__" in ast.unparse(node.test) and "__main__" in ast.unparse(node.test)
                and node.body and node.body[0].lineno <= line <= (node.body[-1].end_lineno or 0)):
            return True
    return False


def _configs(config: Any) -> list[Any]:
    if isinstance(config, str | os.PathLike | Mapping):
        return [config]
    if isinstance(config, Sequence) and config and not isinstance(config, bytes):
        return list(config)
    raise TypeError("config: expected a path to a TOML file, a dict shaped like one, or a "
                    f"non-empty list of them; got {type(config).__name__}")


def _experiment(config: Any, quick: bool, base_dir: str | os.PathLike[str] | None
                ) -> Experiment:
    from . import config as cfg

    if isinstance(config, str | os.PathLike):
        return cfg.load(Path(config), quick=quick)
    if not isinstance(config, Mapping):
        raise TypeError("config: expected a path to a TOML file or a dict shaped like one; "
                        f"got {type(config).__name__}")
    path = Path(base_dir) / DICT_CONFIG if base_dir is not None else Path(DICT_CONFIG)
    text = to_toml(config, str(path))
    doc = tomllib.loads(text)
    if quick:
        doc = cfg.apply_quick(doc, path)
    return cfg.parse(doc, path, text)


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _key(k: str) -> str:
    return k if _BARE_KEY.fullmatch(k) else json.dumps(k, ensure_ascii=False)


def _plain(value: Any, where: str, key: str) -> Any:
    """A config value as TOML can hold it: numpy numbers become int/float, paths str, tuples
    lists; anything else is refused with the key that holds it."""
    if isinstance(value, bool | str):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v, where, f"{key}.{k}" if key else str(k))
                for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v, where, f"{key}[{i}]") for i, v in enumerate(value)]
    if value is None:
        raise ConfigError(where, key, "None has no TOML form: leave the key out for its default")
    raise ConfigError(where, key, f"a {type(value).__name__} cannot be written in a config; "
                                  "allowed: str, int, float, bool, lists and tables of them")


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        # A JSON string is a valid TOML basic string (the same escapes).
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return "{" + ", ".join(f"{_key(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"


def to_toml(config: Mapping[str, Any], where: str = DICT_CONFIG) -> str:
    """A config dict as TOML text (tables as ``[a.b]`` headers, other values inline).

    Raises :class:`ConfigError` naming the key of a value TOML cannot hold.
    """
    doc = _plain(config, where, "")
    lines: list[str] = []

    def table(d: Mapping[str, Any], prefix: str) -> None:
        scalars = {k: v for k, v in d.items() if not isinstance(v, dict)}
        if prefix and (scalars or not d):
            lines.append(f"\n[{prefix}]")
        for k, v in scalars.items():
            lines.append(f"{_key(k)} = {_toml_value(v)}")
        for k, v in d.items():
            if isinstance(v, dict):
                table(v, f"{prefix}.{_key(k)}" if prefix else _key(k))

    for k in doc:
        if not isinstance(doc[k], dict):
            raise ConfigError(where, k, "expected a table (a dict), as in a config file's "
                                        f"[{k}]; allowed tables: experiment, workloads, "
                                        "scheduler_options, quick")
    table(doc, "")
    return "\n".join(lines).lstrip("\n") + "\n"


# ---------------------------------------------------------------------------------------------
# load, summary, timeline


def load(results_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """Every task record under ``results_dir`` as one DataFrame, one row per task.

    The columns are the record columns (``research.schema.COLUMNS``, then ``body``,
    ``result`` and any others the files have; integers as exact nullable ``Int64``, so
    nanosecond stamps stay exact), then what each file's metadata adds
    (:data:`research.analysis.results.METADATA_COLUMNS`: ``source`` the file, ``shape``,
    ``params``, ``scheduler_options``, ``trial_status``, ``trial_error``, ...). Files are read
    as the report reads them; one that cannot be read is left out with a warning that says
    why. Raises ``FileNotFoundError`` if there is no such directory or nothing readable in it.
    """
    from .analysis.results import load_records

    df, broken = load_records(Path(results_dir))
    for b in broken:
        warnings.warn(f"{b.path}: left out: {b.reason}", stacklevel=2)
    return df


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """One row per trial of the task records ``df`` (from :func:`load`, or any subset of its
    rows): identity, the metrics (makespan, wall, busy, lower bound, greedy schedule,
    efficiency, tasks per worker, gaps, latencies, errors), the scheduler's schedule model and
    context; the same rows as the report's ``summary.csv``.
    ``research.analysis.results.group_summary`` of it gives medians over repeats.
    """
    from .analysis.results import summarize_records

    return summarize_records(df)


def timeline(df: pd.DataFrame, ax: Axes | None = None, *, trial: str | None = None,
             title: str | None = None) -> Axes:
    """Draw one trial's timeline, as in the talk and the report: one row per worker, one bar
    per task from its in-task start to its end, colour = the task's order on its worker,
    dashed = lower bound, dotted = greedy list schedule.

    ``df`` holds one trial's records, or several and ``trial`` names the ``trial_id`` to draw.
    Draws on ``ax`` when given, else on a new pyplot figure sized for the trial (which a
    notebook shows). Returns the axes.
    """
    from .analysis import figures

    ids = [str(t) for t in df["trial_id"].dropna().unique()] if "trial_id" in df else []
    if trial is not None:
        if trial not in ids:
            raise ValueError(f"trial {trial!r} is not in these records; they hold "
                             f"{_some(ids)}")
        df = df[df["trial_id"].astype(str) == trial]
    elif len(ids) > 1:
        raise ValueError(f"these records hold {len(ids)} trials ({_some(ids)}): pick one with "
                         "trial=... or df[df.trial_id == ...]")
    if df.empty:
        raise ValueError("no task records to draw")
    if ax is None:
        import matplotlib.pyplot as plt

        ax = plt.figure(figsize=figures.timeline_size(df), layout="constrained").add_subplot()
    figures.draw_trial(ax, df, title=title)
    return ax


def _some(ids: list[str], most: int = 5) -> str:
    shown = ", ".join(ids[:most])
    return shown + (f" and {len(ids) - most} more" if len(ids) > most else "")


__all__ = ["DICT_CONFIG", "ConfigSource", "load", "run", "summary", "timeline", "to_toml"]
