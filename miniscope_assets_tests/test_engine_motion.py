"""Motion correction: shift convention, sub-pixel accuracy on simulated data, piecewise blocks, outliers."""

from __future__ import annotations

import cv2
import h5py
import numpy as np
import pytest
import scipy.sparse

from miniscope_assets.engine import ArrayMovie, correct_motion, validate_params
from miniscope_assets.engine.motion import BlockGrid, MotionCorrection, flag_outliers
from miniscope_assets.results import RigidMotion
from miniscope_assets.simulation import Simulation, SimulationConfig


def _frames(simulation: Simulation) -> np.ndarray:
    return np.concatenate([frames for _, frames in simulation.iter_chunks(200)])


def _rms_after_offset(estimated: np.ndarray, true: np.ndarray) -> float:
    error = estimated - true
    error = error - error.mean(axis=0)
    return float(np.sqrt((error**2).sum(axis=-1).mean()))


def test_shift_sign_convention_and_corrected_file(tmp_path):
    """raw = template moved by d  ->  reported shift -d, and corrected[y, x] = raw[y - y_shift, x - x_shift]."""
    rng = np.random.default_rng(0)
    template = cv2.GaussianBlur(rng.normal(100, 20, (80, 96)).astype(np.float32), (0, 0), 1.5)
    # each position held for 5 frames (sustained moves, not outliers)
    moves = [move for move in [(0, 0), (3, -2), (-4, 5), (2, 2), (0, -6), (5, 0)] for _ in range(5)]
    frames = np.stack([np.roll(template, move, axis=(0, 1)) for move in moves]).astype(np.uint16)
    params = validate_params({"template_frames": 30, "chunk_frames": 7})
    result = correct_motion(ArrayMovie(frames), params, tmp_path / "corrected.h5")
    moves = np.asarray(moves, dtype=float)
    offset_y = (result.rigid.y_shifts + moves[:, 0]).mean()
    offset_x = (result.rigid.x_shifts + moves[:, 1]).mean()
    np.testing.assert_allclose(result.rigid.y_shifts, -moves[:, 0] + offset_y, atol=0.15)
    np.testing.assert_allclose(result.rigid.x_shifts, -moves[:, 1] + offset_x, atol=0.15)
    assert not result.rigid.outlier_frames.any()
    with h5py.File(tmp_path / "corrected.h5", "r") as f:
        corrected = f["corrected"][()]
    assert corrected.shape == frames.shape and corrected.dtype == np.uint16
    inner = (slice(None), slice(10, -10), slice(10, -10))
    assert np.abs(corrected.astype(float) - corrected[0].astype(float))[inner].mean() < 1.0
    assert not any(p.name.startswith(".") or p.suffix not in (".h5",) for p in tmp_path.iterdir())


def test_rigid_shifts_recovered_subpixel(tmp_path):
    simulation = Simulation(SimulationConfig(nframes=600, n_neurons=25, seed=11))
    result = correct_motion(ArrayMovie(_frames(simulation)), validate_params({}), tmp_path / "c.h5")
    estimated = np.stack([result.rigid.y_shifts, result.rigid.x_shifts], axis=1)
    true = np.stack([simulation.y_shifts, simulation.x_shifts], axis=1)
    assert np.abs(true).max() > 2  # the simulated motion is substantial
    assert _rms_after_offset(estimated, true) < 0.3
    assert result.piecewise is None
    assert result.rigid.outlier_frames.shape == (600,) and result.rigid.outlier_frames.sum() <= 3
    assert result.reference.shape == (120, 120)


