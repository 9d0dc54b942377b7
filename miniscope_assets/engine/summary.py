"""Stage 2: summary images of the motion-corrected movie, in one pass of its own.

- ``reference``: the motion-correction template in raw intensity (mean of the registered
  template frames).
- ``mean`` and ``max_projection``: temporal mean and maximum of the corrected frames (taken by
  the pass that writes the binned copy, :mod:`~miniscope_assets.engine.binning`).
- ``peak_to_noise``: on the neuron band-pass filtered movie ``F`` (difference of Gaussians with
  sigmas ``neuron_diameter / 4`` and ``neuron_diameter``, which removes the diffuse background),
  ``max_t (F - mean_t F) / noise``; the noise is the median absolute frame-to-frame difference
  within a batch of 32 frames (scaled to a standard deviation), averaged over at most 16 batches
  spread evenly over the movie. ``mean_t F`` is the filtered mean image (the filter is linear).
- ``correlation``: mean Pearson correlation of each pixel with its 8 neighbours, computed on
  ``F - mean_t F`` after zeroing values below 3 noise standard deviations (so that noise,
  which the spatial filter makes locally correlated, does not count; as in CNMF-E).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from miniscope_assets.engine.filters import Bandpass, neuron_filter_sigmas
from miniscope_assets.engine.movie import MovieSource
from miniscope_assets.engine.noise import MAD_TO_SIGMA, median_of_samples
from miniscope_assets.engine.workers import map_chunks
from miniscope_assets.results import SummaryImages

STAGE = "summary_images"
_NEIGHBOUR_OFFSETS = ((0, 1), (1, 0), (1, 1), (1, -1))  # each pixel pair counted once
_THRESHOLD_SIGMAS = 3.0
_BATCH = 32  # frames filtered at a time into a reused buffer
_NOISE_BATCHES = 16  # batches, spread over the movie, whose differences give the noise level


def filter_neurons(frames: np.ndarray, neuron_diameter: float) -> np.ndarray:
    """Band-pass every frame at the soma scale (float32, same shape)."""
    return Bandpass(frames.shape[1:], *neuron_filter_sigmas(neuron_diameter)).stack(frames)


@dataclass
class _Filter:
    """Soma-scale band-pass of frames in batches held in one reused buffer (a worker's state)."""

    bandpass: Bandpass
    buffer: np.ndarray
    filtered_mean: np.ndarray | None = None
    noise: np.ndarray | None = None

    def filter(self, frames: np.ndarray) -> np.ndarray:
        """Band-passed ``frames`` (at most _BATCH) in the buffer."""
        return self.bandpass.stack(frames, out=self.buffer[: len(frames)])

    def batches(self, frames: np.ndarray):
        """Yield the band-passed frames in the buffer, in batches of <= _BATCH."""
        for offset in range(0, len(frames), _BATCH):
            yield self.filter(frames[offset : offset + _BATCH])


def _batch_noise(state: _Filter, chunk) -> np.ndarray:
    """Noise standard deviation of every pixel of one band-passed batch of successive frames."""
    filtered = state.filter(chunk[1])
    return median_of_samples(np.abs(filtered[1:] - filtered[:-1])) * (MAD_TO_SIGMA / np.sqrt(2))


def _second_pass(state: _Filter, chunk) -> tuple[np.ndarray, "LocalCorrelation"]:
    """Peak of the centred band-passed frames and their local-correlation sums, of one chunk."""
    _, frames = chunk
    peak = np.full(frames.shape[1:], -np.inf, np.float32)
    correlation = LocalCorrelation(frames.shape[1:])
    for filtered in state.batches(frames):
        filtered -= state.filtered_mean
        np.maximum(peak, filtered.max(axis=0), out=peak)
        correlation.add(threshold_noise(filtered, state.noise))
    return peak, correlation


def _noise_batch_starts(nframes: int) -> list[int]:
    """First frames of the (at most _NOISE_BATCHES) batches, spread evenly, that give the noise."""
    if nframes < 2:
        return []
    starts = np.linspace(0, max(nframes - _BATCH, 0), min(_NOISE_BATCHES, -(-nframes // _BATCH)))
    return sorted({int(round(start)) for start in starts})


def compute_summary_images(
    movie: MovieSource,
    params: dict,
    mean: np.ndarray,
    maximum: np.ndarray,
    reference: np.ndarray | None = None,
    progress: Callable[[str, float], None] | None = None,
    n_workers: int | None = None,
) -> SummaryImages:
    """Reference, mean, max, local-correlation and peak-to-noise images (see module docstring).

    ``mean`` and ``maximum``: the movie's temporal mean and maximum, from the pass that wrote the
    binned copy. The band-pass is linear, so the filtered movie's mean is the filtered mean;
    the noise comes from a few batches; the one pass left is summarised per chunk by
    ``n_workers`` processes, the partial sums added in order (the same whatever the worker
    count)."""
    shape = movie.frame_shape
    n = movie.nframes
    chunk_frames = params["chunk_frames"]
    state = _Filter(Bandpass(shape, *neuron_filter_sigmas(params["neuron_diameter"])),
                    np.empty((_BATCH, *shape), np.float32))
    state.filtered_mean = state.bandpass(mean)
    batches = [(start, start + _BATCH) for start in _noise_batch_starts(n)]
    noise_total = np.zeros(shape, np.float64)
    measured = 0
    for noise in map_chunks(_batch_noise, movie, _BATCH, state, n_workers, batches):
        noise_total += noise
        measured += 1
    state.noise = np.maximum(noise_total / max(measured, 1), 1e-6).astype(np.float32)
    if progress:
        progress(STAGE, 0.1)

    peak = np.full(shape, -np.inf, np.float32)
    correlation = LocalCorrelation(shape)
    for done, (chunk_peak, chunk_correlation) in enumerate(
        map_chunks(_second_pass, movie, chunk_frames, state, n_workers), start=1
    ):
        np.maximum(peak, chunk_peak, out=peak)
        correlation.merge(chunk_correlation)
        if progress:
            progress(STAGE, 0.1 + 0.9 * min(done * chunk_frames, n) / n)
    return SummaryImages(
        mean=mean,
        reference=reference if reference is not None else mean.copy(),
        max_projection=np.asarray(maximum, np.float32),
        correlation=correlation.image(),
        peak_to_noise=(peak / state.noise).astype(np.float32),
    )


def threshold_noise(centred: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """``centred`` with values below 3 noise standard deviations set to zero (in place)."""
    centred[centred < _THRESHOLD_SIGMAS * noise] = 0
    return centred


class LocalCorrelation:
    """Streaming 8-neighbour correlation image: add (n, height, width) stacks, then ``image()``."""

    def __init__(self, shape: tuple[int, int]):
        self.shape = shape
        self.count = 0
        self.sums = np.zeros(shape, np.float64)
        self.squares = np.zeros(shape, np.float64)
        self.products = [np.zeros(shape, np.float64) for _ in _NEIGHBOUR_OFFSETS]

    def add(self, stack: np.ndarray) -> "LocalCorrelation":
        self.count += len(stack)
        self.sums += stack.sum(axis=0, dtype=np.float64)
        self.squares += np.einsum("tyx,tyx->yx", stack, stack)
        for accumulator, (dy, dx) in zip(self.products, _NEIGHBOUR_OFFSETS):
            a, b = _overlap(stack, dy, dx)
            accumulator[_region(self.shape, dy, dx)] += np.einsum("tyx,tyx->yx", a, b)
        return self

    def merge(self, other: "LocalCorrelation") -> "LocalCorrelation":
        """Add the sums of ``other`` (frames accumulated elsewhere)."""
        self.count += other.count
        self.sums += other.sums
        self.squares += other.squares
        for mine, theirs in zip(self.products, other.products):
            mine += theirs
        return self

    def image(self) -> np.ndarray:
        n = max(self.count, 1)
        return _local_correlation(self.sums / n, self.squares / n, [p / n for p in self.products])


def _region(shape, dy: int, dx: int) -> tuple[slice, slice]:
    """Pixels p whose neighbour p + (dy, dx) is inside the image."""
    height, width = shape
    rows = slice(0, height - dy)
    cols = slice(0, width - dx) if dx >= 0 else slice(-dx, width)
    return rows, cols


def _overlap(stack: np.ndarray, dy: int, dx: int) -> tuple[np.ndarray, np.ndarray]:
    """(values at p, values at p + (dy, dx)) over the region where both exist."""
    height, width = stack.shape[1:]
    rows, cols = _region((height, width), dy, dx)
    shifted_cols = slice(cols.start + dx, cols.stop + dx)
    return stack[:, rows, cols], stack[:, rows.start + dy : rows.stop + dy, shifted_cols]


def _local_correlation(mean: np.ndarray, mean_square: np.ndarray, mean_products: list[np.ndarray]) -> np.ndarray:
    """Average correlation with the 8 neighbours from first and second moments."""
    shape = mean.shape
    std = np.sqrt(np.maximum(mean_square - mean**2, 0))
    total = np.zeros(shape, np.float64)
    count = np.zeros(shape, np.float64)
    for product, (dy, dx) in zip(mean_products, _NEIGHBOUR_OFFSETS):
        here = _region(shape, dy, dx)
        rows, cols = here
        there = (slice(rows.start + dy, rows.stop + dy), slice(cols.start + dx, cols.stop + dx))
        denominator = std[here] * std[there]
        pair = np.where(denominator > 0, (product[here] - mean[here] * mean[there]) / np.where(denominator > 0, denominator, 1), 0)
        total[here] += pair
        total[there] += pair
        count[here] += 1
        count[there] += 1
    return (total / np.maximum(count, 1)).astype(np.float32)
