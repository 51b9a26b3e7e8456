"""The notebook API: ``research.run`` (a file or a dict, validated alike), ``research.load``,
``research.summary`` and ``research.timeline``; and that ``import research`` stays cheap."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import tomllib
import warnings
from pathlib import Path
from typing import Any

import matplotlib
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection

import research
from research import schema
from research.analysis import metrics as M
from research.analysis import results as R
from research.analysis.figures import new_figure
from research.api import DICT_CONFIG, to_toml
from research.errors import ConfigError

from analysis_data import build_results_dir, list_schedule

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """16 trials of hand-made records (ipp-direct / ipp-lb, two workloads, 2 and 3 workers)."""
    return build_results_dir(tmp_path_factory.mktemp("api_res"))


def test_import_research_loads_no_pandas_or_matplotlib() -> None:
    code = ("import sys, research; heavy = [m for m in ('pandas', 'matplotlib', 'numpy', "
            "'pyarrow') if m in sys.modules]; print(heavy); "
            "assert callable(research.run) and callable(research.timeline); "
            "print([m for m in ('pandas', 'matplotlib') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split("\n")
    assert out[0] == "[]", f"import research loaded {out[0]}"
    # Even asking for the API's functions imports nothing heavy: they import on call.
    assert out[1] == "[]", out[1]


def test_the_api_names_resolve_lazily_and_others_do_not() -> None:
    for name in ("run", "load", "summary", "timeline"):
        assert name in dir(research)
        assert getattr(research, name).__module__ == "research.api"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        research.nope  # noqa: B018


def test_load_gives_every_task_with_record_and_metadata_columns(synthetic: Path) -> None:
    df = research.load(synthetic)
    files = R.find_record_files(synthetic)
    assert len(files) == 16
    assert len(df) == sum(len(M.read_records(f)) for f in files)
    cols = list(df.columns)
    assert cols[:len(schema.COLUMNS)] == list(schema.COLUMNS)  # the public columns, in order
    for col in R.METADATA_COLUMNS:
        assert col in cols
    assert df["trial_id"].nunique() == 16
    # Nanoseconds stay exact (Int64, not float64), equal to the file's own values.
    one = M.read_records(files[0])
    mine = df[df["source"] == files[0].relative_to(synthetic).as_posix()]
    assert str(mine["start_ns"].dtype) == "Int64"
    assert mine["start_ns"].tolist() == one["start_ns"].tolist()
    assert set(df["trial_status"].astype(str)) == {"ok"}
    assert set(df["run_host"].astype(str)) == {"testhost"}
    assert df["params"].astype(str).str.contains("durations_s").all()


def test_summary_of_load_is_the_reports_summary(synthetic: Path) -> None:
    df = research.load(synthetic)
    mine = research.summary(df)
    theirs = R.load_results(synthetic).summary
    pd.testing.assert_frame_equal(mine, theirs)
    # Any subset of rows summarises to the rows of its trials.
    lb = research.summary(df[df["scheduler"] == "ipp-lb"])
    expected = theirs[theirs["scheduler"] == "ipp-lb"].reset_index(drop=True)
    pd.testing.assert_frame_equal(lb, expected)
    # Without the metadata columns (records from elsewhere) the metrics are the same.
    bare = research.summary(df[list(schema.COLUMNS)])
    for col in M.METRICS:
        pd.testing.assert_series_equal(bare[col], theirs[col], check_names=True)


def test_load_warns_about_files_it_leaves_out_and_refuses_empty_dirs(
        synthetic: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such results directory"):
        research.load(tmp_path / "missing")
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "corrupt.parquet").write_bytes(b"PAR1 nonsense")
    with pytest.raises(FileNotFoundError, match="corrupt.parquet"):
        research.load(tmp_path)
    for f in R.find_record_files(synthetic)[:2]:
        (tmp_path / "exp" / f.name).write_bytes(f.read_bytes())
    with pytest.warns(UserWarning, match="corrupt.parquet: left out"):
        df = research.load(tmp_path)
    assert df["trial_id"].nunique() == 2


def test_timeline_draws_one_trial_on_given_axes(synthetic: Path) -> None:
    df = research.load(synthetic)
    with pytest.raises(ValueError, match="16 trials"):
        research.timeline(df)
    tid = str(df["trial_id"].iloc[0])
    with pytest.raises(ValueError, match="not in these records"):
        research.timeline(df, trial="no-such-trial")
    fig = new_figure(8, 3)
    ax = fig.add_subplot()
    assert research.timeline(df, ax, trial=tid) is ax
    bars = [c for c in ax.collections if isinstance(c, PolyCollection)]
    n_timed = int(df[(df["trial_id"] == tid) & df["start_ns"].notna()
                     & df["end_ns"].notna()].shape[0])
    assert len(bars) == 1 and len(bars[0].get_paths()) == n_timed
    assert tid.split("_")[0] in ax.get_title()
    assert len(fig.axes) == 2  # and its colour bar
    # Without axes: a new pyplot figure, which a notebook shows.
    import matplotlib.pyplot as plt

    ax2 = research.timeline(df[df["trial_id"] == tid])
    try:
        assert ax2.figure in [plt.figure(n) for n in plt.get_fignums()]
    finally:
        plt.close("all")


# ---------------------------------------------------------------------------------------------
# run: a dict is validated like a file


def _config(**experiment: Any) -> dict[str, Any]:
    return {
        "experiment": {"name": "api_tiny", "n_workers": 2, "schedulers": ["threads"],
                       "repeats": 1, **experiment},
        "workloads": {"worst": {"shape": "worst_case", "n_tasks": 6, "long_s": 0.04,
                                "short_s": 0.01}},
    }


def test_to_toml_round_trips_a_config() -> None:
    cfg = _config()
    cfg["scheduler_options"] = {"mp-map": {"chunksize": [1, 4]}}
    cfg["workloads"]["odd key"] = {"shape": "explicit", "durations_s": (0.5, 1e-5, 2)}
    # Values as a user's own function might take them: mixed rows, rows of keyword tables.
    cfg["workloads"]["calls"] = {"args": [[1, "a \"quoted\"\n"], [2, "b"]],
                                 "kwargs": [{"x": 1.5, "y": [True, False]}, {"x": -2e300}]}
    back = tomllib.loads(to_toml(cfg))
    cfg["workloads"]["odd key"]["durations_s"] = [0.5, 1e-5, 2]
    assert back == cfg


@pytest.mark.parametrize("bad, key, allowed", [
    ({"schedulers": ["threads", "nope"]}, "schedulers", "allowed: serial, threads"),
    ({"repeats": 0}, "repeats", "expected an integer >= 1"),
    ({"colour": "red"}, "colour", "unknown key; allowed: name"),
])
def test_a_bad_dict_is_refused_like_the_same_file(tmp_path: Path, bad: dict[str, Any],
                                                 key: str, allowed: str) -> None:
    cfg = _config(**bad)
    path = tmp_path / "bad.toml"
    path.write_text(to_toml(cfg))
    with pytest.raises(ConfigError) as from_file:
        research.run(path, out=tmp_path / "out", progress=False)
    with pytest.raises(ConfigError) as from_dict:
        research.run(cfg, out=tmp_path / "out", progress=False)
    assert from_dict.value.where == f"{DICT_CONFIG} [experiment]"
    assert from_file.value.where == f"{path} [experiment]"
    assert from_dict.value.key == from_file.value.key == key
    assert from_dict.value.problem == from_file.value.problem
    assert allowed in from_dict.value.problem
    assert not (tmp_path / "out").exists()  # refused before anything ran


def test_values_a_config_cannot_hold_are_refused_by_key(tmp_path: Path) -> None:
    cfg = _config()
    cfg["workloads"]["worst"]["long_s"] = None
    with pytest.raises(ConfigError, match=r"key 'workloads\.worst\.long_s': None has no TOML"):
        research.run(cfg, out=tmp_path / "out")
    with pytest.raises(ConfigError, match="key 'experiment': expected a table"):
        research.run({"experiment": 3}, out=tmp_path / "out")
    with pytest.raises(TypeError, match="expected a path to a TOML file"):
        research.run(42, out=tmp_path / "out")  # type: ignore[arg-type]


@pytest.mark.slow
def test_run_a_dict_then_load_and_summarise(tmp_path: Path) -> None:
    out = tmp_path / "res"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to warn about in a clean run
        result = research.run(_config(), out=out, progress=False)
        df = research.load(out)
    assert len(result.written) == 1 and not result.failed
    assert len(df) == 6 and set(df["scheduler"]) == {"threads"}
    assert (df["status"] == "ok").all()
    meta = schema.read_metadata(result.written[0])
    # The trial keeps the dict as TOML text: the same config, runnable as a file.
    assert tomllib.loads(meta["config"]) == _config()
    s = research.summary(df)
    assert len(s) == 1
    row = s.iloc[0]
    # The planned lengths (long tasks first), list-scheduled on 2 workers by the test itself.
    planned = df.sort_values("task_id")["planned_s"].tolist()
    greedy = max(t["end"] for t in list_schedule(planned, 2))
    assert row["greedy_s"] == pytest.approx(greedy)
    assert row["lower_bound_s"] == pytest.approx(sum(planned) / 2)
    assert greedy * 0.95 <= row["makespan_s"] < greedy + 0.5  # threads balance: near greedy
    again = research.run(_config(), out=out, progress=False)
    assert not again.written and len(again.skipped) == 1  # done trials are not rerun


def test_readme_example_names_only_what_exists() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## Python API", 1)[1].split("\n## ", 1)[0]
    code = textwrap.dedent(section.split("```python", 1)[1].split("```", 1)[0])
    for name in ("research.run(", "research.load(", "research.summary(", "research.timeline("):
        assert name in code, name
    compile(code, "README", "exec")  # at least it parses


_RUN_CALL = """research.run({{
    "experiment": {{"name": "g", "n_workers": 2, "schedulers": ["mp-dynamic"]}},
    "workloads": {{"u": {{"shape": "uniform", "n_tasks": 4, "duration_s": 0.01}}}}}},
             out={out!r}, progress=False)"""


def _script(tmp_path: Path, body: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "study.py"
    script.write_text(textwrap.dedent(body))
    # a bound for a hang only (a script without the guard used to take minutes)
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)


def test_a_script_without_the_main_guard_is_refused_before_anything_runs(
        tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = _script(tmp_path, "import research\n" + _RUN_CALL.format(out=str(out)) + "\n")
    assert proc.returncode == 1
    assert 'research.run() must be called under `if __name__ == "__main__":`' in proc.stderr
    assert proc.stderr.count("Traceback") == 1  # the script itself, no worker's
    assert not out.exists()


def test_run_in_a_worker_process_is_refused(tmp_path: Path) -> None:
    call = textwrap.indent(_RUN_CALL.format(out=str(tmp_path / "out")), "        ")
    proc = _script(tmp_path, f"""
import multiprocessing
import research


def child(q):
    try:
{call}
        q.put("ran")
    except RuntimeError as exc:
        q.put(str(exc))


if __name__ == "__main__":
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=child, args=(q,))
    p.start()
    print(q.get(timeout=100))
    p.join()
""")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("research.run() was called in a worker process"), proc.stdout
    assert not (tmp_path / "out").exists()


@pytest.mark.slow  # runs a process pool
def test_a_guarded_script_runs(tmp_path: Path, no_leaks: None) -> None:
    out = tmp_path / "out"
    call = textwrap.indent(_RUN_CALL.format(out=str(out)), "    ")
    proc = _script(tmp_path, f"import research\n\nif __name__ == '__main__':\n{call}\n")
    assert proc.returncode == 0, proc.stderr
    assert len(list((out / "g").glob("*.parquet"))) >= 1
