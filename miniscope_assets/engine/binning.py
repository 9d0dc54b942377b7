"""The temporally binned copy of the corrected movie (HDF5, float32): what source extraction and
the neuron-size estimate read, written in one pass over the movie that also takes its mean and
maximum images (for the summary images).

Frames are averaged in bins of ``ceil(T / max_init_frames)``, so the copy holds at most
``max_init_frames`` frames: it fits the patches' working memory and averages the noise down
while calcium transients (hundreds of ms) survive.

The pass is split in two so that it can ride along another one (motion correction's, which
registers the chunks in worker processes): :func:`reduce_chunk` reduces a chunk of frames where
the chunk is, :class:`BinnedWriter` gathers the reductions in frame order and writes the copy.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import h5py
import numpy as np

from miniscope_assets.engine.movie import MovieSource
from miniscope_assets.errors import MiniscopeInputError

STAGE = "binning"
DATASET = "binned"
MEAN_IMAGE, MAX_IMAGE = "mean_image", "max_image"


@dataclass(frozen=True)
class BinnedMovie:
    """A binned copy on disk (dataset ``binned``, (n_binned, height, width)) and its movie's
    mean and maximum."""

    path: Path
    bin_size: int
    nframes: int  # binned frames
    mean_image: np.ndarray  # temporal mean of the full-rate movie
    max_image: np.ndarray  # temporal maximum of the full-rate movie

    @property
    def frame_shape(self) -> tuple[int, int]:
        return tuple(self.mean_image.shape)

    def read(self, frames: slice = slice(None), rows: slice = slice(None), columns: slice = slice(None)) -> np.ndarray:
        """Binned frames of a window, (frames, rows, columns) float32."""
        with h5py.File(self.path, "r") as f:
            return f[DATASET][frames, rows, columns]


def bin_size_for(nframes: int, max_frames: int) -> int:
    """Frames averaged per bin so that at most ``max_frames`` bins remain."""
    return max(1, -(-nframes // max_frames))


@dataclass(frozen=True)
class ChunkBins:
    """A chunk of frames reduced for the binned copy: its pieces of bins in order, each (frame
    count, values): the float32 mean of a bin it holds whole (count = bin size), else the float64
    sum of the part of a bin it holds (only its first and last piece can be parts); and the
    chunk's float64 sum and maximum."""

    pieces: list[tuple[int, np.ndarray]]
    total: np.ndarray
    maximum: np.ndarray


def reduce_chunk(bin_size: int, first: int, frames: np.ndarray) -> ChunkBins:
    """The ChunkBins of ``frames``, the movie's frames from ``first`` on."""
    stop = first + len(frames)
    edges = [first, *range((first // bin_size + 1) * bin_size, stop, bin_size), stop]
    pieces, total = [], np.zeros(frames.shape[1:], np.float64)
    for start, end in zip(edges[:-1], edges[1:]):
        sums = frames[start - first : end - first].sum(axis=0, dtype=np.float64)
        total += sums
        count = end - start
        pieces.append((count, (sums / count).astype(np.float32) if count == bin_size else sums))
    return ChunkBins(pieces, total, frames.max(axis=0))


class BinnedWriter:
    """Writes the binned copy of an ``nframes`` movie to ``path`` from its chunks' ChunkBins,
    given in frame order to :meth:`add`; :meth:`finish` stores the mean and maximum images too
    (:func:`open_binned` reads it all back) and returns the BinnedMovie. A context manager: the
    file is closed on leaving it, finished or not."""

    def __init__(self, path: Path, nframes: int, frame_shape: tuple[int, int], max_frames: int):
        self.path = Path(path)
        self.nframes = nframes
        self.bin_size = bin_size_for(nframes, max_frames)
        self.n_binned = -(-nframes // self.bin_size)
        self._total = np.zeros(frame_shape, np.float64)
        self._maximum = np.full(frame_shape, -np.inf, np.float32)
        self._carry = np.zeros(frame_shape, np.float64)  # the sum of a bin begun in an earlier chunk
        self._carried = 0
        self._pending: list[np.ndarray] = []  # binned frames not yet written
        self._written = 0
        self._file = h5py.File(self.path, "w")
        height, width = frame_shape
        chunks = (min(self.n_binned, 32), min(height, 32), min(width, 32))
        self._dataset = self._file.create_dataset(DATASET, shape=(self.n_binned, height, width), dtype=np.float32,
                                                  chunks=chunks)

    def reducer(self) -> Callable[[int, np.ndarray], ChunkBins]:
        """``reducer(first, frames)``: :func:`reduce_chunk` with this copy's bin size."""
        return functools.partial(reduce_chunk, self.bin_size)

    def add(self, bins: ChunkBins) -> None:
        self._total += bins.total
        np.maximum(self._maximum, bins.maximum, out=self._maximum)
        for count, values in bins.pieces:
            if count == self.bin_size:  # a whole bin (bins are aligned: nothing is carried then)
                self._pending.append(values)
                continue
            self._carry += values
            self._carried += count
            if self._carried == self.bin_size:
                self._close_bin()
        if len(self._pending) >= self._dataset.chunks[0]:
            self._flush()

    def finish(self) -> BinnedMovie:
        if self._carried:  # the movie's last, shorter bin
            self._close_bin()
        self._flush()
        if self._written != self.n_binned:
            raise ValueError(f"{self.path}: {self._written} binned frames written, {self.n_binned} expected")
        mean = (self._total / self.nframes).astype(np.float32)
        self._file.create_dataset(MEAN_IMAGE, data=mean)
        self._file.create_dataset(MAX_IMAGE, data=self._maximum)
        self._file.attrs["bin_size"] = self.bin_size
        self._file.close()
        return BinnedMovie(self.path, self.bin_size, self.n_binned, mean, self._maximum)

    def add_movie(self, movie: MovieSource, chunk_frames: int,
                  progress: Callable[[str, float], None] | None = None) -> None:
        """Add every frame of ``movie``, read ``chunk_frames`` at a time."""
        reduce = self.reducer()
        for first, frames in movie.iter_chunks(chunk_frames):
            self.add(reduce(first, frames))
            if progress:
                progress(STAGE, (first + len(frames)) / movie.nframes)

    def _close_bin(self) -> None:
        self._pending.append((self._carry / self._carried).astype(np.float32))
        self._carry[:] = 0
        self._carried = 0

    def _flush(self) -> None:
        if self._pending:
            self._dataset[self._written : self._written + len(self._pending)] = np.stack(self._pending)
            self._written += len(self._pending)
            self._pending = []

    def __enter__(self) -> "BinnedWriter":
        return self

    def __exit__(self, *exc) -> None:
        self._file.close()


def write_binned(movie: MovieSource, params: dict, path: Path,
                 progress: Callable[[str, float], None] | None = None) -> BinnedMovie:
    """Stream ``movie`` into ``path`` averaged in bins (see module docstring)."""
    with BinnedWriter(path, movie.nframes, movie.frame_shape, params["max_init_frames"]) as writer:
        writer.add_movie(movie, params["chunk_frames"], progress)
        return writer.finish()


def open_binned(path: Path) -> BinnedMovie:
    """The BinnedMovie a :class:`BinnedWriter` finished at ``path``."""
    try:
        with h5py.File(path, "r") as f:
            return BinnedMovie(Path(path), int(f.attrs["bin_size"]), int(f[DATASET].shape[0]), f[MEAN_IMAGE][()],
                               f[MAX_IMAGE][()])
    except (OSError, KeyError) as error:
        raise MiniscopeInputError(path, f"not a finished binned copy ({error})") from error
