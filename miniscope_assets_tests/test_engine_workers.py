"""The engine's worker pool: order, bit-identical results, arrays passed through shared memory."""

from __future__ import annotations

import errno
import os

import numpy as np
import pytest

from miniscope_assets.engine import workers
from miniscope_assets.engine.movie import ArrayMovie, DecodedOnce
from miniscope_assets.engine.workers import map_chunks, ordered_map


def _parcels() -> set[str]:
    return {os.path.basename(path) for path in workers.parcel_files()}


def _scaled(factor, item):
    index, frames = item
    if index == 3 and factor < 0:
        raise ValueError("a worker's error")
    return index, frames.astype(np.float32) * factor, frames[:1].sum()


def _items(sizes):
    rng = np.random.default_rng(0)
    for index, size in enumerate(sizes):
        yield index, rng.integers(0, 255, (size, 300, 300), np.uint8)  # 90 kB a frame


def test_large_and_small_items_come_back_in_order_and_identical_whatever_the_worker_count():
    sizes = [30, 1, 24, 2, 40, 3, 30]  # 2.7 MB, 90 kB, ...: through shared memory and by pipe
    before = _parcels()
    one = list(ordered_map(_scaled, _items(sizes), 1.5, 1))
    two = list(ordered_map(_scaled, _items(sizes), 1.5, 2))
    assert [index for index, _, _ in two] == list(range(len(sizes)))
    for (_, frames_one, sum_one), (_, frames_two, sum_two) in zip(one, two):
        assert frames_two.flags.writeable and frames_two.dtype == np.float32
        np.testing.assert_array_equal(frames_one, frames_two)
        assert sum_one == sum_two
    assert _parcels() == before  # every file read back was removed


def test_a_workers_error_reaches_the_caller_and_leaves_no_files():
    before = _parcels()
    with pytest.raises(ValueError, match="a worker's error"):
        list(ordered_map(_scaled, _items([30] * 8), -1.0, 2))
    assert _parcels() == before


def test_arrays_go_by_pipe_when_shared_memory_is_full(monkeypatch):
    """A container's /dev/shm is often 64 MB: a parcel that cannot be written travels in the pickle."""
    def no_space(f, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(workers, "_write_all", no_space)
    before = _parcels()
    results = list(ordered_map(_scaled, _items([30, 30, 30]), 2.0, 2))
    expected = list(ordered_map(_scaled, _items([30, 30, 30]), 2.0, 1))
    assert [index for index, _, _ in results] == [0, 1, 2]
    for (_, got, _), (_, want, _) in zip(results, expected):
        np.testing.assert_array_equal(got, want)
    assert _parcels() == before


def _chunk_sum(offset, chunk):
    first, frames = chunk
    return first, len(frames), int(frames.sum(dtype=np.int64)) + offset


class _StreamOnly:
    """A movie that can only be streamed (like an AVI): its chunks are read in the caller."""

    def __init__(self, frames):
        self.frames, self.nframes, self.frame_shape, self.dtype = frames, len(frames), frames.shape[1:], frames.dtype

    def iter_chunks(self, chunk_frames, start=0, stop=None):
        for first in range(start, min(stop or self.nframes, self.nframes), chunk_frames):
            yield first, self.frames[first : min(first + chunk_frames, stop or self.nframes)]


def test_workers_read_their_own_chunks_where_the_movie_allows(tmp_path, monkeypatch):
    from miniscope_assets.engine.h5movie import H5Movie, create_frame_file

    frames = np.random.default_rng(1).integers(0, 255, (50, 6, 5), np.uint8)
    spans = [(0, 20), (30, 45), (48, 60)]  # the last one past the end
    expected = [(first, min(first + 7, stop, 50) - first, int(frames[first : min(first + 7, stop)].sum()) + 1)
                for start, stop in spans for first in range(start, min(stop, 50), 7)]
    target = create_frame_file(tmp_path / "movie.h5", "movie", 50, (6, 5), np.uint8)
    target.write(0, frames)
    streamed = _StreamOnly(frames)
    for movie in (ArrayMovie(frames), H5Movie(tmp_path / "movie.h5", "movie"), streamed):
        for n_workers in (1, 2):
            assert list(map_chunks(_chunk_sum, movie, 7, 1, n_workers, spans)) == expected
    # a readable movie's chunks are read by the workers, never streamed through the caller
    monkeypatch.setattr(ArrayMovie, "iter_chunks", lambda *args: pytest.fail("streamed through the caller"))
    assert list(map_chunks(_chunk_sum, ArrayMovie(frames), 7, 1, 2, spans)) == expected
    # a decoded-once copy: streamed (and kept) on its first pass, read by the workers after it
    decoded = DecodedOnce(streamed, tmp_path / "decoded.raw")
    assert not decoded.readable_anywhere(0, 50)
    assert list(map_chunks(_chunk_sum, decoded, 7, 1, 2)) == list(map_chunks(_chunk_sum, streamed, 7, 1, 1))
    assert decoded.readable_anywhere(0, 50)
    monkeypatch.setattr(DecodedOnce, "iter_chunks", lambda *args: pytest.fail("streamed through the caller"))
    assert list(map_chunks(_chunk_sum, decoded, 7, 1, 2, spans)) == expected
