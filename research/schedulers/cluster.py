"""Cluster plumbing every cluster adapter shares: processes, work directory, worker counts.

A cluster adapter (ipyparallel, Dask, Ray, and the ones to come) should be its library calls and
its options; what is the same for all of them lives here:

- :class:`ClusterProcesses`: the processes a cluster started, found as descendants spawned since
  a snapshot taken at start (or remembered explicitly), and reaped at shutdown: a bounded wait,
  then kill.
- :func:`start_process` / :func:`stop_process` / :func:`stop_processes`: a server or worker
  command of our own in its own process group, stopped (and its whole group killed if need be)
  at shutdown; optionally killed by the kernel when the harness dies (:func:`die_with_parent`).
- :class:`OwnedDir`: cluster state in the run's work dir, or in an own temp dir removed at
  shutdown.
- :func:`check_worker_count`: an existing cluster must have the configured number of workers;
  the error names both numbers.
- :func:`timeout_error`: the one text of a trial that ran out of time.
- :class:`ClusterScheduler`: a :class:`~research.schedulers.base.Scheduler` that wires the above
  into start and shutdown; subclasses implement ``_start_cluster``/``_stop_cluster``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from abc import abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, ClassVar

import psutil

from .. import guard
from ..errors import ParamError
from .base import Scheduler, timeout_error

#: The only address servers we start listen on.
LOOPBACK = "127.0.0.1"
#: A cluster's own dir serves as its processes' ``TMPDIR`` (what they leave there goes with it)
#: only when its path is at most this long: unix socket paths under it (multiprocessing's
#: listeners add about 32 characters) must stay within 107 bytes.
TMPDIR_MAX_CHARS = 72
#: Standard-library helper processes that live as long as the interpreter by design: never a
#: cluster's, never reaped, never a leak.
HELPER_PROCESSES = ("multiprocessing.resource_tracker", "multiprocessing.forkserver")
#: Seconds a stopped cluster's processes get to exit before they are killed.
EXIT_WAIT_S = 10.0
#: Seconds to wait for killed processes to be gone.
KILL_WAIT_S = 5.0


def usable_as_tmpdir(path: str | Path | None) -> bool:
    """Whether a cluster's own dir can be its processes' ``TMPDIR``: set, and short enough
    (:data:`TMPDIR_MAX_CHARS`) for the unix sockets made under it."""
    return bool(path) and len(str(path)) <= TMPDIR_MAX_CHARS


def check_worker_count(n_workers: int, found: int, cluster: str, unit: str = "worker(s)",
                       hint: str = "", counted: str | None = None) -> None:
    """Raise :class:`ParamError` on ``n_workers`` when an existing cluster has ``found``
    workers instead; the message names both numbers.

    ``cluster`` says which one (e.g. ``"the Dask scheduler at tcp://..."``), ``unit`` what was
    counted, ``hint`` (optional) how to fix it; ``counted`` replaces ``"<found> <unit>"`` when
    the count needs more words (``"2 worker process(es) with 4 thread(s) in all"``).
    """
    if found != n_workers:
        what = counted if counted is not None else f"{found} {unit}"
        raise ParamError("n_workers", f"{cluster} has {what}, but the sweep asks for "
                                      f"n_workers = {n_workers}" + (f" ({hint})" if hint else ""))


def cmdline(proc: psutil.Process) -> str:
    """A process's command line as one string ("" once it is gone)."""
    try:
        return " ".join(proc.cmdline())
    except psutil.Error:
        return ""


def is_helper(cmd: str) -> bool:
    """Whether a command line is one of the standard library's :data:`HELPER_PROCESSES`."""
    return any(h in cmd for h in HELPER_PROCESSES)


def is_running(proc: psutil.Process, reap: bool = False) -> bool:
    """Whether ``proc`` still runs. A zombie counts as gone: it has exited (with ``reap``, a
    zombie that is our child is reaped; an orphan's is reaped by init)."""
    try:
        if proc.status() == psutil.STATUS_ZOMBIE:
            if reap:
                with contextlib.suppress(psutil.Error, ChildProcessError):
                    proc.wait(0)
            return False
        return proc.is_running()
    except psutil.Error:
        return False


