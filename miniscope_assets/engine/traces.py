"""Stage 5: fluorescence, background (neuropil), dF/F, denoised traces and deconvolved activity.

With the footprints ``A``, the constant background ``b0``, the ring-average operator ``R`` and
the per-pixel ring gains ``w`` from source extraction fixed, every frame ``y`` (background
removed: ``u = y - b0``) is demixed in one linear step. The background model says the fluctuating
background is ``w * R(u - A f)``; requiring the traces ``f`` to be the least-squares fit of the
data minus that background, ``A^T (u - w R(u - A f)) = A^T A f``, gives

    f = M^-1 (A - G)^T u,     G = R^T (w A),     M = (A - G)^T A

so a frame costs two sparse products (``G`` is the ring "shadow" of each footprint). ``f`` is
the raw demixed fluorescence (no non-negativity: the analogue of CNMF's ``C + residual``), in
units of the footprint's peak pixel. The background under each mask, in the same units, is
``n_k = a_k^T (b0 + w R(u - A f)) / a_k^T a_k`` (reported as ``neuropil``).

dF/F: ``(f - F0_f) / (F0_f + F0_n)`` where ``F0_x`` is the running ``dff_percentile``
percentile of ``x`` over ``dff_window`` seconds (evaluated every window/10 and linearly
interpolated); the background baseline ``F0_n`` makes the denominator the total resting
fluorescence under the mask, as 1-photon data needs.

Deconvolution: OASIS (``oasis.functions.deconvolve``, L1 penalty, baseline free, noise
estimated per trace) on ``f``: ``denoised = c + baseline`` (fluorescence units) and
``spikes = s``. The indicator model is AR(1) (``rise_time`` 0, the default: an instant rise and
a decay of ``decay_time``, or estimated per trace), or AR(2) where the rise time matters (slow
indicators, fast frame rates): ``rise_time`` and ``decay_time`` given, or both estimated per
trace (``rise_time`` null).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np
import scipy.sparse
from oasis.functions import deconvolve

from miniscope_assets.engine.extraction import Sources
from miniscope_assets.engine.filters import RingAverage, ring_radii
from miniscope_assets.engine.movie import MovieSource
from miniscope_assets.engine.noise import trace_snr
from miniscope_assets.engine.workers import map_chunks, ordered_map, worker_count
from miniscope_assets.results import footprint_pixels

STAGE = "traces"
DEMIX_CHUNK_BYTES = 32 << 20  # float32 frames a worker demixes at once: bounds its memory at any frame size


@dataclass
class Traces:
    """Output of :func:`extract_traces`; all (n_masks, n_frames) float32."""

    fluorescence: np.ndarray
    neuropil: np.ndarray
    dff: np.ndarray
    denoised: np.ndarray
    spikes: np.ndarray
    snr: np.ndarray  # (n_masks,) peak SNR of the fluorescence
    notes: dict


class Demixer:
    """Per-frame linear demixing of fluorescence and background under fixed footprints."""

    def __init__(self, sources: Sources, params: dict):
        footprints = sources.footprints.tocsc().astype(np.float32)
        self.shape = sources.background_mean.shape
        self.background = sources.background_mean.ravel().astype(np.float32)
        ring = RingAverage(self.shape, *ring_radii(params["neuron_diameter"], params["ring_radius_factor"]))
        shadow = _ring_shadows(footprints, sources.ring_gain, ring)
        self.k = footprints.shape[1]
        self.projector = scipy.sparse.hstack([footprints, shadow], format="csr").T.tocsr()  # (2K, P)
        self.norms = np.asarray(footprints.multiply(footprints).sum(axis=0)).ravel()
        self.footprint_background = footprints.T @ self.background
        shadow_gram = (shadow.T @ footprints).toarray()
        self.mixing = (footprints.T @ footprints).toarray() - shadow_gram  # M
        self.shadow_gram = shadow_gram

    def demix(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(fluorescence (K, n), background under each mask (K, n)) of (n, H, W) frames."""
        # pixels x frames, C-ordered: the layout the sparse product reads (it would copy flat.T),
        # made by the one copy that also converts the frames to float32
        by_pixel = np.empty((self.background.size, len(frames)), np.float32)
        by_pixel[:] = frames.reshape(len(frames), -1).T
        by_pixel -= self.background[:, None]
        projections = np.asarray(self.projector @ by_pixel)  # (2K, n)
        on_footprints, on_shadows = projections[: self.k], projections[self.k :]
        fluorescence = np.linalg.solve(self.mixing, on_footprints - on_shadows)
        background = (self.footprint_background[:, None] + on_shadows - self.shadow_gram @ fluorescence)
        return fluorescence, background / self.norms[:, None]


def _ring_shadows(footprints: scipy.sparse.csc_matrix, gain: np.ndarray, ring: RingAverage) -> scipy.sparse.csc_matrix:
    """Columns ``R^T (w a_k)`` computed on each footprint's neighbourhood only."""
    height, width = ring.shape
    reach = ring.outer
    columns = []
    for k in range(footprints.shape[1]):
        ys, xs, values = footprint_pixels(footprints, k, width)
        if len(ys) == 0:
            columns.append(scipy.sparse.csc_matrix((height * width, 1), dtype=np.float32))
            continue
        y0, y1 = max(ys.min() - reach, 0), min(ys.max() + reach + 1, height)
        x0, x1 = max(xs.min() - reach, 0), min(xs.max() + reach + 1, width)
        local = np.zeros((y1 - y0, x1 - x0), np.float32)
        local[ys - y0, xs - x0] = values * gain[ys, xs] / ring.counts[ys, xs]
        summed = ring.sum(local)
        ly, lx = np.nonzero(summed > 1e-7 * max(float(summed.max()), 1e-30))
        rows = (ly + y0) * width + (lx + x0)
        columns.append(scipy.sparse.csc_matrix(
            (summed[ly, lx], (rows, np.zeros(len(rows), np.int64))), shape=(height * width, 1)
        ))
    if not columns:
        return scipy.sparse.csc_matrix((height * width, 0), dtype=np.float32)
    return scipy.sparse.hstack(columns, format="csc").astype(np.float32)


