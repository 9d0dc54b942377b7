"""The movie protocol the engine reads: frames streamed in chunks, never the whole movie."""

from __future__ import annotations

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
