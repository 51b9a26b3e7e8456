"""Run safety: a token that marks every process a run starts, signals handled like Ctrl-C,
critical sections no signal cuts in half, parent-death signals, and one run per results dir.

The token (:data:`TOKEN_ENV` in the environment) is inherited by everything the run starts,
also by processes that libraries start in their own session (ipyparallel's controller and
engines, Dask's nannies, Ray's raylet). :mod:`research.watchdog` kills them by it when the run
process dies without cleaning up (SIGKILL, OOM kill), and ``python -m research clean`` does the
same for the runs a results directory knows about.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import signal
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import IO, Any

import psutil

#: Environment variable holding the run's token; children inherit it.
TOKEN_ENV = "RESEARCH_RUN_TOKEN"
#: The lock file of a results directory (holds the pid and token of the run that has it).
LOCK_NAME = ".research-run.lock"
#: Signals handled like Ctrl-C: what kill, timeout, Slurm and CI cancel send.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
#: ``prctl`` option: the signal a process gets when its parent thread dies (Linux).
PR_SET_PDEATHSIG = 1


def run_token() -> str:
    """This run's token: the one in the environment (a caller may set it), else a new one,
    put into the environment so that every process started from now on inherits it."""
    token = os.environ.get(TOKEN_ENV)
    if not token:
        token = uuid.uuid4().hex
        os.environ[TOKEN_ENV] = token
    return token


def set_pdeathsig(sig: int = signal.SIGKILL) -> bool:
    """Ask the kernel to send ``sig`` to this process when its parent dies (Linux only; a
    no-op elsewhere). Returns whether it was set. Used as a pool initializer and preexec_fn."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        ok = libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False
    if ok and os.getppid() == 1:  # the parent died before prctl: the signal will never come
        os.kill(os.getpid(), sig)
    return ok


def init_worker() -> None:
    """Initializer of pool worker processes: die with the parent (:func:`set_pdeathsig`), and
    ignore SIGINT. A terminal's Ctrl-C reaches the whole process group; a worker that died of
    it while holding the pool's queue lock (an idle ``multiprocessing.Pool`` worker waits for
    work holding it) makes ``Pool.terminate()`` hang forever. The harness stops the workers
    itself, in order."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    set_pdeathsig()


def processes_with_token(token: str, exclude: set[int] | None = None) -> list[psutil.Process]:
    """Every process (of this user) whose environment carries ``token``."""
    exclude = exclude or set()
    out = []
    for proc in psutil.process_iter():
        if proc.pid in exclude:
            continue
        with contextlib.suppress(psutil.Error, OSError):
            if proc.environ().get(TOKEN_ENV) == token:
                out.append(proc)
    return out


def kill_token_processes(token: str, exclude: set[int] | None = None, grace_s: float = 3.0,
                         extra: list[psutil.Process] | None = None) -> list[str]:
    """SIGTERM every process carrying ``token`` (and the ``extra`` ones still running),
    SIGKILL the ones left after ``grace_s``; one description per process stopped."""
    skip = {os.getpid(), *(exclude or set())}
    procs = processes_with_token(token, skip)
    pids = {p.pid for p in procs}
    for p in extra or []:
        with contextlib.suppress(psutil.Error):
            if p.pid not in pids and p.pid not in skip and p.is_running() \
                    and p.status() != psutil.STATUS_ZOMBIE:
                procs.append(p)
                pids.add(p.pid)
    desc = []
    for p in procs:
        with contextlib.suppress(psutil.Error):
            desc.append(f"{p.pid} {' '.join(p.cmdline())[:100]}")
            p.terminate()
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(alive, timeout=grace_s)
    return desc


# -- signals -------------------------------------------------------------------------------
class Interrupted(KeyboardInterrupt):
    """A stop signal (Ctrl-C, SIGTERM, SIGHUP) arrived; :attr:`signum` says which."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signal.Signals(signum).name)

    @property
    def name(self) -> str:
        """The signal's name (``SIGTERM``)."""
        return signal.Signals(self.signum).name


class _State:
    depth = 0  # nesting of critical sections
    pending: int | None = None  # a signal that arrived inside one


