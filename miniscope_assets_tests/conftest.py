"""Shared fixtures: real Miniscope folders (AVI via OpenCV, JSON, CSV) in temporary folders."""

from __future__ import annotations

import contextlib
import os
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import scipy.sparse
import yaml

from miniscope_assets.engine import validate_params
from miniscope_assets.io.miniscope_writer import write_v3_recording, write_v4_recording
from miniscope_assets.results import ProcessingResult, SummaryImages
from miniscope_assets.stages.workspace import Workspace

SUBJECT = {"subject_id": "mouse-7", "species": "Mus musculus", "sex": "F", "age": "P90D",
           "description": "C57BL/6J, GCaMP6f"}
SESSION = {"institution": "UCLA", "lab": "Aharoni", "experimenter": "Doe, Jane", "location": "CA1",
           "indicator": "GCaMP6f", "keywords": ["miniscope"], "experiment_description": "open field",
           "session_description": "open field exploration"}


H, W, T, FPS = 12, 16, 400, 20.0  # the small processing result's frame and trace sizes


def disk(cy, cx, radius=2.5):
    yy, xx = np.mgrid[:H, :W]
    return np.clip(1.0 - np.hypot(yy - cy, xx - cx) / radius, 0, None).ravel()


def small_result():
    """A built-in engine result of 4 masks (ids 10-13) on a 12x16 px, 400-frame movie."""
    rng = np.random.default_rng(0)
    footprints = scipy.sparse.csc_matrix(np.stack([disk(3, 3), disk(3, 5), disk(8, 12), disk(9, 4)], axis=1))
    fluorescence = (5 + rng.gamma(1.0, 2.0, (4, T))).astype(np.float32)
    return ProcessingResult(
        method="builtin", package_version="test", params=validate_params({}),
        creation_time=datetime.now(timezone.utc), frame_shape=(H, W), nframes=T,
        summary=SummaryImages(mean=np.zeros((H, W))),
        mask_ids=np.array([10, 11, 12, 13]), footprints=footprints,
        mask_types=np.array(["soma", "dendrite", "soma", "unknown"], dtype=object),
        mask_confidence=np.array([0.9, 0.4, 0.8, np.nan]),
        fluorescence=fluorescence, neuropil=np.full((4, T), 3.0, np.float32),
        denoised=fluorescence.copy(), dff=np.zeros((4, T), np.float32), spikes=np.zeros((4, T), np.float32),
    )


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


@contextlib.contextmanager
def tmpfs(mount: Path, options: str) -> Iterator[Path]:
    """A tmpfs mounted at ``mount`` (e.g. ``size=400k`` or ``ro``) for the block; the test is
    skipped where this machine does not allow mounting (needs root and mount permission)."""
    mount.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root and mount permission)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def service_or_skip(name: str, available: bool, how: str) -> None:
    """Skip a test whose server (PostgreSQL, Slurm) is not running; fail instead where
    MINISCOPE_REQUIRE_SERVICES=1 (set by .ci/run, which starts them)."""
    if available:
        return
    message = f"needs a running {name}: {how}"
    if os.environ.get("MINISCOPE_REQUIRE_SERVICES") == "1":
        pytest.fail(message)
    pytest.skip(message)
