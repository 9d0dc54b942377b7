"""The neuron diameter measured on the binned movie, for paramsets that leave ``neuron_diameter`` null.

1. Candidates: the binned frames are smoothed (Gaussian, 1.5 px), and the peak over time minus
   the mean, high-passed (Gaussian 20 px background removed) and divided by the per-pixel noise
   (median absolute successive difference, in about 8 blocks of 32 frames), ranks pixels by
   transient activity; the strongest local maxima at least 4 px apart are the candidates (no
   scale is assumed beyond 1.5-20 px).
2. Footprint of a candidate: in a window of +-24 px, every pixel's fluctuation is regressed on
   the candidate's trace (mean of its 3 x 3 pixels) and the window's mean trace outside 12 px
   (background, where the window has such pixels), with a constant. The 3 x 3 pixels are regressed on the mean of the other
   eight, so their own noise does not inflate them; a candidate whose 3 x 3 pixels then keep
   less than 0.6 of their coefficient is noise, not a cell, and is skipped.
3. The diameter of a cell is that of the disk with the area of its footprint's connected part
   above half of its peak (the soma diameter at half maximum, as ``neuron_diameter`` means);
   footprints touching the window edge are skipped. The estimate is the median over the cells.

Regression coefficients measure a footprint independently of the cell's brightness and SNR
(unlike correlation maps, whose width shrinks with noise); the median over tens of cells is
robust to the candidates that are neuropil or pairs of touching cells.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import scipy.ndimage

from miniscope_assets.engine.binning import BinnedMovie
from miniscope_assets.engine.noise import median_of_samples
from miniscope_assets.engine.workers import ordered_map

CANDIDATES = 40
MIN_CELLS = 3  # fewer measured cells: no estimate
_SMOOTHING = 1.5
_BACKGROUND = 20.0
_SEPARATION = 9  # candidates are local maxima over 9 x 9 px
_WINDOW = 24  # half width of a candidate's window, px: measures cells up to ~40 px across
_SELF_SIMILARITY = 0.6
_BLOCK = 32  # binned frames read at a time
_NOISE_BLOCKS = 8  # blocks, spread over the movie, whose differences give the noise


@dataclass(frozen=True)
class NeuronSize:
    """The measured neuron diameter (None if fewer than MIN_CELLS cells were measured)."""

    diameter: float | None
    cells_measured: int
    quartiles: tuple[float, float] | None  # 25th and 75th percentile of the cells' diameters


def estimate_neuron_size(binned: BinnedMovie, n_workers: int | None = None) -> NeuronSize:
    """Median half-maximum diameter of the most active cells of ``binned`` (module docstring);
    blocks of frames and candidates are measured by ``n_workers`` processes (the same result
    whatever their number)."""
    measured = ordered_map(_cell_diameter, _candidates(binned, n_workers), binned, n_workers)
    diameters = [diameter for diameter in measured if diameter is not None]
    if len(diameters) < MIN_CELLS:
        return NeuronSize(None, len(diameters), None)
    low, median, high = np.percentile(diameters, [25, 50, 75])
    return NeuronSize(round(float(median), 2), len(diameters), (round(float(low), 2), round(float(high), 2)))


def _block_activity(state, item) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(peak, sum, noise or None) of one block of smoothed binned frames."""
    binned, noise_every = state
    index, start = item
    block = binned.read(slice(start, start + _BLOCK))
    smooth = np.stack([cv2.GaussianBlur(f, (0, 0), _SMOOTHING, borderType=cv2.BORDER_REFLECT) for f in block])
    noise = None
    if len(smooth) > 2 and index % noise_every == 0:
        noise = median_of_samples(np.abs(np.diff(smooth, axis=0)))
    return smooth.max(axis=0), smooth.sum(axis=0, dtype=np.float64), noise


