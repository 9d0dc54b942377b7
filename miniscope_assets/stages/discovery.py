"""Finding new, complete recording folders and planning the runs they need.

A folder is a complete recording when it holds the files its acquisition software writes:
V4: metaData.json, timeStamps.csv and numbered AVIs (0.avi, ...); V3: msCam*.avi and
timestamp.dat. A folder is only picked up once its listing (names, sizes, modification
times) is unchanged between two scans, so a recording still being copied is left alone.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from miniscope_assets.errors import MiniscopeInputError
from miniscope_assets.io import miniscope_v3 as v3
from miniscope_assets.io import miniscope_v4 as v4
from miniscope_assets.stages.workspace import Workspace


def _is_v4_device_folder(folder: Path, names: set[str]) -> bool:
    if not ({v4.METADATA_FILE, v4.TIMESTAMPS_FILE} <= names):
        return False
    if not any(n.lower().endswith(".avi") and n[:-4].isdigit() for n in names):
        return False
    try:
        device_type = v4.read_json(folder / v4.METADATA_FILE).get("deviceType")
    except MiniscopeInputError:
        return True  # still a recording; reading it will report the broken file
    return device_type is None or str(device_type).lower().startswith("miniscope")


def _is_v3_folder(names: set[str]) -> bool:
    return v3.TIMESTAMP_FILE in names and any(v3.MOVIE_PATTERN.match(n) for n in names)


def find_recordings(data_root: str | Path, exclude: tuple[Path, ...] = ()) -> list[str]:
    """Complete recording folders under ``data_root``, relative to it, sorted."""
    root = Path(data_root)
    excluded = {p.resolve() for p in exclude}
    found = []
    for current, dirs, files in os.walk(root):
        here = Path(current)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and (here / d).resolve() not in excluded)
        names = set(files)
        if _is_v4_device_folder(here, names) or _is_v3_folder(names):
            found.append(here.relative_to(root).as_posix())
    return sorted(found)


def folder_signature(folder: str | Path) -> str:
    """Hash of the folder's file names, sizes and modification times."""
    entries = []
    for path in sorted(Path(folder).iterdir()):
        if path.is_file():
            stat = path.stat()
            entries.append((path.name, stat.st_size, stat.st_mtime_ns))
    return hashlib.sha1(json.dumps(entries).encode()).hexdigest()


@dataclass
class RunPlan:
    """What one sensor tick should do."""

    recording_keys: list[str] = field(default_factory=list)  # every submitted recording
    paramsets: list[str] = field(default_factory=list)  # every paramset in the file
    runs: list[tuple[str, str, str]] = field(default_factory=list)  # (recording key, paramset, run key)
    waiting: list[str] = field(default_factory=list)  # folders seen changing or for the first time
    cursor: dict = field(default_factory=dict)


def plan_runs(workspace: Workspace, cursor: dict | None) -> RunPlan:
    """Compare the data root and paramset file with the cursor; plan partition adds and runs.

    Cursor: ``pending`` (folder -> signature seen last tick), ``done`` (folder -> signature
    submitted), ``paramsets`` (name -> hash submitted). A paramset whose params changed gets
    new runs for every recording.
    """
    cursor = cursor or {}
    pending: dict[str, str] = dict(cursor.get("pending", {}))
    done: dict[str, str] = dict(cursor.get("done", {}))
    known_paramsets: dict[str, str] = dict(cursor.get("paramsets", {}))
    paramsets = {p.name: p.param_hash for p in workspace.paramsets()}
    plan = RunPlan()
    exclude = (workspace.output_root, workspace.work_root)
    stable = []
    for folder in find_recordings(workspace.data_root, exclude=exclude):
        signature = folder_signature(workspace.data_root / folder)
        if folder in done:
            continue
        if pending.get(folder) == signature:
            stable.append((folder, signature))
            pending.pop(folder)
        else:
            pending[folder] = signature
            plan.waiting.append(folder)
    changed_paramsets = [name for name, h in paramsets.items() if known_paramsets.get(name) != h]
    old_recordings = [(workspace.registry.register(f), sig) for f, sig in done.items()]
    for folder, signature in stable:
        key = workspace.registry.register(folder)
        done[folder] = signature
        for name, param_hash in paramsets.items():
            plan.runs.append((key, name, f"{key}|{name}|{param_hash[:8]}|{signature[:8]}"))
    for key, signature in old_recordings:
        for name in changed_paramsets:
            plan.runs.append((key, name, f"{key}|{name}|{paramsets[name][:8]}|{signature[:8]}"))
    plan.recording_keys = [workspace.registry.register(f) for f in done]
    plan.paramsets = list(paramsets)
    plan.cursor = {"pending": pending, "done": done, "paramsets": paramsets}
    return plan