def test_piecewise_rigid_tracks_nonrigid_deformation(tmp_path):
    simulation = Simulation(SimulationConfig(nframes=400, n_neurons=30, seed=5, nonrigid_amplitude=2.5))
    params = validate_params({"pw_rigid": True, "strides": [40, 40], "overlaps": [24, 24]})
    result = correct_motion(ArrayMovie(_frames(simulation)), params, tmp_path / "c.h5")
    piecewise = result.piecewise
    assert piecewise is not None
    assert (piecewise.block_height, piecewise.block_width) == (64, 64)
    assert (piecewise.block_count_y, piecewise.block_count_x) == (3, 3)
    assert piecewise.block_y.tolist()[:3] == [[0, 64], [0, 64], [0, 64]]
    assert piecewise.block_x.tolist()[:3] == [[0, 64], [40, 104], [56, 120]]
    assert piecewise.x_shifts.shape == (400, 9)
    centre_y = piecewise.block_y.mean(axis=1) - 0.5
    centre_x = piecewise.block_x.mean(axis=1) - 0.5
    block_error, rigid_error = [], []
    for t in range(400):
        dy, dx = simulation.nonrigid_displacement(t)
        rows, cols = np.rint(centre_y).astype(int), np.rint(centre_x).astype(int)
        true = np.stack([simulation.y_shifts[t] - dy[rows, cols], simulation.x_shifts[t] - dx[rows, cols]], axis=1)
        block_error.append(np.stack([piecewise.y_shifts[t], piecewise.x_shifts[t]], axis=1) - true)
        rigid_error.append(np.array([result.rigid.y_shifts[t], result.rigid.x_shifts[t]]) - true)
    block_error, rigid_error = np.stack(block_error), np.stack(rigid_error)
    block_rms = np.sqrt(((block_error - block_error.mean(axis=0)) ** 2).sum(axis=-1).mean())
    rigid_rms = np.sqrt(((rigid_error - rigid_error.mean(axis=0)) ** 2).sum(axis=-1).mean())
    assert block_rms < 0.6
    assert block_rms < 0.6 * rigid_rms


def test_a_corrupted_frame_is_flagged_and_a_far_moved_one_keeps_its_shift(tmp_path):
    simulation = Simulation(SimulationConfig(nframes=200, n_neurons=20, seed=2, motion_jump_rate=0.0))
    frames = _frames(simulation)
    frames[60] = np.roll(frames[60], (9, -9), axis=(0, 1))  # one frame moved far: it registers well
    rng = np.random.default_rng(0)
    # a glitch: a smooth image of nothing in the field (its rows look like real ones, so the
    # readout repair leaves it to the outlier rule)
    unrelated = cv2.GaussianBlur(rng.normal(0, 1, frames[100].shape).astype(np.float32), (0, 0), 3)
    frames[100] = np.clip(frames[100].mean() + unrelated / unrelated.std() * frames[100].std(), 0, 255)
    # half the frame's rows garbage: the readout repair takes them from the frame before
    frames[140, :70] = rng.integers(0, 256, frames[140, :70].shape)
    result = correct_motion(ArrayMovie(frames), validate_params({"template_frames": 50}), tmp_path / "c.h5")
    flagged = np.flatnonzero(result.rigid.outlier_frames)
    assert 100 in flagged and 60 not in flagged and len(flagged) <= 3
    for shifts, moved in ((result.rigid.y_shifts, -9), (result.rigid.x_shifts, 9)):
        assert abs(shifts[100] - (shifts[99] + shifts[101]) / 2) < 0.5  # interpolated
        assert abs(shifts[140] - (shifts[139] + shifts[141]) / 2) < 0.5  # registered by its good half
        assert abs(shifts[60] - (shifts[59] + shifts[61]) / 2 - moved) < 0.5  # measured


def test_outlier_rule():
    shifts = np.zeros((30, 2))
    shifts[10] = [4.0, 0.0]  # isolated jump, registered badly -> outlier
    shifts[15] = [4.0, 0.0]  # isolated jump, registered as well as its neighbours -> real fast motion
    shifts[20:] = [5.0, 5.0]  # sustained step -> real motion
    border = np.zeros(30, bool)
    border[3] = True
    quality = np.full(30, 0.6)
    quality[10] = 0.3
    quality[15] = 0.55
    flagged = flag_outliers(shifts, border, quality, threshold=3.0, window=9, quality_ratio=0.7)
    assert np.flatnonzero(flagged).tolist() == [3, 10]


def _fast_motion(n: int, fps: float, seed: int) -> np.ndarray:
    """A slow drift plus a head bump about every second: 1-3 frames displaced by 4-7 px, then back."""
    rng = np.random.default_rng(seed)
    motion = np.zeros((n, 2))
    for t in range(1, n):
        motion[t] = 0.98 * motion[t - 1] + 0.15 * rng.standard_normal(2)
    t = 5
    while t < n - 5:
        angle = rng.uniform(0, 2 * np.pi)
        motion[t : t + rng.integers(1, 4)] += rng.uniform(4, 7) * np.array([np.sin(angle), np.cos(angle)])
        t += int(rng.integers(int(fps * 0.5), int(fps * 1.5)))
    return motion


