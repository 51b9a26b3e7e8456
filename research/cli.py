"""Command line: ``python -m research COMMAND``.

    run CONFIG... [--out DIR]       run the trials of experiment configs
    list                            schedulers and workload shapes
    talk-primes [--out DIR]         the talk's timeit prime benchmark
    report RESULTS [--out DIR]      the whole report (claims, summary, figures, HTML, markdown)
    figures RESULTS|TRIAL [--out]   figures only (or one trial's timeline)
    claims RESULTS [--out DIR]      the claims table only (claims.csv, printed)
    trace TRIAL|RESULTS [--out F]   Chrome trace-event JSON for Perfetto
    bench                           the harness overhead benchmark
    calibrate RESULTS [--out FILE]  fit the simulator's costs (RESULTS/calibration.json)
    predict CONFIG [--calibration]  predicted makespans of a config, without running it

The scripts in ``analysis/`` and ``experiments/bench_overhead.py`` call these same commands.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .errors import ConfigError, ParamError

#: The per-workload figure kinds (analysis.figures.WORKLOAD_FIGURES; a test keeps them equal):
#: named here so that the command line does not import matplotlib to build its parser.
FIGURE_KINDS: tuple[str, ...] = ("makespan", "tasks_per_worker", "latency", "sweep_workers")


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


def _interrupted(exc: KeyboardInterrupt, what: str) -> int:
    """Say which signal stopped a command that started processes; its exit status."""
    from .guard import Interrupted

    signum = exc.signum if isinstance(exc, Interrupted) else 2
    name = exc.name if isinstance(exc, Interrupted) else "SIGINT"
    print(f"\ninterrupted by {name}: clusters shut down, {what}", file=sys.stderr)
    return 128 + signum


def _cmd_run(args: argparse.Namespace) -> int:
    from . import config
    from .guard import DirectoryBusy
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
        return _interrupted(exc, "finished trials saved; rerun to resume")
    print(f"wrote {len(result.written)} trial file(s), skipped {len(result.skipped)}, "
          f"{len(result.failed)} failed", file=sys.stderr)
    for trial_id, reason in result.failed:
        print(f"  failed: {trial_id}: {reason}", file=sys.stderr)
    return 1 if result.failed and args.strict else 0


def _cmd_clean(args: argparse.Namespace) -> int:
    """Stop the processes that runs into ``args.out`` left behind (found by their run token),
    and remove the temp dirs of runs that are gone, and of clusters started outside a run
    whose process is gone."""
    from .guard import DirectoryBusy, RunLock, kill_token_processes, known_tokens, sweep_temp_dirs

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
    # Any run's, not only this directory's: a temp dir says nothing of where its run wrote.
    removed = sweep_temp_dirs()
    for path in removed:
        print(f"removed {path} (temp dir of a run or a cluster whose process is gone)")
    if not stopped and not removed:
        print(f"{out}: nothing to stop")
    return 0


def _cmd_talk_primes(args: argparse.Namespace) -> int:
    from .bench import talkbench
    from .runner import supersede
    from .workloads import TALK_PRIMES

    path = args.out / f"talk_primes{'_quick' if args.quick else ''}.bench.parquet"
    if path.exists() and not args.force:
        print(f"{path} exists; skipped (--force redoes)", file=sys.stderr)
        return 0
    # The first nine of the talk's fifteen numbers (about 6 s straight on one core, 15 s per
    # repeat of the three methods): all fifteen, three times, took 3 minutes, a fifth of the
    # suite's 15-minute budget; the speedups are ratios, which the subset keeps. Quick: the
    # first six (about 2 s straight). --all-numbers times all fifteen.
    n_numbers = len(TALK_PRIMES) if args.all_numbers else (6 if args.quick else 9)
    numbers = TALK_PRIMES[:n_numbers]
    print(f"timing the talk's prime benchmark on {len(numbers)} numbers "
          f"(number={args.number})...", file=sys.stderr)
    repeat = 1 if args.quick else args.repeat
    from .guard import run_scope

    try:
        with run_scope():  # its pools are stopped on SIGTERM too, and gone after SIGKILL
            table = talkbench.run(numbers, number=args.number, repeat=repeat)
    except KeyboardInterrupt as exc:
        return _interrupted(exc, "nothing written")
    if path.exists():
        supersede(path)
    talkbench.write(table, path, {"number": args.number, "repeat": repeat,
                                  "n_numbers": len(numbers)})
    print(table[["method", "best_s", "talk_s", "workers"]].to_string(index=False),
          file=sys.stderr)
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from . import schema
    from .analysis.report import make_report

    try:
        report = make_report(args.results, args.out, max_timelines=args.max_timelines,
                             calibration=args.calibration, formats=args.format,
                             figure_kinds=args.figure_kinds,
                             fit_calibration=(args.calibration_out or args.results
                                              / "calibration.json") if args.calibrate else None)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    results, s = report.results, report.results.summary
    n_failed = int((s["trial_status"].astype(str) == schema.TRIAL_FAILED).sum()) if len(s) else 0
    print(f"{report.index_html}: {len(s)} trial(s), {n_failed} failed, "
          f"{len(results.broken)} broken, {len(report.figures.figures)} figure(s)",
          file=sys.stderr)
    from .analysis.headline import headline

    for line in headline(report.index_html.parent):  # the verdicts, without opening the HTML
        print(f"  {line}", file=sys.stderr)
    for b in results.broken:
        print(f"  cannot analyse {b.path}: {b.reason}", file=sys.stderr)
    for e in report.figures.errors:
        print(f"  figure not drawn: {e}", file=sys.stderr)
    if report.claims_error:
        print(f"  claims: {report.claims_error}", file=sys.stderr)
    return 0 if len(s) else 1


def _cmd_figures(args: argparse.Namespace) -> int:
    from . import schema
    from .analysis import figures, metrics
    from .analysis.results import load_results

    src: Path = args.results
    if not src.exists():
        print(f"error: {src}: no such file or directory", file=sys.stderr)
        return 2
    out = args.out or (src / "report" / "figures" if src.is_dir() else src.parent)
    if src.is_file():
        missing = schema.missing_columns(src)
        if missing:
            print(f"error: {src}: missing required column(s): {', '.join(missing)}",
                  file=sys.stderr)
            return 1
        fig = figures.timeline_figure(metrics.read_records(src))
        for p in figures.save_figure(fig, out / figures.slug("timeline", src.stem), args.format):
            print(p)
        return 0
    results = load_results(src)
    for b in results.broken:
        print(f"cannot analyse {b.path}: {b.reason}", file=sys.stderr)
    pairs = [tuple(p) for p in args.pair] if args.pair else figures.PREFERRED_PAIRS
    fs = figures.draw_all(results, out, max_timelines=args.max_timelines, pairs=pairs,
                          formats=args.format)
    from .analysis.measure_report import draw_measure_figures

    # The report's overhead/simulator figures too (shipped calibration unless given).
    draw_measure_figures(results, out, args.calibration, args.format)
    from .analysis.workload_report import draw_workload_figures

    draw_workload_figures(results, out, args.format)  # payload and arrivals studies
    for note in fs.not_drawn:
        print(f"not drawn: {note}", file=sys.stderr)
    for err in fs.errors:
        print(f"figure failed: {err}", file=sys.stderr)
    print(f"{len(fs.figures)} figure(s) in {out}", file=sys.stderr)
    return 0 if fs.figures else 1


def _cmd_claims(args: argparse.Namespace) -> int:
    import pandas as pd

    from .analysis import claims
    from .analysis.results import load_results

    if not args.results.exists():
        print(f"error: {args.results}: no such results directory", file=sys.stderr)
        return 2
    out = args.out or args.results / "report"
    table = claims.evaluate(load_results(args.results).summary, args.results)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "claims.csv", index=False)
    with pd.option_context("display.max_colwidth", 60, "display.width", 200):
        print(table[["claim_id", "claim", "talk_value", "our_value", "verdict"]].to_string(
            index=False))
    print(f"wrote {out / 'claims.csv'}", file=sys.stderr)
    return 0


def _cmd_trace(args: argparse.Namespace) -> int:
    from .analysis.trace import export_trace

    try:
        out, n, broken = export_trace(args.source, args.out, absolute=args.absolute)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for b in broken:
        print(f"skipped {b.path}: {b.reason}", file=sys.stderr)
    print(f"{out}: {n} task event(s)", file=sys.stderr)
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from .bench.overhead import print_benchmark
    from .guard import run_scope
    from .schedulers import REGISTRY

    try:
        with run_scope():  # its clusters are shut down on SIGTERM too, and gone after SIGKILL
            return print_benchmark(args.schedulers or list(REGISTRY), args.workers, args.tasks,
                                   args.repeats, out=None if args.no_out else args.out,
                                   run_s=args.run_seconds or None,
                                   min_run_s=args.min_run_seconds or None,
                                   extra_repeats=args.extra_repeats)
    except KeyboardInterrupt as exc:
        return _interrupted(exc, "nothing written")


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from .analysis.results import load_results
    from .simulate import calibration

    if not args.results.exists():
        print(f"error: {args.results}: no such results directory", file=sys.stderr)
        return 2
    cal = calibration.fit(load_results(args.results))
    if not cal.schedulers:
        print(f"error: {args.results}: no completed trial of the studies "
              f"{', '.join(calibration.CALIBRATION_STUDIES)} to fit on", file=sys.stderr)
        return 1
    out = cal.write(args.out or args.results / "calibration.json")
    for name, e in cal.schedulers.items():
        c = e["costs"]
        part = c.get("body_load", 1.0)
        print(f"  {name:<11} dispatch {c['dispatch_s'] * 1e6:9.1f} us  worker "
              f"{c['worker_s'] * 1e6:9.1f} us  sleep +{c['sleep_overshoot_s'] * 1e6:7.1f} us  "
              f"busy cores x{1 + c.get('contention', 0.0):.2f}"
              f"{'' if c.get('worker_load', 1.0) else ' (worker cost a wait)'}"
              f"{'' if part == 1.0 else f' (a CPU task counts {part:g})'}  "
              f"fit |log err| {e['fit_error']:.3f} ({e['n_trials']} trials)", file=sys.stderr)
    print(f"wrote {out}", file=sys.stderr)
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    import pandas as pd

    from .simulate import calibration
    from .simulate.predict import predict_config

    try:
        cal = calibration.load(args.calibration)
        tables = [predict_config(str(p), cal, quick=args.quick) for p in args.configs]
    except (ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"calibration: {cal.label}", file=sys.stderr)
    table = pd.concat(tables, ignore_index=True)
    cols = ["scheduler", "workload", "n_workers", "repeat", "n_tasks", "policy",
            "predicted_makespan_s", "predicted_makespan_low_s", "predicted_makespan_high_s",
            "predicted_wall_s", "predicted_tasks_per_worker", "costs"]
    with pd.option_context("display.width", 200, "display.max_rows", None):
        print(table[cols].to_string(index=False, float_format=lambda x: f"{x:.4g}"))
    return 0


def _add_analysis_commands(sub: Any) -> None:
    rep = sub.add_parser("report", help="the report of a results directory",
                         description="Write REPORT_DIR/index.html (opens offline), report.md, "
                         "summary.csv, claims.csv and figures/.")
    rep.add_argument("results", type=Path, metavar="RESULTS_DIR")
    rep.add_argument("--out", type=Path, default=None,
                     help="report directory (default: RESULTS_DIR/report)")
    rep.add_argument("--max-timelines", type=int, default=40,
                     help="at most this many per-trial timelines (default 40)")
    rep.add_argument("--figure-kinds", nargs="+", default=None,
                     choices=FIGURE_KINDS,
                     help="draw only these per-workload figures (default: all)")
    rep.add_argument("--calibration", type=Path, default=None,
                     help="the simulator's calibration file (python -m research calibrate "
                     "writes one); default: the package's shipped defaults")
    rep.add_argument("--calibrate", action="store_true",
                     help="fit the calibration on these results first (as `calibrate` does), "
                     "write it (RESULTS_DIR/calibration.json or --calibration-out) and use it")
    rep.add_argument("--calibration-out", type=Path, default=None,
                     help="where --calibrate writes the calibration")
    rep.add_argument("--format", nargs="+", default=["png"], choices=["png", "svg"],
                     help="figure files (default png; svg adds vector copies)")
    rep.set_defaults(func=_cmd_report)

    ca = sub.add_parser("calibrate", help="fit the simulator's costs from the overhead and "
                        "granularity studies of a results directory")
    ca.add_argument("results", type=Path, metavar="RESULTS_DIR")
    ca.add_argument("--out", type=Path, default=None,
                    help="calibration file (default: RESULTS_DIR/calibration.json)")
    ca.set_defaults(func=_cmd_calibrate)

    pr = sub.add_parser("predict", help="predicted makespans of a config, without running it")
    pr.add_argument("configs", nargs="+", type=Path, metavar="CONFIG")
    pr.add_argument("--calibration", type=Path, default=None,
                    help="calibration file (default: the package's shipped defaults)")
    pr.add_argument("--quick", action="store_true", help="the config's [quick] variant")
    pr.set_defaults(func=_cmd_predict)

    fig = sub.add_parser("figures", help="the figures of a results directory or one trial",
                         description="Summary figures for every (experiment, workload), a "
                         "capped selection of per-trial timelines and the paired timelines "
                         "(ipp-direct vs ipp-lb where both exist, else another pair; --pair "
                         "chooses); or the timeline of one trial file. PNG and SVG.")
    fig.add_argument("results", type=Path, metavar="RESULTS_DIR_OR_FILE")
    fig.add_argument("--out", type=Path, default=None,
                     help="figure directory (default: RESULTS_DIR/report/figures)")
    fig.add_argument("--max-timelines", type=int, default=40,
                     help="at most this many per-trial timelines (default 40)")
    fig.add_argument("--pair", nargs=2, action="append", metavar=("SCHED_A", "SCHED_B"),
                     help="scheduler pair for the paired timelines (repeatable; "
                          "default: ipp-direct ipp-lb, else mp-map mp-dynamic, ...)")
    fig.add_argument("--format", nargs="+", default=["png"], choices=["png", "svg"],
                     help="figure files (default png, as the report; svg adds vector copies)")
    fig.add_argument("--calibration", type=Path, default=None,
                     help="the simulator's calibration file (default: shipped defaults)")
    fig.set_defaults(func=_cmd_figures)

    cl = sub.add_parser("claims", help="check the talk's claims: writes claims.csv, prints it")
    cl.add_argument("results", type=Path, metavar="RESULTS_DIR")
    cl.add_argument("--out", type=Path, default=None, help="default: RESULTS_DIR/report")
    cl.set_defaults(func=_cmd_claims)

    tr = sub.add_parser("trace", help="export trials as Chrome trace-event JSON (Perfetto)",
                        description="One process per trial, one thread (track) per worker, one "
                        "'X' event per task. A trial file gives TRIAL.trace.json beside it; a "
                        "results directory gives RESULTS_DIR.trace.json with every trial.")
    tr.add_argument("source", type=Path, metavar="TRIAL_OR_DIR")
    tr.add_argument("--out", type=Path, default=None, help="output JSON file")
    tr.add_argument("--absolute", action="store_true",
                    help="keep trials at their real times (default: each starts at 0)")
    tr.set_defaults(func=_cmd_trace)

    be = sub.add_parser("bench", help="the harness overhead benchmark (no-op tasks per second)")
    be.add_argument("--tasks", type=int, default=2000)
    be.add_argument("--workers", type=int, default=2)
    be.add_argument("--repeats", type=int, default=5, help="pairs (bare, then harness) per "
                    "row; default: %(default)s")
    be.add_argument("--extra-repeats", type=int, default=6,
                    help="more pairs for a row whose verdict is unclear after --repeats (its "
                         "verdict then uses all of them); 0: none. Default: %(default)s")
    be.add_argument("--schedulers", nargs="*", default=None,
                    help="default: every registered scheduler")
    be.add_argument("--out", type=Path, default=Path("results/bench/overhead.csv"),
                    help="CSV of the table (and a markdown twin, .md); default: %(default)s")
    be.add_argument("--no-out", action="store_true", help="print only, write no files")
    be.add_argument("--run-seconds", type=float, default=2.0,
                    help="a slow scheduler runs fewer tasks, so that one run takes about this "
                         "long (at least 200 tasks); 0: always --tasks. Default: %(default)s")
    be.add_argument("--min-run-seconds", type=float, default=0.25,
                    help="a fast scheduler runs more tasks (up to 50,000), so that one run takes "
                         "at least this long; 0: never more than --tasks. Default: %(default)s")
    be.set_defaults(func=_cmd_bench)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for docs and tests)."""
    parser = argparse.ArgumentParser(prog="python -m research", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
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
                    help="the first six numbers instead of nine, one repeat")
    tp.add_argument("--all-numbers", action="store_true",
                    help="all fifteen of the talk's numbers (default: the first nine)")
    tp.add_argument("--force", action="store_true", help="redo even if the table exists")
    tp.set_defaults(func=_cmd_talk_primes)
    cln = sub.add_parser("clean", help="stop processes that killed runs into DIR left behind, "
                         "remove temp dirs of runs and clusters that are gone")
    cln.add_argument("out", type=Path, nargs="?", default=Path("results"), metavar="DIR")
    cln.set_defaults(func=_cmd_clean)
    lst = sub.add_parser("list", help="list schedulers and workload shapes")
    lst.set_defaults(func=_cmd_list)
    _add_analysis_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    return int(args.func(args))
