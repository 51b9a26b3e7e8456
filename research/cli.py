"""Command line: ``python -m research run CONFIG... [--out DIR] [--force]`` and ``list``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import ConfigError, ParamError


def _cmd_list(args: argparse.Namespace) -> int:
    from .schedulers import REGISTRY, get_scheduler
    from .workloads import COMMON, SHAPES

    print("schedulers:")
    for name in REGISTRY:
        try:
            cls = get_scheduler(name)
            opts = ", ".join(cls.options_spec) or "-"
            print(f"  {name:<11} {cls.description}  [options: {opts}]")
            if not cls.can_stop_hung_task:
                print(f"  {'':<11} limit: cannot stop a hung task at the timeout (it runs in "
                      "this process; the trial is recorded as timed out)")
        except ImportError as exc:
            print(f"  {name:<11} (unavailable: {exc})")
    print("workload shapes:")
    for shape in SHAPES.values():
        print(f"  {shape.name:<11} {shape.doc}  [keys: {', '.join(shape.params)}]")
    print(f"  every shape also takes: {', '.join(COMMON)}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from . import config
    from .guard import DirectoryBusy, Interrupted
    from .runner import run_sweep

    try:
        experiments = [config.load(p, quick=args.quick) for p in args.configs]
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    n = sum(len(e.trials) for e in experiments)
    print(f"{len(experiments)} config(s), {n} trial(s) -> {args.out}", file=sys.stderr)
    try:
        result = run_sweep(experiments, args.out, force=args.force, progress=not args.no_progress,
                           wait=args.wait, rerun_stale=args.rerun_stale)
    except (ParamError, ConfigError, DirectoryBusy) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # Ctrl-C, SIGTERM, SIGHUP (research.guard.Interrupted)
        signum = exc.signum if isinstance(exc, Interrupted) else 2
        name = exc.name if isinstance(exc, Interrupted) else "SIGINT"
        print(f"\ninterrupted by {name}: clusters shut down, finished trials saved; rerun to "
              "resume", file=sys.stderr)
        return 128 + signum
    print(f"wrote {len(result.written)} trial file(s), skipped {len(result.skipped)}, "
          f"{len(result.failed)} failed", file=sys.stderr)
    for trial_id, reason in result.failed:
        print(f"  failed: {trial_id}: {reason}", file=sys.stderr)
    return 1 if result.failed and args.strict else 0


def _cmd_clean(args: argparse.Namespace) -> int:
    """Stop the processes that runs into ``args.out`` left behind (found by their run token)."""
    from .guard import DirectoryBusy, RunLock, kill_token_processes, known_tokens

    out: Path = args.out
    lock = RunLock(out, "")
    try:
        lock.acquire(wait=False)  # a live run holds it: its processes are not leftovers
    except DirectoryBusy as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {out}: {exc.strerror}", file=sys.stderr)
        return 2
    try:
        stopped = [line for token in known_tokens(out) for line in kill_token_processes(token)]
    finally:
        lock.release()
    for line in stopped:
        print(f"stopped {line}")
    if not stopped:
        print(f"{out}: nothing to stop")
    return 0


def _cmd_talk_primes(args: argparse.Namespace) -> int:
    from . import talkbench
    from .runner import supersede
    from .workloads import TALK_PRIMES

    path = args.out / f"talk_primes{'_quick' if args.quick else ''}.bench.parquet"
    if path.exists() and not args.force:
        print(f"{path} exists; skipped (--force redoes)", file=sys.stderr)
        return 0
    # Quick: three of the large numbers (about 2 s straight), enough to show the pattern.
    numbers = TALK_PRIMES[6:9] if args.quick else TALK_PRIMES
    print(f"timing the talk's prime benchmark on {len(numbers)} numbers "
          f"(number={args.number})...", file=sys.stderr)
    repeat = min(args.repeat, 2) if args.quick else args.repeat
    table = talkbench.run(numbers, number=args.number, repeat=repeat)
    if path.exists():
        supersede(path)
    talkbench.write(table, path, {"number": args.number, "repeat": repeat,
                                  "n_numbers": len(numbers)})
    print(table[["method", "best_s", "talk_s", "workers"]].to_string(index=False),
          file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for docs and tests)."""
    parser = argparse.ArgumentParser(prog="python -m research", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the trials of one or more experiment configs")
    run.add_argument("configs", nargs="+", type=Path, metavar="CONFIG")
    run.add_argument("--out", type=Path, default=Path("results"), help="results directory")
    run.add_argument("--force", action="store_true", help="redo trials that are already done")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument("--quick", action="store_true",
                     help="reduced run: each config's [quick] overrides, one repeat")
    run.add_argument("--strict", action="store_true", help="exit 1 if any trial failed")
    run.add_argument("--wait", action="store_true",
                     help="wait for another run on the same --out to finish instead of refusing")
    run.add_argument("--rerun-stale", action="store_true",
                     help="rerun done trials measured by other code or library versions")
    run.set_defaults(func=_cmd_run)
    tp = sub.add_parser("talk-primes", help="the talk's timeit prime benchmark, by its method")
    tp.add_argument("--out", type=Path, default=Path("results") / "primes")
    tp.add_argument("--number", type=int, default=1, help="calls per timing (talk: 3)")
    tp.add_argument("--repeat", type=int, default=3, help="timings; the best is kept (talk: 3)")
    tp.add_argument("--quick", action="store_true",
                    help="three numbers instead of fifteen, at most two repeats")
    tp.add_argument("--force", action="store_true", help="redo even if the table exists")
    tp.set_defaults(func=_cmd_talk_primes)
    cln = sub.add_parser("clean", help="stop processes that killed runs into DIR left behind")
    cln.add_argument("out", type=Path, nargs="?", default=Path("results"), metavar="DIR")
    cln.set_defaults(func=_cmd_clean)
    lst = sub.add_parser("list", help="list schedulers and workload shapes")
    lst.set_defaults(func=_cmd_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    return int(args.func(args))
