"""The movie protocol the engine reads: frames streamed in chunks, never the whole movie."""

from __future__ import annotations

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
        while position < min(stop, self._cached):
            end = min(position + chunk_frames, stop, self._cached)
            yield position, self._read(position, end)
            position = end
        if position >= stop:
            return
        for first, frames in self.movie.iter_chunks(chunk_frames, position, stop):
            if first == self._cached:
                self._file.seek(first * self._frame_bytes)
                self._file.write(np.ascontiguousarray(frames, self.dtype).tobytes())
                self._cached = first + len(frames)
            yield first, frames

    def _read(self, first: int, end: int) -> np.ndarray:
        frames = np.empty((end - first, *self.frame_shape), self.dtype)
        self._file.seek(first * self._frame_bytes)
        self._file.readinto(memoryview(frames).cast("B"))
        return frames

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "DecodedOnce":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
