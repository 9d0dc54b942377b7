"""The movie protocol the engine reads: frames streamed in chunks, never the whole movie.

A source may also offer ``read_frames(first, stop)`` with ``readable_anywhere(start, stop)``:
frames that any process forked from this one can read itself (a file, memory inherited by
fork); the engine's workers then read their chunks instead of receiving them
(:func:`~miniscope_assets.engine.workers.map_chunks`)."""

from __future__ import annotations

import os
from dataclasses import dataclass
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


@dataclass(frozen=True)
class FrameFile:
    """Frames stored uncompressed in a file, ``offset`` bytes in, frame after frame (an HDF5
    dataset's, :func:`~miniscope_assets.engine.h5movie.create_frame_file`; or a file of frames
    alone, :class:`DecodedOnce`). Any process writes and reads frames there by position, in any
    order, so no frame passes through another process."""

    path: Path
    offset: int
    frame_shape: tuple[int, int]
    dtype: np.dtype

    def write(self, first: int, frames: np.ndarray) -> None:
        """Store ``frames`` (n, height, width) as frames ``first`` to ``first + n - 1``."""
        if frames.shape[1:] != self.frame_shape or frames.dtype != self.dtype:
            raise ValueError(f"frames {frames.shape} {frames.dtype} do not fit {self.frame_shape} {self.dtype}")
        data = memoryview(np.ascontiguousarray(frames)).cast("B")
        position = self._position(first)
        descriptor = os.open(self.path, os.O_WRONLY)
        try:
            while data.nbytes:
                written = os.pwrite(descriptor, data, position)
                data, position = data[written:], position + written
        finally:
            os.close(descriptor)

    def read(self, first: int, stop: int) -> np.ndarray:
        """Frames ``first`` to ``stop - 1``."""
        frames = np.empty((stop - first, *self.frame_shape), self.dtype)
        view, position = memoryview(frames).cast("B"), self._position(first)
        descriptor = os.open(self.path, os.O_RDONLY)
        try:
            while view.nbytes:
                count = os.preadv(descriptor, [view], position)
                if not count:
                    raise EOFError(f"{self.path}: frames {first}-{stop} are not all in the file")
                view, position = view[count:], position + count
        finally:
            os.close(descriptor)
        return frames

    def _position(self, frame: int) -> int:
        return self.offset + frame * self.frame_shape[0] * self.frame_shape[1] * self.dtype.itemsize


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
    uncompressed to ``path`` (created empty here; the caller owns it): later passes read that
    file instead of decoding them again (for sources that are slow to decode, such as AVIs),
    and any process can (:meth:`readable_anywhere`). The file is written and read with plain
    file calls, not mapped, so it takes no process memory."""

    def __init__(self, movie: MovieSource, path: Path):
        self.movie = movie
        self.nframes, self.dtype = movie.nframes, np.dtype(movie.dtype)
        self.frame_shape = (int(movie.frame_shape[0]), int(movie.frame_shape[1]))
        Path(path).write_bytes(b"")
        self._frames = FrameFile(Path(path), 0, self.frame_shape, self.dtype)
        self._cached = 0  # frames [0, _cached) are in the file

    def iter_chunks(self, chunk_frames: int, start: int = 0, stop: int | None = None):
        stop = self.nframes if stop is None else min(stop, self.nframes)
        position = start
        while position < min(stop, self._cached):
            end = min(position + chunk_frames, stop, self._cached)
            yield position, self._frames.read(position, end)
            position = end
        if position >= stop:
            return
        for first, frames in self.movie.iter_chunks(chunk_frames, position, stop):
            if first == self._cached:
                self._frames.write(first, np.asarray(frames, self.dtype))
                self._cached = first + len(frames)
            yield first, frames

    def readable_anywhere(self, start: int, stop: int) -> bool:
        """Whether frames [start, stop) are in the file."""
        return stop <= self._cached

    def read_frames(self, first: int, stop: int) -> np.ndarray:
        return self._frames.read(first, stop)