def _on_signal(signum: int, frame: FrameType | None) -> None:
    # Python runs handlers in the main thread only, whichever thread the kernel picked: so the
    # exception lands in the main thread, and never inside a critical section.
    if _State.depth > 0:
        if _State.pending is None:
            _State.pending = signum
        return
    raise Interrupted(signum)


@contextlib.contextmanager
def stop_signals() -> Iterator[None]:
    """Within: SIGINT, SIGTERM and SIGHUP raise :class:`Interrupted` in the main thread (held
    back while :func:`critical` runs). Outside the main thread it does nothing."""
    try:
        old = {s: signal.signal(s, _on_signal) for s in STOP_SIGNALS}
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@contextlib.contextmanager
def critical() -> Iterator[None]:
    """A section a stop signal must not cut in half (a shutdown, a file write): a signal that
    arrives inside is raised when the outermost section ends."""
    _State.depth += 1
    try:
        yield
    finally:
        _State.depth -= 1
        if _State.depth == 0 and _State.pending is not None:
            signum, _State.pending = _State.pending, None
            if sys.exc_info()[0] is None:  # an exception already on its way wins
                raise Interrupted(signum)


# -- one run per results directory -------------------------------------------------------------
class DirectoryBusy(RuntimeError):
    """Another run holds the results directory's lock."""


class RunLock:
    """An exclusive ``flock`` on ``<out>/.research-run.lock``; the kernel drops it when the
    process dies, however it dies, so a stale lock never blocks a rerun."""

    def __init__(self, out: Path, token: str) -> None:
        self.path = Path(out) / LOCK_NAME
        self.token = token
        self._file: IO[str] | None = None

    def holder(self) -> dict[str, Any]:
        """What the lock file says about the run holding it ({} if unreadable)."""
        try:
            return dict(json.loads(self.path.read_text()))
        except (OSError, ValueError):
            return {}

    def acquire(self, wait: bool = False) -> None:
        """Take the lock; raise :class:`DirectoryBusy` naming the holder's pid (or wait for it
        with ``wait``)."""
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+")  # noqa: SIM115 - held until release()
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    f.close()
                    raise
                if not wait:
                    f.close()
                    who = self.holder()
                    raise DirectoryBusy(
                        f"{self.path.parent} is in use by another run (pid "
                        f"{who.get('pid', '?')}, started {who.get('started', '?')}); wait for "
                        "it to finish, stop it, or pass --wait") from None
                time.sleep(0.5)
        f.seek(0)
        f.truncate()
        f.write(json.dumps({"pid": os.getpid(), "token": self.token,
                            "started": time.strftime("%Y-%m-%d %H:%M:%S")}))
        f.flush()
        self._file = f

    def release(self) -> None:
        """Drop the lock (the file stays: it names the last run, for ``research clean``)."""
        if self._file is not None:
            self._file.close()
            self._file = None


#: Where a results directory keeps the tokens of the runs made in it (for ``research clean``).
RUNS_NAME = ".research-runs.jsonl"


def record_run(out: Path, token: str) -> None:
    """Note this run (pid, token) in the results directory, for ``research clean``."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / RUNS_NAME, "a") as f:
        f.write(json.dumps({"pid": os.getpid(), "token": token, "started": time.time()}) + "\n")


def known_tokens(out: Path) -> list[str]:
    """The tokens of every run recorded in ``out``."""
    tokens: list[str] = []
    with contextlib.suppress(OSError):
        for line in (out / RUNS_NAME).read_text().splitlines():
            with contextlib.suppress(ValueError, KeyError, TypeError):
                tok = json.loads(line)["token"]
                if tok not in tokens:
                    tokens.append(tok)
    return tokens


def pid_alive(pid: int) -> bool:
    """Whether a process with ``pid`` exists (and is not a zombie)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


__all__ = [
    "LOCK_NAME", "RUNS_NAME", "STOP_SIGNALS", "TOKEN_ENV", "DirectoryBusy", "Interrupted",
    "RunLock", "critical", "init_worker", "kill_token_processes", "known_tokens", "pid_alive",
    "processes_with_token", "record_run", "run_token", "set_pdeathsig", "stop_signals",
]
