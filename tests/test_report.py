"""The report on a directory mixing good and broken files; the claims at the top; the same
report through ``python -m research report`` and ``analysis/report.py``."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from research import schema
from research.analysis import claims as C
from research.analysis import metrics as M
from research.analysis import results as R
from research.analysis.report import build_report, fmt, md_table, verdict_class

from analysis_data import build_results_dir, records, task, write, write_bare

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def mixed_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = build_results_dir(tmp_path_factory.mktemp("res"))
    exp = root / "exp"
    good = records([task(0, "worker-0", 0, 1, planned=1)], scheduler="bare", n_workers=1)
    write_bare(good.drop(columns=["start_ns"]), exp / "no_start.parquet")
    (exp / "corrupt.parquet").write_bytes(b"PAR1 nonsense")
    dead = records([task(i, None, None, None, planned=0.1, status=schema.STATUS_ERROR,
                         error="no result: TimeoutError") for i in range(3)],
                   scheduler="ipp-lb", workload="dead", n_workers=2)
    write(dead, root, status=schema.TRIAL_FAILED, error="TrialFailed: engines died")
    return root


@pytest.fixture(scope="module")
def report(mixed_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("report")
    claims = pd.DataFrame([{"claim": "LB speedup beats direct", "talk_value": "11.23 vs 3.23",
                            "our_value": "9.8 vs 3.1", "tolerance": "ratio > 2",
                            "verdict": C.REPRODUCED, "note": "synthetic"}])
    return out, build_report(mixed_dir, out, claims, max_timelines=5)


@pytest.mark.slow
def test_report_files_exist_and_csv_has_one_row_per_trial(report: tuple[Path, object]) -> None:
    out, rep = report
    for name in ("index.html", "report.md", "summary.csv", "claims.csv"):
        assert (out / name).stat().st_size > 0
    csv = pd.read_csv(out / "summary.csv")
    assert len(csv) == 16 + 1  # the sweep plus the failed trial; broken files have no row
    assert list(csv.columns[:6]) == list(R.ID_COLUMNS)
    for col in M.METRICS:
        assert col in csv.columns
    assert csv["trial_id"].is_unique


@pytest.mark.slow
def test_report_lists_broken_files_and_failed_trials(report: tuple[Path, object]) -> None:
    out, _ = report
    html = (out / "index.html").read_text()
    md = (out / "report.md").read_text()
    for text in (html, md):
        assert "no_start.parquet" in text and "missing required column(s): start_ns" in text
        assert "corrupt.parquet" in text
        assert "TrialFailed: engines died" in text
        assert "all 3 tasks failed" in text
        assert "Test CPU 3000" in text and "testhost" in text  # the environment table


@pytest.mark.slow
def test_claims_hook_is_at_the_top(report: tuple[Path, object]) -> None:
    out, _ = report
    html = (out / "index.html").read_text()
    assert html.index("LB speedup beats direct") < html.index("Overview")
    assert "class='pass'" in html


@pytest.mark.slow
def test_html_is_offline_and_figures_resolve(report: tuple[Path, object]) -> None:
    out, rep = report
    html = (out / "index.html").read_text()
    assert "<script" not in html and "http://" not in html and "https://" not in html
    assert "<link" not in html
    images = re.findall(r"<img src='([^']+)'", html)
    assert any("paired_" in i for i in images)
    assert sum("timeline_" in i for i in images) == 5  # the cap
    for src in images:
        assert (out / src).exists(), src
    assert "8 more" not in html and "3 more" in html  # 8 groups with timelines, 5 drawn
    assert "no timeline, no task has start and end stamps" in html


def test_report_on_an_empty_directory(tmp_path: Path) -> None:
    rep = build_report(tmp_path / "res_empty_missing", tmp_path / "out")
    html = rep.index_html.read_text()
    assert "does not exist" in html
    assert pd.read_csv(rep.summary_csv).empty


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300,
                          cwd=ROOT)


def _without_timestamps(text: str) -> str:
    return re.sub(r"Generated [0-9T:-]+\.", "Generated (time).", text)


@pytest.mark.slow
def test_the_same_report_through_both_entry_points(mixed_dir: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "cli", tmp_path / "script"
    done_a = _run("-m", "research", "report", str(mixed_dir), "--out", str(a),
                  "--max-timelines", "3")
    done_b = _run(str(ROOT / "analysis" / "report.py"), str(mixed_dir), "--out", str(b),
                  "--max-timelines", "3")
    assert done_a.returncode == done_b.returncode == 0, done_a.stderr + done_b.stderr
    for name in ("claims.csv", "summary.csv"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    md_a = _without_timestamps((a / "report.md").read_text())
    assert md_a == _without_timestamps((b / "report.md").read_text()).replace(str(b), str(a))
    figs = sorted(p.name for p in (a / "figures").iterdir())
    assert figs and figs == sorted(p.name for p in (b / "figures").iterdir())
    # The real claims table is at the top, one row per claim, each under its own id.
    claims = pd.read_csv(a / "claims.csv")
    assert list(claims["claim_id"]) == [c.id for c in C.CLAIMS]
    assert set(claims["verdict"]) <= set(C.VERDICTS)
    assert md_a.index("Claims from the talk") < md_a.index("Overview")


@pytest.mark.slow
def test_report_script_end_to_end(tmp_path: Path) -> None:
    res = tmp_path / "res"
    write(records([task(0, "worker-0", 0, 1), task(1, "worker-1", 0, 2)], n_workers=2), res)
    done = _run(str(ROOT / "analysis" / "report.py"), str(res), "--out", str(tmp_path / "rep"))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "rep" / "index.html").exists()
    assert "1 trial(s)" in done.stderr
    empty = _run(str(ROOT / "analysis" / "report.py"), str(tmp_path / "rep"), "--out",
                 str(tmp_path / "rep2"))
    assert empty.returncode == 1 and "no task-record parquet files" in empty.stderr
    missing = _run(str(ROOT / "analysis" / "report.py"), str(tmp_path / "absent"))
    assert missing.returncode == 2 and "no such results directory" in missing.stderr


def test_figures_script_on_one_trial_file(tmp_path: Path) -> None:
    path = write(records([task(0, "worker-0", 0, 1)], n_workers=1), tmp_path)
    done = _run(str(ROOT / "analysis" / "figures.py"), str(path), "--out", str(tmp_path / "f"),
                "--format", "png")
    assert done.returncode == 0, done.stderr
    assert len(list((tmp_path / "f").glob("timeline_*.png"))) == 1


def test_verdict_classes_come_from_the_verdict_constants() -> None:
    assert verdict_class("verdict", C.REPRODUCED) == "pass"
    assert verdict_class("verdict", C.NOT_REPRODUCED) == "fail"
    assert verdict_class("verdict", C.NOT_RUN) == "warn"
    assert verdict_class("note", C.REPRODUCED) == ""


@pytest.mark.slow
def test_html_comes_from_the_template_and_escapes(tmp_path: Path) -> None:
    res = tmp_path / "res"
    write(records([task(0, "worker-0", 0, 1)], n_workers=1, scheduler="a<b&c"), res)
    rep = build_report(res, tmp_path / "out", max_timelines=0)
    html = rep.index_html.read_text()
    assert "a&lt;b&amp;c" in html and "a<b&c" not in html
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")


def test_formatting_helpers() -> None:
    assert fmt(float("nan")) == "" and fmt(None) == "" and fmt(3) == "3"
    assert fmt(0.000123456) == "0.000123" and fmt(2.0) == "2"
    table = md_table(pd.DataFrame({"a": ["x|y"], "b": [1.5]}))
    assert table.splitlines()[2] == "| x\\|y | 1.5 |"


@pytest.mark.slow
def test_a_broken_claims_table_is_reported_not_fatal(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from research.analysis import report as report_module

    def broken(summary: pd.DataFrame, results_dir: Path) -> pd.DataFrame:
        raise ValueError("claim id(s) used twice: C1")

    res = tmp_path / "res"
    write(records([task(0, "worker-0", 0, 1)], n_workers=1), res)
    monkeypatch.setattr(report_module.C, "evaluate", broken)
    rep = report_module.make_report(res, tmp_path / "out", max_timelines=0)
    assert rep.claims is None and "used twice" in str(rep.claims_error)
    md = rep.markdown.read_text()
    assert "> The claims could not be evaluated: ValueError: claim id(s) used twice" in md
    assert not (tmp_path / "out" / "claims.csv").exists()


@pytest.mark.slow
def test_a_corrupt_benchmark_table_is_listed_and_the_report_still_built(tmp_path: Path) -> None:
    root = build_results_dir(tmp_path / "res")
    bad = root / "primes" / f"talk_primes{schema.BENCH_SUFFIX}"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"PAR1 not a parquet file PAR1")
    res = R.load_results(root)
    assert any(b.path == bad and "benchmark" in b.reason for b in res.broken)
    table = C.evaluate(res.summary, root).set_index("claim_id")
    assert table.loc["C8", "verdict"] == C.NOT_RUN and "cannot read" in table.loc["C8", "note"]
    out = tmp_path / "report"
    build_report(root, out, table.reset_index(), results=res)
    assert (out / "index.html").exists() and bad.name in (out / "index.html").read_text()


@pytest.mark.slow
def test_results_of_two_setups_are_marked(tmp_path: Path) -> None:
    import analysis_data

    root = build_results_dir(tmp_path / "res")
    other = records([task(0, "w-0", 0, 1, planned=1)], scheduler="ipp-lb", workload="other",
                    n_workers=1)
    system = {**analysis_data.SYSTEM, "git_commit": "0123456789abcdef"}
    path = root / "exp" / f"{other['trial_id'].iloc[0]}.parquet"
    schema.write_trial(other, path, analysis_data.trial_meta(other), system, "[experiment]\n")
    res = R.load_results(root)
    assert len(res.environments) == 2
    build_report(root, tmp_path / "out", None, results=res)
    assert "These results mix 2 setups" in (tmp_path / "out" / "index.html").read_text()
    single = tmp_path / "single"
    build_report(root, single, None, results=R.load_results(build_results_dir(tmp_path / "b")))
    assert "These results mix" not in (single / "index.html").read_text()


def test_simulator_misses_by_worker_count() -> None:
    """The unseen trials of the schedulers asked for, per worker count: signed median, min and
    max error; in-sample trials, trials without a prediction and other schedulers left out."""
    from research.analysis.measure_report import misses_by_workers

    pred = pd.DataFrame({
        "scheduler": ["dask", "dask", "dask", "dask", "dask", "ray"],
        "n_workers": [2, 2, 12, 12, 4, 2],
        "error": [0.10, 0.20, -0.10, float("nan"), 0.50, 0.30],
        "in_calibration": [False, False, False, False, True, False],
    })
    t = misses_by_workers(pred, ["dask"])
    assert t["n_workers"].tolist() == [2, 12]
    assert t["unseen trials"].tolist() == [2, 1]
    assert t["median error"].tolist() == pytest.approx([0.15, -0.10])
    assert t["min error"].tolist() == pytest.approx([0.10, -0.10])
    assert t["max error"].tolist() == pytest.approx([0.20, -0.10])
    assert misses_by_workers(pred, ["celery"]).empty


def test_simulator_misses_inside_the_range_of_a_random_order() -> None:
    """Per scheduler asked for: unseen trials whose measured makespan lies in the predicted
    range, of those with a range (low < high); in-sample and rangeless trials left out."""
    from research.analysis.measure_report import within_spread

    pred = pd.DataFrame({
        "scheduler": ["dask-local"] * 4 + ["ray"],
        "measured_makespan_s": [1.0, 2.0, 1.5, 1.0, 1.0],
        "predicted_makespan_low_s": [0.9, 1.0, 1.0, 1.0, 0.5],
        "predicted_makespan_high_s": [1.1, 1.2, 2.0, 1.0, 0.5],
        "in_calibration": [False, False, True, False, False],
    })
    assert within_spread(pred, ["dask-local", "ray"]) == {"dask-local": (1, 2)}
    assert within_spread(pred, ["ray"]) == {}
    assert within_spread(pred.drop(columns=["predicted_makespan_low_s"]), ["dask-local"]) == {}


def test_repeat_noise_is_the_spread_of_repeated_trials() -> None:
    """A scheduler's repeat noise: per trial run more than once, the median over pairs of its
    runs of |log ratio| / sqrt(2); then the median over such trials (a trial run three times
    weighs as much as one run twice). Trials run once add nothing, other task counts are
    other trials, and a scheduler with none is left out (NaN in the error summary)."""
    from research.simulate.predict import error_summary, repeat_noise

    pred = pd.DataFrame({
        "scheduler": ["dask"] * 7 + ["ray"],
        "experiment": ["g", "g", "g", "g", "g", "h", "g", "g"],
        "workload": ["a", "a", "c", "c", "c", "a", "a", "a"],
        "n_workers": [4] * 8,
        "measured_makespan_s": [1.0, 1.1, 1.0, 1.0, 2.0, 7.0, 9.0, 1.0],
        "error": [0.0] * 8,
        "in_calibration": [False] * 8,
        "predicted_tasks_per_worker": ["1"] * 8,
        "measured_tasks_per_worker": ["1"] * 6 + ["2 2", "1"],
    })
    one = math.log(1.1) / math.sqrt(2)  # g/a: two runs (the 4-task run is another trial)
    three = math.log(2.0) / math.sqrt(2)  # g/c: pairs 0, log 2, log 2 -> median log 2
    assert repeat_noise(pred) == {"dask": pytest.approx((one + three) / 2)}
    summ = error_summary(pred).set_index("scheduler")["repeat noise"]
    assert summ["dask"] == pytest.approx((one + three) / 2)
    assert math.isnan(summ["ray"])


def test_counts_error_is_the_share_of_tasks_on_other_workers() -> None:
    """Sorted per-worker counts (workers are interchangeable): half the summed differences
    over the tasks; a worker one side lacks got nothing there; the error summary takes the
    median per scheduler."""
    from research.simulate.predict import counts_error, error_summary

    assert counts_error([10, 10, 10, 10], [10, 10, 10, 10]) == 0.0
    assert counts_error([1, 3], [3, 1]) == 0.0  # the same counts on other workers
    assert counts_error([30, 5, 29, 16], [18, 21, 20, 21]) == pytest.approx(
        (13 + 4 + 8 + 9) / 160)  # sorted: 5 16 29 30 against 18 20 21 21
    assert counts_error([40], [20, 20]) == pytest.approx(0.5)  # half the tasks moved
    assert counts_error([3, 3], [2, 2]) == pytest.approx(2 / 12)  # over the larger total
    assert math.isnan(counts_error([], []))
    pred = pd.DataFrame({
        "scheduler": ["dask"] * 3, "experiment": ["g"] * 3, "workload": ["a", "b", "c"],
        "n_workers": [2] * 3, "measured_makespan_s": [1.0] * 3, "error": [0.0] * 3,
        "in_calibration": [False] * 3, "predicted_tasks_per_worker": ["2 2", "1 3", "0 4"],
        "measured_tasks_per_worker": ["2 2"] * 3, "counts_error": [0.0, 0.1, 0.5],
    })
    row = error_summary(pred).set_index("scheduler").loc["dask"]
    assert row["counts match"] == pytest.approx(1 / 3) and row["counts error"] == 0.1
    # A trial not predicted (arrivals over time, payloads) has no counts: left out of both.
    pred.loc[2, ["predicted_tasks_per_worker", "counts_error"]] = ["", math.nan]
    row = error_summary(pred).set_index("scheduler").loc["dask"]
    assert row["counts match"] == 0.5 and row["counts error"] == pytest.approx(0.05)
