"""The folders a deployment works in; one recording, and one recording x paramset, within them."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from miniscope_assets.atomic import write_text_atomic
from miniscope_assets.errors import MiniscopeInputError
from miniscope_assets.io import miniscope_v4 as v4
from miniscope_assets.io.paramsets import ParamSet, find_paramset, load_paramsets
from miniscope_assets.io.recording import RecordingInfo, RecordingRecord, device_folders, read_recording
from miniscope_assets.io.user_metadata import (
    USER_FILES,
    UserMetadata,
    acquisition_zone,
    find_upwards,
    load_user_metadata,
)
from miniscope_assets.layout import (
    PartitionFiles,
    RecordingFiles,
    RecordingIdentity,
    SubjectFiles,
    cross_session_id,
    dandi_label,
    nwb_file,
)
from miniscope_assets.registry import RecordingRegistry

Progress = Callable[[str, float], None]
MAX_NAME_BYTES = 200  # file systems allow 255; temporary names add up to ~50


def no_progress(stage: str, fraction: float) -> None:
    """Progress sink that ignores updates."""


def recording_identity(info: RecordingInfo, user: UserMetadata) -> RecordingIdentity:
    """Subject, session and device of a recording.

    Subject: subject.yaml's subject_id, else the acquisition software's animal name, else the
    recording's top folder. Session: session.yaml's session_id, else the start time stated by
    the metadata (``YYYYMMDDTHHMMSS``), else the folder names between subject and device; never
    file modification times. Device: the device name in the metadata.
    """
    parts = Path(info.recording_dir).parts
    device = str(info.device.get("name") or "Miniscope")
    subject = user.subject.get("subject_id") or info.session.get("animal_name")
    if not subject:
        subject = parts[0] if len(parts) > 1 else "unknown"
    session = user.session.get("session_id")
    if not session and not info.start_time_from_files:
        session = info.recording_datetime.strftime("%Y%m%dT%H%M%S")
    if not session:
        inner = [p for p in parts[1:] if p != device] if len(parts) > 1 else list(parts)
        session = "-".join(inner) or parts[-1]
    return RecordingIdentity(subject=str(subject), session=str(session), device=device)


def _stat_entry(path: Path, label: str) -> list:
    stat = path.stat()
    return [label, stat.st_size, stat.st_mtime_ns]


def recording_fingerprint(data_root: Path, recording_dir: str) -> str:
    """Content fingerprint of a recording: names, sizes and modification times of its files
    (hidden ones too: a copy in progress), of the session's behaviour-camera files, the session
    metaData.json above a device folder and the subject/session YAML files that apply. It is the
    recording's Dagster data version."""
    folder = data_root / recording_dir
    entries = [_stat_entry(p, p.name) for p in sorted(folder.iterdir()) if p.is_file()]
    if (folder.parent / v4.METADATA_FILE).is_file() and folder.resolve() != data_root.resolve():
        for sibling in sorted(folder.parent.iterdir()):  # the session's other devices (behaviour cameras)
            if sibling != folder and (sibling / v4.METADATA_FILE).is_file():
                entries += [_stat_entry(p, f"../{sibling.name}/{p.name}") for p in sorted(sibling.iterdir())
                            if p.is_file()]
    extra = [folder.parent / v4.METADATA_FILE] + [find_upwards(data_root, folder, name) for name in USER_FILES]
    for path in extra:
        if path is not None and path.is_file():
            entries.append(_stat_entry(path, os.path.relpath(path, folder)))
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()


@dataclass(frozen=True)
class Workspace:
    """Data root (recordings), output root (NWB files), work root (intermediate files)."""

    data_root: Path
    output_root: Path
    work_root: Path
    paramsets_file: Path | None = None

    @property
    def registry(self) -> RecordingRegistry:
        return RecordingRegistry(self.work_root / "recordings.json")

    def paramsets(self) -> list[ParamSet]:
        return load_paramsets(self.paramsets_file)

    def paramset(self, name: str) -> ParamSet:
        return find_paramset(self.paramsets(), name, self.paramsets_file)

    def relative_recording_dir(self, folder: str | Path) -> str:
        """``folder`` (absolute, or relative to the data root) as a path relative to the data root."""
        folder = Path(folder)
        absolute = folder if folder.is_absolute() else self.data_root / folder
        try:
            relative = absolute.resolve().relative_to(self.data_root.resolve())
        except ValueError:
            raise MiniscopeInputError(folder, f"is not inside the data root {self.data_root}") from None
        return relative.as_posix()

    def recording_dirs(self, folder: str | Path) -> list[str]:
        """The recordings in ``folder``: itself, or each Miniscope device folder of a session folder."""
        relative = self.relative_recording_dir(folder)
        return [self.relative_recording_dir(d) for d in device_folders(self.data_root / relative)]

    def read(self, recording_dir: str) -> RecordingRecord:
        """Read a recording folder (movie files probed, timestamps parsed) and identify it."""
        fingerprint = recording_fingerprint(self.data_root, recording_dir)
        user = load_user_metadata(self.data_root, recording_dir)
        info = read_recording(self.data_root, recording_dir, acquisition_zone(user))
        return RecordingRecord(info, user, recording_identity(info, user), fingerprint)

    def outputs(self, identity: RecordingIdentity) -> list[str]:
        """The NWB files (relative to the output root) a recording of ``identity`` owns."""
        return [identity.raw_nwb().as_posix()] + [identity.processed_nwb(p.name).as_posix() for p in self.paramsets()]

    def register(self, recording_dir: str, identity: RecordingIdentity) -> str:
        """Register a recording as the owner of its outputs; return its partition key."""
        outputs = self.outputs(identity)
        part = max((part for output in outputs for part in Path(output).parts), key=lambda p: len(p.encode()))
        if len(part.encode()) > MAX_NAME_BYTES:
            raise MiniscopeInputError(
                self.data_root / recording_dir, f"output name '{part[:40]}...{part[-24:]}' is {len(part.encode())} bytes, "
                f"more than the {MAX_NAME_BYTES} file systems leave room for: shorten the subject id, "
                "session id or device name")
        return self.registry.register(recording_dir, identity, outputs)

    def recording(self, key: str) -> "Recording":
        return Recording(self, key, self.registry.folder(key), RecordingFiles.for_recording(self.work_root, key))

    def partition(self, recording_key: str, paramset_name: str) -> "Partition":
        return Partition(
            recording=self.recording(recording_key),
            paramset=self.paramset(paramset_name),
            files=PartitionFiles.for_partition(self.work_root, recording_key, paramset_name),
        )


    def subject(self, subject: str, paramset_name: str) -> "SubjectPartition":
        return SubjectPartition(self, dandi_label(subject), self.paramset(paramset_name),
                                SubjectFiles.for_subject(self.work_root, subject, paramset_name))


