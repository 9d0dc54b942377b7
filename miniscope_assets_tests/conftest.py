"""Shared fixtures: real Miniscope folders (AVI via OpenCV, JSON, CSV) in temporary folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from miniscope_assets.io.miniscope_writer import write_v3_recording, write_v4_recording
from miniscope_assets.stages.workspace import Workspace

SUBJECT = {"subject_id": "mouse-7", "species": "Mus musculus", "sex": "F", "age": "P90D",
           "description": "C57BL/6J, GCaMP6f"}
SESSION = {"institution": "UCLA", "lab": "Aharoni", "experimenter": "Doe, Jane", "location": "CA1",
           "indicator": "GCaMP6f", "keywords": ["miniscope"], "experiment_description": "open field",
           "session_description": "open field exploration"}


def movie(nframes: int = 120, height: int = 40, width: int = 56, seed: int = 0) -> np.ndarray:
    """A uint8 movie with structure (moving blob on a gradient) plus noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    frames = np.empty((nframes, height, width), dtype=np.uint8)
    for t in range(nframes):
        cy, cx = height / 2 + 8 * np.sin(t / 9), width / 2 + 10 * np.cos(t / 13)
        blob = 120 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 30)
        frames[t] = np.clip(40 + xx + blob + rng.normal(0, 4, (height, width)), 0, 255).astype(np.uint8)
    return frames


def write_user_metadata(folder: Path, subject: dict | None = SUBJECT, session: dict | None = SESSION) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    if subject is not None:
        (folder / "subject.yaml").write_text(yaml.safe_dump(subject))
    if session is not None:
        (folder / "session.yaml").write_text(yaml.safe_dump(session))


@pytest.fixture
def data_root(tmp_path) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    return root


@pytest.fixture
def workspace(tmp_path, data_root) -> Workspace:
    return Workspace(
        data_root=data_root,
        output_root=tmp_path / "nwb",
        work_root=tmp_path / "work",
        paramsets_file=data_root / "paramsets.yaml",
    )


@pytest.fixture
def v4_frames() -> np.ndarray:
    return movie()


@pytest.fixture
def v4_recording(data_root, v4_frames) -> str:
    """A per-device V4 session of mouse-7 (with subject.yaml/session.yaml); returns the device folder."""
    write_user_metadata(data_root / "mouse-7")
    write_v4_recording(data_root / "mouse-7" / "2024_05_17" / "10_30_00", list(v4_frames),
                       frames_per_file=50, per_device_layout=True, animal_name="mouse-7")
    return "mouse-7/2024_05_17/10_30_00/Miniscope"


@pytest.fixture
def v3_recording(data_root) -> str:
    frames = movie(seed=3)
    write_v3_recording(data_root / "6_10_2020" / "H13_M41_S35", list(frames), frames_per_file=50,
                       behavior_frames=200)
    write_user_metadata(data_root / "6_10_2020")
    return "6_10_2020/H13_M41_S35"
