"""The movie datasets of the NWB files: chunks compressed by threads and written directly."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from miniscope_assets.engine.movie import ArrayMovie
from miniscope_assets.errors import MiniscopeOutputError
from miniscope_assets.nwb.raw import fill_movie_dataset


class FailingMovie(ArrayMovie):
    def iter_chunks(self, chunk_frames, start=0, stop=None):
        for first, frames in super().iter_chunks(chunk_frames, start, stop):
            if first >= 2 * chunk_frames:
                raise OSError("disk read error")
            yield first, frames


@pytest.mark.parametrize("n_threads", [1, 3])
def test_chunks_compressed_by_threads_read_back_exactly(tmp_path, n_threads):
    frames = np.random.default_rng(0).integers(0, 4096, (50, 13, 17)).astype(np.uint16)  # 50 = 7 x 7 + 1
    seen = []
    with h5py.File(tmp_path / "movie.h5", "w") as f:
        dataset = f.create_dataset("data", shape=(50, 17, 13), dtype=np.uint16, chunks=(7, 17, 13),
                                   compression="gzip", compression_opts=4)
        fill_movie_dataset(dataset, ArrayMovie(frames), n_threads, seen.append)
    with h5py.File(tmp_path / "movie.h5", "r") as f:
        np.testing.assert_array_equal(f["data"][:].transpose(0, 2, 1), frames)  # stored (frames, width, height)
        assert f["data"].compression == "gzip" and f["data"].id.get_num_chunks() == 8
    assert seen == sorted(seen) and seen[-1] == 1.0 and len(seen) == 8


def test_a_failing_movie_raises_its_error(tmp_path):
    frames = np.zeros((30, 8, 8), np.uint8)
    with h5py.File(tmp_path / "movie.h5", "w") as f:
        dataset = f.create_dataset("data", shape=(30, 8, 8), dtype=np.uint8, chunks=(5, 8, 8), compression="gzip")
        with pytest.raises(OSError, match="disk read error"):
            fill_movie_dataset(dataset, FailingMovie(frames), 2)


def test_a_movie_with_fewer_frames_than_announced_is_refused(tmp_path):
    movie = ArrayMovie(np.zeros((30, 8, 8), np.uint8))
    movie.nframes = 32  # the reader announced more frames than it gives
    with h5py.File(tmp_path / "movie.h5", "w") as f:
        dataset = f.create_dataset("data", shape=(32, 8, 8), dtype=np.uint8, chunks=(5, 8, 8), compression="gzip")
        with pytest.raises(MiniscopeOutputError, match="the movie gave 30 frames, 32 expected"):
            fill_movie_dataset(dataset, movie, 2)


class LongerMovie(ArrayMovie):
    """Gives every frame it holds, more than the ``nframes`` it announces."""

    def iter_chunks(self, chunk_frames, start=0, stop=None):
        for first in range(start, len(self.frames), chunk_frames):
            yield first, self.frames[first : first + chunk_frames]


def test_a_movie_with_more_frames_than_announced_is_refused(tmp_path):
    movie = LongerMovie(np.zeros((30, 8, 8), np.uint8))
    movie.nframes = 24
    with h5py.File(tmp_path / "movie.h5", "w") as f:
        dataset = f.create_dataset("data", shape=(24, 8, 8), dtype=np.uint8, chunks=(5, 8, 8), compression="gzip")
        with pytest.raises(MiniscopeOutputError, match="the movie gave more than 24 frames"):
            fill_movie_dataset(dataset, movie, 2)
