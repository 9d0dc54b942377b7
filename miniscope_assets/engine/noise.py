"""Robust noise estimates shared by the stages."""

from __future__ import annotations

import numpy as np

MAD_TO_SIGMA = 1.4826  # median absolute deviation -> standard deviation (Gaussian noise)


def noise_from_differences(stack: np.ndarray, axis: int = 0, max_pairs: int = 512) -> np.ndarray:
    """Noise standard deviation along ``axis`` from the median absolute successive difference.

    Slow signals (calcium transients, background drift) barely change the differences, so this
    measures the white noise; ``sqrt(2)`` accounts for differencing two noisy samples. At most
    ``max_pairs`` pairs of successive samples, spread evenly, are used.
    """
    n = stack.shape[axis]
    if n < 2:
        return np.ones(np.delete(stack.shape, axis), np.float32)
    first = np.arange(0, n - 1, max(1, -(-(n - 1) // max_pairs)))
    differences = np.abs(np.take(stack, first + 1, axis=axis) - np.take(stack, first, axis=axis))
    return (median_of_samples(np.moveaxis(differences, axis, 0)) * (MAD_TO_SIGMA / np.sqrt(2))).astype(np.float32)


def median_of_samples(stack: np.ndarray) -> np.ndarray:
    """``np.median(stack, axis=0)``, 4-5 x faster for image stacks: each pixel's samples are made
    contiguous and only the middle one or two are selected."""
    n = stack.shape[0]
    samples = np.ascontiguousarray(stack.reshape(n, -1).T)
    middle = [n // 2] if n % 2 else [n // 2 - 1, n // 2]
    samples.partition(middle, axis=1)
    return samples[:, middle].mean(axis=1).reshape(stack.shape[1:])


def rise_snr(trace: np.ndarray, window: int) -> float:
    """Largest rise of a trace above the median of its ``window`` preceding samples, over its
    noise: how far a transient climbs above where the trace just was. A calcium transient rises
    within a fraction of a second and scores its full height; a slow drift of the background
    scores only what it climbs within the window."""
    trace = np.asarray(trace, np.float64)
    if len(trace) <= window:
        return trace_snr(trace)
    return float(rises(trace, window).max())


def rises(trace: np.ndarray, window: int) -> np.ndarray:
    """Rise of every sample from index ``window`` on above the median of the ``window`` samples
    before it, over the trace's noise (:func:`rise_snr` is the largest); ``trace`` longer than ``window``."""
    trace = np.asarray(trace, np.float64)
    noise = float(noise_from_differences(trace))
    preceding = np.median(np.lib.stride_tricks.sliding_window_view(trace[:-1], window), axis=1)
    return (trace[window:] - preceding) / max(noise, 1e-12)


def trace_snr(trace: np.ndarray) -> float:
    """Peak signal-to-noise ratio of a trace: (max - median) / noise."""
    if len(trace) < 3:
        return 0.0
    noise = float(noise_from_differences(np.asarray(trace, np.float64)))
    return float((np.max(trace) - np.median(trace)) / max(noise, 1e-12))