def running_percentile(traces: np.ndarray, window: int, percentile: float) -> np.ndarray:
    """Running ``percentile`` over ``window`` frames, evaluated every window/10 frames, interpolated."""
    k, n = traces.shape
    if window >= n:
        return np.repeat(np.percentile(traces, percentile, axis=1)[:, None], n, axis=1)
    step = max(window // 10, 1)
    centres = np.arange(0, n, step)
    if centres[-1] != n - 1:
        centres = np.append(centres, n - 1)
    half = window // 2
    values = np.stack([
        np.percentile(traces[:, max(c - half, 0) : min(c + half + 1, n)], percentile, axis=1) for c in centres
    ], axis=1)
    frames = np.arange(n)
    baseline = np.empty((k, n))
    for row, evaluated in zip(baseline, values):
        row[:] = np.interp(frames, centres, evaluated)
    return baseline


def compute_dff(fluorescence: np.ndarray, neuropil: np.ndarray, fps: float, params: dict) -> np.ndarray:
    """dF/F with the background baseline in F0 (see module docstring)."""
    window = max(int(round(params["dff_window"] * fps)), 1)
    baseline = running_percentile(fluorescence, window, params["dff_percentile"])
    background = running_percentile(neuropil, window, params["dff_percentile"])
    return (fluorescence - baseline) / np.maximum(baseline + background, 1e-6)


def deconvolve_traces(fluorescence: np.ndarray, fps: float, params: dict,
                      n_workers: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(denoised, spikes) from OASIS for every trace, groups of traces in ``n_workers`` processes
    (no more than there are traces: curation deconvolves single merged traces)."""
    n_workers = min(worker_count(n_workers), max(len(fluorescence), 1))
    n_groups = max(1, min(len(fluorescence), 8 * n_workers))
    groups = (fluorescence[group] for group in np.array_split(np.arange(len(fluorescence)), n_groups))
    pairs = list(ordered_map(_deconvolve_group, groups, (fps, params), n_workers))
    return np.concatenate([d for d, _ in pairs]), np.concatenate([s for _, s in pairs])


def _deconvolve_group(state, fluorescence: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(denoised, spikes) of a group of traces (see :func:`deconvolve_traces`)."""
    fps, params = state
    denoised = np.zeros_like(fluorescence, dtype=np.float32)
    spikes = np.zeros_like(fluorescence, dtype=np.float32)
    options = {"penalty": 1, "b_nonneg": False}
    if params["decay_time"] is not None:
        options.update(tau_d=params["decay_time"], tau_r=params["rise_time"], framerate=fps)
    elif params["rise_time"] is None:
        options.update(tau_d=None, tau_r=None)  # AR(2), both times estimated
    for k, trace in enumerate(fluorescence.astype(np.float64)):
        if len(trace) < 4 or not np.isfinite(trace).all() or np.ptp(trace) == 0:
            denoised[k] = trace
            continue
        with warnings.catch_warnings():  # OASIS's noise estimate warns on traces < 256 frames
            warnings.filterwarnings("ignore", message="nperseg", category=UserWarning)
            calcium, activity, baseline, _, _ = deconvolve(trace, **options)
        denoised[k] = calcium + baseline
        spikes[k] = np.maximum(activity, 0)  # non-negative by model; removes round-off
    return denoised, spikes


def _demix_chunk(demixer: Demixer, chunk) -> tuple[int, np.ndarray, np.ndarray]:
    """(first, fluorescence, background) of one chunk of frames."""
    first, frames = chunk
    return (first, *demixer.demix(frames))


def extract_traces(
    movie: MovieSource,
    sources: Sources,
    params: dict,
    fps: float,
    progress: Callable[[str, float], None] | None = None,
    n_workers: int | None = None,
) -> Traces:
    """Stream ``movie`` once to demix traces, then dF/F and deconvolution (see module docstring);
    chunks of frames and groups of traces in ``n_workers`` processes."""
    demixer = Demixer(sources, params)
    k, n = sources.footprints.shape[1], movie.nframes
    fluorescence = np.zeros((k, n), np.float32)
    neuropil = np.zeros((k, n), np.float32)
    if k:
        height, width = movie.frame_shape
        chunk_frames = max(1, min(params["chunk_frames"], DEMIX_CHUNK_BYTES // (4 * height * width)))
        for first, f, b in map_chunks(_demix_chunk, movie, chunk_frames, demixer, n_workers):
            fluorescence[:, first : first + f.shape[1]] = f
            neuropil[:, first : first + f.shape[1]] = b
            if progress:
                progress(STAGE, 0.8 * (first + f.shape[1]) / n)
    dff = compute_dff(fluorescence, neuropil, fps, params).astype(np.float32)
    denoised, spikes = deconvolve_traces(fluorescence, fps, params, n_workers)
    if progress:
        progress(STAGE, 1.0)
    return Traces(
        fluorescence=fluorescence,
        neuropil=neuropil,
        dff=dff,
        denoised=denoised,
        spikes=spikes,
        snr=np.array([trace_snr(trace) for trace in fluorescence], np.float32),
        notes={"demixed_masks": k},
    )
