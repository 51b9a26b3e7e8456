"""Export trials as a Chrome trace-event JSON (open in ui.perfetto.dev or chrome://tracing).

    python analysis/trace.py TRIAL.parquet            # -> TRIAL.trace.json beside it
    python analysis/trace.py RESULTS_DIR [--absolute] # -> RESULTS_DIR.trace.json, all trials

One process per trial, one thread (track) per worker, one "X" event per task.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, metavar="TRIAL_OR_DIR")
    parser.add_argument("--out", type=Path, default=None, help="output JSON file")
    parser.add_argument("--absolute", action="store_true",
                        help="keep trials at their real times (default: each starts at 0)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    from research.trace import export_trace

    try:
        out, n, broken = export_trace(args.source, args.out, absolute=args.absolute)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for b in broken:
        print(f"skipped {b.path}: {b.reason}", file=sys.stderr)
    print(f"{out}: {n} task event(s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
