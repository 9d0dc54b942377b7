"""Stage 2: summary images of the motion-corrected movie, streamed in two passes.

- ``reference``: the motion-correction template in raw intensity (mean of the registered
  template frames).
- ``mean`` and ``max_projection``: temporal mean and maximum of the corrected frames.
- ``peak_to_noise``: on the neuron band-pass filtered movie ``F`` (difference of Gaussians with
  sigmas ``neuron_diameter / 4`` and ``neuron_diameter``, which removes the diffuse background),
  ``max_t (F - mean_t F) / noise``; the noise is the median absolute frame-to-frame difference
  within a batch of 32 frames (scaled to a standard deviation), averaged over about 16 batches
  spread evenly over the movie.
- ``correlation``: mean Pearson correlation of each pixel with its 8 neighbours, computed on
  ``F - mean_t F`` after zeroing values below 3 noise standard deviations (so that noise,
  which the spatial filter makes locally correlated, does not count; as in CNMF-E).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from miniscope_assets.engine.filters import Bandpass, neuron_filter_sigmas
from miniscope_assets.engine.movie import MovieSource
from miniscope_assets.engine.noise import MAD_TO_SIGMA
from miniscope_assets.results import SummaryImages

STAGE = "summary_images"
_NEIGHBOUR_OFFSETS = ((0, 1), (1, 0), (1, 1), (1, -1))  # each pixel pair counted once
_THRESHOLD_SIGMAS = 3.0
_BATCH = 32  # frames filtered at a time into a reused buffer
_NOISE_BATCHES = 16  # batches, spread over the movie, whose differences give the noise level


def filter_neurons(frames: np.ndarray, neuron_diameter: float) -> np.ndarray:
    """Band-pass every frame at the soma scale (float32, same shape)."""
    return Bandpass(frames.shape[1:], *neuron_filter_sigmas(neuron_diameter)).stack(frames)


def _filtered_batches(movie: MovieSource, params: dict, bandpass: Bandpass, buffer: np.ndarray):
    """Yield (first index, raw frames, soma-band-passed frames in ``buffer``) in batches of <= _BATCH."""
    for first, frames in movie.iter_chunks(params["chunk_frames"]):
        for offset in range(0, len(frames), _BATCH):
            raw = frames[offset : offset + _BATCH]
            yield first + offset, raw, bandpass.stack(raw, out=buffer[: len(raw)])


def compute_summary_images(
    movie: MovieSource,
    params: dict,
    reference: np.ndarray | None = None,
    progress: Callable[[str, float], None] | None = None,
) -> SummaryImages:
    """Reference, mean, max, local-correlation and peak-to-noise images (see module docstring)."""
    shape = movie.frame_shape
    n = movie.nframes
    bandpass = Bandpass(shape, *neuron_filter_sigmas(params["neuron_diameter"]))
    buffer = np.empty((min(_BATCH, n), *shape), np.float32)
    differences = np.empty((max(min(_BATCH, n) - 1, 1), *shape), np.float32)
    total = np.zeros(shape, np.float64)
    maximum = np.full(shape, -np.inf, np.float32)
    filtered_total = np.zeros(shape, np.float64)
    noise_total = np.zeros(shape, np.float64)
    noise_batches = 0
    noise_every = max(1, -(-n // _BATCH) // _NOISE_BATCHES)
    for index, (first, raw, filtered) in enumerate(_filtered_batches(movie, params, bandpass, buffer)):
        total += raw.sum(axis=0, dtype=np.float64)
        np.maximum(maximum, raw.max(axis=0), out=maximum)
        filtered_total += filtered.sum(axis=0, dtype=np.float64)
        if len(filtered) > 1 and index % noise_every == 0:
            steps = differences[: len(filtered) - 1]
            np.subtract(filtered[1:], filtered[:-1], out=steps)
            np.abs(steps, out=steps)
            noise_total += np.median(steps, axis=0, overwrite_input=True) * (MAD_TO_SIGMA / np.sqrt(2))
            noise_batches += 1
        if progress:
            progress(STAGE, 0.5 * (first + len(raw)) / n)
    mean = (total / n).astype(np.float32)
    filtered_mean = (filtered_total / n).astype(np.float32)
    noise = np.maximum(noise_total / max(noise_batches, 1), 1e-6).astype(np.float32)

    peak = np.full(shape, -np.inf, np.float32)
    correlation = LocalCorrelation(shape)
    for first, raw, filtered in _filtered_batches(movie, params, bandpass, buffer):
        filtered -= filtered_mean
        np.maximum(peak, filtered.max(axis=0), out=peak)
        correlation.add(threshold_noise(filtered, noise))
        if progress:
            progress(STAGE, 0.5 + 0.5 * (first + len(raw)) / n)
    return SummaryImages(
        mean=mean,
        reference=reference if reference is not None else mean.copy(),
        max_projection=maximum.astype(np.float32),
        correlation=correlation.image(),
        peak_to_noise=(peak / noise).astype(np.float32),
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
