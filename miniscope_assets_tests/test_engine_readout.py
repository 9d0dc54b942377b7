"""Sensor readout artefacts: stuck and flickering pixels, and the wireless Miniscopes' corrupted
rows and row banding (offsets of whole sensor rows changing from frame to frame), are found where
they are and repaired, and no longer make or hide cells; a movie without them reads as it is."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from miniscope_assets.engine import ArrayMovie, run_engine
from miniscope_assets.engine.h5movie import H5Movie
from miniscope_assets.engine.readout import (
    RepairedReadout,
    corrupted_rows,
    glitched_frames,
    inspect_readout,
    row_offsets,
)
from miniscope_assets.io.avi import AviMovie, probe_avi
from miniscope_assets.simulation import Simulation, SimulationConfig, evaluate

REAL_MIO = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "real" / "mio"
WIRELESS = REAL_MIO / "wireless_corrupted.avi"
STREAM = REAL_MIO / "stream_daq_test_output_200px.avi"


def _banded(frames: np.ndarray, counts: float, seed: int = 1) -> np.ndarray:
    offsets = np.random.default_rng(seed).normal(0, counts, (len(frames), frames.shape[1], 1))
    return np.clip(np.rint(frames.astype(np.float32) + offsets), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def simulated():
    simulation = Simulation(SimulationConfig(height=200, width=200, nframes=800, n_neurons=40, seed=5))
    return simulation, np.concatenate([chunk for _, chunk in simulation.iter_chunks(200)])


def _rows_corrupted(frame: np.ndarray, findings: dict) -> np.ndarray:
    return corrupted_rows(frame, findings["row_difference"], np.asarray(findings["row_levels"]))


def _corrupted_frames(movie, findings) -> list[int]:
    frames = np.concatenate([chunk for _, chunk in movie.iter_chunks(100)])
    return [t for t, frame in enumerate(frames) if _rows_corrupted(frame, findings).any()]


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
    assert found["flickering_per_frame"] == 0 and found["stuck_pixels"] == []
    np.testing.assert_array_equal(RepairedReadout(ArrayMovie(frames), found).read_frames(0, 100), frames[:100])
    assert inspect_readout(ArrayMovie(_banded(frames, 3.0)), 100)["banded"]


def _with_corrupted_blocks(frames: np.ndarray, rate: float, fill: int | None = None, seed: int = 2) -> np.ndarray:
    """A block of 5-30 rows replaced by random values (or by ``fill``) in ``rate`` of the frames."""
    rng = np.random.default_rng(seed)
    frames = frames.copy()
    for t in np.flatnonzero(rng.random(len(frames)) < rate):
        top, rows = rng.integers(0, frames.shape[1] - 30), rng.integers(5, 30)
        frames[t, top : top + rows] = rng.integers(0, 256, (rows, frames.shape[2])) if fill is None else fill
    return frames


@pytest.mark.parametrize("fill", [None, 0])
def test_corrupted_rows_make_no_sources(simulated, tmp_path, fill):
    """A block of random rows in 2 % of the frames made 917 masks for these 40 cells before the
    rows were repaired (41 after; 40 without corruption); a block of zeros, 183 (40 after)."""
    simulation, frames = simulated
    result = run_engine(ArrayMovie(_with_corrupted_blocks(frames, 0.02, fill)), {}, tmp_path, simulation.config.fps)
    figures = evaluate(result, simulation)
    assert result.n_masks <= figures["n_matched"] + 3 and figures["f1"] >= 0.93


def test_rows_of_one_value_are_corrupted_only_away_from_their_usual_level(simulated):
    _, clean = simulated
    frames = clean.copy()
    frames[:, :12] = 0  # unlit sensor above the lens's image, 0 throughout
    frames[7, 100:110] = 0  # a dropout
    frames[9, 50:52] = 255
    frames[11] = 0  # a blank frame: left whole to glitched_frames
    found = inspect_readout(ArrayMovie(frames), 100)
    assert [t for t in range(20) if _rows_corrupted(frames[t], found).any()] == [7, 9]  # not 11
    repaired = RepairedReadout(ArrayMovie(frames), found).read_frames(0, 20)
    np.testing.assert_array_equal(repaired[7, 100:110], frames[6, 100:110])
    np.testing.assert_array_equal(repaired[9, 50:52], frames[8, 50:52])
    assert (repaired[:, :12] == 0).all()


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


def _flashing(frames: np.ndarray, per_frame: float, level: int, seed: int = 3) -> np.ndarray:
    """``frames`` with about ``per_frame`` pixels a frame, at random places, set to ``level``."""
    rng = np.random.default_rng(seed)
    frames = frames.copy()
    for frame in frames:
        count = rng.poisson(per_frame)
        frame[rng.integers(0, frame.shape[0], count), rng.integers(0, frame.shape[1], count)] = level
    return frames


@pytest.mark.parametrize("per_frame, level", [(30.0, 255), (30.0, 0), (0.1, 255)])
def test_flickering_pixels_are_repaired_in_every_frame(simulated, per_frame, level):
    _, clean = simulated
    frames = _flashing(clean, per_frame, level)
    found = inspect_readout(ArrayMovie(frames), 100)
    assert found["flickering_per_frame"] > 0 and found["stuck_pixels"] == []
    if per_frame >= 1:
        assert abs(found["flickering_per_frame"] - per_frame) < 0.2 * per_frame
    repaired = np.concatenate([chunk for _, chunk in RepairedReadout(ArrayMovie(frames), found).iter_chunks(64)])
    flashed = frames != clean
    # every flash is gone: what is left is within the clean frame's own neighbourhood differences
    assert np.abs(repaired[flashed].astype(int) - clean[flashed]).mean() < 10
    assert np.abs(frames[flashed].astype(int) - clean[flashed]).mean() > 50
    untouched = np.count_nonzero(repaired[~flashed] == clean[~flashed]) / np.count_nonzero(~flashed)
    assert untouched > 0.9999


def test_flashing_pixels_make_no_sources(simulated, tmp_path):
    """Pixels flashing to 255 at random places made 125 masks for these 40 cells at one flash
    every two frames and 526 at 30 a frame before they were repaired (40 and 41 after)."""
    simulation, frames = simulated
    result = run_engine(ArrayMovie(_flashing(frames, 30.0, 255)), {}, tmp_path, simulation.config.fps)
    figures = evaluate(result, simulation)
    assert result.notes["motion"]["readout"]["flickering_per_frame"] > 20
    assert result.n_masks <= figures["n_matched"] + 3 and figures["f1"] >= 0.93


def test_a_real_streams_blinking_pixels_and_dropped_buffers_are_repaired():
    """mio's real 200 px stream: pixels of its last column jump by about 15 counts in some frames
    (about 40 a frame; a few next to each other in that column pull their neighbourhood's median
    with them and are left), and 18 of its 94 frames have a block of 25 rows (a buffer) of zeros."""
    if not STREAM.is_file():
        pytest.skip(f"real Miniscope stream AVI not found at {STREAM}")
    movie = ArrayMovie(np.stack(list(AviMovie([probe_avi(STREAM)]).iter_frames())))
    found = inspect_readout(movie, 100)
    assert found["flickering_per_frame"] > 20
    dropped = [t for t, frame in enumerate(movie.frames) if (frame.max(axis=1) == 0).sum() >= 20]
    assert [t for t, frame in enumerate(movie.frames) if _rows_corrupted(frame, found).any()] == dropped
    assert len(dropped) == 18
    repaired = np.concatenate([chunk for _, chunk in RepairedReadout(movie, found).iter_chunks(32)])
    assert inspect_readout(ArrayMovie(repaired), 100)["flickering_per_frame"] < 0.1 * found["flickering_per_frame"]
    assert not any((frame.max(axis=1) == 0).any() for frame in repaired)
    changed = np.count_nonzero(repaired != movie.frames) / movie.frames.size
    assert 0 < changed < 0.05


def test_glitched_frames_are_told_from_the_levels_slow_changes_and_steps():
    rng = np.random.default_rng(0)
    frames = np.arange(3000)
    # bleaching, a step (the LED turned up), slow population events and noise of a few percent
    levels = 80 * np.exp(-frames / 4000) + 10 * (frames > 1700) + 2.5 * np.sin(frames / 40) + rng.normal(0, 0.3, 3000)
    assert not glitched_frames(levels).any()
    glitched = levels.copy()
    glitched[[5, 900, 901, 2999]] = [0.0, 255.0, 120.0, 30.0]
    assert np.flatnonzero(glitched_frames(glitched)).tolist() == [5, 900, 901, 2999]
    assert not glitched_frames(np.full(50, 7.0)).any() and not glitched_frames([3.0, 200.0]).any()


def _glitched(frames: np.ndarray, count: int, seed: int = 4) -> tuple[np.ndarray, list[int]]:
    """Half of ``count`` random frames saturated, half brightened by 40 counts."""
    frames = frames.copy()
    picked = sorted(np.random.default_rng(seed).choice(len(frames), count, replace=False).tolist())
    frames[picked[::2]] = 255
    frames[picked[1::2]] = np.clip(frames[picked[1::2]].astype(int) + 40, 0, 255)
    return frames, picked


def test_glitched_frames_are_replaced_and_make_no_sources(simulated, tmp_path):
    """40 frames of 800 saturated or brightened by 40 counts made 48 (saturated) and 46
    (brightened) masks for these 40 cells before they were replaced; 43 after."""
    simulation, clean = simulated
    frames, picked = _glitched(clean, 40)
    result = run_engine(ArrayMovie(frames), {}, tmp_path, simulation.config.fps)
    assert result.notes["motion"]["glitched_frames"] == picked
    figures = evaluate(result, simulation)
    assert result.n_masks <= figures["n_matched"] + 4 and figures["f1"] >= 0.93
    corrected = H5Movie(tmp_path / result.corrected_movie)
    for t in picked[:5]:
        if t - 1 in picked or t + 1 in picked or t in (0, len(frames) - 1):
            continue
        around = corrected.read_frames(t - 1, t + 2).astype(np.float32)
        np.testing.assert_allclose(around[1], (around[0] + around[2]) / 2, atol=0.51)
