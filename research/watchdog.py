"""``python -m research.watchdog PARENT_PID TOKEN [TEMP_DIR]``: when the run process
``PARENT_PID`` disappears without stopping the watchdog (SIGKILL, OOM kill, a segfault: no
handler ran), kill every process whose environment carries the run's ``TOKEN``, then remove the
run's ``TEMP_DIR`` (:class:`research.guard.RunTemp`).

That covers what PR_SET_PDEATHSIG cannot: processes that libraries start in their own session
or as grandchildren (ipyparallel's controller and engines, Dask's nannies and workers, Ray's
raylet and workers). The run starts one watchdog in its own session and stops it when it ends
normally (:func:`start` / :func:`stop`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

#: Seconds between checks of the parent.
POLL_S = 0.5


def watch(parent_pid: int, token: str, temp_dir: str | None = None) -> int:
    """Wait until ``parent_pid`` is gone, then kill the token's processes and every
    descendant of the parent seen while it lived, and remove ``temp_dir``; exit status.

    Descendants are noted too because a process that sets its title (Ray's workers and agents
    use setproctitle) may overwrite its environment, token included. psutil's Process checks
    its creation time, so a pid reused since is never killed.
    """
    from .guard import kill_token_processes, pid_alive, remove_temp_dir

    # A Ctrl-C or hang-up meant for the run must not stop its watchdog; SIGTERM does (stop()).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    me = os.getpid()
    known: dict[int, psutil.Process] = {}
    try:
        parent = psutil.Process(parent_pid)
    except psutil.Error:
        parent = None
    while parent is not None and pid_alive(parent_pid):
        with contextlib.suppress(psutil.Error):
            for p in parent.children(recursive=True):
                if p.pid != me:
                    known.setdefault(p.pid, p)
        time.sleep(POLL_S)
    # Twice: a process may be starting one more while the first round stops the others.
    for _ in range(2):
        stopped = kill_token_processes(token, extra=list(known.values()))
        for line in stopped:
            print(f"research.watchdog: run {parent_pid} died; stopped {line}", file=sys.stderr)
        if not stopped:
            break
    if temp_dir:  # after the kills: nothing writes there any more
        remove_temp_dir(Path(temp_dir))
    return 0


def start(token: str, temp_dir: Path | None = None) -> subprocess.Popen[bytes]:
    """Start the watchdog of this process, in its own session (a signal to the run's process
    group does not reach it). Its environment has no token: it never kills itself."""
    env = {k: v for k, v in os.environ.items() if k != "RESEARCH_RUN_TOKEN"}
    args = [str(os.getpid()), token, *([str(temp_dir)] if temp_dir else [])]
    return subprocess.Popen([sys.executable, "-m", "research.watchdog", *args],
                            env=env, stdin=subprocess.DEVNULL, start_new_session=True)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop the watchdog (the run ended and shut down what it started)."""
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def main(argv: list[str]) -> int:
    """Entry point: ``PARENT_PID TOKEN [TEMP_DIR]``."""
    if len(argv) not in (2, 3) or not argv[0].isdigit():
        print("usage: python -m research.watchdog PARENT_PID TOKEN [TEMP_DIR]", file=sys.stderr)
        return 2
    with contextlib.suppress(psutil.Error):
        return watch(int(argv[0]), argv[1], argv[2] if len(argv) == 3 else None)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
