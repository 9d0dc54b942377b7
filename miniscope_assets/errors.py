"""Errors raised for bad user input; each names the offending file and the problem."""

from __future__ import annotations

from pathlib import Path


class MiniscopeInputError(ValueError):
    """A user-supplied file or folder cannot be used.

    The message always starts with the path, so a lab can find the file at once.
    """

    def __init__(self, path: str | Path, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class ParameterError(ValueError):
    """Processing parameters are invalid (unknown keys, wrong types or ranges)."""
