"""Shared fixtures: real schedulers, and a check that nothing they started outlives them."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from procs import scheduler_children, wait_no_children

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def no_leaks() -> Iterator[None]:
    """Fail the test if it leaves a child process behind."""
    before = {p.pid for p in scheduler_children()}
    yield
    left = [d for d in wait_no_children() if int(d.split()[0]) not in before]
    assert not left, f"child processes left behind: {left}"


@pytest.fixture
def repo() -> Path:
    """The repository root."""
    return REPO


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A private temp dir with a short path (``/tmp/rt-XXXXXXXX``), for a run's ``TMPDIR``: a
    run's own temp dir goes inside it only when the path stays short (unix sockets live
    there; research.guard.temp_base), and pytest's own paths are long."""
    path = Path(tempfile.mkdtemp(prefix="rt-", dir="/tmp" if Path("/tmp").is_dir() else None))
    yield path
    shutil.rmtree(path, ignore_errors=True)
