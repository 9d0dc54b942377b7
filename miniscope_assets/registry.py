"""Recording partition keys: safe, unique names for recording folders, reversible via a registry.

Dagster partition keys must stay within ``[A-Za-z0-9_.-]``; recording folders are paths
relative to the data root. ``mouse1/2024_05_17/10_30_00/Miniscope`` becomes
``mouse1--2024_05_17--10_30_00--Miniscope``; if two folders sanitize to the same key, the later
one gets a suffix from a hash of its path. The registry (a JSON file) maps keys back to folders.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import re
from pathlib import Path

from miniscope_assets.errors import MiniscopeInputError
from miniscope_assets.io.atomic import write_text_atomic

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def sanitize_key(recording_dir: str) -> str:
    """A readable partition key for a relative folder path (not yet made unique)."""
    parts = [p for p in Path(recording_dir).as_posix().split("/") if p and p != "."]
    key = "--".join(_UNSAFE.sub("_", part) for part in parts).strip(".")
    return key or "root"


class RecordingRegistry:
    """Two-way map between recording partition keys and recording folders."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def _read(self) -> dict[str, str]:
        if not self.path.is_file():
            return {}
        try:
            mapping = json.loads(self.path.read_text())
        except json.JSONDecodeError as error:
            raise MiniscopeInputError(self.path, f"recording registry is not valid JSON: {error}") from error
        return mapping

    @contextlib.contextmanager
    def _locked(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def items(self) -> dict[str, str]:
        """All registered keys and their folders."""
        return self._read()

    def register(self, recording_dir: str) -> str:
        """The key of ``recording_dir``, registering it first if it is new."""
        recording_dir = Path(recording_dir).as_posix()
        with self._locked():
            mapping = self._read()
            for key, folder in mapping.items():
                if folder == recording_dir:
                    return key
            key = sanitize_key(recording_dir)
            if key in mapping:
                key = f"{key}-{hashlib.sha1(recording_dir.encode()).hexdigest()[:8]}"
            mapping[key] = recording_dir
            write_text_atomic(self.path, json.dumps(mapping, indent=1, sort_keys=True))
            return key

    def folder(self, key: str) -> str:
        """The recording folder registered under ``key``."""
        mapping = self._read()
        if key not in mapping:
            raise MiniscopeInputError(
                self.path,
                f"no recording registered under partition key {key!r}; let the sensor find the "
                "recording or run `miniscope-assets run <recording folder>`",
            )
        return mapping[key]
