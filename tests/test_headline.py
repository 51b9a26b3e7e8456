"""The report's verdicts in a few lines, read back from the CSVs it wrote."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from research.analysis.headline import claims_line, headline, metg_line, simulator_line


def _write(d: Path) -> None:
    pd.DataFrame({"claim_id": ["C1", "C2", "CE1", "X9"],
                  "verdict": ["reproduced", "reproduced", "not reproduced", "not run"]}
                 ).to_csv(d / "claims.csv", index=False)
    # Booleans as a report writes them: True/False, and empty where a row is not held.
    pd.DataFrame({"scheduler": ["a", "b", "c", "d"], "body": ["sleep", "cpu", "cpu", "cpu"],
                  "predicted / measured": [1.1, 0.4, float("nan"), 3.0],
                  "within goal": [True, False, False, pd.NA]}).to_csv(d / "metg.csv",
                                                                       index=False)
    pd.DataFrame({
        "scheduler": ["a", "a", "a", "b", "b", "b[x=1]", "b[x=2]"],
        "in_calibration": [True, False, False, False, False, False, False],
        "error": [0.9, 0.01, -0.03, 0.2, -0.08, 0.5, 0.01],
    }).to_csv(d / "predictions.csv", index=False)


def test_lines_from_a_report_directory(tmp_path: Path) -> None:
    _write(tmp_path)
    assert claims_line(tmp_path) == ("claims: 2 of 4 reproduced; not reproduced: CE1; "
                                     "not run: X9")
    # Held rows only (d is not held); a miss without a predicted METG says so.
    assert metg_line(tmp_path) == ("METG predicted within 1.5x: 1 of 3 well-posed rows; "
                                   "misses b cpu 0.40x, c cpu (no predicted METG)")
    # Unseen trials only: a's in-sample 90% does not count; b's median is 14%; variants apart.
    assert simulator_line(tmp_path) == (
        "simulator: median |error| 5.5% over 6 unseen trials; 1 of 2 schedulers within 5% at "
        "their defaults (misses b 14.0%); option variants: 1 of 2 (misses b[x=1] 50.0%)")
    assert len(headline(tmp_path)) == 3
    # A run of other configs only: no claim could be checked, and the line says so.
    pd.DataFrame({"claim_id": ["C1", "C2"], "verdict": ["not run", "not run"]}).to_csv(
        tmp_path / "claims.csv", index=False)
    assert claims_line(tmp_path) == ("claims: none of 2 checked (no trials of the studies they "
                                     "read)")


def test_missing_or_empty_files_leave_their_line_out(tmp_path: Path) -> None:
    assert headline(tmp_path) == []
    (tmp_path / "metg.csv").write_text("")
    pd.DataFrame({"claim_id": ["C1"], "verdict": ["reproduced"]}).to_csv(
        tmp_path / "claims.csv", index=False)
    assert headline(tmp_path) == ["claims: 1 of 1 reproduced"]
