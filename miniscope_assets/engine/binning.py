"""The temporally binned copy of the corrected movie (HDF5, float32): what source extraction and
the neuron-size estimate read, written in one pass over the movie that also takes its mean and
maximum images (for the summary images; stored beside the copy, so :func:`open_binned` can
read a kept copy back).

Frames are averaged in bins of ``ceil(T / max_init_frames)``, so the copy holds at most
``max_init_frames`` frames: it fits the patches' working memory and averages the noise down
while calcium transients (hundreds of ms) survive.
"""

from __future__ import annotations

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


def write_binned(movie: MovieSource, params: dict, path: Path,
                 progress: Callable[[str, float], None] | None = None) -> BinnedMovie:
    """Stream ``movie`` into ``path`` averaged in bins (see module docstring)."""
    n = movie.nframes
    bin_size = bin_size_for(n, params["max_init_frames"])
    n_binned = -(-n // bin_size)
    height, width = movie.frame_shape
    total = np.zeros(movie.frame_shape, np.float64)
    maximum = np.full(movie.frame_shape, -np.inf, np.float32)
    chunks = (min(n_binned, 32), min(height, 32), min(width, 32))
    pending: list[np.ndarray] = []
    written = 0
    carry = np.zeros(movie.frame_shape, np.float64)
    carried = 0
    with h5py.File(path, "w") as f:
        dataset = f.create_dataset(DATASET, shape=(n_binned, height, width), dtype=np.float32, chunks=chunks)
        for first, frames in movie.iter_chunks(params["chunk_frames"]):
            np.maximum(maximum, frames.max(axis=0), out=maximum)
            bins = np.arange(first, first + len(frames)) // bin_size
            starts = np.flatnonzero(np.diff(bins, prepend=-1))  # where each bin begins in the chunk
            for start, stop in zip(starts, np.append(starts[1:], len(frames))):
                sums = frames[start:stop].sum(axis=0, dtype=np.float64)
                count = stop - start
                total += sums
                carry += sums
                carried += count
                if carried == bin_size:
                    pending.append((carry / carried).astype(np.float32))
                    carry[:] = 0
                    carried = 0
            if len(pending) >= chunks[0]:
                dataset[written : written + len(pending)] = np.stack(pending)
                written += len(pending)
                pending = []
            if progress:
                progress(STAGE, (first + len(frames)) / n)
        if carried:
            pending.append((carry / carried).astype(np.float32))
        if pending:
            dataset[written : written + len(pending)] = np.stack(pending)
        mean = (total / n).astype(np.float32)
        f.create_dataset(MEAN_IMAGE, data=mean)
        f.create_dataset(MAX_IMAGE, data=maximum)
        f.attrs["bin_size"] = bin_size
    return BinnedMovie(Path(path), bin_size, n_binned, mean, maximum)


def open_binned(path: Path) -> BinnedMovie:
    """The BinnedMovie :func:`write_binned` wrote to ``path``."""
    try:
        with h5py.File(path, "r") as f:
            return BinnedMovie(Path(path), int(f.attrs["bin_size"]), int(f[DATASET].shape[0]), f[MEAN_IMAGE][()],
                               f[MAX_IMAGE][()])
    except (OSError, KeyError) as error:
        raise MiniscopeInputError(path, f"not a binned copy of a movie ({error})") from error