@dataclass(frozen=True)
class Recording:
    """One registered recording: its folder, its intermediate files and its raw NWB file."""

    workspace: Workspace
    key: str
    folder: str
    files: RecordingFiles

    @property
    def identity(self) -> RecordingIdentity:
        return self.workspace.registry.identity(self.key)

    def raw_nwb_path(self) -> Path:
        return self.workspace.output_root / self.identity.raw_nwb()

    def record(self) -> RecordingRecord:
        """What the recording_info stage stored."""
        path = self.files.record
        if not path.is_file():
            raise MiniscopeInputError(path, "missing: materialize recording_info for this recording first")
        return RecordingRecord.from_json(path.read_text())

    def save_record(self, record: RecordingRecord) -> None:
        write_text_atomic(self.files.record, record.to_json())


@dataclass(frozen=True)
class Partition:
    """One recording x paramset: where its inputs are and where its outputs go."""

    recording: Recording
    paramset: ParamSet
    files: PartitionFiles

    @property
    def workspace(self) -> Workspace:
        return self.recording.workspace

    @property
    def recording_key(self) -> str:
        return self.recording.key

    @property
    def recording_dir(self) -> str:
        return self.recording.folder

    def recording_info(self) -> RecordingInfo:
        return self.recording.record().info

    def nwb_path(self) -> Path:
        """The partition's processed NWB file."""
        return self.workspace.output_root / self.recording.identity.processed_nwb(self.paramset.name)


@dataclass(frozen=True)
class SubjectPartition:
    """One subject x paramset: the subject's processed sessions and their registration."""

    workspace: Workspace
    subject: str
    paramset: ParamSet
    files: SubjectFiles

    def sessions(self) -> list[Partition]:
        """The subject's live recordings processed with the paramset (processed NWB file written)."""
        partitions = [self.workspace.partition(key, self.paramset.name)
                      for key, identity in sorted(self.workspace.registry.identities().items())
                      if identity.subject == self.subject]
        return [p for p in partitions if p.files.curation_log.is_file() and p.nwb_path().is_file()]

    def nwb_path(self) -> Path:
        return self.workspace.output_root / nwb_file(self.subject, cross_session_id(self.paramset.name))


@dataclass
class CheckOutcome:
    """Result of one asset check."""

    name: str
    passed: bool
    description: str
    metadata: dict = field(default_factory=dict)


@dataclass
class StageReport:
    """What a stage produced: catalog metadata (small scalars and paths), check outcomes and,
    for recording_info, the data version (the recording's fingerprint)."""

    metadata: dict
    checks: list[CheckOutcome] = field(default_factory=list)
    data_version: str | None = None

    def to_json(self) -> dict:
        """Plain JSON (paths tagged), for a report sent from another process."""
        return {"metadata": _tag_paths(self.metadata), "data_version": self.data_version,
                "checks": [{"name": c.name, "passed": c.passed, "description": c.description,
                            "metadata": _tag_paths(c.metadata)} for c in self.checks]}

    @classmethod
    def from_json(cls, document: dict) -> "StageReport":
        return cls(metadata=_untag_paths(document["metadata"]), data_version=document["data_version"],
                   checks=[CheckOutcome(c["name"], c["passed"], c["description"], _untag_paths(c["metadata"]))
                           for c in document["checks"]])


_PATH_TAG = "__path__"


def _tag_paths(metadata: dict) -> dict:
    """Paths tagged, numpy scalars as Python numbers."""
    return {key: {_PATH_TAG: str(value)} if isinstance(value, Path) else getattr(value, "item", lambda: value)()
            for key, value in metadata.items()}


def _untag_paths(metadata: dict) -> dict:
    return {key: Path(value[_PATH_TAG]) if isinstance(value, dict) and _PATH_TAG in value else value
            for key, value in metadata.items()}


class ProgressLogger:
    """A Progress sink that logs every ``step`` of completion to ``log`` (anything with .info)."""

    def __init__(self, log, step: float = 0.1):
        self.log = log
        self.step = step
        self.last: dict[str, float] = {}

    def __call__(self, stage: str, fraction: float) -> None:
        last = self.last.get(stage, -1.0)
        if fraction < last:  # the stage started again
            last = -1.0
        if fraction - last >= self.step or (fraction >= 1.0 > last):
            self.last[stage] = fraction
            self.log.info(f"{stage}: {100 * fraction:.0f}%")