@pytest.mark.parametrize("seed", [1, 2])
def test_fast_large_motion_at_low_snr_is_followed_not_interpolated(tmp_path, seed):
    """The outlier rule used to interpolate over every bump (errors up to 7 px on this case)."""
    config = SimulationConfig(nframes=400, n_neurons=30, seed=seed, max_motion=9.0, gain=1.0, read_noise=3.0)
    simulation = Simulation(config)
    simulation.motion = _fast_motion(config.nframes, config.fps, seed)
    result = correct_motion(ArrayMovie(_frames(simulation)), validate_params({}), tmp_path / "c.h5")
    error = np.stack([result.rigid.y_shifts - simulation.y_shifts, result.rigid.x_shifts - simulation.x_shifts], 1)
    error = np.hypot(*(error - np.median(error, axis=0)).T)
    assert np.abs(simulation.motion).max() > 5
    assert np.sqrt((error**2).mean()) <= 0.3 and error.max() <= 1.5


@pytest.mark.parametrize(
    "size, stride, overlap, starts, block",
    [(120, 48, 24, [0, 48], 72), (100, 48, 24, [0, 28], 72), (50, 48, 24, [0], 50), (96, 32, 0, [0, 32, 64], 32)],
)
def test_block_grid(size, stride, overlap, starts, block):
    grid = BlockGrid.from_params((size, 64), (stride, 48), (overlap, 24))
    assert grid.y_starts.tolist() == starts and grid.height == block
    weights_y, _ = grid.interpolation_matrices((size, 64))
    np.testing.assert_allclose(weights_y.sum(axis=1), 1.0, atol=1e-6)


@pytest.mark.parametrize("pw_rigid, banding", [(False, 0.0), (True, 0.0), (False, 6.0)])
def test_corrected_movie_rewritten_from_stored_shifts_is_identical(tmp_path, pw_rigid, banding):
    """Also where the row banding is removed before registration (the rewrite removes it again)."""
    from miniscope_assets.engine.motion import rewrite_corrected_movie
    from miniscope_assets.io.results_file import load_motion_correction, save_motion_correction

    simulation = Simulation(SimulationConfig(height=96, width=96, nframes=120, n_neurons=10, seed=2,
                                             nonrigid_amplitude=1.5 if pw_rigid else 0.0))
    frames = _frames(simulation).astype(np.float32) + np.random.default_rng(3).normal(0, banding, (120, 96, 1))
    movie = ArrayMovie(np.clip(np.rint(frames), 0, 255).astype(np.uint8))
    params = validate_params({"pw_rigid": pw_rigid, "strides": [32, 32], "overlaps": [16, 16]})
    motion = correct_motion(movie, params, tmp_path / "first.h5")
    assert motion.notes["readout"]["banded"] == (banding > 0)
    save_motion_correction(motion, tmp_path / "motion.h5")
    rewrite_corrected_movie(movie, load_motion_correction(tmp_path / "motion.h5"), params, tmp_path / "again.h5")
    with h5py.File(tmp_path / "first.h5", "r") as first, h5py.File(tmp_path / "again.h5", "r") as again:
        np.testing.assert_array_equal(first["corrected"][()], again["corrected"][()])
        assert first["corrected"].compression is None  # read four times: stored the way it reads fastest


def _write_chunk(target, chunk):
    first, frames = chunk
    target.write(first, frames)
    return first


def test_frame_file_takes_frames_from_any_process_in_any_order(tmp_path):
    from miniscope_assets.engine.h5movie import H5Movie, create_frame_file
    from miniscope_assets.engine.workers import ordered_map

    frames = np.random.default_rng(3).integers(0, 60000, (23, 7, 5)).astype(">u2")  # not the native byte order
    target = create_frame_file(tmp_path / "movie.h5", "movie", len(frames), (7, 5), frames.dtype)
    chunks = [(first, frames[first : first + 4]) for first in range(0, len(frames), 4)][::-1]
    assert list(ordered_map(_write_chunk, chunks, target, 2)) == [first for first, _ in chunks]
    movie = H5Movie(tmp_path / "movie.h5", "movie")
    assert (movie.nframes, movie.frame_shape, movie.dtype) == (23, (7, 5), np.dtype(">u2"))
    np.testing.assert_array_equal(np.concatenate([c for _, c in movie.iter_chunks(5)]), frames)
    with pytest.raises(ValueError, match="do not fit"):
        target.write(0, frames[:2].astype(np.uint16))
    empty = create_frame_file(tmp_path / "empty.h5", "movie", 0, (7, 5), np.uint8)
    assert H5Movie(empty.path, "movie").nframes == 0


