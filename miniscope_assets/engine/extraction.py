"""Stage 3: source extraction for 1-photon data (CNMF-E class), memory-bounded.

Data model per pixel ``p`` and frame ``t`` (``A`` = footprints, ``C`` = traces)::

    Y[p, t] = sum_k A[p, k] C[k, t] + b0[p] + w[p] * ring(Y - A C - b0)[p, t] + noise

``b0`` is the constant background, the fluctuating background of a pixel is the average of the
residual over a square ring around it (radius ``ring_radius_factor x neuron_diameter``) scaled by a
per-pixel gain ``w`` fitted by least squares.

1. Input: the corrected movie binned in time (:mod:`~miniscope_assets.engine.binning`: about
   ``binned_frame_rate`` frames a second or fewer, at most ``max_init_frames`` frames).
2. Patches: square cores of ``patch_size`` px tile the frame; each is processed with a margin of
   ``patch_overlap`` px (only that window is in memory; by default 1.5 diameters, see
   :func:`patch_overlap`):
   a. seeds: the fluctuations minus a per-pixel least-squares background (ring average, window
      mean, fluctuation of the window's fine static structure; see
      :func:`_remove_background_for_seeding`) are band-passed at the soma scale, giving a
      peak-to-noise (PNR) and a thresholded local-correlation image; the pixel with the largest
      ``corr x PNR`` above ``min_corr`` and ``min_pnr`` seeds a source: its filtered trace,
      the pixels correlating with it (> 0.3, connected) as support, and a footprint regressed
      from the raw fluctuations against the trace and the local background; its filtered
      contribution is subtracted and the images updated locally; repeat until no seed is left.
   b. refinement (``refine_iterations`` rounds): ring background and gains, then non-negative
      HALS updates of the traces and of the footprints (each within a disk of one diameter
      around its centre, cleaned to its main connected part above 10% of its peak), then merging
      of overlapping sources whose traces correlate above ``merge_threshold`` or whose footprints
      are nearly the same (:func:`_merge_duplicates`).
   c. rejection: sources smaller than ``0.2 x`` the expected soma area, sources whose projected
      trace never rises ``min_snr`` noise units above its median of the second before (a
      transient; the slow background drift left on a vessel does not), and fragments (no
      activity of their own once their touching neighbours' demixed traces are regressed out,
      :func:`_fragments`) are dropped; a source is kept by the patches whose core, widened by
      half a diameter, holds its centroid.
   d. completion: the decisions above are made on footprints cut at 10% of their peak within one
      diameter, which keeps the pieces of neighbours out of them; the accepted sources' footprints
      are then fitted again (``_COMPLETION_ROUNDS`` rounds of footprints, background and traces)
      within ``_COMPLETE_REACH`` diameters and without the cut, so that they hold the cell's
      out-of-focus and scattered light as the sensor records it (in minisim's Miniscope V4 optics
      about half of a cell's light falls beyond half a diameter from its centre, a tenth beyond one).
3. Duplicates across patches (overlapping footprints, correlated traces or nearly the same
   footprint) are merged; sources wider than a cell (:func:`_wider_than_a_cell`) and sources
   whose activity follows the registration's fill-in at the frame's edge
   (:func:`_follow_the_filling`) are dropped.
Footprints are scaled to unit peak; ``b0 = mean image - A mean(C)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import scipy.ndimage
import scipy.sparse
import scipy.sparse.csgraph

from miniscope_assets.engine.binning import BinnedMovie
from miniscope_assets.engine.filters import RingAverage, bandpass, box_sum, box_sums, neuron_filter_sigmas, ring_radii
from miniscope_assets.engine.motion import MotionCorrection, distance_from, unlit_region
from miniscope_assets.engine.noise import noise_from_differences, rise_snr, rises, trace_snr
from miniscope_assets.engine.summary import LocalCorrelation, filter_neurons, threshold_noise
from miniscope_assets.engine.workers import ordered_map
from miniscope_assets.results import footprint_centroids, footprint_pixels

STAGE = "source_extraction"
_SUPPORT_CORRELATION = 0.3
_FOOTPRINT_CUTOFF = 0.1
_COMPLETE_REACH, _COMPLETION_ROUNDS = 1.5, 3  # see the module docstring, step 2d
_MIN_AREA_FRACTION = 0.2
_MAX_EDGE_LEVEL = 0.4  # see _wider_than_a_cell
_DUPLICATE_COSINE = 0.8  # see _merge_duplicates
_FILL_CORRELATION, _MIN_FILL = 0.35, 0.1  # see _follow_the_filling
_HALS_SWEEPS = 3
RISE_WINDOW_S = 1.0  # a transient's rise is measured against the median of the second before it
_FRAME_BATCH = 100  # binned frames processed at a time where a temporary copy of the window is avoided


@dataclass
class Sources:
    """Footprints and background model found by :func:`extract_sources`."""

    footprints: scipy.sparse.csc_matrix  # (height*width, K), unit peak
    background_mean: np.ndarray  # b0, (height, width)
    ring_gain: np.ndarray  # w, (height, width)
    notes: dict


@dataclass
class _Component:
    footprint: np.ndarray  # (h, w) within its window, unit peak
    trace: np.ndarray  # (n_binned,)


def expected_soma_area(neuron_diameter: float) -> float:
    """Area (px) of a disk of ``neuron_diameter``: the soma area the shape criteria compare to."""
    return float(np.pi * (neuron_diameter / 2) ** 2)


def extract_sources(
    binned: BinnedMovie,
    params: dict,
    fps: float,
    motion: MotionCorrection | None = None,
    progress: Callable[[str, float], None] | None = None,
    n_workers: int | None = None,
) -> Sources:
    """Find footprints in the ``binned`` copy of the corrected movie (see module docstring);
    ``fps``: the frame rate of the movie before binning.

    ``motion``: the registration that made the movie. No source is seeded in the frame margin
    it filled in (:attr:`MotionCorrection.border`) and sources whose centroid falls there are
    dropped, as are sources whose activity follows the filling (:func:`_follow_the_filling`).
    Where the lens leaves sensor unlit (:func:`~miniscope_assets.engine.motion.unlit_region` of
    the mean image), the same holds within the motion's spread plus two neuron diameters of it.
    Patches are processed by ``n_workers`` processes.
    """
    height, width = frame_shape = binned.frame_shape
    border = motion.border if motion is not None else 0
    footprints, traces, gain = [], [], np.ones(frame_shape, np.float32)
    valid = np.zeros(frame_shape, bool)
    valid[border : height - border, border : width - border] = True
    unlit = unlit_region(binned.mean_image)
    if unlit is not None:  # the edge of the lens's image moves over the cells near it as the brain moves
        spread = motion.spread if motion is not None else 0.0
        valid &= distance_from(unlit) > spread + 2 * params["neuron_diameter"]
    overlap = patch_overlap(params)
    cores, windows = zip(*_patch_windows(frame_shape, params["patch_size"], overlap))
    # a source near a core boundary is kept by both patches (its centroid differs slightly
    # between them) and merged with itself below, never dropped by both
    reach = params["neuron_diameter"] / 2
    rise_window = max(2, round(RISE_WINDOW_S * fps / binned.frames_between_bins))
    patches = ordered_map(_patch, windows, (binned, valid, params, rise_window), n_workers)
    for index, (core, window, (components, patch_gain)) in enumerate(zip(cores, windows, patches)):
        core_in_window = tuple(slice(c.start - w.start, c.stop - w.start) for c, w in zip(core, window))
        gain[core] = patch_gain[core_in_window]
        for component in components:
            cy, cx = _centroid(component.footprint)
            near_core = all(c.start - reach <= v < c.stop + reach for c, v in zip(core_in_window, (cy, cx)))
            if near_core and valid[window][int(round(cy)), int(round(cx))]:
                footprints.append(_to_global(component.footprint, window, frame_shape))
                traces.append(component.trace)
        if progress:
            progress(STAGE, (index + 1) / len(windows))
    found, at_edge = len(footprints), 0
    if footprints:
        footprint_matrix = scipy.sparse.hstack(footprints, format="csc").astype(np.float32)
        trace_matrix = np.stack(traces).astype(np.float32)
        footprint_matrix, trace_matrix = _merge_duplicates(footprint_matrix, trace_matrix, params["merge_threshold"])
        cell_sized = ~_wider_than_a_cell(footprint_matrix, frame_shape, params["neuron_diameter"])
        footprint_matrix, trace_matrix = footprint_matrix[:, cell_sized], trace_matrix[cell_sized]
        if motion is not None:
            filled = motion.filled_fractions(footprint_matrix, binned.frame_ranges())
            fill_in = _follow_the_filling(filled, trace_matrix, params["min_snr"], rise_window)
            footprint_matrix, trace_matrix = footprint_matrix[:, ~fill_in], trace_matrix[~fill_in]
            at_edge = int(fill_in.sum())
        footprint_matrix, trace_matrix = _order(footprint_matrix, trace_matrix, width)
    else:
        footprint_matrix = scipy.sparse.csc_matrix((height * width, 0), dtype=np.float32)
        trace_matrix = np.zeros((0, binned.nframes), np.float32)
    background_mean = binned.mean_image.ravel() - footprint_matrix @ trace_matrix.mean(axis=1)
    if progress:
        progress(STAGE, 1.0)
    return Sources(
        footprints=footprint_matrix,
        background_mean=background_mean.reshape(height, width).astype(np.float32),
        ring_gain=gain,
        notes={
            "bin_size": binned.bin_size,
            "binned_frames": binned.nframes,
            "patches": len(windows),
            "patch_overlap_px": overlap,
            "sources_in_patches": found,
            "dropped_as_edge_fill_in": at_edge,
            "sources": int(footprint_matrix.shape[1]),
        },
    )


def patch_overlap(params: dict) -> int:
    """The margin around patch cores, px: ``patch_overlap``, or if null 1.5 neuron diameters. A
    patch keeps the sources whose centroid lies within half a diameter of its core, and a
    footprint reaches one diameter from its centroid (the disk it is refined in): with this
    margin every kept footprint lies whole in the window. The ring around its edge pixels may
    leave the window; the ring average is then over the part inside."""
    given = params["patch_overlap"]
    return given if given is not None else int(np.ceil(1.5 * params["neuron_diameter"]))


def _patch_windows(frame_shape, patch_size: int, overlap: int):
    """(core slices, window slices) of every patch, row-major."""
    per_axis = []
    for size in frame_shape:
        starts = list(range(0, size, patch_size))
        if len(starts) > 1 and size - starts[-1] < patch_size // 2:
            starts.pop()  # a thin remainder joins the previous core
        ends = starts[1:] + [size]
        per_axis.append([
            (slice(a, b), slice(max(a - overlap, 0), min(b + overlap, size))) for a, b in zip(starts, ends)
        ])
    for core_y, window_y in per_axis[0]:
        for core_x, window_x in per_axis[1]:
            yield (core_y, core_x), (window_y, window_x)


# ------------------------------------------------------------------------------ one patch
def _patch(state, window) -> tuple[list[_Component], np.ndarray]:
    """:func:`_process_patch` of one window of the binned movie (a worker's task)."""
    binned, valid, params, rise_window = state
    return _process_patch(binned.read(slice(None), *window), valid[window], params, rise_window)


def _process_patch(data: np.ndarray, seedable: np.ndarray, params: dict,
                   rise_window: int) -> tuple[list[_Component], np.ndarray]:
    """Sources of one (n, h, w) binned window (seeds only where ``seedable``) and its ring gains
    (``rise_window``: see :func:`_accept`). ``data`` is consumed: it is centred in place, so a
    window is held once."""
    n, h, w = data.shape
    diameter = params["neuron_diameter"]
    mean_image = data.mean(axis=0)
    fluctuation = data
    fluctuation -= mean_image
    ring = RingAverage((h, w), *ring_radii(diameter, params["ring_radius_factor"]))
    flat = fluctuation.reshape(n, h * w)
    ring_of_data = ring.apply_stack(fluctuation).reshape(n, h * w)
    gain = np.ones(h * w, np.float32)
    seeding_data = _remove_background_for_seeding(flat, ring_of_data, mean_image, diameter)
    components = _initialise(seeding_data.reshape(n, h, w), seedable, params)
    del seeding_data
    if not components:
        return [], gain.reshape(h, w)
    footprints = np.stack([c.footprint.ravel() for c in components], axis=1)  # (P, k)
    traces = np.stack([c.trace for c in components])  # (k, n)
    centres = [_centroid(c.footprint) for c in components]
    for _ in range(params["refine_iterations"]):
        signal, gain = _remove_background(flat, ring_of_data, footprints, traces, ring, (h, w))
        traces = _hals_traces(footprints, signal, traces)
        footprints = _hals_footprints(signal, traces, footprints, centres, (h, w), diameter)
        footprints, traces, centres = _clean(footprints, traces, (h, w), diameter)
        footprints, traces = _merge_duplicates_dense(footprints, traces, params["merge_threshold"])
        centres = [_centroid(f.reshape(h, w)) for f in footprints.T]
    signal, gain = _remove_background(flat, ring_of_data, footprints, traces, ring, (h, w))
    traces = _hals_traces(footprints, signal, traces)
    keep = _accept(footprints, signal, traces, params, rise_window)
    if not keep.all() and keep.any():
        # the neighbours of dropped sources take over their pixels
        footprints, traces = footprints[:, keep], traces[keep]
        centres = [_centroid(f.reshape(h, w)) for f in footprints.T]
        footprints = _hals_footprints(signal, traces, footprints, centres, (h, w), diameter)
        footprints, traces, _ = _clean(footprints, traces, (h, w), diameter)
        signal, gain = _remove_background(flat, ring_of_data, footprints, traces, ring, (h, w))
        traces = _hals_traces(footprints, signal, traces)
        keep = np.ones(len(traces), bool)
    footprints, traces = footprints[:, keep], traces[keep]
    if len(traces):
        footprints, traces, gain = _complete(flat, ring_of_data, signal, footprints, traces, ring, (h, w), diameter)
    return [_Component(f.reshape(h, w), trace) for f, trace in zip(footprints.T, traces)], gain.reshape(h, w)


def _complete(flat, ring_of_data, signal, footprints, traces, ring: RingAverage, shape, diameter):
    """Footprints, traces and ring gains of accepted sources fitted again within
    ``_COMPLETE_REACH`` diameters, without the cut at a fraction of the peak (step 2d);
    ``signal``: the data less the background of the sources as they are."""
    centres = [_centroid(f.reshape(shape)) for f in footprints.T]
    for _ in range(_COMPLETION_ROUNDS):
        footprints = _hals_footprints(signal, traces, footprints, centres, shape, _COMPLETE_REACH * diameter)
        footprints, traces, centres = _clean(footprints, traces, shape, diameter, cutoff=0.0)
        signal, gain = _remove_background(flat, ring_of_data, footprints, traces, ring, shape)
        traces = _hals_traces(footprints, signal, traces)
    return footprints, traces, gain


def _remove_background_for_seeding(flat: np.ndarray, ring_of_data: np.ndarray, mean_image: np.ndarray,
                                   diameter: float) -> np.ndarray:
    """``flat`` (n, P) minus each pixel's least-squares fit on three background regressors.

    Before any source exists the background of a pixel is fitted from: its ring average (local
    diffuse background), the mean fluctuation of the window (common background) and the
    fluctuation of the window's fine static structure (the soma-scale band-passed mean image): a
    change of illumination multiplies structure such as blood vessels, which neither a local mean
    nor a common signal can follow and the soma-scale filter would pass as vessel-shaped
    "sources". The two window regressors of a pixel leave out the square of pixels within one
    diameter of it (the ring skips them too): a bright cell would otherwise dominate the window's
    structure and be fitted away as its own background.
    """
    n, pixels = flat.shape
    shape = mean_image.shape
    radius = int(np.ceil(diameter))
    structure = bandpass(mean_image, *neuron_filter_sigmas(diameter))
    regressors = [ring_of_data]
    for weights in (np.ones(shape, np.float32), structure):
        local_norm = box_sum(weights * weights, radius).ravel()
        outside_norm = np.maximum(float((weights * weights).sum()) - local_norm, 1e-12)
        # weighted window total minus the weighted box around each pixel, frame by frame (no
        # weighted copy of the window is held beside the regressors)
        regressor = box_sums(flat.reshape(n, *shape), radius, weights).reshape(n, -1)
        np.subtract((flat @ weights.ravel())[:, None], regressor, out=regressor)
        regressor /= outside_norm
        regressors.append(regressor)
    gram = np.empty((pixels, 3, 3))
    rhs = np.empty((pixels, 3))
    for i, a in enumerate(regressors):
        rhs[:, i] = np.einsum("tp,tp->p", a, flat)
        for j in range(i + 1):
            gram[:, i, j] = gram[:, j, i] = np.einsum("tp,tp->p", a, regressors[j])
    gram += np.eye(3) * (1e-9 * np.trace(gram, axis1=1, axis2=2))[:, None, None] + np.eye(3) * 1e-12
    beta = np.linalg.solve(gram, rhs[..., None])[..., 0].astype(np.float32)  # (P, 3)
    # residual = flat - sum_i beta_i regressor_i, built in the last regressor's buffer
    _, common, fine = regressors
    residual = fine
    residual *= beta[:, 2]
    common *= beta[:, 1]
    residual += common
    del regressors, common
    for frames in _frame_batches(n):
        residual[frames] += ring_of_data[frames] * beta[:, 0]
    np.subtract(flat, residual, out=residual)
    return residual


def _initialise(fluctuation: np.ndarray, seedable: np.ndarray, params: dict) -> list[_Component]:
    """Greedy seeding on corr x PNR of the band-passed fluctuations (see module docstring)."""
    n, h, w = fluctuation.shape
    diameter = params["neuron_diameter"]
    filtered = filter_neurons(fluctuation, diameter)  # zero temporal mean: data are fluctuations
    noise = np.maximum(noise_from_differences(filtered), 1e-6)
    pnr = filtered.max(axis=0) / noise
    moments = LocalCorrelation((h, w))
    for frames in _frame_batches(n):  # thresholded copies of a batch at a time
        moments.add(threshold_noise(filtered[frames].copy(), noise))
    correlation = moments.image()
    blocked = ~seedable
    radius = int(np.ceil(diameter))
    min_area = _MIN_AREA_FRACTION * expected_soma_area(diameter)
    low, high = neuron_filter_sigmas(diameter)
    reach = radius + int(np.ceil(2.5 * high))
    components: list[_Component] = []
    for _ in range(h * w):
        score = np.where(
            (correlation >= params["min_corr"]) & (pnr >= params["min_pnr"]) & ~blocked, correlation * pnr, 0
        )
        seed = np.unravel_index(int(np.argmax(score)), score.shape)
        if score[seed] <= 0:
            break
        blocked[seed] = True
        component = _seed_component(fluctuation, filtered, seed, radius, min_area)
        if component is None:
            continue
        components.append(component)
        # subtract the source's filtered contribution and refresh the images around it
        y0, y1 = max(seed[0] - reach, 0), min(seed[0] + reach + 1, h)
        x0, x1 = max(seed[1] - reach, 0), min(seed[1] + reach + 1, w)
        footprint_filtered = bandpass(component.footprint[y0:y1, x0:x1], low, high)
        filtered[:, y0:y1, x0:x1] -= component.trace[:, None, None] * footprint_filtered[None]
        pnr[y0:y1, x0:x1] = filtered[:, y0:y1, x0:x1].max(axis=0) / noise[y0:y1, x0:x1]
        ey0, ey1, ex0, ex1 = max(y0 - 1, 0), min(y1 + 1, h), max(x0 - 1, 0), min(x1 + 1, w)
        local = LocalCorrelation((ey1 - ey0, ex1 - ex0)).add(
            threshold_noise(filtered[:, ey0:ey1, ex0:ex1].copy(), noise[ey0:ey1, ex0:ex1])
        ).image()
        correlation[y0:y1, x0:x1] = local[y0 - ey0 : y1 - ey0, x0 - ex0 : x1 - ex0]
    return components


def _seed_component(fluctuation, filtered, seed, radius, min_area) -> _Component | None:
    """Footprint and trace of the source seeded at ``seed`` (None if too small)."""
    n, h, w = fluctuation.shape
    sy, sx = seed
    y0, y1 = max(sy - radius, 0), min(sy + radius + 1, h)
    x0, x1 = max(sx - radius, 0), min(sx + radius + 1, w)
    seed_trace = filtered[:, sy, sx]
    box_filtered = filtered[:, y0:y1, x0:x1].reshape(n, -1)
    correlation = _correlate_columns(box_filtered, seed_trace).reshape(y1 - y0, x1 - x0)
    labels, _ = scipy.ndimage.label(correlation > _SUPPORT_CORRELATION)
    support = labels == labels[sy - y0, sx - x0]
    if support.sum() < min_area:
        return None
    box = fluctuation[:, y0:y1, x0:x1].reshape(n, -1)
    outside = ~scipy.ndimage.binary_dilation(support, iterations=2)
    regressors = [seed_trace, np.ones(n, np.float32)]
    if outside.sum() >= 10:
        regressors.insert(1, box[:, outside.ravel()].mean(axis=1))
    design = np.stack(regressors, axis=1)
    coefficients = np.linalg.lstsq(design, box[:, support.ravel()], rcond=None)[0][0]
    footprint_box = np.zeros(support.shape, np.float32)
    footprint_box[support] = np.maximum(coefficients, 0)
    peak = float(footprint_box.max())
    if peak <= 0:
        return None
    footprint = np.zeros((h, w), np.float32)
    footprint[y0:y1, x0:x1] = footprint_box / peak
    trace = np.maximum(seed_trace * peak, 0).astype(np.float32)
    return _Component(footprint, trace)


def _correlate_columns(matrix: np.ndarray, vector: np.ndarray) -> np.ndarray:
    """Pearson correlation of every column of ``matrix`` (n, m) with ``vector`` (n,)."""
    centred = matrix - matrix.mean(axis=0)
    v = vector - vector.mean()
    denominator = np.sqrt((centred**2).sum(axis=0) * (v**2).sum())
    return np.where(denominator > 0, centred.T @ v / np.where(denominator > 0, denominator, 1), 0)


def _remove_background(flat, ring_of_data, footprints, traces, ring: RingAverage, shape):
    """(A C + noise estimate = data - b0 - w ring(residual), fitted gains w), all (n, P) / (P,)."""
    mean_trace = traces.mean(axis=1)
    centred_traces = (traces - mean_trace[:, None]).astype(np.float32)
    ring_of_footprints = np.zeros_like(footprints)
    for j, footprint in enumerate(footprints.T):
        ring_of_footprints[:, j] = ring.apply(footprint.reshape(shape)).ravel()
    ring_residual = centred_traces.T @ ring_of_footprints.T
    np.subtract(ring_of_data, ring_residual, out=ring_residual)
    energy = np.einsum("tp,tp->p", ring_residual, ring_residual)
    product = np.zeros(flat.shape[1])  # sum over frames of residual x ring(residual), a batch at a time
    for frames in _frame_batches(len(flat)):
        residual = centred_traces[:, frames].T @ footprints.T
        np.subtract(flat[frames], residual, out=residual)
        product += np.einsum("tp,tp->p", residual, ring_residual[frames])
    gain = np.where(energy > 0, product / np.maximum(energy, 1e-12), 1.0)
    gain = np.clip(gain, 0.0, 2.0).astype(np.float32)
    signal = ring_residual  # reuse the buffer: signal = data - gain * ring(residual) + A mean(C)
    signal *= gain
    np.subtract(flat, signal, out=signal)
    signal += (footprints @ mean_trace).astype(np.float32)[None, :]
    return signal, gain


def _hals_traces(footprints, signal, traces):
    """Non-negative HALS updates of the traces for ``signal ~ (A C).T``."""
    gram = footprints.T @ footprints
    projected = footprints.T @ signal.T  # (k, n)
    traces = traces.copy()
    for _ in range(_HALS_SWEEPS):
        for j in range(len(traces)):
            if gram[j, j] > 0:
                traces[j] = np.maximum(traces[j] + (projected[j] - gram[j] @ traces) / gram[j, j], 0)
    return traces


def _hals_footprints(signal, traces, footprints, centres, shape, reach):
    """Non-negative HALS updates of the footprints, each within a disk of radius ``reach`` px."""
    gram = traces @ traces.T
    projected = signal.T @ traces.T  # (P, k)
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    disks = [np.flatnonzero((yy - cy) ** 2 + (xx - cx) ** 2 <= reach**2) for cy, cx in centres]
    footprints = footprints.copy()
    for sweep in range(_HALS_SWEEPS):
        for j, disk in enumerate(disks):
            if gram[j, j] > 0:
                if sweep == 0:  # outside its disk a footprint is zero from its first update on
                    inside = footprints[disk, j]
                    footprints[:, j] = 0
                    footprints[disk, j] = inside
                # only the disk's pixels: the other rows of footprints @ gram[:, j] are not used
                update = footprints[disk, j] + (projected[disk, j] - footprints[disk] @ gram[:, j]) / gram[j, j]
                footprints[disk, j] = np.maximum(update, 0)
    return footprints


def _clean(footprints, traces, shape, diameter, cutoff: float = _FOOTPRINT_CUTOFF):
    """Keep each footprint's main connected part above ``cutoff`` x its peak; unit peak; drop tiny ones."""
    min_area = _MIN_AREA_FRACTION * expected_soma_area(diameter)
    keep_f, keep_t, centres = [], [], []
    for footprint, trace in zip(footprints.T, traces):
        image = footprint.reshape(shape)
        peak = float(image.max())
        if peak <= 0 or not np.any(trace > 0):
            continue
        labels, _ = scipy.ndimage.label(image > cutoff * peak)
        image = np.where(labels == labels[np.unravel_index(int(np.argmax(image)), shape)], image / peak, 0)
        if np.count_nonzero(image) < min_area:
            continue
        keep_f.append(image.ravel().astype(np.float32))
        keep_t.append((trace * peak).astype(np.float32))
        centres.append(_centroid(image))
    if not keep_f:
        return np.zeros((footprints.shape[0], 0), np.float32), np.zeros((0, traces.shape[1]), np.float32), []
    return np.stack(keep_f, axis=1), np.stack(keep_t), centres


def _accept(footprints, signal, traces, params, rise_window: int) -> np.ndarray:
    """Sources whose footprint-projected trace rises by ``min_snr`` (in noise units) above the
    median of its preceding ``rise_window`` binned frames (:func:`rise_snr`: a transient, not a
    slow drift of the background left on structure such as a vessel) and that are not fragments
    (:func:`_fragments` of their demixed ``traces``)."""
    norms = np.maximum((footprints**2).sum(axis=0), 1e-12)
    projected = (footprints.T @ signal.T) / norms[:, None]  # (k, n)
    keep = np.array([rise_snr(trace, rise_window) >= params["min_snr"] for trace in projected], bool)
    return keep & ~_fragments(footprints, projected, traces, keep, params["min_snr"])


def _wider_than_a_cell(footprints: scipy.sparse.csc_matrix, frame_shape, diameter: float) -> np.ndarray:
    """Sources still, on average, at ``_MAX_EDGE_LEVEL`` of their peak at 0.75-1 diameter from
    their centroid, where a cell of the (median) diameter has fallen to about a tenth of its peak
    (at most 0.2-0.25 on the development cases) and one of 1.4 x it to a third: what is left of a
    neuropil or background structure larger than a cell once the ring model has taken its
    surroundings."""
    height, width = frame_shape
    reach = int(np.ceil(diameter)) + 1
    wide = np.zeros(footprints.shape[1], bool)
    for k, (cy, cx) in enumerate(zip(*footprint_centroids(footprints, width))):
        ys, xs, values = footprint_pixels(footprints, k, width)
        if not len(values):
            continue
        y0, x0 = max(int(cy) - reach, 0), max(int(cx) - reach, 0)
        y1, x1 = min(int(cy) + reach + 1, height), min(int(cx) + reach + 1, width)
        box = np.zeros((y1 - y0, x1 - x0), np.float32)
        inside = (ys >= y0) & (ys < y1) & (xs >= x0) & (xs < x1)
        box[ys[inside] - y0, xs[inside] - x0] = values[inside]
        yy, xx = np.mgrid[y0:y1, x0:x1]
        distance = np.hypot(yy - cy, xx - cx)
        band = (distance >= 0.75 * diameter) & (distance <= diameter)
        wide[k] = band.any() and box[band].mean() >= _MAX_EDGE_LEVEL * values.max()
    return wide


def _fragments(footprints: np.ndarray, projected: np.ndarray, demixed: np.ndarray, candidates: np.ndarray,
               min_snr: float) -> np.ndarray:
    """Sources with no activity of their own: a piece of a cell, or the pixels between touching
    cells, whose projected trace is a mixture of its neighbours' traces.

    Smallest first, each candidate's projected trace is regressed on the ``demixed`` (HALS)
    traces of the sources whose footprints touch it and that are still kept (least squares, with
    a constant); if the peak SNR of what they leave unexplained is below ``min_snr`` the source
    is a fragment and no longer explains others. Smallest first, so a cell is never explained
    away by its own fragment; demixed traces, because a neighbour's projected trace carries the
    candidate's own activity where their footprints overlap and would explain a real cell away.
    """
    touching = (footprints.T @ footprints) > 0
    kept = candidates.copy()
    fragment = np.zeros(len(candidates), bool)
    ones = np.ones(projected.shape[1])
    for j in np.argsort(np.count_nonzero(footprints, axis=0), kind="stable"):
        if not kept[j]:
            continue
        neighbours = np.flatnonzero(touching[j] & kept)
        neighbours = neighbours[neighbours != j]
        if not len(neighbours):
            continue
        design = np.column_stack([demixed[neighbours].T, ones])
        residual = projected[j] - design @ np.linalg.lstsq(design, projected[j], rcond=None)[0]
        if trace_snr(residual) < min_snr:
            kept[j] = False
            fragment[j] = True
    return fragment


def _follow_the_filling(filled: np.ndarray, traces: np.ndarray, min_snr: float, rise_window: int) -> np.ndarray:
    """Sources whose activity comes from the registration's fill-in: ``filled`` (K, n, like
    ``traces``) is the fraction of each footprint filled in, and a source it reaches
    ``_MIN_FILL`` for is dropped if (1) its trace follows it (absolute correlation above
    ``_FILL_CORRELATION``, each with its linear trend removed: a slow drift of the field towards
    one edge and a cell's bleaching are not counted), or (2) the trace never rises ``min_snr``
    noise units (:func:`rises`, ``rise_window``) in the bins it was observed in (filled below
    ``_MIN_FILL``). Near the frame's edge the mirrored fill-in flickers with the motion, and a
    "source" seeded on it brightens or darkens when the frame moves its way; a cell's own
    transients happen whether or not it is filled in."""
    time_axis = np.linspace(-1, 1, traces.shape[1])
    design = np.stack([np.ones_like(time_axis), time_axis], axis=1)
    follows = np.zeros(len(traces), bool)
    for k in np.flatnonzero(filled.max(axis=1, initial=0) >= _MIN_FILL):
        pair = np.stack([filled[k], traces[k]], axis=1).astype(np.float64)
        detrended = pair - design @ np.linalg.lstsq(design, pair, rcond=None)[0]
        follows[k] = abs(_correlate_columns(detrended[:, :1], detrended[:, 1])[0]) > _FILL_CORRELATION
        if not follows[k] and len(traces[k]) > rise_window:
            observed = filled[k, rise_window:] < _MIN_FILL
            follows[k] = not observed.any() or rises(traces[k], rise_window)[observed].max() < min_snr
    return follows


# ------------------------------------------------------------------------------ merging
def _merge_duplicates_dense(footprints, traces, threshold):
    """:func:`_merge_duplicates` for dense (P, k) footprints."""
    merged_f, merged_t = _merge_duplicates(scipy.sparse.csc_matrix(footprints), traces, threshold)
    return merged_f.toarray().astype(np.float32), merged_t


def _merge_duplicates(footprints: scipy.sparse.csc_matrix, traces: np.ndarray, threshold: float):
    """Merge groups of spatially overlapping sources whose traces correlate above ``threshold``,
    and of sources with nearly the same footprint (cosine >= ``_DUPLICATE_COSINE``) whatever
    their traces: a factorisation cannot tell two such sources apart, so it splits one cell's
    activity between them arbitrarily (their traces' noise anti-correlated, their correlation low)."""
    k = footprints.shape[1]
    if k < 2:
        return footprints, traces
    inner = (footprints.T @ footprints).toarray()
    norms = np.sqrt(np.maximum(np.diag(inner), 1e-12))
    correlation = np.corrcoef(traces) if traces.shape[1] > 1 else np.eye(k)
    linked = ((inner > 0) & (np.nan_to_num(correlation) > threshold)) | (
        inner / norms[:, None] / norms[None, :] >= _DUPLICATE_COSINE
    )
    np.fill_diagonal(linked, False)
    if not linked.any():
        return footprints, traces
    n_groups, labels = scipy.sparse.csgraph.connected_components(scipy.sparse.csr_matrix(linked), directed=False)
    columns, new_traces = [], []
    for group in range(n_groups):
        members = np.flatnonzero(labels == group)
        if len(members) == 1:
            columns.append(footprints[:, members[0]])
            new_traces.append(traces[members[0]])
            continue
        footprint, trace = _rank_one(footprints[:, members], traces[members])
        columns.append(footprint)
        new_traces.append(trace)
    return scipy.sparse.hstack(columns, format="csc").astype(np.float32), np.stack(new_traces).astype(np.float32)


def _rank_one(footprints: scipy.sparse.csc_matrix, traces: np.ndarray):
    """Non-negative rank-1 approximation of ``footprints @ traces`` (unit-peak footprint)."""
    weights = np.asarray(footprints.sum(axis=0)).ravel()
    trace = weights @ traces / max(weights.sum(), 1e-12)
    for _ in range(5):
        footprint = np.maximum(footprints @ (traces @ trace) / max(trace @ trace, 1e-12), 0)
        trace = np.maximum(traces.T @ (footprints.T @ footprint) / max(footprint @ footprint, 1e-12), 0)
    peak = max(float(footprint.max()), 1e-12)
    return scipy.sparse.csc_matrix((footprint / peak)[:, None]), trace * peak


def _order(footprints: scipy.sparse.csc_matrix, traces: np.ndarray, width: int):
    """Deterministic order: by centroid row, then column (rounded to 0.01 px)."""
    cy, cx = footprint_centroids(footprints, width)
    order = np.lexsort((np.round(cx, 2), np.round(cy, 2)))
    return footprints[:, order].tocsc(), traces[order]


# ------------------------------------------------------------------------------ helpers
def _frame_batches(n: int):
    """Slices of at most ``_FRAME_BATCH`` consecutive frames covering ``n`` frames."""
    return (slice(start, start + _FRAME_BATCH) for start in range(0, n, _FRAME_BATCH))


def _centroid(image: np.ndarray) -> tuple[float, float]:
    """Weighted (row, column) centre of an image (its middle if empty)."""
    total = float(image.sum())
    if total <= 0:
        return (float(image.shape[0]) / 2, float(image.shape[1]) / 2)
    yy, xx = np.indices(image.shape)
    return float((yy * image).sum() / total), float((xx * image).sum() / total)


def _to_global(footprint: np.ndarray, window, frame_shape) -> scipy.sparse.csc_matrix:
    """A window's footprint image as a sparse column of the full frame (row-major pixels)."""
    ys, xs = np.nonzero(footprint)
    rows = (ys + window[0].start) * frame_shape[1] + (xs + window[1].start)
    return scipy.sparse.csc_matrix(
        (footprint[ys, xs].astype(np.float32), (rows, np.zeros(len(rows), np.int64))),
        shape=(frame_shape[0] * frame_shape[1], 1),
    )
