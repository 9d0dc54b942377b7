"""Metadata a lab supplies beside its recordings: subject.yaml and session.yaml.

Each file is looked up from the recording folder upwards to the data root; the nearest one
wins, so a ``subject.yaml`` in a mouse's folder serves all its recordings and one inside a
recording folder overrides it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from miniscope_assets.errors import MiniscopeInputError

SUBJECT_FILE = "subject.yaml"
SESSION_FILE = "session.yaml"
PROCESSING_RESULTS_FILE = "processing_results.yaml"
USER_FILES = (SUBJECT_FILE, SESSION_FILE)

SUBJECT_FIELDS = {
    "subject_id", "species", "sex", "age", "date_of_birth", "genotype", "strain", "description", "weight",
}
SESSION_FIELDS = {
    "session_id", "session_description", "experimenter", "lab", "institution", "experiment_description",
    "keywords", "location", "indicator", "excitation_lambda", "emission_lambda", "um_per_pixel",
    "imaging_plane_description", "timezone",
}


def read_yaml_mapping(path: Path, allowed: set[str] | None = None) -> dict:
    """A YAML file holding one mapping; unknown keys are an error naming them."""
    try:
        value = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise MiniscopeInputError(path, f"cannot be parsed: {error}") from error
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise MiniscopeInputError(path, "expected a mapping of field: value")
    if allowed is not None:
        unknown = sorted(set(value) - allowed)
        if unknown:
            raise MiniscopeInputError(
                path, f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}"
            )
    return value


def find_upwards(data_root: Path, recording_folder: Path, name: str) -> Path | None:
    """The nearest ``name`` from the recording folder up to (and including) the data root."""
    root = data_root.resolve()
    folder = recording_folder.resolve()
    while True:
        candidate = folder / name
        if candidate.is_file():
            return candidate
        if folder == root or folder.parent == folder:
            return None
        folder = folder.parent


@dataclass(frozen=True)
class UserMetadata:
    subject: dict = field(default_factory=dict)
    session: dict = field(default_factory=dict)
    subject_file: str | None = None  # relative to the data root
    session_file: str | None = None


def load_user_metadata(data_root: str | Path, recording_dir: str | Path) -> UserMetadata:
    """subject.yaml and session.yaml for a recording (empty where none is found)."""
    root = Path(data_root)
    folder = root / recording_dir
    subject_path = find_upwards(root, folder, SUBJECT_FILE)
    session_path = find_upwards(root, folder, SESSION_FILE)
    subject = read_yaml_mapping(subject_path, SUBJECT_FIELDS) if subject_path else {}
    session = read_yaml_mapping(session_path, SESSION_FIELDS) if session_path else {}
    if subject and "subject_id" not in subject:
        raise MiniscopeInputError(subject_path, "missing 'subject_id'")
    if "timezone" in session:
        _zone(session_path, session["timezone"])
    return UserMetadata(
        subject=subject,
        session=session,
        subject_file=os.path.relpath(subject_path, root) if subject_path else None,
        session_file=os.path.relpath(session_path, root) if session_path else None,
    )


def _zone(path: Path | None, name) -> ZoneInfo:
    try:
        return ZoneInfo(str(name))
    except (ZoneInfoNotFoundError, ValueError):
        raise MiniscopeInputError(path or SESSION_FILE, f"'timezone' {name!r} is not an IANA time zone name "
                                  "such as America/Los_Angeles") from None


def acquisition_zone(user: "UserMetadata") -> ZoneInfo | None:
    """The acquisition PC's time zone (session.yaml ``timezone``), if the lab states it."""
    name = user.session.get("timezone")
    return None if name is None else _zone(Path(user.session_file) if user.session_file else None, name)


def results_dir_from_recording(data_root: str | Path, recording_dir: str, paramset_name: str) -> Path | None:
    """Folder of existing results for ``paramset_name`` named in the recording's
    processing_results.yaml (``paramset name: folder relative to the recording``), if any."""
    folder = Path(data_root) / recording_dir
    path = folder / PROCESSING_RESULTS_FILE
    if not path.is_file():
        return None
    mapping = read_yaml_mapping(path)
    if paramset_name not in mapping:
        return None
    return folder / str(mapping[paramset_name])
