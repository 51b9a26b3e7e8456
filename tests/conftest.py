"""Shared fixtures: real schedulers, and a check that nothing they started outlives them."""

from __future__ import annotations

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
