"""Where a partition's files live.

- NWB files (DANDI layout) under the output root:
  ``<output>/sub-<subject>/sub-<subject>_ses-<session>_desc-<paramset>_ophys.nwb``, or
  ``<output>/<recording key>/<recording key>_desc-<paramset>_ophys.nwb`` when no subject is known.
- Intermediate files under the work root: ``<work>/<recording key>/<paramset>/``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

_DANDI_UNSAFE = re.compile(r"[^A-Za-z0-9-]+")


def dandi_label(value: str) -> str:
    """A DANDI file-name label: letters, digits and hyphens only."""
    return _DANDI_UNSAFE.sub("-", str(value)).strip("-") or "unknown"


def nwb_relative_path(
    recording_key: str,
    paramset: str,
    subject_id: str | None,
    session_id: str | None,
    start_time: datetime,
) -> Path:
    """NWB path relative to the output root, in DANDI's naming scheme where a subject is known."""
    desc = dandi_label(paramset)
    if subject_id:
        subject = dandi_label(subject_id)
        session = dandi_label(session_id or start_time.strftime("%Y%m%dT%H%M%S"))
        return Path(f"sub-{subject}") / f"sub-{subject}_ses-{session}_desc-{desc}_ophys.nwb"
    return Path(recording_key) / f"{recording_key}_desc-{desc}_ophys.nwb"


@dataclass(frozen=True)
class PartitionFiles:
    """Intermediate files of one recording x paramset partition."""

    work_dir: Path

    @classmethod
    def for_partition(cls, work_root: str | Path, recording_key: str, paramset: str) -> "PartitionFiles":
        return cls(Path(work_root) / recording_key / paramset)

    @property
    def recording_info(self) -> Path:
        return self.work_dir / "recording_info.json"

    @property
    def nwb_pointer(self) -> Path:
        """JSON naming the partition's NWB file (written by recording_info)."""
        return self.work_dir / "nwb_file.json"

    @property
    def processing_dir(self) -> Path:
        return self.work_dir / "processing"

    @property
    def processing_record(self) -> Path:
        return self.work_dir / "processing.json"

    @property
    def curation_input(self) -> Path:
        """The user's curation file for this partition (see miniscope_assets.curation)."""
        return self.work_dir / "curation.yaml"

    @property
    def curation_log(self) -> Path:
        return self.work_dir / "curation_log.json"

    def curated_results(self, curation_id: int) -> Path:
        return self.work_dir / "curation" / f"curation_{curation_id}.h5"

    @property
    def figures_dir(self) -> Path:
        return self.work_dir / "figures"
