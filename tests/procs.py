"""Child-process checks shared by the tests: nothing a scheduler starts may outlive it."""

from __future__ import annotations

import contextlib
import time

import psutil

from research.schedulers import REGISTRY, get_scheduler
from research.schedulers.cluster import is_helper


def cluster_process_names() -> tuple[str, ...]:
    """Command-line marks of the processes the registered adapters start (for leak checks)."""
    names = dict.fromkeys(n for s in REGISTRY for n in get_scheduler(s).process_names)
    return tuple(names)


def scheduler_children() -> list[psutil.Process]:
    """Child processes of this test process, except the standard library's own helpers."""
    out = []
    for child in psutil.Process().children(recursive=True):
        try:
            cmd = " ".join(child.cmdline())
            if child.status() == psutil.STATUS_ZOMBIE or is_helper(cmd):
                continue
        except psutil.Error:
            continue
        out.append(child)
    return out


def wait_no_children(timeout_s: float = 15.0) -> list[str]:
    """Wait until no scheduler child process is left; return the ones still there."""
    deadline = time.monotonic() + timeout_s
    while True:
        left = scheduler_children()
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    desc = []
    for p in left:
        with contextlib.suppress(psutil.Error):
            desc.append(f"{p.pid} {' '.join(p.cmdline())[:120]}")
    return desc
