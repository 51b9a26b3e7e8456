"""Errors the harness reports to users."""

from __future__ import annotations


class ConfigError(ValueError):
    """Bad user input: names the file, the key and what is allowed."""

    def __init__(self, where: str, key: str, problem: str) -> None:
        self.where, self.key, self.problem = where, key, problem
        super().__init__(f"{where}: key '{key}': {problem}")


class ParamError(ValueError):
    """A bad workload or scheduler parameter, before the file it came from is known."""

    def __init__(self, key: str, problem: str) -> None:
        self.key, self.problem = key, problem
        super().__init__(f"key '{key}': {problem}")
