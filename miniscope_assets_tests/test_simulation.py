"""The simulator: a deterministic, chunk-independent MovieSource with consistent ground truth."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import scipy.sparse

from miniscope_assets.simulation import Simulation, SimulationConfig, kinds_of_cells

SMALL = dict(height=48, width=64, nframes=60, n_neurons=6, fps=20.0, seed=3)


def _movie(simulation: Simulation, chunk: int) -> np.ndarray:
    return np.concatenate([frames for _, frames in simulation.iter_chunks(chunk)])


def test_movie_source_protocol_and_chunk_independence():
    simulation = Simulation(SimulationConfig(**SMALL))
    assert simulation.nframes == 60 and simulation.frame_shape == (48, 64) and simulation.dtype == np.uint8
    whole = _movie(simulation, 60)
    assert whole.shape == (60, 48, 64) and whole.dtype == np.uint8
    np.testing.assert_array_equal(whole, _movie(simulation, 7))
    firsts = [first for first, _ in simulation.iter_chunks(25, start=10, stop=58)]
    assert firsts == [10, 35]
    part = np.concatenate([frames for _, frames in simulation.iter_chunks(25, start=10, stop=58)])
    np.testing.assert_array_equal(part, whole[10:58])


def test_same_seed_same_movie_other_seed_other_movie():
    a = _movie(Simulation(SimulationConfig(**SMALL)), 30)
    b = _movie(Simulation(SimulationConfig(**SMALL)), 30)
    c = _movie(Simulation(SimulationConfig(**{**SMALL, "seed": 4})), 30)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a.astype(int) - c.astype(int)).mean() > 1


def test_ground_truth_shapes_and_conventions():
    simulation = Simulation(SimulationConfig(**SMALL))
    k, t = simulation.n_neurons, simulation.nframes
    assert k == 6
    footprints = simulation.footprints
    assert scipy.sparse.issparse(footprints) and footprints.shape == (48 * 64, k)
    np.testing.assert_allclose(footprints.max(axis=0).toarray().ravel(), 1.0, atol=0.05)
    assert simulation.calcium.shape == (k, t) and simulation.spikes.shape == (k, t)
    assert (simulation.spikes >= 0).all() and simulation.spikes.sum() > 0
    assert (simulation.calcium >= 0).all()
    # footprint centroids (row-major pixel index y * width + x) sit on the neuron centres (y, x)
    ys, xs = np.divmod(np.arange(48 * 64), 64)
    weights = np.asarray(footprints.sum(axis=0)).ravel()
    centroids = np.stack([footprints.T @ ys / weights, footprints.T @ xs / weights], axis=1)
    np.testing.assert_allclose(centroids, simulation.centers, atol=0.6)
    np.testing.assert_array_equal(simulation.x_shifts, -simulation.motion[:, 1])
    np.testing.assert_array_equal(simulation.y_shifts, -simulation.motion[:, 0])
    assert simulation.motion[0].tolist() == [0.0, 0.0]


def test_calcium_follows_spikes():
    simulation = Simulation(SimulationConfig(**{**SMALL, "nframes": 400}))
    for spikes, calcium in zip(simulation.spikes, simulation.calcium):
        onsets = np.flatnonzero(spikes)
        assert len(onsets) > 0
        # calcium rises within two frames of every spike and decays when there are none
        assert all(calcium[min(i + 1, len(calcium) - 1)] > calcium[max(i - 1, 0)] for i in onsets)
        quiet = np.convolve(spikes, np.ones(4), mode="full")[: len(spikes)] == 0
        steps = np.diff(calcium)[quiet[1:]]
        assert (steps <= 1e-6).all()


def test_shifts_register_the_movie():
    """Undoing the true shifts makes frames agree with the first frame far better than the raw frames."""
    config = SimulationConfig(**{**SMALL, "height": 96, "width": 96, "nframes": 40, "n_neurons": 10,
                                 "motion_jump_rate": 2.0, "max_motion": 4.0})
    simulation = Simulation(config)
    frames = _movie(simulation, 40).astype(np.float32)
    smooth = [cv2.GaussianBlur(f, (0, 0), 2) - cv2.GaussianBlur(f, (0, 0), 8) for f in frames]
    inner = (slice(10, -10), slice(10, -10))
    raw_error, corrected_error = [], []
    for t in range(1, len(frames)):
        dx, dy = simulation.x_shifts[t] - simulation.x_shifts[0], simulation.y_shifts[t] - simulation.y_shifts[0]
        if np.hypot(dx, dy) < 1.5:
            continue
        registered = cv2.warpAffine(smooth[t], np.float32([[1, 0, dx], [0, 1, dy]]), (96, 96), flags=cv2.INTER_CUBIC)
        raw_error.append(np.abs(smooth[t] - smooth[0])[inner].mean())
        corrected_error.append(np.abs(registered - smooth[0])[inner].mean())
    assert len(raw_error) >= 5
    assert np.mean(corrected_error) < 0.7 * np.mean(raw_error)


def test_nonrigid_field_is_exposed_and_used():
    rigid = Simulation(SimulationConfig(**SMALL))
    dy, dx = rigid.nonrigid_displacement(5)
    assert not dy.any() and not dx.any()
    config = SimulationConfig(**{**SMALL, "nonrigid_amplitude": 2.0})
    simulation = Simulation(config)
    amplitude = np.abs(simulation.nonrigid_coefficients).max(axis=0)
    assert simulation.nonrigid_coefficients.shape == (60, 2) and amplitude.max() > 0.3
    t = int(np.argmax(np.abs(simulation.nonrigid_coefficients[:, 1])))
    dy, dx = simulation.nonrigid_displacement(t)
    assert dx.shape == (48, 64)
    # a shear: dx varies along rows only, reaching +-amplitude*|a_x| at the top and bottom rows
    np.testing.assert_allclose(dx[:, 0], dx[:, -1])
    assert abs(dx[0, 0]) == pytest.approx(2.0 * abs(simulation.nonrigid_coefficients[t, 1]), rel=1e-4)


def test_invalid_size_is_rejected():
    with pytest.raises(ValueError):
        Simulation(SimulationConfig(height=8, width=64))


def test_kinds_of_cells():
    """Close: a neighbour within a third of a diameter; edge: cut by the frame; isolated: the rest."""
    centres = np.array([[50.0, 50.0], [80.0, 80.0], [80.0, 83.0], [3.0, 40.0], [40.0, 97.5], [2.0, 2.0], [2.0, 5.5]])
    kinds = kinds_of_cells(centres, (100, 100), half_diameter=6.0)
    assert kinds["isolated"].tolist() == [True, False, False, False, False, False, False]
    assert kinds["close"].tolist() == [False, True, True, False, False, True, True]  # close at the edge: close
    assert kinds["edge"].tolist() == [False, False, False, True, True, False, False]
    assert all(len(mask) == 0 for mask in kinds_of_cells(np.zeros((0, 2)), (10, 10), 6.0).values())
