"""The whole study suite, once, at reduced size: `make experiments QUICK=1` end to end."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest

from research.schedulers import REGISTRY

CLUSTER_PROCESS = ("ipengine", "ipcontroller", "ipyparallel", "raylet", "gcs_server", "ray::",
                   "distributed.cli", "dask worker", "dask scheduler", "nanny")


def _cluster_processes_since(t0: float) -> list[str]:
    left = []
    for p in psutil.process_iter(["cmdline", "create_time"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if p.info["create_time"] >= t0 and any(k in cmd for k in CLUSTER_PROCESS):
            left.append(f"{p.pid} {cmd[:100]}")
    return left


@pytest.mark.slow
def test_quick_suite_end_to_end(repo: Path, tmp_path: Path) -> None:
    results = tmp_path / "results"
    t0 = time.time()
    proc = subprocess.run(["make", "--no-print-directory", "experiments", "QUICK=1",
                           f"RESULTS={results}"], cwd=repo, capture_output=True, text=True,
                          timeout=900)
    took = time.time() - t0
    print(f"make experiments QUICK=1 took {took:.0f} s")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    report = results / "report"
    for name in ("index.html", "report.md", "claims.csv", "summary.csv"):
        assert (report / name).is_file(), name
    summary = pd.read_csv(report / "summary.csv")
    assert (summary["trial_status"] == "ok").all(), summary[summary.trial_status != "ok"]
    worst = summary[summary.experiment == "seed_worst_case"]
    assert set(worst.scheduler) == set(REGISTRY)
    assert len(summary.experiment.unique()) == len(list((repo / "experiments").glob("*.toml")))

    claims = pd.read_csv(report / "claims.csv")
    assert len(claims) >= 20 and claims.claim_id.is_unique
    # Every claim gets a verdict from data measured in this run; which one is the finding.
    assert set(claims.verdict) <= {"reproduced", "not reproduced"}, claims[["claim_id", "note"]]

    figures = {p.name for p in (report / "figures").glob("*.png")}
    assert any(f.startswith("paired_seed_worst_case") and "ipp-direct_vs_ipp-lb" in f
               for f in figures), sorted(figures)
    assert any(f.startswith("paired_seed_random") for f in figures)
    html = (report / "index.html").read_text()
    assert "reproduced" in html and "figures/" in html

    assert not _cluster_processes_since(t0 - 1), "cluster processes outlived the suite"