def _candidates(binned: BinnedMovie, n_workers: int | None) -> list[tuple[int, int]]:
    """(row, column) of the strongest local maxima of the noise-scaled activity image."""
    height, width = binned.frame_shape
    peak = np.full((height, width), -np.inf, np.float32)
    total = np.zeros((height, width), np.float64)
    noise_sum = np.zeros((height, width), np.float64)
    noise_blocks = 0
    starts = range(0, binned.nframes, _BLOCK)
    state = (binned, max(1, len(starts) // _NOISE_BLOCKS))
    for block_peak, block_total, block_noise in ordered_map(_block_activity, enumerate(starts), state, n_workers):
        np.maximum(peak, block_peak, out=peak)
        total += block_total
        if block_noise is not None:
            noise_sum += block_noise
            noise_blocks += 1
    if not noise_blocks:
        return []
    activity = peak - (total / binned.nframes).astype(np.float32)
    activity -= cv2.GaussianBlur(activity, (0, 0), _BACKGROUND, borderType=cv2.BORDER_REFLECT)
    activity /= np.maximum(noise_sum / noise_blocks, 1e-6).astype(np.float32)
    maxima = activity == scipy.ndimage.maximum_filter(activity, size=_SEPARATION)
    maxima[:2], maxima[-2:], maxima[:, :2], maxima[:, -2:] = False, False, False, False
    ys, xs = np.nonzero(maxima)
    strongest = np.argsort(activity[ys, xs], kind="stable")[::-1][:CANDIDATES]
    return [(int(ys[i]), int(xs[i])) for i in strongest]


def _cell_diameter(binned: BinnedMovie, candidate: tuple[int, int]) -> float | None:
    """Half-maximum diameter of the footprint regressed on the trace at the candidate pixel, or None."""
    y, x = candidate
    height, width = binned.frame_shape
    y0, y1 = max(y - _WINDOW, 0), min(y + _WINDOW + 1, height)
    x0, x1 = max(x - _WINDOW, 0), min(x + _WINDOW + 1, width)
    window = binned.read(slice(None), slice(y0, y1), slice(x0, x1))
    n, h, w = window.shape
    cy, cx = y - y0, x - x0
    fluctuation = (window - window.mean(axis=0)).reshape(n, h * w)
    box = np.add.outer(np.arange(cy - 1, cy + 2) * w, np.arange(cx - 1, cx + 2)).ravel()  # the 3 x 3 pixels
    centre = fluctuation[:, box]
    yy, xx = np.mgrid[y0 - y : y1 - y, x0 - x : x1 - x]
    outside = (yy**2 + xx**2).ravel() > (_WINDOW // 2) ** 2
    regressors = [centre.mean(axis=1), np.ones(n)]
    if outside.sum() >= 10:  # a window within a small frame may have no background pixels
        regressors.insert(1, fluctuation[:, outside].mean(axis=1))
    design = np.column_stack(regressors)
    coefficients = np.linalg.lstsq(design, fluctuation, rcond=None)[0][0]
    inflated = coefficients[box].mean()
    others = (centre.sum(axis=1, keepdims=True) - centre) / 8  # each centre pixel's trace left out
    for i, pixel in enumerate(box):
        design[:, 0] = others[:, i]
        coefficients[pixel] = np.linalg.lstsq(design, centre[:, i], rcond=None)[0][0]
    if not coefficients[box].mean() >= _SELF_SIMILARITY * inflated:
        return None
    coefficients = cv2.GaussianBlur(coefficients.reshape(h, w).astype(np.float32), (0, 0), 0.7,
                                    borderType=cv2.BORDER_REFLECT)
    peak = coefficients[max(cy - 2, 0) : cy + 3, max(cx - 2, 0) : cx + 3].max()
    labels, _ = scipy.ndimage.label(coefficients >= 0.5 * peak)
    region = labels == labels[cy, cx]
    if not region[cy, cx] or region[0].any() or region[-1].any() or region[:, 0].any() or region[:, -1].any():
        return None
    return float(2 * np.sqrt(region.sum() / np.pi))
