"""Who a recording is and where every output lives.

A recording is one imaging-device folder. Its identity is subject + session + device
(:class:`RecordingIdentity`); it names the NWB files, so two folders with one identity would
write the same files and are refused (see miniscope_assets.registry).

NWB files (DANDI layout, under the output root), exactly as ``dandi organize`` names them:

- raw, one per recording: ``sub-<subject>/sub-<subject>_ses-<session>-<device>_ophys.nwb``
- processed, one per recording x paramset:
  ``sub-<subject>/sub-<subject>_ses-<session>-<device>-<paramset>_ophys.nwb``

``dandi organize`` builds names from a file's subject_id and session_id only (it never uses a
``desc-`` entity for NWB files), so each file carries its own session_id: the device and the
paramset are part of it. Labels are sanitised with DANDI's own rule.

- cross-session registration, one per subject x paramset:
  ``sub-<subject>/sub-<subject>_ses-cross-session-<paramset>_ophys.nwb``

Intermediate files (under the work root): ``<work>/<recording key>/`` holds the recording's
record and the shared motion-correction cache; ``<work>/<recording key>/<paramset>/`` one
partition's results, curation files and figures; ``<work>/@subjects/<subject>/<paramset>/`` a
subject's registration state and figure (``@`` never occurs in a recording key).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path

_DANDI_UNSAFE = re.compile(r"[_*\\/<>:|\"'?%@;,.\s]")
MODALITY = "ophys"


def dandi_label(value: str) -> str:
    """``value`` as ``dandi organize`` writes it into a file name (its sanitising rule)."""
    return _DANDI_UNSAFE.sub("-", str(value)) or "unknown"


@dataclass(frozen=True)
class RecordingIdentity:
    """Subject, session and imaging device of a recording, as DANDI labels."""

    subject: str
    session: str
    device: str

    def __post_init__(self):
        for name, value in asdict(self).items():
            object.__setattr__(self, name, dandi_label(value))

    @property
    def raw_session_id(self) -> str:
        """session_id of the raw file (and the stem of every session_id of this recording)."""
        return f"{self.session}-{self.device}"

    def processed_session_id(self, paramset: str) -> str:
        return f"{self.raw_session_id}-{dandi_label(paramset)}"

    def raw_nwb(self) -> Path:
        """Raw NWB file relative to the output root."""
        return self._nwb(self.raw_session_id)

    def processed_nwb(self, paramset: str) -> Path:
        """Processed NWB file of ``paramset`` relative to the output root."""
        return self._nwb(self.processed_session_id(paramset))

    def _nwb(self, session_id: str) -> Path:
        return nwb_file(self.subject, session_id)

    def describe(self) -> str:
        return f"subject {self.subject}, session {self.session}, device {self.device}"


def nwb_file(subject: str, session_id: str) -> Path:
    """An NWB file relative to the output root, named as ``dandi organize`` names it."""
    return Path(f"sub-{subject}") / f"sub-{subject}_ses-{session_id}_{MODALITY}.nwb"


def cross_session_id(paramset: str) -> str:
    return f"cross-session-{dandi_label(paramset)}"


@dataclass(frozen=True)
class SubjectFiles:
    """Intermediate files of one subject x paramset registration."""

    work_dir: Path

    @classmethod
    def for_subject(cls, work_root: str | Path, subject: str, paramset: str) -> "SubjectFiles":
        return cls(Path(work_root) / "@subjects" / dandi_label(subject) / paramset)

    @property
    def state(self) -> Path:
        return self.work_dir / "registration.json"

    @property
    def figure(self) -> Path:
        return self.work_dir / "figures" / "registered_cells.png"


@dataclass(frozen=True)
class RecordingFiles:
    """Intermediate files of one recording (shared by its paramsets)."""

    work_dir: Path

    @classmethod
    def for_recording(cls, work_root: str | Path, recording_key: str) -> "RecordingFiles":
        return cls(Path(work_root) / recording_key)

    @property
    def record(self) -> Path:
        """RecordingInfo, user metadata, identity and fingerprint (written by recording_info)."""
        return self.work_dir / "recording.json"

    def motion_dir(self, motion_hash: str) -> Path:
        """Motion correction shared by every paramset with the same motion parameters."""
        return self.work_dir / "motion" / motion_hash[:16]


@dataclass(frozen=True)
class PartitionFiles:
    """Intermediate files of one recording x paramset partition."""

    work_dir: Path

    @classmethod
    def for_partition(cls, work_root: str | Path, recording_key: str, paramset: str) -> "PartitionFiles":
        return cls(Path(work_root) / recording_key / paramset)

    @property
    def processing_dir(self) -> Path:
        return self.work_dir / "processing"

    @property
    def processing_record(self) -> Path:
        return self.work_dir / "processing.json"

    @property
    def curation_input(self) -> Path:
        """The user's curation file for this partition (see miniscope_assets.stages.curation)."""
        return self.work_dir / "curation.yaml"

    @property
    def curation_log(self) -> Path:
        return self.work_dir / "curation_log.json"

    def curated_results(self, curation_id: int) -> Path:
        return self.work_dir / "curation" / f"curation_{curation_id}.h5"

    @property
    def figures_dir(self) -> Path:
        return self.work_dir / "figures"
