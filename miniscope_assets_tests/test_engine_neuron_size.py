"""The neuron diameter measured on the binned movie (engine/neuron_size.py) and how run_engine uses it."""

from __future__ import annotations

import numpy as np
import pytest

from miniscope_assets.engine import ArrayMovie
from miniscope_assets.engine.binning import write_binned
from miniscope_assets.engine.neuron_size import MIN_CELLS, estimate_neuron_size
from miniscope_assets.engine.params import validate_params
from miniscope_assets.engine.pipeline import DEFAULT_NEURON_DIAMETER, neuron_size_of
from miniscope_assets.simulation import Simulation, SimulationConfig

PARAMS = validate_params({"max_init_frames": 300})


def _binned(tmp_path, frames: np.ndarray):
    return write_binned(ArrayMovie(frames), PARAMS, SimulationConfig.fps, tmp_path / "binned.h5")


@pytest.mark.parametrize("radius", [3.5, 5.0, 7.5])
def test_the_measured_diameter_follows_the_cells(tmp_path, radius):
    # the same field of view imaged at three magnifications: about 40 cells, no motion
    config = SimulationConfig(height=160, width=160, nframes=600, n_neurons=int(40 * (5 / radius) ** 2),
                              neuron_radius=radius, seed=21, max_motion=0.0, motion_step=0.0, motion_jump_rate=0.0)
    frames = np.concatenate([chunk for _, chunk in Simulation(config).iter_chunks(200)])
    size = estimate_neuron_size(_binned(tmp_path, frames))
    assert size.cells_measured >= 10
    assert size.diameter == pytest.approx(2 * radius, rel=0.12)
    assert size.quartiles[0] <= size.diameter <= size.quartiles[1]


def test_noise_alone_has_no_size(tmp_path):
    frames = np.random.default_rng(0).poisson(60, (300, 96, 96)).astype(np.uint8)
    size = estimate_neuron_size(_binned(tmp_path, frames))
    assert size.diameter is None and size.cells_measured < MIN_CELLS
    used = neuron_size_of(_binned(tmp_path, frames), {"neuron_diameter": None})
    assert used["diameter_px"] == DEFAULT_NEURON_DIAMETER and used["source"].startswith("default")


@pytest.mark.parametrize("shape", [(60, 14, 14), (2, 30, 30), (40, 5, 5)])
def test_small_movies_have_no_size_and_no_error(tmp_path, shape):
    rng = np.random.default_rng(2)
    frames = rng.poisson(50, shape).astype(np.uint8)
    frames[:, 5:9, 5:9] += (rng.random(shape[0]) * 60).astype(np.uint8)[:, None, None]  # one active blob
    size = estimate_neuron_size(_binned(tmp_path, frames))
    assert size.diameter is None and size.cells_measured < MIN_CELLS


def test_a_paramset_diameter_is_used_as_given(tmp_path):
    frames = np.random.default_rng(1).poisson(60, (50, 40, 40)).astype(np.uint8)
    assert neuron_size_of(_binned(tmp_path, frames), {"neuron_diameter": 12.5}) == {
        "diameter_px": 12.5, "source": "paramset"}
