"""The temporally binned copy of the corrected movie (HDF5): what source extraction and the
neuron-size estimate read, written in one pass over the movie that also takes its mean and
maximum images (for the summary images; stored beside the copy, so :func:`open_binned` can
read a kept copy back).

Frames are averaged in bins of ``round(fps / binned_frame_rate)`` frames (about 10 Hz): calcium
transients (hundreds of ms) survive, the noise is averaged down, and a cell's peak-to-noise
ratio does not depend on the rate the camera ran at. At most ``max_init_frames`` bins are kept,
which bounds the patches' working memory: a longer movie keeps that many bins spread evenly
over its whole length (every k-th, k not necessarily whole), so every part of it is seen at the
same 10 Hz. Averaging a long movie in longer bins instead (bins of 12 frames, 0.6 s, for 12000
frames at 20 Hz) flattens the cells' fast transients against slower neuropil and background
events, and the slower events passed as sources (172 masks for 150 cells against 154 with the
bins spread). With ``binned_frame_rate`` null the bins are ``ceil(T / max_init_frames)`` frames
long and all kept. A movie of unsigned integers whose bin sums fit 16 bits (8-bit Miniscope
frames in bins of up to 257) is stored as the sums, uint16: exact, half the bytes of float32
means, and divided on reading into the same float32 means; any other movie is stored as float32
means.
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
BINS = "bins"  # the index of each stored bin among the movie's bins
MEAN_IMAGE, MAX_IMAGE = "mean_image", "max_image"
_SUMS = np.dtype(np.uint16)  # the stored dtype that means "bin sums", see the module docstring


@dataclass(frozen=True)
class BinnedMovie:
    """A binned copy on disk (dataset ``binned``, (n_binned, height, width)) and its movie's
    mean and maximum."""

    path: Path
    bin_size: int
    bins: np.ndarray  # index of each stored bin among the movie's bins (its frames start at bins * bin_size)
    mean_image: np.ndarray  # temporal mean of the full-rate movie
    max_image: np.ndarray  # temporal maximum of the full-rate movie
    movie_frames: int  # frames of the full-rate movie (the last bin may hold fewer than bin_size)

    @property
    def nframes(self) -> int:
        """Binned frames stored."""
        return len(self.bins)

    @property
    def frame_shape(self) -> tuple[int, int]:
        return tuple(self.mean_image.shape)

    def frame_ranges(self) -> tuple[np.ndarray, np.ndarray]:
        """(first, stop) frames of the full-rate movie that each binned frame averages."""
        return frame_ranges(self.bins, self.bin_size, self.movie_frames)

    @property
    def frames_between_bins(self) -> float:
        """Full-rate frames from one stored bin to the next, on average (``bin_size`` where every
        bin is kept)."""
        if self.nframes < 2:
            return float(self.bin_size)
        return float(self.bins[-1] - self.bins[0]) * self.bin_size / (self.nframes - 1)

    def read(self, frames: slice = slice(None), rows: slice = slice(None), columns: slice = slice(None)) -> np.ndarray:
        """Binned frames of a window, (frames, rows, columns) float32 means."""
        with h5py.File(self.path, "r") as f:
            dataset = f[DATASET]
            if dataset.dtype != _SUMS:
                return dataset[frames, rows, columns]
            means = dataset.astype(np.float32)[frames, rows, columns]  # converted while read: no uint16 copy
        starts, stops = self.frame_ranges()
        means /= (stops - starts)[frames].astype(np.float32)[:, None, None]
        return means


def bin_size_for(nframes: int, fps: float, params: dict) -> int:
    """Frames averaged per bin (see module docstring)."""
    rate = params["binned_frame_rate"]
    if rate is None:
        return max(1, -(-nframes // params["max_init_frames"]))
    return max(1, round(fps / rate))


def frame_ranges(bins: np.ndarray, bin_size: int, movie_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """(first, stop) frames of each of ``bins`` (indices among the movie's bins of ``bin_size``
    frames; the last may hold fewer)."""
    starts = bins * bin_size
    return starts, np.minimum(starts + bin_size, movie_frames)


def kept_bins(n_bins: int, max_bins: int) -> np.ndarray:
    """The indices of the bins kept of ``n_bins``: all, or ``max_bins`` spread evenly from the
    first to the last."""
    if n_bins <= max_bins:
        return np.arange(n_bins)
    return np.round(np.linspace(0, n_bins - 1, max_bins)).astype(np.int64)


def write_binned(movie: MovieSource, params: dict, fps: float, path: Path,
                 progress: Callable[[str, float], None] | None = None) -> BinnedMovie:
    """Stream ``movie`` (recorded at ``fps``) into ``path`` binned (see module docstring)."""
    n = movie.nframes
    bin_size = bin_size_for(n, fps, params)
    n_bins = -(-n // bin_size)
    bins = kept_bins(n_bins, params["max_init_frames"])
    slot = np.full(n_bins, -1, np.int64)  # where each bin of the movie is stored, -1: not kept
    slot[bins] = np.arange(len(bins))
    height, width = movie.frame_shape
    dtype = np.dtype(movie.dtype)
    exact = dtype.kind == "u" and int(np.iinfo(dtype).max) * bin_size <= int(np.iinfo(_SUMS).max)
    accumulator = _SUMS if exact else np.dtype(np.float64)
    chunks = (min(len(bins), 32), min(height, 32), min(width, 32))
    block = np.zeros((chunks[0], height, width), accumulator)  # sums of the stored bins being filled
    block_start = 0  # the stored index of its first bin
    total = np.zeros(movie.frame_shape, np.float64)
    maximum = np.full(movie.frame_shape, -np.inf, np.float32)
    with h5py.File(path, "w") as f:
        dataset = f.create_dataset(DATASET, shape=(len(bins), height, width), dtype=_SUMS if exact else np.float32,
                                   chunks=chunks)

        def write(stop: int) -> None:  # the block's bins up to stored index ``stop`` are complete
            sums = block[: stop - block_start]
            np.add(total, sums.sum(axis=0, dtype=np.float64), out=total)
            if exact:
                dataset[block_start:stop] = sums
            else:
                starts, stops = frame_ranges(bins[block_start:stop], bin_size, n)
                counts = stops - starts
                dataset[block_start:stop] = (sums / counts[:, None, None]).astype(np.float32)
            sums[:] = 0

        for first, frames in movie.iter_chunks(params["chunk_frames"]):
            np.maximum(maximum, frames.max(axis=0), out=maximum)
            movie_bins = np.arange(first, first + len(frames)) // bin_size
            starts = np.flatnonzero(np.diff(movie_bins, prepend=-1))  # where each bin begins in the chunk
            for start, stop in zip(starts, np.append(starts[1:], len(frames))):
                stored = slot[movie_bins[start]]
                if stored < 0:  # a bin left out: its frames still count towards the mean image
                    np.add(total, frames[start:stop].sum(axis=0, dtype=np.float64), out=total)
                    continue
                if stored >= block_start + len(block):
                    write(stored)
                    block_start = stored
                block[stored - block_start] += frames[start:stop].sum(axis=0, dtype=accumulator)
            if progress:
                progress(STAGE, (first + len(frames)) / n)
        write(len(bins))
        mean = (total / n).astype(np.float32)
        f.create_dataset(BINS, data=bins)
        f.create_dataset(MEAN_IMAGE, data=mean)
        f.create_dataset(MAX_IMAGE, data=maximum)
        f.attrs["bin_size"] = bin_size
        f.attrs["movie_frames"] = n
    return BinnedMovie(Path(path), bin_size, bins, mean, maximum, n)


def open_binned(path: Path) -> BinnedMovie:
    """The BinnedMovie :func:`write_binned` wrote to ``path``."""
    try:
        with h5py.File(path, "r") as f:
            return BinnedMovie(Path(path), int(f.attrs["bin_size"]), f[BINS][()], f[MEAN_IMAGE][()],
                               f[MAX_IMAGE][()], int(f.attrs["movie_frames"]))
    except (OSError, KeyError) as error:
        raise MiniscopeInputError(path, f"not a binned copy of a movie ({error})") from error
