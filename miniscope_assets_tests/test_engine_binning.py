"""The binned copy of the corrected movie (engine/binning.py): bin means, the last short bin,
chunks that cut bins, exact 16-bit sums for 8-bit movies, and a kept copy read back."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from miniscope_assets.engine import ArrayMovie
from miniscope_assets.engine.binning import bin_size_for, kept_bins, open_binned, write_binned
from miniscope_assets.errors import MiniscopeInputError


def _expected_bins(frames: np.ndarray, bin_size: int) -> np.ndarray:
    return np.stack([frames[i : i + bin_size].mean(axis=0, dtype=np.float64)
                     for i in range(0, len(frames), bin_size)]).astype(np.float32)


@pytest.mark.parametrize("chunk_frames", [1, 3, 7, 10, 47])  # bins cut by chunks, in one chunk, chunk < bin
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_bins_are_the_means_of_their_frames_and_read_back(tmp_path, chunk_frames, dtype):
    rng = np.random.default_rng(chunk_frames)
    frames = (rng.random((47, 6, 5)) * 250).astype(dtype)  # 47 frames in at most 10 bins: 5 per bin, 2 in the last
    params = {"max_init_frames": 10, "binned_frame_rate": None, "chunk_frames": chunk_frames}  # below the paramset minimum: a small case
    binned = write_binned(ArrayMovie(frames), params, 20.0, tmp_path / "binned.h5")
    assert (binned.bin_size, binned.nframes, binned.frame_shape) == (5, 10, (6, 5))
    compare = np.testing.assert_array_equal if dtype == np.uint8 else np.testing.assert_allclose
    compare(binned.read(), _expected_bins(frames, 5))
    compare(binned.mean_image, frames.mean(axis=0, dtype=np.float64).astype(np.float32))
    np.testing.assert_array_equal(binned.max_image, frames.max(axis=0).astype(np.float32))
    kept = open_binned(tmp_path / "binned.h5")
    assert (kept.path, kept.bin_size, kept.nframes) == (binned.path, binned.bin_size, binned.nframes)
    np.testing.assert_array_equal(kept.mean_image, binned.mean_image)
    np.testing.assert_array_equal(kept.max_image, binned.max_image)
    compare(kept.read(slice(7, None), slice(1, 4), slice(2, 5)), _expected_bins(frames, 5)[7:, 1:4, 2:5])


@pytest.mark.parametrize(("dtype", "high", "stored"), [
    (np.uint8, 255, np.uint16),  # 5 x 255 fits 16 bits: exact sums, half the bytes of float32
    (np.uint16, 1000, np.float32),  # 5 x 65535 could overflow 16 bits, whatever the values: float32 means
    (np.int16, 1000, np.float32),  # signed: float32 means
])
def test_integer_movies_whose_bin_sums_fit_16_bits_are_stored_as_sums(tmp_path, dtype, high, stored):
    frames = np.random.default_rng(1).integers(0, high + 1, size=(23, 4, 4)).astype(dtype)
    frames[:5, 0, 0] = high  # a full bin at the largest value
    params = {"max_init_frames": 5, "binned_frame_rate": None, "chunk_frames": 4}
    binned = write_binned(ArrayMovie(frames), params, 20.0, tmp_path / "binned.h5")
    with h5py.File(binned.path, "r") as f:
        assert f["binned"].dtype == stored
    np.testing.assert_array_equal(binned.read(), _expected_bins(frames, 5))


@pytest.mark.parametrize(("nframes", "fps", "rate", "max_frames", "bin_size"), [
    (1000, 20.0, 10.0, 1000, 2),  # averaged down to 10 Hz
    (1000, 30.0, 10.0, 1000, 3),
    (1000, 60.0, 10.0, 1000, 6),  # the same bins in time whatever the camera's rate
    (1000, 29.97, 10.0, 1000, 3),  # a rate measured from timestamps
    (1000, 5.0, 10.0, 1000, 1),  # slower than the rate: not binned
    (1000, 20.0, None, 1000, 1),  # no rate: only the frame limit
    (12000, 20.0, 10.0, 1000, 2),  # a long movie: the same bins, fewer kept (below)
    (12000, 20.0, None, 1000, 12),  # no rate: longer bins
])
def test_bin_size_averages_to_the_frame_rate(nframes, fps, rate, max_frames, bin_size):
    params = {"max_init_frames": max_frames, "binned_frame_rate": rate}
    assert bin_size_for(nframes, fps, params) == bin_size


@pytest.mark.parametrize("chunk_frames", [1, 3, 10, 47])
def test_a_long_movie_keeps_bins_spread_over_its_whole_length(tmp_path, chunk_frames):
    """47 frames at 20 Hz in 10 Hz bins are 24 bins (the last of one frame); with room for 10, the
    10 kept run from the first bin to the last, evenly spaced, each the mean of its own frames,
    and the mean image is still that of every frame."""
    frames = (np.random.default_rng(chunk_frames).random((47, 6, 5)) * 250).astype(np.uint8)
    params = {"max_init_frames": 10, "binned_frame_rate": 10.0, "chunk_frames": chunk_frames}
    binned = write_binned(ArrayMovie(frames), params, 20.0, tmp_path / "binned.h5")
    kept = np.round(np.linspace(0, 23, 10)).astype(int)
    assert binned.bin_size == 2 and binned.nframes == 10
    np.testing.assert_array_equal(binned.bins, kept)
    np.testing.assert_array_equal(binned.read(), _expected_bins(frames, 2)[kept])
    np.testing.assert_array_equal(binned.mean_image, frames.mean(axis=0, dtype=np.float64).astype(np.float32))
    starts, stops = binned.frame_ranges()
    np.testing.assert_array_equal(starts, kept * 2)
    assert stops[-1] == 47 and binned.frames_between_bins == pytest.approx(46 / 9)
    reopened = open_binned(binned.path)
    np.testing.assert_array_equal(reopened.bins, kept)
    np.testing.assert_array_equal(reopened.read(slice(3, 6), slice(1, 4)), _expected_bins(frames, 2)[kept][3:6, 1:4])


@pytest.mark.parametrize(("n_bins", "max_bins"), [(5, 10), (10, 10), (11, 10), (6000, 1000), (1001, 1000)])
def test_kept_bins_are_increasing_and_span_the_movie(n_bins, max_bins):
    bins = kept_bins(n_bins, max_bins)
    assert len(bins) == min(n_bins, max_bins) and bins[0] == 0 and bins[-1] == n_bins - 1
    assert (np.diff(bins) >= 1).all() and np.diff(bins).max() - np.diff(bins).min() <= 1


def test_a_file_that_is_not_a_binned_copy_is_one_clear_error(tmp_path):
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["binned"] = np.zeros((2, 3, 3), np.float32)
    with pytest.raises(MiniscopeInputError, match="other.h5.*not a binned copy"):
        open_binned(tmp_path / "other.h5")
