"""The folders a deployment works in, and one recording x paramset partition within them."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from miniscope_assets.errors import MiniscopeInputError
from miniscope_assets.io.paramsets import ParamSet, find_paramset, load_paramsets
from miniscope_assets.io.recording import RecordingInfo
from miniscope_assets.layout import PartitionFiles
from miniscope_assets.registry import RecordingRegistry

Progress = Callable[[str, float], None]


def no_progress(stage: str, fraction: float) -> None:
    """Progress sink that ignores updates."""


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

    def register_recording(self, folder: str | Path) -> str:
        """Register a recording folder and return its partition key."""
        return self.registry.register(self.relative_recording_dir(folder))

    def partition(self, recording_key: str, paramset_name: str) -> "Partition":
        return Partition(
            workspace=self,
            recording_key=recording_key,
            recording_dir=self.registry.folder(recording_key),
            paramset=self.paramset(paramset_name),
            files=PartitionFiles.for_partition(self.work_root, recording_key, paramset_name),
        )


@dataclass(frozen=True)
class Partition:
    """One recording x paramset: where its inputs are and where its outputs go."""

    workspace: Workspace
    recording_key: str
    recording_dir: str
    paramset: ParamSet
    files: PartitionFiles

    def recording_info(self) -> RecordingInfo:
        """The RecordingInfo stored by the recording_info stage."""
        path = self.files.recording_info
        if not path.is_file():
            raise MiniscopeInputError(path, "missing: materialize recording_info for this partition first")
        return RecordingInfo.from_json(path.read_text())

    def nwb_path(self) -> Path:
        """The partition's NWB file (chosen by the recording_info stage)."""
        pointer = self.files.nwb_pointer
        if not pointer.is_file():
            raise MiniscopeInputError(pointer, "missing: materialize recording_info for this partition first")
        path = Path(json.loads(pointer.read_text())["nwb_path"])
        if not path.is_file():
            raise MiniscopeInputError(path, "NWB file is missing: re-materialize recording_info")
        return path


@dataclass
class CheckOutcome:
    """Result of one asset check."""

    name: str
    passed: bool
    description: str
    metadata: dict = field(default_factory=dict)


@dataclass
class StageReport:
    """What a stage produced: catalog metadata (small scalars and paths) and check outcomes."""

    metadata: dict
    checks: list[CheckOutcome] = field(default_factory=list)
