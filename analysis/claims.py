"""Check the talk's claims against a results directory: writes claims.csv (and prints it).

    python analysis/claims.py RESULTS_DIR [--out REPORT_DIR]

`make report` runs this through analysis/report.py, which puts the table at the top of the
report. The logic lives in research/claims.py (tested); this script only wires it up.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from research import claims, metrics


def evaluate(summary: pd.DataFrame, results_dir: Path) -> pd.DataFrame:
    """The claims table for a summary (as made by research.metrics.load_results)."""
    return claims.evaluate(summary, results_dir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("--out", type=Path, default=None, help="default: RESULTS/report")
    args = parser.parse_args(argv)
    out = args.out or args.results / "report"
    table = evaluate(metrics.load_results(args.results).summary, args.results)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "claims.csv", index=False)
    with pd.option_context("display.max_colwidth", 60, "display.width", 200):
        print(table[["claim_id", "claim", "talk_value", "our_value", "verdict"]].to_string(
            index=False))
    print(f"wrote {out / 'claims.csv'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
