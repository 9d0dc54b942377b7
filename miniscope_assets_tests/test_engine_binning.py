"""The binned copy of the corrected movie (engine/binning.py): bin means, the last short bin,
chunks that cut bins, and the copy written during motion correction equal to the one written
from the corrected movie afterwards."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from miniscope_assets.engine import ArrayMovie, correct_motion, validate_params
from miniscope_assets.engine.binning import DATASET, BinnedWriter, write_binned
from miniscope_assets.engine.h5movie import H5Movie
from miniscope_assets.engine.motion import ChunkTap
from miniscope_assets.simulation import Simulation, SimulationConfig


def _expected_bins(frames: np.ndarray, bin_size: int) -> np.ndarray:
    return np.stack([frames[i : i + bin_size].mean(axis=0, dtype=np.float64)
                     for i in range(0, len(frames), bin_size)]).astype(np.float32)


@pytest.mark.parametrize("chunk_frames", [1, 3, 7, 10, 47])  # bins cut by chunks, in one chunk, chunk < bin
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_bins_are_the_means_of_their_frames(tmp_path, chunk_frames, dtype):
    rng = np.random.default_rng(chunk_frames)
    frames = (rng.random((47, 6, 5)) * 250).astype(dtype)  # 47 frames in at most 10 bins: 5 per bin, 2 in the last
    params = {"max_init_frames": 10, "chunk_frames": chunk_frames}  # below the paramset minimum: a small case
    binned = write_binned(ArrayMovie(frames), params, tmp_path / "binned.h5")
    assert (binned.bin_size, binned.nframes, binned.frame_shape) == (5, 10, (6, 5))
    exact = dtype == np.uint8  # integer sums are exact in any order
    compare = np.testing.assert_array_equal if exact else np.testing.assert_allclose
    compare(binned.read(), _expected_bins(frames, 5))
    compare(binned.mean_image, frames.mean(axis=0, dtype=np.float64).astype(np.float32))
    np.testing.assert_array_equal(binned.max_image, frames.max(axis=0).astype(np.float32))


def test_a_movie_that_ends_early_is_an_error(tmp_path):
    with BinnedWriter(tmp_path / "binned.h5", 20, (4, 4), 10) as writer:
        writer.add(writer.reducer()(0, np.ones((15, 4, 4), np.uint8)))
        with pytest.raises(ValueError, match="8 binned frames written, 10 expected"):
            writer.finish()


@pytest.mark.parametrize("n_workers", [1, 2])
def test_the_copy_written_during_motion_correction_is_the_copy_of_the_corrected_movie(tmp_path, n_workers):
    simulation = Simulation(SimulationConfig(height=64, width=64, nframes=250, n_neurons=8, seed=5))
    frames = np.concatenate([chunk for _, chunk in simulation.iter_chunks(100)])
    params = validate_params({"max_init_frames": 60, "chunk_frames": 32})  # bins of 5, cut by chunks of 32
    with BinnedWriter(tmp_path / "during.h5", len(frames), frames.shape[1:], params["max_init_frames"]) as writer:
        correct_motion(ArrayMovie(frames), params, tmp_path / "corrected.h5", n_workers=n_workers,
                       tap=ChunkTap(writer.reducer(), writer.add))
        during = writer.finish()
    after = write_binned(H5Movie(tmp_path / "corrected.h5"), params, tmp_path / "after.h5")
    assert during.bin_size == after.bin_size == 5 and during.nframes == after.nframes == 50
    with h5py.File(during.path) as f, h5py.File(after.path) as g:
        np.testing.assert_array_equal(f[DATASET][:], g[DATASET][:])
    np.testing.assert_array_equal(during.mean_image, after.mean_image)
    np.testing.assert_array_equal(during.max_image, after.max_image)
