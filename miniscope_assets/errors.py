"""Errors for problems a lab can fix; each names the offending file or folder and the problem."""

from __future__ import annotations

from pathlib import Path


class MiniscopeError(ValueError):
    """A file or folder cannot be used. The message starts with the path, so a lab finds it at once."""

    def __init__(self, path: str | Path, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class MiniscopeInputError(MiniscopeError):
    """A user-supplied file or folder (recording, metadata, settings) is malformed or inconsistent."""


class MiniscopeOutputError(MiniscopeError):
    """An output cannot be written (full disk, no permission) or would collide with another owner's."""


class ParameterError(ValueError):
    """Processing parameters are invalid (unknown keys, wrong types or ranges)."""
