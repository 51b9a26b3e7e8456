"""The report on a directory mixing good and broken files; the claims hook; the scripts."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pandas as pd
import pytest

from research import metrics as M
from research.report import build_report, fmt, md_table

from analysis_data import build_results_dir, records, task, write, write_bare

ROOT = Path(__file__).resolve().parents[1]


def _script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"analysis_{name}", ROOT / "analysis" /
                                                  f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def mixed_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = build_results_dir(tmp_path_factory.mktemp("res"))
    exp = root / "exp"
    good = records([task(0, "worker-0", 0, 1, planned=1)], scheduler="bare", n_workers=1)
    write_bare(good.drop(columns=["start_ns"]), exp / "no_start.parquet")
    (exp / "corrupt.parquet").write_bytes(b"PAR1 nonsense")
    dead = records([task(i, None, None, None, planned=0.1, status="error",
                         error="no result: TimeoutError") for i in range(3)],
                   scheduler="ipp-lb", workload="dead", n_workers=2)
    write(dead, root, status="failed", error="TrialFailed: engines died")
    return root


@pytest.fixture(scope="module")
def report(mixed_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("report")
    claims = pd.DataFrame([{"claim": "LB speedup beats direct", "talk_value": "11.23 vs 3.23",
                            "our_value": "9.8 vs 3.1", "tolerance": "ratio > 2",
                            "verdict": "pass", "note": "synthetic"}])
    return out, build_report(mixed_dir, out, claims, max_timelines=5)


def test_report_files_exist_and_csv_has_one_row_per_trial(report: tuple[Path, object]) -> None:
    out, rep = report
    for name in ("index.html", "report.md", "summary.csv", "claims.csv"):
        assert (out / name).stat().st_size > 0
    csv = pd.read_csv(out / "summary.csv")
    assert len(csv) == 16 + 1  # the sweep plus the failed trial; broken files have no row
    assert list(csv.columns[:6]) == list(M.ID_COLUMNS)
    for col in M.METRICS:
        assert col in csv.columns
    assert csv["trial_id"].is_unique


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


def test_claims_hook_is_at_the_top(report: tuple[Path, object]) -> None:
    out, _ = report
    html = (out / "index.html").read_text()
    assert html.index("LB speedup beats direct") < html.index("Overview")
    assert "class='pass'" in html


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


def test_report_script_with_and_without_claims_module(mixed_dir: Path, tmp_path: Path) -> None:
    script = _script("report")
    good = tmp_path / "claims.py"
    good.write_text("import pandas as pd\n"
                    "def evaluate(summary, results_dir):\n"
                    "    return pd.DataFrame([{'claim': 'n', 'talk_value': 1, 'our_value':"
                    " len(summary), 'tolerance': 0, 'verdict': 'pass', 'note': ''}])\n")
    summary = M.load_results(mixed_dir).summary
    claims, err = script.evaluate_claims(summary, mixed_dir, good)
    assert err is None and claims["our_value"].iloc[0] == len(summary)
    bad = tmp_path / "bad_claims.py"
    bad.write_text("def evaluate(summary, results_dir):\n    raise KeyError('makespan')\n")
    claims, err = script.evaluate_claims(summary, mixed_dir, bad)
    assert claims is None and "KeyError" in err
    assert script.evaluate_claims(summary, mixed_dir, tmp_path / "absent.py") == (None, None)


def test_report_script_end_to_end(tmp_path: Path) -> None:
    res = tmp_path / "res"
    write(records([task(0, "worker-0", 0, 1), task(1, "worker-1", 0, 2)], n_workers=2), res)
    done = subprocess.run([sys.executable, str(ROOT / "analysis" / "report.py"), str(res),
                           "--out", str(tmp_path / "rep")], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "rep" / "index.html").exists()
    assert "1 trial(s)" in done.stderr
    empty = subprocess.run([sys.executable, str(ROOT / "analysis" / "report.py"),
                            str(tmp_path / "rep"), "--out", str(tmp_path / "rep2")],
                           capture_output=True, text=True, timeout=120)
    assert empty.returncode == 1 and "no task-record parquet files" in empty.stderr


def test_figures_script_on_one_trial_file(tmp_path: Path) -> None:
    path = write(records([task(0, "worker-0", 0, 1)], n_workers=1), tmp_path)
    assert _script("figures").main([str(path), "--out", str(tmp_path / "f"),
                                    "--format", "png"]) == 0
    assert len(list((tmp_path / "f").glob("timeline_*.png"))) == 1


def test_formatting_helpers() -> None:
    assert fmt(float("nan")) == "" and fmt(None) == "" and fmt(3) == "3"
    assert fmt(0.000123456) == "0.000123" and fmt(2.0) == "2"
    table = md_table(pd.DataFrame({"a": ["x|y"], "b": [1.5]}))
    assert table.splitlines()[2] == "| x\\|y | 1.5 |"