def test_motion_correction_decodes_a_movie_once_through_decoded_once(tmp_path):
    """Template, shifts and corrected movie read a DecodedOnce movie: the source gives every frame
    once, chunk boundaries may differ, and the result is the same as reading the source each time."""
    from miniscope_assets.engine.movie import DecodedOnce

    class CountingMovie(ArrayMovie):
        frames_given = 0

        def iter_chunks(self, chunk_frames, start=0, stop=None):
            for first, frames in super().iter_chunks(chunk_frames, start, stop):
                CountingMovie.frames_given += len(frames)
                yield first, frames

    simulation = Simulation(SimulationConfig(height=64, width=80, nframes=150, n_neurons=8, seed=4))
    params = validate_params({"template_frames": 40, "chunk_frames": 32})
    direct = correct_motion(ArrayMovie(_frames(simulation)), params, tmp_path / "direct.h5")
    source = CountingMovie(_frames(simulation))
    movie = DecodedOnce(source, tmp_path / "decoded.raw")
    once = correct_motion(movie, params, tmp_path / "once.h5")
    assert (movie.nframes, movie.frame_shape, movie.dtype) == (150, (64, 80), np.uint8)
    assert CountingMovie.frames_given == 150
    np.testing.assert_array_equal(once.rigid.x_shifts, direct.rigid.x_shifts)
    np.testing.assert_array_equal(once.rigid.y_shifts, direct.rigid.y_shifts)
    with h5py.File(tmp_path / "direct.h5", "r") as a, h5py.File(tmp_path / "once.h5", "r") as b:
        np.testing.assert_array_equal(a["corrected"][()], b["corrected"][()])


def test_filled_fractions_follow_the_shift_convention():
    """out[y, x] = raw[y - dy, x - dx]: the fraction of a footprint's weight whose source pixel
    lies outside the raw frame, per frame and averaged over bins, against the pixel-by-pixel count."""
    rng = np.random.default_rng(7)
    shape = (30, 40)
    footprints = np.zeros((*shape, 3), np.float32)
    footprints[0:6, 3:9, 0] = rng.uniform(0.1, 1, (6, 6))  # top edge
    footprints[24:30, 34:40, 1] = rng.uniform(0.1, 1, (6, 6))  # bottom-right corner
    footprints[12:18, 15:21, 2] = 1  # the middle: never filled
    shifts = np.array([[0, 0], [2, 0], [-3.5, 4.2], [0.4, -2.6], [5, 5], [-5, -5], [1.5, 0]])
    motion = MotionCorrection(RigidMotion(x_shifts=shifts[:, 1], y_shifts=shifts[:, 0]), None,
                              np.zeros(shape, np.float32), {})
    yy, xx = np.indices(shape)
    expected = np.zeros((3, len(shifts)))
    for t, (dy, dx) in enumerate(shifts):
        source_y, source_x = yy - dy, xx - dx
        filled = (source_y < 0) | (source_y > shape[0] - 1) | (source_x < 0) | (source_x > shape[1] - 1)
        expected[:, t] = (footprints * filled[..., None]).sum(axis=(0, 1)) / footprints.sum(axis=(0, 1))
    sparse = scipy.sparse.csc_matrix(footprints.reshape(-1, 3))
    np.testing.assert_allclose(motion.filled_fractions(sparse), expected, atol=1e-6)
    assert expected[0].max() > 0.3 and expected[1].max() > 0.3 and not expected[2].any()
    binned = motion.filled_fractions(sparse, (np.array([0, 3, 6]), np.array([3, 6, 7])))
    np.testing.assert_allclose(binned, np.stack([expected[:, :3].mean(1), expected[:, 3:6].mean(1), expected[:, 6]], axis=1),
                               atol=1e-6)


def test_a_block_search_wider_than_the_block_is_held_to_half_the_block(tmp_path):
    """``max_deviation_rigid`` 1000 with 32 px blocks searched 2001 x 2001 lags per block and
    frame (minutes for 30 small frames); it is the same search as half the block, 15 px."""
    frames = _frames(Simulation(SimulationConfig(height=64, width=64, nframes=30, n_neurons=5, seed=2)))
    shifts = []
    for deviation in (1000, 15):
        params = validate_params({"pw_rigid": True, "strides": [8, 8], "max_deviation_rigid": deviation})
        result = correct_motion(ArrayMovie(frames), params, tmp_path / f"{deviation}.h5", n_workers=1)
        shifts.append((result.piecewise.y_shifts, result.piecewise.x_shifts))
    np.testing.assert_array_equal(shifts[0], shifts[1])
