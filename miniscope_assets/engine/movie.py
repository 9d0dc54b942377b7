"""The movie protocol the engine reads: frames streamed in chunks, never the whole movie.

A source may also offer ``read_frames(first, stop)`` with ``readable_anywhere(start, stop)``:
frames that any process forked from this one can read itself (a file, memory inherited by
fork); the engine's workers then read their chunks instead of receiving them
(:func:`~miniscope_assets.engine.workers.map_chunks`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, Protocol

import numpy as np


class MovieSource(Protocol):
    """A (frames, height, width) movie that can be streamed in chunks."""

    nframes: int
    frame_shape: tuple[int, int]  # (height, width)
    dtype: np.dtype

    def iter_chunks(
        self, chunk_frames: int, start: int = 0, stop: int | None = None
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (first frame index, frames[n, height, width]) for frames start..stop."""
        ...


class ArrayMovie:
    """An in-memory movie (tests and small simulations)."""

    def __init__(self, frames: np.ndarray):
        if frames.ndim != 3:
            raise ValueError(f"expected (frames, height, width), got shape {frames.shape}")
        self.frames = frames
        self.nframes = frames.shape[0]
        self.frame_shape = (frames.shape[1], frames.shape[2])
        self.dtype = frames.dtype

    def iter_chunks(self, chunk_frames: int, start: int = 0, stop: int | None = None):
        stop = self.nframes if stop is None else min(stop, self.nframes)
        for first in range(start, stop, chunk_frames):
            yield first, self.frames[first : min(first + chunk_frames, stop)]

    def readable_anywhere(self, start: int, stop: int) -> bool:
        return True  # forked workers inherit the array

    def read_frames(self, first: int, stop: int) -> np.ndarray:
        return self.frames[first:stop]


class DecodedOnce:
    """``movie`` whose frames, as they are first read in order from frame 0, are also written
    uncompressed to ``path``: later passes read that file instead of decoding them again (for
    sources that are slow to decode, such as AVIs). The file is written and read with plain
    file calls, not mapped, so it takes no process memory. The caller owns the file; close (or
    use as a context manager) to release it."""

    def __init__(self, movie: MovieSource, path: Path):
        self.movie = movie
        self.nframes, self.frame_shape, self.dtype = movie.nframes, tuple(movie.frame_shape), np.dtype(movie.dtype)
        self._frame_bytes = int(np.prod(self.frame_shape)) * self.dtype.itemsize
        self._file = open(path, "w+b")
        self._cached = 0  # frames [0, _cached) are in the file

    def iter_chunks(self, chunk_frames: int, start: int = 0, stop: int | None = None):
        stop = self.nframes if stop is None else min(stop, self.nframes)
        position = start
        self._file.flush()  # read_frames reads the file, not the writer's buffer
        while position < min(stop, self._cached):
            end = min(position + chunk_frames, stop, self._cached)
            yield position, self.read_frames(position, end)
            position = end
        if position >= stop:
            return
        for first, frames in self.movie.iter_chunks(chunk_frames, position, stop):
            if first == self._cached:
                self._file.seek(first * self._frame_bytes)
                self._file.write(memoryview(np.ascontiguousarray(frames, self.dtype)).cast("B"))
                self._cached = first + len(frames)
            yield first, frames

    def readable_anywhere(self, start: int, stop: int) -> bool:
        """Whether frames [start, stop) are in the file (then any process reads them)."""
        self._file.flush()
        return stop <= self._cached

    def read_frames(self, first: int, stop: int) -> np.ndarray:
        """Frames [first, stop) from the file, by position: processes sharing its descriptor do
        not move each other's offset."""
        frames = np.empty((stop - first, *self.frame_shape), self.dtype)
        view, position = memoryview(frames).cast("B"), first * self._frame_bytes
        while view.nbytes:
            count = os.preadv(self._file.fileno(), [view], position)
            if not count:
                raise EOFError(f"{self._file.name}: frames {first}-{stop} are not all in the file")
            view, position = view[count:], position + count
        return frames

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "DecodedOnce":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
