"""Draw the figures of a results directory (or the timeline of one trial file).

    python analysis/figures.py RESULTS_DIR --out DIR
    python analysis/figures.py TRIAL.parquet --out DIR

Summary figures for every (experiment, workload), a capped selection of per-trial timelines
and the paired timelines (ipp-direct vs ipp-lb where both exist, else another pair; --pair
chooses). PNG and SVG.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path, metavar="RESULTS_DIR_OR_FILE")
    parser.add_argument("--out", type=Path, default=None,
                        help="figure directory (default: RESULTS_DIR/report/figures)")
    parser.add_argument("--max-timelines", type=int, default=40,
                        help="at most this many per-trial timelines (default 40)")
    parser.add_argument("--pair", nargs=2, action="append", metavar=("SCHED_A", "SCHED_B"),
                        help="scheduler pair for the paired timelines (repeatable; "
                             "default: ipp-direct ipp-lb, else mp-map mp-dynamic, ...)")
    parser.add_argument("--format", nargs="+", default=["png", "svg"], choices=["png", "svg"])
    return parser


def _single_trial(path: Path, out: Path, formats: list[str]) -> int:
    from research import figures, metrics, schema

    missing = schema.missing_columns(path)
    if missing:
        print(f"error: {path}: missing required column(s): {', '.join(missing)}",
              file=sys.stderr)
        return 1
    fig = figures.timeline_figure(metrics.read_records(path))
    for p in figures.save_figure(fig, out / figures.slug("timeline", path.stem), formats):
        print(p)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (1 when there was nothing to draw)."""
    args = build_parser().parse_args(argv)
    from research import figures
    from research.metrics import load_results

    if not args.results.exists():
        print(f"error: {args.results}: no such file or directory", file=sys.stderr)
        return 2
    out = args.out or (args.results / "report" / "figures" if args.results.is_dir()
                       else args.results.parent)
    if args.results.is_file():
        return _single_trial(args.results, out, args.format)
    results = load_results(args.results)
    for b in results.broken:
        print(f"cannot analyse {b.path}: {b.reason}", file=sys.stderr)
    pairs = [tuple(p) for p in args.pair] if args.pair else figures.PREFERRED_PAIRS
    fs = figures.draw_all(results, out, max_timelines=args.max_timelines, pairs=pairs,
                          formats=args.format)
    for note in fs.not_drawn:
        print(f"not drawn: {note}", file=sys.stderr)
    for err in fs.errors:
        print(f"figure failed: {err}", file=sys.stderr)
    print(f"{len(fs.figures)} figure(s) in {out}", file=sys.stderr)
    return 0 if fs.figures else 1


if __name__ == "__main__":
    sys.exit(main())
