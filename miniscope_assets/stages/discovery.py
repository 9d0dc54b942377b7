"""Finding recordings, telling when one is complete, and planning the runs each needs.

A folder is a recording when it holds the files its acquisition software writes (V4:
metaData.json, timeStamps.csv and numbered AVIs; V3: msCam*.avi and timestamp.dat). It is
processed only when

1. **quiet**: its content fingerprint (names, sizes and modification times of its files,
   hidden partial files of a copy tool included, and of the metadata files that apply) has
   stayed the same for the quiet period (``MINISCOPE_QUIET_PERIOD_S``, default 300 s: an
   acquisition PC copying over a network pauses between files), as seen by consecutive scans;
2. **complete**: the frames in its AVIs and the rows of its timestamp file agree within
   ``MAX_FRAME_MISMATCH`` (a recording still missing a movie file, or a timestamp file cut
   short, waits; ``miniscope-assets run`` processes such a folder anyway, with the documented
   rule that keeps the frames both sides have);
3. **not yet done**: the fingerprint is its data version. A recording whose raw NWB was made
   from another fingerprint gets a ``recording_info`` run; once that is materialized, every
   paramset whose final stage was not materialized from this fingerprint and paramset hash gets
   a processing run. What the CLI already did is not repeated.

A registered recording whose folder is gone is retired (its partition removed, its outputs
free for a new owner such as the renamed folder).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from miniscope_assets.errors import MiniscopeInputError
from miniscope_assets.io import miniscope_v3 as v3
from miniscope_assets.io import miniscope_v4 as v4
from miniscope_assets.io.recording import RecordingInfo
from miniscope_assets.settings import seconds_from_env
from miniscope_assets.stages.workspace import Workspace, recording_fingerprint

QUIET_PERIOD_ENV = "MINISCOPE_QUIET_PERIOD_S"
DEFAULT_QUIET_PERIOD_S = 300.0
MAX_FRAME_MISMATCH = 2


def quiet_period_from_env() -> float:
    return seconds_from_env(QUIET_PERIOD_ENV, DEFAULT_QUIET_PERIOD_S, low=0)


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
    """Recording folders under ``data_root``, relative to it, sorted."""
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


def incompleteness(info: RecordingInfo) -> str | None:
    """Why a recording looks incomplete (frames and timestamp rows disagree), or None."""
    frames, rows = info.cross_check["avi_frames"], info.cross_check["timestamp_rows"]
    if abs(frames - rows) > MAX_FRAME_MISMATCH:
        return f"{frames} frames in the AVI files but {rows} timestamp rows"
    return None


@dataclass(frozen=True)
class Versions:
    """What the Dagster instance holds for a recording: the data version of its latest
    recording_info, and (fingerprint, param hash) of its latest final stage per paramset."""

    raw: Callable[[str], str | None]
    processed: Callable[[str, str], tuple[str | None, str | None]]
    finished: Callable[[str, str], str | None] = lambda key, paramset: None  # stamp of the final stage


@dataclass
class RunPlan:
    """What one sensor tick should do."""

    live_recordings: list[str] = field(default_factory=list)  # keys that should be partitions
    retired: list[str] = field(default_factory=list)  # keys whose folder is gone
    paramsets: list[str] = field(default_factory=list)
    observations: list[tuple[str, str]] = field(default_factory=list)  # (key, fingerprint)
    raw_runs: list[tuple[str, str]] = field(default_factory=list)  # (key, run key)
    processing_runs: list[tuple[str, str, str]] = field(default_factory=list)  # (key, paramset, run key)
    subjects: list[str] = field(default_factory=list)  # subjects with a registration to run
    registration_runs: list[tuple[str, str, str]] = field(default_factory=list)  # (subject, paramset, run key)
    waiting: list[str] = field(default_factory=list)  # "folder: reason"
    errors: list[str] = field(default_factory=list)
    cursor: dict = field(default_factory=dict)


def plan_runs(workspace: Workspace, cursor: dict | None, versions: Versions, now: float,
              quiet_period: float) -> RunPlan:
    """Compare the data root with the cursor and the instance; plan partitions, runs, retirements.

    Cursor: folder -> {fingerprint, since (first seen with it), status, key}.
    """
    previous: dict[str, dict] = dict((cursor or {}).get("folders", {}))
    paramsets = workspace.paramsets()
    plan = RunPlan(paramsets=[p.name for p in paramsets])
    registry = workspace.registry
    live = registry.live()
    folders: dict[str, dict] = {}
    for folder in find_recordings(workspace.data_root, exclude=(workspace.output_root, workspace.work_root)):
        try:
            fingerprint = recording_fingerprint(workspace.data_root, folder)
        except OSError as error:  # a file vanished or is unreadable mid-scan: look again next tick
            plan.waiting.append(f"{folder}: cannot be listed ({error.strerror}: {error.filename})")
            folders[folder] = previous.get(folder, {"fingerprint": "", "since": now})
            continue
        state = previous.get(folder)
        if state is None or state["fingerprint"] != fingerprint:
            folders[folder] = {"fingerprint": fingerprint, "since": now}
            plan.waiting.append(f"{folder}: new or changed")
            continue
        folders[folder] = state
        if now - state["since"] < quiet_period:
            plan.waiting.append(f"{folder}: unchanged for {now - state['since']:.0f} of {quiet_period:.0f} s")
            continue
        if "status" in state:  # already read with this fingerprint: incomplete or refused
            (plan.errors if state["status"].startswith("error") else plan.waiting).append(f"{folder}: {state['status']}")
            continue
        if state.get("key") not in live:
            state.pop("key", None)
            _register(workspace, folder, state, plan)
            if "key" not in state:
                continue
            live[state["key"]] = folder
        _plan_recording(state, paramsets, registry.entry(state["key"])["generation"], versions, plan)
    for key, folder in live.items():
        if folder not in folders and not (workspace.data_root / folder).is_dir():
            registry.retire(key)
            plan.retired.append(key)
    plan.live_recordings = sorted(registry.live())
    _plan_registrations(workspace, paramsets, versions, plan)
    plan.cursor = {"folders": folders}
    return plan


def _plan_registrations(workspace: Workspace, paramsets, versions: Versions, plan: RunPlan) -> None:
    """A cross-session registration per subject x paramset with two or more finished sessions,
    requested again whenever one of them finishes anew (its final stage's stamp changes)."""
    pending = {key for key, _ in plan.raw_runs} | {(key, name) for key, name, _ in plan.processing_runs}
    by_subject: dict[str, list[str]] = {}
    for key, identity in sorted(workspace.registry.identities().items()):
        by_subject.setdefault(identity.subject, []).append(key)
    for subject, keys in sorted(by_subject.items()):
        for paramset in paramsets:
            done = [(key, versions.finished(key, paramset.name)) for key in keys
                    if key not in pending and (key, paramset.name) not in pending]
            done = [(key, stamp) for key, stamp in done if stamp is not None]
            if len(done) >= 2:
                digest = hashlib.sha256(json.dumps(done).encode()).hexdigest()[:16]
                plan.subjects.append(subject)
                plan.registration_runs.append((subject, paramset.name, f"register|{subject}|{paramset.name}|{digest}"))


def _register(workspace: Workspace, folder: str, state: dict, plan: RunPlan) -> None:
    """Read a quiet folder; register it when it is complete and its identity is its own."""
    try:
        record = workspace.read(folder)
        missing = incompleteness(record.info)
        if missing is not None:
            state["status"] = f"incomplete: {missing}"
            plan.waiting.append(f"{folder}: {state['status']}")
            return
        state["key"] = workspace.register(folder, record.identity)
    except MiniscopeInputError as error:
        state["status"] = f"error: {error}"
        plan.errors.append(f"{folder}: {state['status']}")
    except Exception as error:  # one unreadable folder must not stop the scan of the others
        state["status"] = f"error: cannot be read ({type(error).__name__}: {error})"
        plan.errors.append(f"{folder}: {state['status']}")


def _plan_recording(state: dict, paramsets, generation: int, versions: Versions, plan: RunPlan) -> None:
    key, fingerprint = state["key"], state["fingerprint"]
    if versions.raw(key) != fingerprint:
        if state.get("observed") != fingerprint:
            plan.observations.append((key, fingerprint))
            state["observed"] = fingerprint
        plan.raw_runs.append((key, f"raw|{key}|{fingerprint[:16]}|g{generation}"))
        return
    for paramset in paramsets:
        if versions.processed(key, paramset.name) != (fingerprint, paramset.param_hash):
            run_key = f"{key}|{paramset.name}|{paramset.param_hash[:8]}|{fingerprint[:16]}|g{generation}"
            plan.processing_runs.append((key, paramset.name, run_key))
