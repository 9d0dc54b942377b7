"""Recording partition keys and output ownership.

Dagster partition keys must stay within ``[A-Za-z0-9_.-]``; recording folders are paths
relative to the data root. A recording's key is its identity, subject.device.session (e.g.
``mouse1.Miniscope.20240517T103000``): short, and with the part that tells a subject's sessions
apart at the end, where the UI's middle truncation keeps it. A key that is taken (by a retired
recording), or longer than ``MAX_KEY_LENGTH``, ends in a hash of the folder. The registry (one
JSON file, locked while changed) maps keys back to folders and records, for each live
recording, its identity and the output files it owns. A folder whose identity or outputs are already owned by another live
recording is refused with an error naming both folders. A recording whose folder is gone is
retired: its key resolves no more, and its outputs may pass to a new owner (a renamed folder).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import re
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

from miniscope_assets.atomic import translated_write_errors, write_text_atomic
from miniscope_assets.errors import MiniscopeInputError
from miniscope_assets.layout import RecordingIdentity

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
MAX_KEY_LENGTH = 96
FORMAT = 2


def readable_key(identity: RecordingIdentity) -> str:
    """The partition key of a recording with ``identity`` (not yet made unique)."""
    parts = (identity.subject, identity.device, identity.session)
    return ".".join(_UNSAFE.sub("_", part).strip(".") or "unknown" for part in parts)


def _hashed(key: str, folder: str) -> str:
    suffix = hashlib.sha1(folder.encode()).hexdigest()[:8]
    return f"{key[: MAX_KEY_LENGTH - 9]}-{suffix}"


class RecordingRegistry:
    """Recording keys, their folders, identities and owned outputs; live or retired."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def _read(self) -> dict[str, dict]:
        if not self.path.is_file():
            return {}
        try:
            document = json.loads(self.path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise MiniscopeInputError(self.path, f"recording registry is not valid JSON: {error}") from error
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise MiniscopeInputError(
                self.path, f"recording registry is not in format {FORMAT}; move it away and let the sensor rebuild it"
            )
        return document["recordings"]

    def _write(self, entries: dict[str, dict]) -> None:
        write_text_atomic(self.path, json.dumps({"format": FORMAT, "recordings": entries}, indent=1, sort_keys=True))

    @contextlib.contextmanager
    def _locked(self):
        with translated_write_errors(self.path.parent):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            lock = open(self.path.with_suffix(".lock"), "w")
        with lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def live(self) -> dict[str, str]:
        """Live keys and their folders."""
        return {key: entry["folder"] for key, entry in self._read().items() if not entry.get("retired")}

    def register(self, recording_dir: str, identity: RecordingIdentity, outputs: list[str]) -> str:
        """The key of ``recording_dir``, registered (or updated) as the owner of ``outputs``.

        Raises MiniscopeInputError naming both folders when a live recording of another folder
        has the same identity or owns one of ``outputs``.
        """
        recording_dir = Path(recording_dir).as_posix()
        with self._locked():
            entries = self._read()
            _check_owner(entries, recording_dir, identity, set(outputs))
            key = next((k for k, e in entries.items() if e["folder"] == recording_dir), None)
            if key is None:
                key = readable_key(identity)
                if key in entries or len(key) > MAX_KEY_LENGTH:
                    key = _hashed(key, recording_dir)
            previous = entries.get(key, {})
            entries[key] = {
                "folder": recording_dir,
                "identity": asdict(identity),
                "outputs": sorted(outputs),
                "retired": None,
                "generation": previous.get("generation", 0) + (1 if previous.get("retired") else 0),
            }
            self._write(entries)
            return key

    def key_for(self, recording_dir: str) -> str:
        """The live key of ``recording_dir``."""
        for key, folder in self.live().items():
            if folder == recording_dir:
                return key
        raise MiniscopeInputError(recording_dir, "is not a registered recording; run it first")

    def retire(self, key: str) -> None:
        """Mark ``key`` retired (its folder is gone): it resolves no more and owns nothing."""
        with self._locked():
            entries = self._read()
            if key in entries and not entries[key].get("retired"):
                entries[key]["retired"] = datetime.now(timezone.utc).isoformat()
                self._write(entries)

    def entry(self, key: str) -> dict:
        """The live entry of ``key``."""
        entries = self._read()
        if key not in entries:
            raise MiniscopeInputError(
                self.path,
                f"no recording registered under partition key {key!r}; let the sensor find the "
                "recording or run `miniscope-assets run <recording folder>`",
            )
        entry = entries[key]
        if entry.get("retired"):
            raise MiniscopeInputError(
                self.path,
                f"recording {key!r} was retired on {entry['retired']} (its folder {entry['folder']} is gone); "
                "nothing is written for it any more",
            )
        return entry

    def folder(self, key: str) -> str:
        """The folder of the live recording ``key``."""
        return self.entry(key)["folder"]

    def identity(self, key: str) -> RecordingIdentity:
        return RecordingIdentity(**self.entry(key)["identity"])

    def identities(self) -> dict[str, RecordingIdentity]:
        """Identity of every live key (one read of the registry)."""
        return {key: RecordingIdentity(**entry["identity"]) for key, entry in self._read().items()
                if not entry.get("retired")}


def _check_owner(entries: dict, recording_dir: str, identity: RecordingIdentity, outputs: set[str]) -> None:
    for entry in entries.values():
        if entry.get("retired") or entry["folder"] == recording_dir:
            continue
        if RecordingIdentity(**entry["identity"]) == identity:
            problem = f"has the same {identity.describe()} as {entry['folder']}"
        elif outputs & set(entry["outputs"]):
            problem = f"would write {sorted(outputs & set(entry['outputs']))[0]}, which belongs to {entry['folder']}"
        else:
            continue
        raise MiniscopeInputError(
            recording_dir,
            f"{problem}: two recordings cannot share NWB files; give one of them its own "
            "subject.yaml / session.yaml (session_id) or device name",
        )
