"""The temporally binned copy of the corrected movie (HDF5): what source extraction and the
neuron-size estimate read, written in one pass over the movie that also takes its mean and
maximum images (for the summary images; stored beside the copy, so :func:`open_binned` can
read a kept copy back).

Frames are averaged in bins of ``round(fps / binned_frame_rate)`` frames, or of
``ceil(T / max_init_frames)`` if that is more, so the copy holds at most ``max_init_frames``
frames at about ``binned_frame_rate`` (10 Hz) or less: it fits the patches' working memory and
averages the noise down while calcium transients (hundreds of ms) survive, and a cell's
peak-to-noise ratio does not depend on the rate the camera ran at. A movie of unsigned integers whose bin sums
fit 16 bits (8-bit Miniscope frames in bins of up to 257) is stored as the sums, uint16: exact,
half the bytes of float32 means, and divided on reading into the same float32 means; any other
movie is stored as float32 means.
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
_SUMS = np.dtype(np.uint16)  # the stored dtype that means "bin sums", see the module docstring


@dataclass(frozen=True)
class BinnedMovie:
    """A binned copy on disk (dataset ``binned``, (n_binned, height, width)) and its movie's
    mean and maximum."""

    path: Path
    bin_size: int
    nframes: int  # binned frames
    mean_image: np.ndarray  # temporal mean of the full-rate movie
    max_image: np.ndarray  # temporal maximum of the full-rate movie
    movie_frames: int  # frames of the full-rate movie (the last bin may hold fewer than bin_size)

    @property
    def frame_shape(self) -> tuple[int, int]:
        return tuple(self.mean_image.shape)

    def read(self, frames: slice = slice(None), rows: slice = slice(None), columns: slice = slice(None)) -> np.ndarray:
        """Binned frames of a window, (frames, rows, columns) float32 means."""
        with h5py.File(self.path, "r") as f:
            dataset = f[DATASET]
            if dataset.dtype != _SUMS:
                return dataset[frames, rows, columns]
            means = dataset.astype(np.float32)[frames, rows, columns]  # converted while read: no uint16 copy
        counts = bin_counts(np.arange(self.nframes)[frames], self.bin_size, self.movie_frames)
        means /= counts.astype(np.float32)[:, None, None]
        return means


def bin_size_for(nframes: int, fps: float, params: dict) -> int:
    """Frames averaged per bin (see module docstring)."""
    rate = params["binned_frame_rate"]
    to_rate = 1 if rate is None else round(fps / rate)
    return max(1, to_rate, -(-nframes // params["max_init_frames"]))


def bin_counts(bins: np.ndarray, bin_size: int, movie_frames: int) -> np.ndarray:
    """Frames in each of ``bins`` (indices): ``bin_size``, fewer in the last bin."""
    return np.minimum(movie_frames - bins * bin_size, bin_size)


def write_binned(movie: MovieSource, params: dict, fps: float, path: Path,
                 progress: Callable[[str, float], None] | None = None) -> BinnedMovie:
    """Stream ``movie`` (recorded at ``fps``) into ``path`` binned (see module docstring)."""
    n = movie.nframes
    bin_size = bin_size_for(n, fps, params)
    n_binned = -(-n // bin_size)
    height, width = movie.frame_shape
    dtype = np.dtype(movie.dtype)
    exact = dtype.kind == "u" and int(np.iinfo(dtype).max) * bin_size <= int(np.iinfo(_SUMS).max)
    accumulator = _SUMS if exact else np.dtype(np.float64)
    chunks = (min(n_binned, 32), min(height, 32), min(width, 32))
    block = np.zeros((chunks[0], height, width), accumulator)  # bin sums of the chunk of bins being filled
    block_start = 0  # its first bin
    total = np.zeros(movie.frame_shape, np.float64)
    maximum = np.full(movie.frame_shape, -np.inf, np.float32)
    with h5py.File(path, "w") as f:
        dataset = f.create_dataset(DATASET, shape=(n_binned, height, width), dtype=_SUMS if exact else np.float32,
                                   chunks=chunks)

        def write(stop: int) -> None:  # the block's bins up to ``stop`` are complete
            sums = block[: stop - block_start]
            np.add(total, sums.sum(axis=0, dtype=np.float64), out=total)
            if exact:
                dataset[block_start:stop] = sums
            else:
                counts = bin_counts(np.arange(block_start, stop), bin_size, n)
                dataset[block_start:stop] = (sums / counts[:, None, None]).astype(np.float32)
            sums[:] = 0

        for first, frames in movie.iter_chunks(params["chunk_frames"]):
            np.maximum(maximum, frames.max(axis=0), out=maximum)
            bins = np.arange(first, first + len(frames)) // bin_size
            starts = np.flatnonzero(np.diff(bins, prepend=-1))  # where each bin begins in the chunk
            for start, stop in zip(starts, np.append(starts[1:], len(frames))):
                if bins[start] == block_start + len(block):
                    write(bins[start])
                    block_start = bins[start]
                block[bins[start] - block_start] += frames[start:stop].sum(axis=0, dtype=accumulator)
            if progress:
                progress(STAGE, (first + len(frames)) / n)
        write(n_binned)
        mean = (total / n).astype(np.float32)
        f.create_dataset(MEAN_IMAGE, data=mean)
        f.create_dataset(MAX_IMAGE, data=maximum)
        f.attrs["bin_size"] = bin_size
        f.attrs["movie_frames"] = n
    return BinnedMovie(Path(path), bin_size, n_binned, mean, maximum, n)


def open_binned(path: Path) -> BinnedMovie:
    """The BinnedMovie :func:`write_binned` wrote to ``path``."""
    try:
        with h5py.File(path, "r") as f:
            return BinnedMovie(Path(path), int(f.attrs["bin_size"]), int(f[DATASET].shape[0]), f[MEAN_IMAGE][()],
                               f[MAX_IMAGE][()], int(f.attrs["movie_frames"]))
    except (OSError, KeyError) as error:
        raise MiniscopeInputError(path, f"not a binned copy of a movie ({error})") from error