def wait_gone(procs: Iterable[psutil.Process], timeout_s: float,
              reap: bool = False) -> list[psutil.Process]:
    """Wait until every process in ``procs`` is gone, at most ``timeout_s``; those left."""
    deadline = time.monotonic() + timeout_s
    left = list(procs)
    while True:
        left = [p for p in left if is_running(p, reap)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def reap(procs: Iterable[psutil.Process], timeout_s: float = EXIT_WAIT_S,
         reap_zombies: bool = False) -> list[psutil.Process]:
    """Wait (bounded) until ``procs`` exit; kill the ones still there. Returns those killed."""
    left = wait_gone(procs, timeout_s, reap_zombies)
    for p in left:
        with contextlib.suppress(psutil.Error):
            p.kill()
    wait_gone(left, KILL_WAIT_S, reap_zombies)
    return left


def descendants() -> list[psutil.Process]:
    """This process's children, grandchildren..., now."""
    return psutil.Process().children(recursive=True)


class ClusterProcesses:
    """The processes one cluster started, to wait for (and kill) at shutdown.

    :meth:`snapshot` at start notes the descendants that already exist (another cluster's, the
    test runner's); :meth:`collect` then adds every descendant spawned since whose command line
    ``match`` accepts (all but :data:`HELPER_PROCESSES` when ``match`` is None). Processes the
    library names itself (a launcher's process, a worker's pid) are added with :meth:`add`, and
    processes that are not descendants at all (re-parented to init) with :meth:`add_matching`.
    :meth:`reap` collects once more and reaps them all. Call :meth:`collect` before stopping the
    cluster too: a process that has exited by then leaves its children orphaned, not ours.
    """

    def __init__(self, match: Callable[[str], bool] | None = None,
                 reap_zombies: bool = True) -> None:
        self.match = match
        self.reap_zombies = reap_zombies
        self.before: set[int] = set()
        self.known: dict[int, psutil.Process] = {}

    def snapshot(self) -> None:
        """Note the descendants that exist now: they are not this cluster's."""
        self.before = {p.pid for p in descendants()}

    def add(self, procs: Iterable[psutil.Process | int], recursive: bool = False) -> None:
        """Remember processes (or pids) of this cluster, with their children if ``recursive``."""
        for p in procs:
            with contextlib.suppress(psutil.Error):
                proc = p if isinstance(p, psutil.Process) else psutil.Process(p)
                for q in [proc, *(proc.children(recursive=True) if recursive else [])]:
                    self.known.setdefault(q.pid, q)

    def add_matching(self, match: Callable[[str], bool]) -> list[psutil.Process]:
        """Remember every process on the machine (not this one) whose command line ``match``
        accepts, with its descendants; returns those found now.

        For a cluster process that is not a descendant: one a launcher ran in the background
        and that was re-parented to init (Parsl's worker pool). ``match`` must be specific to
        this cluster (its run dir, a token of its own), as it sees every user's processes.
        """
        found: list[psutil.Process] = []
        me = os.getpid()
        for p in psutil.process_iter():
            if p.pid == me:
                continue
            cmd = cmdline(p)
            if cmd and not is_helper(cmd) and match(cmd):
                found.append(p)
        self.add(found, recursive=True)
        return found

    def collect(self) -> list[psutil.Process]:
        """Add the matching descendants spawned since :meth:`snapshot`; all known processes."""
        for p in descendants():
            if p.pid in self.before or p.pid in self.known:
                continue
            cmd = cmdline(p)
            if cmd and not is_helper(cmd) and (self.match is None or self.match(cmd)):
                self.known[p.pid] = p
        return list(self.known.values())

    def reap(self, timeout_s: float = EXIT_WAIT_S) -> list[psutil.Process]:
        """Wait (bounded) until every process of the cluster is gone, killing the ones left;
        forget them. Returns those killed."""
        try:
            return reap(self.collect(), timeout_s, self.reap_zombies)
        finally:
            self.known = {}


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port free on ``host`` now (for a server that cannot pick its own)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _prctl() -> Callable[..., int] | None:
    """libc's ``prctl`` (Linux), looked up once in the parent: a child between fork and exec
    should only call it, not load libraries."""
    if sys.platform != "linux":
        return None
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _prctl()
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Have the kernel SIGKILL this process when the thread that started it exits (Linux
    ``PR_SET_PDEATHSIG``; a no-op elsewhere). Kept across ``exec``.

    A server or worker then goes with the harness even when the harness is killed outright
    (SIGKILL runs no handler). As ``preexec_fn`` (:func:`start_process`'s ``die_with_parent``)
    it makes one libc call between fork and exec. The signal follows the starting *thread*:
    start such processes from a thread that lives as long as the cluster (the main thread).
    """
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)


_set_pdeathsig = die_with_parent  # start_process's option of the same name shadows it


def start_process(cmd: Sequence[str], *, env: Mapping[str, str] | None = None,
                  cwd: Path | None = None, log: Path | None = None,
                  die_with_parent: bool = False) -> subprocess.Popen[bytes]:
    """Start a server or worker command in its own process group (session).

    The caller puts the loopback address (:data:`LOOPBACK`) into ``cmd``. ``env`` is added to
    this process's environment; output goes to ``log`` (appended) or is dropped. Stop it with
    :func:`stop_process`: its own group means the whole tree can be killed at once, and a
    Ctrl-C in the terminal reaches the harness only, which then shuts it down in order. With
    ``die_with_parent`` the kernel kills it if the harness dies first (:func:`die_with_parent`).
    """
    out: IO[bytes] | int = subprocess.DEVNULL
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        out = open(log, "ab")  # noqa: SIM115 - handed to the child, closed below
    preexec = _set_pdeathsig if die_with_parent and _PRCTL is not None else None
    try:
        return subprocess.Popen(list(cmd), cwd=cwd, env={**os.environ, **(env or {})},
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, preexec_fn=preexec)  # noqa: PLW1509
    finally:
        if not isinstance(out, int):
            out.close()


def stop_process(proc: subprocess.Popen[Any], timeout_s: float = EXIT_WAIT_S,
                 sig: int = signal.SIGTERM) -> None:
    """Stop a process from :func:`start_process` and everything in its group: ``sig``, a
    bounded wait, then SIGKILL to the group."""
    try:
        group = os.getpgid(proc.pid)
    except ProcessLookupError:
        group = proc.pid  # it has exited; its group id was its pid
    members = []
    with contextlib.suppress(psutil.Error):
        parent = psutil.Process(proc.pid)
        members = [parent, *parent.children(recursive=True)]
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, sig)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout_s)
    left = wait_gone(members, 0.5 if proc.returncode is not None else 0.0)
    if proc.returncode is None or left:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGKILL)
        reap(left, 0.0)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(KILL_WAIT_S)


def stop_processes(procs: Sequence[subprocess.Popen[Any]], timeout_s: float = EXIT_WAIT_S,
                   sig: int = signal.SIGTERM) -> None:
    """:func:`stop_process` for several at once: every group gets ``sig`` first, so they exit
    in parallel within one ``timeout_s``."""
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, sig)  # its own session: group id = pid
    deadline = time.monotonic() + timeout_s
    for proc in procs:
        stop_process(proc, max(0.0, deadline - time.monotonic()), sig)


class OwnedDir:
    """Where a cluster keeps its state: ``<workdir>/<name>`` when the run gave a work dir
    (removed with it), else an own temp dir, removed by :meth:`remove` (and, inside a run,
    with the run's temp dir when the run is killed; outside one, by the next run's sweep or
    ``research clean`` once this process is gone: :func:`guard.lock_temp_dir`)."""

    def __init__(self) -> None:
        self.path: Path | None = None
        self._own: Path | None = None
        self._lock: IO[str] | None = None

    def make(self, workdir: Path | None, name: str, prefix: str = "research-",
             max_chars: int | None = None, tmp_root: str | None = None) -> Path:
        """Create and return the directory. ``max_chars`` bounds the path's length (unix
        socket paths are short): a longer one gives an own temp dir in ``tmp_root``."""
        self.remove()  # a second make(): the first own dir would be left behind
        if workdir is not None:
            path = Path(workdir).resolve() / name
            if max_chars is None or len(str(path)) <= max_chars:
                path.mkdir(parents=True, exist_ok=True)
                self.path = path
                return path
        # Else in the run's temp dir (research.guard.RunTemp), so a killed run's watchdog
        # removes it; in ``tmp_root`` if that path would be too long, noted for removal.
        run_dir = guard.run_temp_dir()
        base = tmp_root
        if run_dir is not None and (max_chars is None
                                    or len(str(run_dir)) + len(prefix) + 9 <= max_chars):
            base = str(run_dir)
        self._own = self.path = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
        if run_dir is not None and not self.path.is_relative_to(run_dir):
            guard.note_outside_temp(self.path)
        elif run_dir is None and prefix.startswith(guard.TEMP_PREFIX):
            # Outside a run (a notebook's `with Celery(2) as s`) nothing else would remove it
            # if this process is killed: locked while it lives, swept once it is gone (where
            # there is flock: not on Windows, where the directory is only removed by remove()).
            try:
                self._lock = guard.lock_temp_dir(self.path)
            except ImportError:
                pass
            except BaseException:
                self.remove()
                raise
        return self.path

    @property
    def owned(self) -> bool:
        """Whether the directory is our own temp dir (removed at shutdown)."""
        return self._own is not None

    def remove(self) -> None:
        """Remove the directory if it is our own temp dir; safe to call twice."""
        if self._own is not None:
            shutil.rmtree(self._own, ignore_errors=True)
            self._own = None
        if self._lock is not None:
            self._lock.close()
            self._lock = None


class ClusterScheduler(Scheduler):
    """A scheduler that starts a local cluster or connects to an existing one.

    Subclasses implement :meth:`_start_cluster` (connect when :attr:`existing`, else start)
    and :meth:`_stop_cluster` (close the client; stop what was started). Around them this class
    snapshots the child processes at start and, for a cluster it started, reaps every process
    spawned since at shutdown (bounded wait, then kill), and removes its own temp dir, on
    success, error and Ctrl-C alike.
    """

    slow_start = True
    #: Options that select an existing cluster (any one set: connect, never start or stop).
    existing_keys: ClassVar[tuple[str, ...]] = ()
    #: Seconds the cluster's processes get to exit at shutdown before they are killed.
    exit_wait_s: ClassVar[float] = EXIT_WAIT_S
    #: Reap zombie children while waiting (off when the library waits for its own children).
    reap_zombies: ClassVar[bool] = True

    def __init__(self, n_workers: int, options: Mapping[str, Any] | None = None,
                 workdir: Path | None = None) -> None:
        super().__init__(n_workers, options, workdir)
        self.procs = ClusterProcesses(self.match_process, self.reap_zombies)
        self.dir = OwnedDir()

    @property
    def existing(self) -> bool:
        """Whether the options select an existing cluster."""
        return any(self.options.get(k) for k in self.existing_keys)

    def match_process(self, cmd: str) -> bool:
        """Whether a descendant spawned since start (by its command line) is this cluster's;
        by default any but the standard library's helpers."""
        return True

    def _start(self) -> None:
        self.procs.snapshot()
        self._start_cluster()

    def _shutdown(self) -> None:
        try:
            if not self.existing:
                self.procs.collect()  # before stopping: children of exiting parents are orphaned
            self._stop_cluster()
        finally:
            try:
                if not self.existing:  # even if starting failed half-way
                    self.procs.reap(self.exit_wait_s)
            finally:
                self.dir.remove()

    @abstractmethod
    def _start_cluster(self) -> None:
        """Connect to the existing cluster (:attr:`existing`) or start one; wait for workers."""

    @abstractmethod
    def _stop_cluster(self) -> None:
        """Close the client; stop the cluster if this adapter started it. Processes left are
        reaped afterwards."""

    def info(self) -> dict[str, Any]:
        out = super().info()
        out["existing_cluster"] = self.existing
        return out


__all__ = [
    "EXIT_WAIT_S", "HELPER_PROCESSES", "LOOPBACK", "TMPDIR_MAX_CHARS", "ClusterProcesses",
    "ClusterScheduler", "OwnedDir", "check_worker_count", "die_with_parent", "free_port", "reap",
    "start_process", "stop_process", "stop_processes", "timeout_error", "usable_as_tmpdir",
    "wait_gone",
]
