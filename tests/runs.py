"""Running ``python -m research run`` as a real subprocess, marked with a run token, for the
signal and fault-injection tests."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import psutil

from research import schema
from research.guard import TOKEN_ENV, processes_with_token

REPO = Path(__file__).resolve().parent.parent


def write_cfg(path: Path, text: str) -> Path:
    """Write a config file (dedented) and return its path."""
    path.write_text(textwrap.dedent(text))
    return path


def start_run(cfg: Path, out: Path, *extra: str, token: str | None = None,
              tmpdir: Path | None = None) -> tuple[subprocess.Popen[str], str]:
    """Start a run in its own session with a fresh token; (process, token). With ``tmpdir``,
    that is its ``TMPDIR`` (made if missing), so a test can see what the run leaves there."""
    return start_cli(["run", str(cfg), "--out", str(out), "--no-progress", *extra], token=token,
                     tmpdir=tmpdir)


def start_cli(args: list[str], token: str | None = None, tmpdir: Path | None = None
              ) -> tuple[subprocess.Popen[str], str]:
    """Start ``python -m research ARGS`` like :func:`start_run`."""
    token = token or uuid.uuid4().hex
    env = {**os.environ, TOKEN_ENV: token}
    if tmpdir is not None:
        tmpdir.mkdir(parents=True, exist_ok=True)
        env["TMPDIR"] = str(tmpdir)
    proc = subprocess.Popen([sys.executable, "-m", "research", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    return proc, token


def signal_when(proc: subprocess.Popen[str], cond: Callable[[], bool], sig: int,
                wait_s: float = 120, exit_s: float = 60) -> tuple[str, list[psutil.Process]]:
    """Send ``sig`` to ``proc`` once ``cond()`` holds (within ``wait_s``) and wait for it to
    exit; (its stderr, its descendants just before the signal). Killed if it outlives the
    test."""
    try:
        wait_for(cond, wait_s, proc)
        kids = descendants(proc.pid)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=exit_s)
    finally:
        if proc.poll() is None:
            proc.kill()
    return err, kids


def left_in(path: Path, timeout_s: float) -> list[str]:
    """Wait up to ``timeout_s`` until the directory ``path`` is empty; what is left in it."""
    deadline = time.monotonic() + timeout_s
    while True:
        left = sorted(str(p.relative_to(path)) for p in path.rglob("*"))
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


def trial_files(out: Path) -> list[Path]:
    """The trial record files under ``out``."""
    return sorted(p for p in out.rglob("*.parquet") if schema.is_record_file(p))


def wait_for(cond: Callable[[], bool], timeout_s: float, proc: subprocess.Popen[str] | None = None
             ) -> None:
    """Wait until ``cond()``; fail after ``timeout_s`` or when ``proc`` exits first."""
    deadline = time.monotonic() + timeout_s
    while not cond():
        if proc is not None and proc.poll() is not None:
            err = proc.stderr.read() if proc.stderr else ""
            raise AssertionError(f"run exited early ({proc.returncode}): {err}")
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)


def left_alive(token: str, also: list[psutil.Process], timeout_s: float) -> list[str]:
    """Wait up to ``timeout_s`` until no process carries ``token`` and none of ``also``
    runs; the descriptions of those left (they are killed, so a failing test cleans up)."""
    deadline = time.monotonic() + timeout_s
    while True:
        procs = processes_with_token(token)
        for p in also:
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE and p not in procs:
                    procs.append(p)
            except psutil.Error:
                pass
        if not procs or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    desc = []
    for p in procs:
        try:
            desc.append(f"{p.pid} {' '.join(p.cmdline())[:100]}")
            p.kill()
        except psutil.Error:
            pass
    return desc


def descendants(pid: int) -> list[psutil.Process]:
    """The process tree under ``pid`` now."""
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []
