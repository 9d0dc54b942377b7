"""Row banding (offsets of whole sensor rows changing from frame to frame) is found where it is,
removed, and no longer hides cells; a movie without it is left as it is."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from miniscope_assets.engine import ArrayMovie, run_engine
from miniscope_assets.engine.banding import WithoutRowBanding, detect_row_banding, row_offsets
from miniscope_assets.simulation import Simulation, SimulationConfig, evaluate

WIRELESS = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "real" / "mio" / "wireless_corrupted.avi"


def _banded(frames: np.ndarray, counts: float, seed: int = 1) -> np.ndarray:
    offsets = np.random.default_rng(seed).normal(0, counts, (len(frames), frames.shape[1], 1))
    return np.clip(np.rint(frames.astype(np.float32) + offsets), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def simulated():
    simulation = Simulation(SimulationConfig(height=200, width=200, nframes=800, n_neurons=40, seed=5))
    return simulation, np.concatenate([chunk for _, chunk in simulation.iter_chunks(200)])


def test_banding_is_found_in_a_real_wireless_recording_and_removed():
    if not WIRELESS.is_file():
        pytest.skip(f"real wireless Miniscope AVI not found at {WIRELESS}")
    capture = cv2.VideoCapture(str(WIRELESS))
    frames = []
    while (frame := capture.read())[0]:
        frames.append(frame[1][..., 0])
    movie = ArrayMovie(np.stack(frames))
    found = detect_row_banding(movie, 100)
    assert found["banded"] and found["row_roughness"] > 3 * found["column_roughness"]
    cleaned = np.concatenate([chunk for _, chunk in WithoutRowBanding(movie).iter_chunks(25)])
    assert cleaned.dtype == np.uint8 and cleaned.shape == movie.frames.shape
    assert np.median(row_offsets(cleaned).std(axis=1)) < 0.3 * found["row_roughness"]


def test_a_movie_without_banding_is_not_called_banded(simulated):
    _, frames = simulated
    assert not detect_row_banding(ArrayMovie(frames), 100)["banded"]
    assert detect_row_banding(ArrayMovie(_banded(frames, 3.0)), 100)["banded"]


def test_cells_under_banding_are_found(simulated, tmp_path):
    """With 5-count banding the engine found 32 of these 40 cells (F1 0.889, motion 0.20 px RMS)
    before the banding was removed; 37 after (F1 0.961, 0.12 px); 39 without banding."""
    simulation, frames = simulated
    result = run_engine(ArrayMovie(_banded(frames, 5.0)), {}, tmp_path, simulation.config.fps)
    figures = evaluate(result, simulation)
    assert result.notes["motion"]["row_banding"]["banded"]
    assert figures["f1"] >= 0.93 and figures["motion_rms_px"] < 0.16
