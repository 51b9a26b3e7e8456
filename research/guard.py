"""Run safety: a token that marks every process a run starts, signals handled like Ctrl-C,
critical sections no signal cuts in half, parent-death signals, one run per results dir, and a
private temp directory per run that nothing outlives.

The token (:data:`TOKEN_ENV` in the environment) is inherited by everything the run starts,
also by processes that libraries start in their own session (ipyparallel's controller and
engines, Dask's nannies, Ray's raylet). :mod:`research.watchdog` kills them by it when the run
process dies without cleaning up (SIGKILL, OOM kill), and ``python -m research clean`` does the
same for the runs a results directory knows about.

:func:`run_scope` puts them together for every command that starts processes (``run``,
``bench``, ``talk-primes``). Its temp directory (:class:`RunTemp`) is the ``TMPDIR`` of every
process the run starts, so what they leave there (``multiprocessing``'s ``pymp-*`` dirs of a
Parsl or Celery worker that was terminated, a cluster's state) goes with it: removed when the
run ends, by the watchdog after a SIGKILL, and by the next run's (or ``clean``'s) sweep when
the watchdog died too.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import logging
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


class _QuietInterrupted(logging.Filter):
    """Drops asyncio's "Task exception was never retrieved" for a task that a stop signal cut
    short (ipyparallel starts its cluster in a task on this thread): the signal is reported
    once, in one line, and the traceback would say nothing more."""

    def filter(self, record: logging.LogRecord) -> bool:
        """False (drop) for a record whose exception is :class:`Interrupted`."""
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, Interrupted)


_QUIET = _QuietInterrupted()


@contextlib.contextmanager
def stop_signals() -> Iterator[None]:
    """Within: SIGINT, SIGTERM and SIGHUP raise :class:`Interrupted` in the main thread (held
    back while :func:`critical` runs). Outside the main thread it does nothing."""
    try:
        old = {s: signal.signal(s, _on_signal) for s in STOP_SIGNALS}
    except ValueError:  # not the main thread
        yield
        return
    # Kept after the block: the report comes when the task is collected, maybe at exit.
    logging.getLogger("asyncio").addFilter(_QUIET)  # a set: adding it twice keeps one
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


def _holder(token: str) -> str:
    """What a lock file says about the run that holds it (JSON: pid, token, start time)."""
    return json.dumps({"pid": os.getpid(), "token": token,
                       "started": time.strftime("%Y-%m-%d %H:%M:%S")})


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
        f.write(_holder(self.token))
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


# -- a private temp directory per run ----------------------------------------------------------
#: A run's temp directory is ``<system temp>/research-XXXXXXXX``: short, because Ray's unix
#: socket paths (at most 107 bytes) live under it (:data:`research.schedulers.ray`).
TEMP_PREFIX = "research-"
#: The lock file that marks a directory as a run's temp directory; held while the run lives.
TEMP_LOCK = ".research-temp.lock"
#: Directories of the run outside its temp directory (one path per line): removed with it when
#: the run dies (the run removes its own as it shuts down).
TEMP_ALSO = ".research-temp-also"
#: The longest a run's temp directory's path may be: unix socket paths (at most 107 bytes) go
#: under it (multiprocessing's listeners need about 32 more characters, Ray's 67). Where the
#: system temp dir would give a longer one, it goes to ``/tmp``.
TEMP_MAX_CHARS = 40
#: Seconds a temp directory's lock file must have existed before a sweep may take it: a margin
#: only (:meth:`RunTemp.create` renames it into place already locked).
SWEEP_MIN_AGE_S = 60.0


class RunTemp:
    """A run's private temp directory, locked (``flock``) by the run process while it lives.

    While :meth:`active`, it is the ``TMPDIR`` of every process the run starts; this process's
    own :func:`tempfile.gettempdir` does not change (a notebook's multiprocessing keeps its
    temp dir after the run). :meth:`remove` deletes it with everything in it.
    """

    def __init__(self, token: str, base: str | None = None) -> None:
        self.token = token
        self.base = base
        self.path: Path | None = None
        self._lock: IO[str] | None = None

    def create(self) -> Path:
        """Make and lock the directory (the lock file appears, already locked, by a rename:
        a sweep never sees it unlocked while this run lives)."""
        import shutil
        import tempfile

        path = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=self.base or temp_base()))
        try:
            f = lock_temp_dir(path, self.token)
        except BaseException:
            shutil.rmtree(path, ignore_errors=True)
            raise
        self.path, self._lock = path, f
        return path

    @contextlib.contextmanager
    def active(self) -> Iterator[Path]:
        """Within: ``TMPDIR`` (inherited by every process started) is this directory, and
        :func:`run_temp_dir` returns it."""
        import tempfile

        assert self.path is not None, "create() first"
        tempfile.gettempdir()  # cached now: this process's own temp dir stays where it was
        old = os.environ.get("TMPDIR")
        os.environ["TMPDIR"] = str(self.path)
        outer, _Temp.active = _Temp.active, self
        try:
            yield self.path
        finally:
            _Temp.active = outer
            if old is None:
                os.environ.pop("TMPDIR", None)
            else:
                os.environ["TMPDIR"] = old

    def also_remove(self, path: Path | str) -> None:
        """Note a directory of this run made outside it (a short path for unix sockets, this
        process's multiprocessing temp dir): removed with it by the watchdog or a sweep when
        the run dies; the run itself removes its own."""
        if self.path is not None:
            with open(self.path / TEMP_ALSO, "a") as f:
                f.write(f"{path}\n")

    def remove(self) -> None:
        """Delete the directory; drop the lock."""
        if self.path is not None:
            remove_temp_dir(self.path, listed=False)
            self.path = None
        if self._lock is not None:
            self._lock.close()
            self._lock = None


class _Temp:
    active: RunTemp | None = None


def lock_temp_dir(path: Path, token: str = "") -> IO[str]:
    """Mark ``path`` (named :data:`TEMP_PREFIX`...) as a temp directory that
    :func:`sweep_temp_dirs` removes once its owner is gone: a :data:`TEMP_LOCK` file saying who
    holds it, ``flock``ed by this process for as long as the returned file stays open (the
    kernel drops the lock when the process dies, however it dies; a child it forks shares the
    open file, and the lock, until it exits). The file appears already locked, by a rename, so
    a sweep never sees it unlocked while its owner lives."""
    import fcntl

    new = path / (TEMP_LOCK + ".new")
    f = open(new, "w")  # noqa: SIM115 - held by the caller until it removes the directory
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        f.write(_holder(token))
        f.flush()
        os.rename(new, path / TEMP_LOCK)
    except BaseException:
        f.close()
        raise
    return f


def run_temp_dir() -> Path | None:
    """The temp directory of the run going on in this process (None outside a run)."""
    return _Temp.active.path if _Temp.active is not None else None


def note_outside_temp(path: Path | str) -> None:
    """Have ``path`` removed with the current run's temp directory if the run dies (no-op
    outside a run): :meth:`RunTemp.also_remove`."""
    if _Temp.active is not None:
        _Temp.active.also_remove(path)


def remove_temp_dir(path: Path, listed: bool = True) -> None:
    """Delete a run's temp directory, and with ``listed`` (its run died) the directories it
    lists in :data:`TEMP_ALSO`."""
    import shutil

    if listed:
        with contextlib.suppress(OSError):
            for line in (path / TEMP_ALSO).read_text().splitlines():
                if line.strip():
                    shutil.rmtree(line.strip(), ignore_errors=True)
    shutil.rmtree(path, ignore_errors=True)


def temp_base() -> str:
    """Where a run's temp directory goes: the system temp dir, or ``/tmp`` where that would
    make its path longer than :data:`TEMP_MAX_CHARS`."""
    import tempfile

    base = tempfile.gettempdir()
    if len(base) + len(TEMP_PREFIX) + 9 > TEMP_MAX_CHARS and os.path.isdir("/tmp") \
            and os.access("/tmp", os.W_OK | os.X_OK):
        return "/tmp"
    return base


def temp_dirs(base: str | None = None) -> list[tuple[Path, dict[str, Any]]]:
    """Every run temp directory in ``base`` (default: the system temp dir and
    :func:`temp_base`) with what its lock file says (pid, token)."""
    import tempfile

    roots = [base] if base else list(dict.fromkeys([tempfile.gettempdir(), temp_base()]))
    found = []
    for lock in (lk for root in roots for lk in Path(root).glob(f"{TEMP_PREFIX}*/{TEMP_LOCK}")):
        try:
            info = dict(json.loads(lock.read_text()))
        except (OSError, ValueError):
            info = {}
        found.append((lock.parent, info))
    return found


def sweep_temp_dirs(base: str | None = None) -> list[Path]:
    """Remove the temp directories of runs that are gone (their lock is free and no process
    carries their token): the ones a run's watchdog could not remove (it was killed too), and
    those of clusters started outside a run whose process died without removing them
    (:class:`~research.schedulers.cluster.OwnedDir`, :func:`lock_temp_dir`). Only directories at
    least :data:`SWEEP_MIN_AGE_S` old. Returns those removed."""
    import fcntl

    removed = []
    for path, info in temp_dirs(base):
        try:
            if path.stat().st_uid != os.getuid() or \
                    time.time() - (path / TEMP_LOCK).stat().st_mtime < SWEEP_MIN_AGE_S:
                continue
            with open(path / TEMP_LOCK) as f:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    continue  # its run (or a process it forked) still lives
                if info.get("token") and processes_with_token(str(info["token"])):
                    continue  # its watchdog is still stopping them
                if not info.get("token") and _used_by_a_process(path):
                    continue  # a cluster's: its servers may outlive their parent a while
                remove_temp_dir(path)
                removed.append(path)
        except OSError:
            continue
    return removed


def _used_by_a_process(path: Path) -> bool:
    """Whether a live process (of this user) works in ``path`` or has it as its ``TMPDIR``:
    a cluster started outside a run carries no token, and those of its processes that do not
    die with their parent (Parsl's worker pool, started in the background, waits for its
    heartbeats to time out) still use its directory for a while after their parent is gone."""
    inside = str(path)
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):
            if proc.uids().real != os.getuid():
                continue
            tmp = proc.environ().get("TMPDIR", "")
            if any(v == inside or v.startswith(inside + os.sep) for v in (tmp, proc.cwd())):
                return True
    return False


def stop_orphans(token: str) -> list[str]:
    """Stop the processes of this run (they carry ``token``) that are no longer this process's
    descendants, and say so on stderr; their descriptions.

    Run when the run's clusters have been shut down: whatever carries the token and has left
    this process's tree by then (re-parented to init when its own parent exited: a server's
    helper still exiting when a cluster start was cut short by a signal) was missed by the
    shutdown and would outlive the run. Descendants are left to their owners: a
    ``multiprocessing`` forkserver or resource tracker serves this process after the run.
    """
    me = os.getpid()
    mine = set()
    for p in processes_with_token(token, {me}):  # each one's ancestry read now, not before
        with contextlib.suppress(psutil.Error):
            if any(a.pid == me for a in p.parents()):
                mine.add(p.pid)
    stopped = kill_token_processes(token, exclude=mine)
    if stopped:
        print(f"research: stopped {len(stopped)} process(es) of this run that its shutdown "
              f"missed: {'; '.join(stopped)}", file=sys.stderr)
    return stopped


@contextlib.contextmanager
def run_scope(out: Path | None = None, wait: bool = False) -> Iterator[str]:
    """Everything a command that starts processes needs to leave nothing behind; yields the
    run token.

    - the token, in the environment of every process started within (restored after);
    - with ``out``, the results directory's lock (:class:`DirectoryBusy`, or wait for it)
      and the run noted in it for ``research clean``;
    - a private temp directory (:class:`RunTemp`), after a sweep of those of runs gone;
    - a watchdog (:mod:`research.watchdog`) that stops the token's processes and removes the
      temp directory if this process dies without cleaning up, and at the end
      :func:`stop_orphans` for what the shutdown missed;
    - SIGTERM and SIGHUP raise :class:`Interrupted`, like Ctrl-C, so ``with`` blocks shut
      their clusters down.
    """
    from . import watchdog

    had_token = TOKEN_ENV in os.environ
    token = run_token()
    lock = RunLock(out, token) if out is not None else None
    try:
        if lock is not None and out is not None:
            lock.acquire(wait)
            record_run(out, token)
        sweep_temp_dirs()
        temp = RunTemp(token)
        try:
            path = temp.create()
            # This process's own multiprocessing temp dir (a forkserver's socket) stays where
            # it is (a notebook goes on using it after the run); gone if the run dies. Not in a
            # multiprocessing child: there it is the parent's, which lives on.
            import multiprocessing
            from multiprocessing.util import get_temp_dir

            if multiprocessing.parent_process() is None:
                temp.also_remove(get_temp_dir())
            dog = watchdog.start(token, path)
            try:
                with temp.active(), stop_signals():
                    yield token
            finally:
                try:
                    stop_orphans(token)
                finally:
                    watchdog.stop(dog)
        finally:
            temp.remove()
    finally:
        if lock is not None:
            lock.release()
        if not had_token:
            os.environ.pop(TOKEN_ENV, None)


__all__ = [
    "LOCK_NAME", "RUNS_NAME", "STOP_SIGNALS", "TEMP_ALSO", "TEMP_LOCK", "TEMP_MAX_CHARS",
    "TEMP_PREFIX", "TOKEN_ENV", "DirectoryBusy", "Interrupted", "RunLock", "RunTemp", "critical",
    "init_worker", "kill_token_processes", "known_tokens", "lock_temp_dir", "note_outside_temp",
    "pid_alive", "processes_with_token", "record_run", "remove_temp_dir", "run_scope",
    "run_temp_dir", "run_token", "set_pdeathsig", "stop_signals", "stop_orphans",
    "sweep_temp_dirs", "temp_base", "temp_dirs",
]
