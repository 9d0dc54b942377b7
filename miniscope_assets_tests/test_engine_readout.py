"""Readout artefacts of wireless Miniscopes: corrupted rows and row banding (offsets of whole
sensor rows changing from frame to frame) are found where they are and repaired, and no longer
make or hide cells; a movie without them reads as it is."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from miniscope_assets.engine import ArrayMovie, run_engine
from miniscope_assets.engine.readout import RepairedReadout, inspect_readout, row_differences, row_offsets
from miniscope_assets.io.avi import AviMovie, probe_avi
from miniscope_assets.simulation import Simulation, SimulationConfig, evaluate

WIRELESS = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "real" / "mio" / "wireless_corrupted.avi"


def _banded(frames: np.ndarray, counts: float, seed: int = 1) -> np.ndarray:
    offsets = np.random.default_rng(seed).normal(0, counts, (len(frames), frames.shape[1], 1))
    return np.clip(np.rint(frames.astype(np.float32) + offsets), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def simulated():
    simulation = Simulation(SimulationConfig(height=200, width=200, nframes=800, n_neurons=40, seed=5))
    return simulation, np.concatenate([chunk for _, chunk in simulation.iter_chunks(200)])


def _corrupted_frames(movie, findings) -> list[int]:
    frames = np.concatenate([chunk for _, chunk in movie.iter_chunks(100)])
    return [t for t, frame in enumerate(frames) if (row_differences(frame) > 5 * findings["row_difference"]).any()]


def test_a_real_wireless_recordings_corrupted_rows_and_banding_are_found_and_repaired():
    if not WIRELESS.is_file():
        pytest.skip(f"real wireless Miniscope AVI not found at {WIRELESS}")
    movie = ArrayMovie(np.stack(list(AviMovie([probe_avi(WIRELESS)]).iter_frames())))
    found = inspect_readout(movie, 100)
    assert found["banded"] and found["row_roughness"] > 3 * found["column_roughness"]
    listed = yaml.safe_load(WIRELESS.with_suffix(".yaml").read_text())["frames"]["check_pattern"]
    assert _corrupted_frames(movie, found) == sorted(listed["several_rows"] + listed["several_blocks"])
    repaired = RepairedReadout(movie, found)
    cleaned = np.concatenate([chunk for _, chunk in repaired.iter_chunks(25)])
    assert cleaned.dtype == np.uint8 and cleaned.shape == movie.frames.shape
    assert _corrupted_frames(ArrayMovie(cleaned), found) == []
    assert np.median(row_offsets(cleaned).std(axis=1)) < 0.3 * found["row_roughness"]
    # read in chunks by any process, frame by frame or in one piece: the same frames
    np.testing.assert_array_equal(np.concatenate([repaired.read_frames(t, t + 1) for t in range(60)]), cleaned)


def test_a_movie_without_readout_artefacts_reads_as_it_is(simulated):
    _, frames = simulated
    found = inspect_readout(ArrayMovie(frames), 100)
    assert not found["banded"] and _corrupted_frames(ArrayMovie(frames), found) == []
    np.testing.assert_array_equal(RepairedReadout(ArrayMovie(frames), found).read_frames(0, 100), frames[:100])
    assert inspect_readout(ArrayMovie(_banded(frames, 3.0)), 100)["banded"]


def _with_corrupted_blocks(frames: np.ndarray, rate: float, seed: int = 2) -> np.ndarray:
    """A block of 5-30 rows replaced by random values in ``rate`` of the frames."""
    rng = np.random.default_rng(seed)
    frames = frames.copy()
    for t in np.flatnonzero(rng.random(len(frames)) < rate):
        top, rows = rng.integers(0, frames.shape[1] - 30), rng.integers(5, 30)
        frames[t, top : top + rows] = rng.integers(0, 256, (rows, frames.shape[2]))
    return frames


def test_corrupted_rows_make_no_sources(simulated, tmp_path):
    """A block of random rows in 2 % of the frames made 917 masks for these 40 cells before the
    rows were repaired (41 after; 40 without corruption)."""
    simulation, frames = simulated
    result = run_engine(ArrayMovie(_with_corrupted_blocks(frames, 0.02)), {}, tmp_path, simulation.config.fps)
    figures = evaluate(result, simulation)
    assert result.n_masks <= figures["n_matched"] + 3 and figures["f1"] >= 0.93


def test_cells_under_banding_are_found(simulated, tmp_path):
    """With 5-count banding the engine found 32 of these 40 cells (F1 0.889, motion 0.20 px RMS)
    before the banding was removed; 37 after (F1 0.961, 0.12 px); 39 without banding."""
    simulation, frames = simulated
    result = run_engine(ArrayMovie(_banded(frames, 5.0)), {}, tmp_path, simulation.config.fps)
    figures = evaluate(result, simulation)
    assert result.notes["motion"]["readout"]["banded"]
    assert figures["f1"] >= 0.93 and figures["motion_rms_px"] < 0.16


def test_stuck_pixels_are_found_and_no_longer_hold_the_registration(simulated, tmp_path):
    """20 pixels stuck at 255 and 20 dead at 0: before they were repaired, motion 0.29 px RMS
    and 43 masks, 38 of them cells; after, 0.10 px and 42 masks, 39 of them cells (without the
    defects: 0.10 px, 40 masks, 39 cells)."""
    simulation, frames = simulated
    rng = np.random.default_rng(1)
    defects = rng.choice(frames.shape[1] * frames.shape[2], 40, replace=False)
    rows, columns = np.unravel_index(defects, frames.shape[1:])
    frames = frames.copy()
    frames[:, rows[:20], columns[:20]] = 255
    frames[:, rows[20:], columns[20:]] = 0
    found = inspect_readout(ArrayMovie(frames), 100)
    assert sorted(map(tuple, found["stuck_pixels"])) == sorted(zip(rows.tolist(), columns.tolist()))
    repaired = RepairedReadout(ArrayMovie(frames), found).read_frames(0, 10)
    assert repaired[:, rows, columns].min() > 0 and repaired[:, rows, columns].max() < 255
    result = run_engine(ArrayMovie(frames), {}, tmp_path, simulation.config.fps)
    figures = evaluate(result, simulation)
    assert figures["motion_rms_px"] < 0.15 and figures["n_matched"] >= 39
    assert result.n_masks <= figures["n_matched"] + 3
