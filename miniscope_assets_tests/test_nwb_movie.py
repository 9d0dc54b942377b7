"""The movie datasets of the NWB files: chunks compressed by threads and written directly, and
the raw movie read back (RawNwbMovie)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from miniscope_assets.engine.movie import ArrayMovie
from miniscope_assets.errors import MiniscopeInputError, MiniscopeOutputError
from miniscope_assets.nwb.raw import RAW_MOVIE, RawNwbMovie, fill_movie_dataset


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


def _raw_file(path, frames, **storage):
    """A file holding ``frames`` where a raw NWB file holds its movie, stored as ``storage`` says."""
    with h5py.File(path, "w") as f:
        f["identifier"] = "some-identifier"
        dataset = f.create_dataset(RAW_MOVIE, shape=(len(frames), *frames.shape[:0:-1]), dtype=frames.dtype,
                                   **storage)
        if storage.get("compression") == "gzip" and "shuffle" not in storage:
            fill_movie_dataset(dataset, ArrayMovie(frames), 2)  # the writer's layout: read chunk by chunk
        else:
            dataset[:] = frames.transpose(0, 2, 1)
    return path


@pytest.mark.parametrize("storage", [
    {"chunks": (7, 17, 13), "compression": "gzip", "compression_opts": 1},  # as written: chunks inflated by threads
    {"chunks": (7, 17, 13), "compression": "gzip", "shuffle": True},  # another filter: read through h5py
    {"chunks": (4, 9, 13)},  # chunks cutting the frames, uncompressed
    {},  # contiguous
])
@pytest.mark.parametrize(("chunk_frames", "start", "stop"), [(5, 0, None), (7, 0, None), (100, 0, None), (3, 8, 45)])
def test_the_raw_movie_reads_back_as_written(tmp_path, storage, chunk_frames, start, stop):
    frames = np.random.default_rng(1).integers(0, 256, (50, 13, 17)).astype(np.uint8)  # 50 = 7 x 7 + 1
    movie = RawNwbMovie(_raw_file(tmp_path / "raw.nwb", frames, **storage), n_threads=2)
    assert (movie.nframes, movie.frame_shape, movie.dtype, movie.identifier) == (50, (13, 17), np.uint8,
                                                                                 "some-identifier")
    chunks = list(movie.iter_chunks(chunk_frames, start, stop))
    end = 50 if stop is None else stop
    assert [first for first, _ in chunks] == list(range(start, end, chunk_frames))
    assert all(len(part) == min(chunk_frames, end - first) for first, part in chunks)
    np.testing.assert_array_equal(np.concatenate([part for _, part in chunks]), frames[start:end])


def test_a_raw_movie_replaced_while_in_use_is_one_clear_error(tmp_path):
    frames = np.zeros((20, 8, 6), np.uint8)
    movie = RawNwbMovie(_raw_file(tmp_path / "raw.nwb", frames, chunks=(5, 6, 8), compression="gzip"))
    other = _raw_file(tmp_path / "other.nwb", frames, chunks=(5, 6, 8), compression="gzip")
    with h5py.File(other, "r+") as f:
        del f["identifier"]
        f["identifier"] = "written-from-newer-files"
    other.rename(tmp_path / "raw.nwb")  # as recording_info replaces the file atomically
    with pytest.raises(MiniscopeInputError, match="raw.nwb: the raw NWB file was replaced while in use"):
        list(movie.iter_chunks(5))
