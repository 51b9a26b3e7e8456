"""Write the report of a results directory.

    python analysis/report.py RESULTS_DIR --out REPORT_DIR

Writes REPORT_DIR/index.html (opens offline), report.md, summary.csv and figures/. If
analysis/claims.py exists, its ``evaluate(summary_df, results_dir) -> DataFrame`` is called and
the claims table is put at the top of the report (a failure there is reported, not fatal).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

CLAIMS_FILE = Path(__file__).with_name("claims.py")


def load_claims_evaluator(path: Path = CLAIMS_FILE) -> Callable[..., Any] | None:
    """``evaluate`` from analysis/claims.py, or None if that file does not exist."""
    if not path.exists():
        return None
    spec = importlib.util.spec_from_file_location("analysis_claims", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    evaluate = getattr(module, "evaluate", None)
    if evaluate is None:
        raise AttributeError(f"{path} has no evaluate(summary_df, results_dir) function")
    return evaluate


def evaluate_claims(summary: Any, results_dir: Path,
                    path: Path = CLAIMS_FILE) -> tuple[Any | None, str | None]:
    """(claims DataFrame or None, error text or None); never raises."""
    try:
        evaluate = load_claims_evaluator(path)
        if evaluate is None:
            return None, None
        return evaluate(summary, results_dir), None
    except Exception as exc:  # a broken claims module must not cost us the report
        traceback.print_exc(file=sys.stderr)
        return None, f"{path.name}: {type(exc).__name__}: {exc}"


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path, metavar="RESULTS_DIR")
    parser.add_argument("--out", type=Path, default=None,
                        help="report directory (default: RESULTS_DIR/report)")
    parser.add_argument("--max-timelines", type=int, default=40,
                        help="at most this many per-trial timelines (default 40)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (1 when there was nothing to analyse)."""
    args = build_parser().parse_args(argv)
    from research.metrics import load_results
    from research.report import build_report

    if not args.results.exists():
        print(f"error: {args.results}: no such results directory", file=sys.stderr)
        return 2
    out = args.out or args.results / "report"
    results = load_results(args.results)
    claims, claims_error = evaluate_claims(results.summary, args.results)
    report = build_report(args.results, out, claims, claims_error=claims_error,
                          results=results, max_timelines=args.max_timelines)
    s = results.summary
    n_failed = int((s["trial_status"].astype(str) == "failed").sum()) if len(s) else 0
    print(f"{report.index_html}: {len(s)} trial(s), {n_failed} failed, "
          f"{len(results.broken)} broken, {len(report.figures.figures)} figure(s)",
          file=sys.stderr)
    for b in results.broken:
        print(f"  cannot analyse {b.path}: {b.reason}", file=sys.stderr)
    for e in report.figures.errors:
        print(f"  figure not drawn: {e}", file=sys.stderr)
    if claims_error:
        print(f"  claims: {claims_error}", file=sys.stderr)
    return 0 if len(s) else 1


if __name__ == "__main__":
    sys.exit(main())
