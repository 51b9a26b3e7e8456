"""``analysis/explore.ipynb`` runs headless (nbclient, a real IPython kernel) on a small results
directory made here by a real sweep, and draws the talk's figures and the summary."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

import research

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "analysis" / "explore.ipynb"
KERNEL = "research-test"


def test_the_notebook_is_stored_without_outputs() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code
    for cell in code:
        assert cell.outputs == [] and cell.execution_count is None, cell.source[:60]
    # Its first code cell holds the parameters (tagged for papermill-like tools too).
    assert "parameters" in code[0].metadata.get("tags", [])
    assert "RESEARCH_RESULTS" in code[0].source


@pytest.fixture
def kernel_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A kernel spec for this interpreter (the venv's), found first on JUPYTER_PATH: a
    system-wide ``python3`` spec could point at another Python without the package."""
    spec = tmp_path / "jupyter" / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "research (tests)", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    return KERNEL


@pytest.mark.slow
def test_the_notebook_runs_on_a_small_sweep(tmp_path: Path, kernel_here: str,
                                            monkeypatch: pytest.MonkeyPatch,
                                            no_leaks: None) -> None:
    results = tmp_path / "results"
    # The talk's worst case in small: long tasks first, on threads and a dynamic pool.
    run = research.run({
        "experiment": {"name": "seed_worst_case", "n_workers": 2, "repeats": 1,
                       "schedulers": ["threads", "mp-dynamic"]},
        "workloads": {"worst": {"shape": "worst_case", "n_tasks": 6, "long_s": 0.1,
                                "short_s": 0.02}},
    }, out=results, progress=False)
    assert len(run.written) == 2 and not run.failed
    monkeypatch.setenv("RESEARCH_RESULTS", str(results))
    monkeypatch.delenv("RESEARCH_EXPERIMENT", raising=False)

    nb = nbformat.read(NOTEBOOK, as_version=4)
    # A cell that raises fails the run here (CellExecutionError with the traceback).
    NotebookClient(nb, kernel_name=kernel_here, timeout=120,
                   resources={"metadata": {"path": str(tmp_path)}}).execute()

    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert f"{results}: 12 task records, 2 trials in 1 studies: seed_worst_case" in text
    assert "no 'seed_worst_case' study" not in text  # it found the worst case
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 2, "expected the timelines and the makespan figure"
    # The summary table: one row per scheduler of the sweep.
    tables = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    assert len(tables) == 1
    for sched in ("threads", "mp-dynamic"):
        assert f"<td>{sched}</td>" in tables[0]
    # The stored notebook is untouched: executing worked on a copy in memory.
    stored = nbformat.read(NOTEBOOK, as_version=4)
    assert all(c.outputs == [] for c in stored.cells if c.cell_type == "code")
