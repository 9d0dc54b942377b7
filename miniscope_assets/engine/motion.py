"""Stage 1: motion correction (rigid and piecewise-rigid, sub-pixel, 1-photon aware).

0. The movie is read with its readout repaired (stuck and flickering pixels, corrupted rows,
   row banding: :mod:`~miniscope_assets.engine.readout`) where it needs it.
1. Every frame is band-pass filtered (difference of Gaussians) so that the diffuse 1-photon
   background and the fixed vignetting do not dominate the registration, clipped so that a
   brightly firing cell does not either, and its borders are tapered; sensor the lens leaves
   unlit, and a margin inside its edge, is weighted out (:func:`lit_weights`).
2. Template: mean of the first ``template_frames`` filtered frames, refined ``template_iterations``
   times by registering those frames to it and averaging again.
3. Rigid shifts: FFT cross-correlation with the template, integer peak within ``max_shift``,
   refined to ``1/upsample_factor`` px by evaluating the correlation on an upsampled grid
   around the peak with a matrix DFT.
4. Piecewise-rigid (``pw_rigid``): the frame is cut into blocks of ``strides + overlaps`` px
   placed every ``strides`` px (the last block flush with the border); each block's shift is
   searched within ``max_deviation_rigid`` px of the frame's rigid shift and refined the same way;
   the deviations from the rigid shift are median-filtered over 3 x 3 blocks and 5 frames.
5. Outliers: a frame whose correlation peak lies on the ``max_shift`` search border, or whose
   rigid shift differs by more than ``outlier_threshold`` px from the running median
   (``outlier_window`` frames) of the shifts while its registration quality (normalised
   correlation at the peak) is below ``outlier_quality_ratio`` times the running median quality,
   is flagged; its shifts (rigid and per block) are replaced by linear interpolation between the
   nearest good frames. Fast real motion registers as well as its neighbours and keeps its
   shifts; a corrupted frame does not.
6. The shifts are applied to the raw frames (cubic interpolation, mirrored borders): rigid by a
   translation, piecewise by a smooth field bilinearly interpolated between block centres
   (cv2.remap). Each worker writes the chunks it registers straight into the corrected movie's
   HDF5 file (:class:`~miniscope_assets.engine.movie.FrameFile`).
7. Glitched frames (:func:`~miniscope_assets.engine.readout.glitched_frames`: a frame far
   brighter or darker than those around it) are replaced in the corrected movie by linear
   interpolation between the nearest good corrected frames.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import scipy.fft
import scipy.ndimage
import scipy.sparse

from miniscope_assets.atomic import atomic_path
from miniscope_assets.engine.filters import Bandpass
from miniscope_assets.engine.h5movie import DATASET as CORRECTED_DATASET
from miniscope_assets.engine.h5movie import create_frame_file
from miniscope_assets.engine.movie import FrameFile, MovieSource
from miniscope_assets.engine.noise import MAD_TO_SIGMA
from miniscope_assets.engine.readout import RepairedReadout, glitched_frames, inspect_readout
from miniscope_assets.engine.workers import map_chunks
from miniscope_assets.results import PiecewiseRigidMotion, RigidMotion, footprint_pixels

Progress = Callable[[str, float], None]
STAGE = "motion_correction"
_CLIP_SIGMAS = 2.0  # band-passed frames are clipped at this many robust standard deviations for registration
_TAPER_PX = 16
_BATCH = 16  # frames filtered and registered together (bounds memory for large frames)
_SMOOTH_FRAMES = 5  # running median of the piecewise deviations from the rigid shift
_DARK_FRACTION = 0.15  # of the bright level: a pixel darker on average is not lit by the lens (lit_weights)
_DARK_MIN_AREA = 0.01  # of the frame: the least an unlit region covers
_DARK_MIN_WIDTH = 15  # px: the narrowest an unlit region is
_DARK_MARGIN_SIGMAS = 2.5  # high-pass sigmas inside the lit edge left out of the registration


@dataclass
class MotionCorrection:
    """Output of :func:`correct_motion`."""

    rigid: RigidMotion
    piecewise: PiecewiseRigidMotion | None
    reference: np.ndarray  # template in raw intensity (mean of the registered template frames)
    notes: dict

    @property
    def border(self) -> int:
        """Margin (px) filled in by the registration in more than half of the frames.

        The median over frames of the largest absolute shift (rigid, or any block). A cell closer
        to the edge is still seen in most frames; one in the margin is seen in fewer than half.
        """
        shifts = [np.abs(self.rigid.x_shifts), np.abs(self.rigid.y_shifts)]
        if self.piecewise is not None:
            shifts += [np.abs(self.piecewise.x_shifts).max(axis=1), np.abs(self.piecewise.y_shifts).max(axis=1)]
        if not shifts[0].size:
            return 0
        return int(np.ceil(np.percentile(np.max(np.stack(shifts), axis=0), 50)))

    @property
    def spread(self) -> float:
        """How far (px) the frames moved from their median position: the 99th percentile over
        frames of the rigid shifts' distance from their median."""
        shifts = np.stack([self.rigid.y_shifts, self.rigid.x_shifts], axis=1).astype(np.float64)
        if not len(shifts):
            return 0.0
        return float(np.percentile(np.hypot(*(shifts - np.median(shifts, axis=0)).T), 99))

    def filled_fractions(self, footprints: scipy.sparse.csc_matrix,
                         frame_ranges: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        """(K, bins): the fraction of each footprint's weight that the registration filled in
        (``out[y, x] = raw[y - dy, x - dx]`` with ``(y - dy, x - dx)`` outside the raw frame),
        averaged over the frames [first, stop) of each bin (``frame_ranges``: the arrays of firsts
        and stops; default every frame alone). From the rigid shifts: under piecewise-rigid
        registration the edge blocks' local deformation is left out."""
        height, width = self.reference.shape
        dy, dx = self.rigid.y_shifts.astype(np.float64), self.rigid.x_shifts.astype(np.float64)
        # the rows [top, bottom) and columns [left, right) each frame observed
        top, bottom = np.ceil(dy).astype(int), np.floor(height - 1 + dy).astype(int) + 1
        left, right = np.ceil(dx).astype(int), np.floor(width - 1 + dx).astype(int) + 1
        starts, stops = (np.arange(len(dy)), np.arange(1, len(dy) + 1)) if frame_ranges is None else frame_ranges
        fractions = np.zeros((footprints.shape[1], len(starts)), np.float32)
        if not len(starts):
            return fractions
        for k in range(footprints.shape[1]):
            rows, columns, weights = footprint_pixels(footprints, k, width)
            total = float(weights.sum(dtype=np.float64))
            if total <= 0:
                continue
            y0, x0 = rows.min(), columns.min()
            box = np.zeros((rows.max() - y0 + 1, columns.max() - x0 + 1))
            box[rows - y0, columns - x0] = weights
            integral = np.pad(box.cumsum(axis=0).cumsum(axis=1), ((1, 0), (1, 0)))
            t, b = np.clip(top - y0, 0, box.shape[0]), np.clip(bottom - y0, 0, box.shape[0])
            l, r = np.clip(left - x0, 0, box.shape[1]), np.clip(right - x0, 0, box.shape[1])
            observed = integral[b, r] - integral[t, r] - integral[b, l] + integral[t, l]
            running = np.concatenate([[0.0], np.cumsum(1 - observed / total)])
            fractions[k] = (running[stops] - running[starts]) / (stops - starts)
        return fractions


@dataclass(frozen=True)
class BlockGrid:
    """Piecewise-rigid blocks: [start, start + size) along rows (y) and columns (x)."""

    y_starts: np.ndarray
    x_starts: np.ndarray
    height: int
    width: int

    @classmethod
    def from_params(cls, frame_shape, strides, overlaps) -> "BlockGrid":
        (ys, height), (xs, width) = (
            _block_starts(size, stride, overlap)
            for size, stride, overlap in zip(frame_shape, strides, overlaps)
        )
        return cls(ys, xs, height, width)

    @property
    def count(self) -> int:
        return len(self.y_starts) * len(self.x_starts)

    def ranges(self) -> tuple[np.ndarray, np.ndarray]:
        """(n_blocks, 2) row ranges and column ranges, row-major block order."""
        yy, xx = np.meshgrid(self.y_starts, self.x_starts, indexing="ij")
        block_y = np.stack([yy.ravel(), yy.ravel() + self.height], axis=1)
        block_x = np.stack([xx.ravel(), xx.ravel() + self.width], axis=1)
        return block_y.astype(np.int64), block_x.astype(np.int64)

    def cut(self, image: np.ndarray) -> np.ndarray:
        """(n_blocks, height, width) blocks of ``image``."""
        return np.stack([
            image[y : y + self.height, x : x + self.width] for y in self.y_starts for x in self.x_starts
        ])

    def interpolation_matrices(self, frame_shape) -> tuple[np.ndarray, np.ndarray]:
        """(H, ny) and (W, nx) linear-interpolation weights between block centres (clamped)."""
        matrices = []
        for size, starts, block in ((frame_shape[0], self.y_starts, self.height), (frame_shape[1], self.x_starts, self.width)):
            centres = starts + (block - 1) / 2.0
            pixels = np.arange(size, dtype=np.float64)
            eye = np.eye(len(centres))
            matrices.append(np.stack([np.interp(pixels, centres, eye[j]) for j in range(len(centres))], axis=1))
        return matrices[0].astype(np.float32), matrices[1].astype(np.float32)


def _block_starts(size: int, stride: int, overlap: int) -> tuple[np.ndarray, int]:
    """(block starts, block size) along one axis; the last block is flush with the border."""
    block = stride + overlap
    if block >= size:
        return np.array([0]), size
    starts = list(range(0, size - block + 1, stride))
    if starts[-1] + block < size:
        starts.append(size - block)
    return np.asarray(starts), block


class _Registration:
    """Cross-correlation registration of filtered images against fixed template(s)."""

    def __init__(self, templates: np.ndarray, upsample_factor: int, weights: np.ndarray | None = None):
        # templates: (n, h, w); one per block (or a single full-frame template); ``weights`` of
        # their pixels (same shape; default all 1) multiply the border taper. Transforms are
        # single-threaded: registration runs in the engine's workers, one core each.
        self.shape = templates.shape[-2:]
        self.taper = _taper(self.shape) if weights is None else (_taper(self.shape) * weights).astype(np.float32)
        self.template_spectra = np.conj(scipy.fft.rfft2(templates * self.taper))
        self.template_norms = np.sqrt(np.einsum("nij,nij->n", templates * self.taper, templates * self.taper))
        self.upsample_factor = upsample_factor

    def _spectra(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(spectrum products with the templates, image norms) of (n, h, w) images."""
        tapered = images * self.taper
        norms = np.sqrt(np.einsum("nij,nij->n", tapered, tapered))  # no squared copy of the batch
        return scipy.fft.rfft2(tapered) * self.template_spectra, norms

    def _correlation_window(self, product: np.ndarray, rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
        """Circular cross-correlations (n, m, m) at lags ``rows`` x ``columns`` (each (n, m)) only:
        the inverse transform along y for every column frequency, then along x for the m rows
        searched alone (41 of a 600 px frame's 600 rows for a 20 px search)."""
        along_y = scipy.fft.ifft(product, axis=-2)
        picked = along_y[np.arange(len(product))[:, None], rows]  # (n, m, w // 2 + 1)
        correlation_rows = scipy.fft.irfft(picked, n=self.shape[1], axis=-1)  # (n, m, w)
        return np.take_along_axis(correlation_rows, columns[:, None, :], axis=-1)

    def peaks(self, images: np.ndarray, centres: np.ndarray, radius: int) -> tuple[np.ndarray, ...]:
        """Sub-pixel correlation peaks (n, 2) searched within ``radius`` of integer ``centres`` (n, 2).

        Returns (peaks, on_border, quality): on_border flags integer peaks on the search-window
        edge; quality is the normalised correlation at the integer peak (1: the image is the
        template moved). A peak at lag ``d`` means ``image(y + d) ~ template(y)``; the correction
        shift is ``-d``.
        """
        product, norms = self._spectra(images)
        offsets = np.arange(-radius, radius + 1)
        n = len(images)
        rows = (centres[:, 0, None] + offsets) % self.shape[0]  # (n, 2r+1)
        cols = (centres[:, 1, None] + offsets) % self.shape[1]
        window = self._correlation_window(product, rows, cols)
        flat = window.reshape(n, -1).argmax(axis=1)
        iy, ix = np.divmod(flat, len(offsets))
        integer = np.stack([centres[:, 0] + offsets[iy], centres[:, 1] + offsets[ix]], axis=1)
        on_border = (iy == 0) | (iy == 2 * radius) | (ix == 0) | (ix == 2 * radius)
        quality = window.reshape(n, -1).max(axis=1) / np.maximum(norms * self.template_norms, 1e-12)
        if self.upsample_factor > 1:
            integer = _refine_peaks(product, integer, self.shape, self.upsample_factor)
        return integer.astype(np.float64), on_border, quality


def _refine_peaks(product: np.ndarray, peaks: np.ndarray, shape, upsample: int) -> np.ndarray:
    """Correlation maxima on a 1/upsample grid within +-0.75 px of ``peaks`` (matrix DFT of rfft spectra)."""
    height, width = shape
    base_y, base_x, offsets = _upsampling_kernels(height, width, upsample)
    freq_y = np.fft.fftfreq(height)
    freq_x = np.fft.rfftfreq(width)
    # Moving the integer peak to the origin is a phase ramp on the spectrum.
    phase_y = np.exp(2j * np.pi * peaks[:, 0, None] * freq_y).astype(np.complex64)
    phase_x = np.exp(2j * np.pi * peaks[:, 1, None] * freq_x).astype(np.complex64)
    n, m = len(peaks), len(offsets)
    # laid out (H, n, Wh), so that one matrix product takes all n spectra without a transposed copy
    centred = np.empty((height, n, product.shape[-1]), np.result_type(product, phase_y))
    np.multiply(product.transpose(1, 0, 2), phase_y.T[:, :, None], out=centred)
    centred *= phase_x[None, :, :]
    rows = (base_y @ centred.reshape(height, -1)).reshape(m, n, -1)  # (m, n, Wh)
    upsampled = np.real(rows.transpose(1, 0, 2).reshape(n * m, -1) @ base_x).reshape(n, m, m)
    iy, ix = np.divmod(upsampled.reshape(n, -1).argmax(axis=1), m)
    return peaks + np.stack([offsets[iy], offsets[ix]], axis=1)


@functools.lru_cache(maxsize=8)
def _upsampling_kernels(height: int, width: int, upsample: int):
    """DFT matrices evaluating a correlation at lags ``offsets`` (+-0.75 px, step 1/upsample)."""
    half = int(np.ceil(0.75 * upsample))
    offsets = np.arange(-half, half + 1) / upsample
    weights = np.full(width // 2 + 1, 2.0)  # Hermitian symmetry: interior rfft columns count twice
    weights[0] = 1.0
    if width % 2 == 0:
        weights[-1] = 1.0
    base_y = np.exp(2j * np.pi * offsets[:, None] * np.fft.fftfreq(height)[None, :]).astype(np.complex64)
    base_x = (weights[:, None] * np.exp(2j * np.pi * np.fft.rfftfreq(width)[:, None] * offsets[None, :])).astype(np.complex64)
    return base_y, base_x, offsets


def _taper(shape) -> np.ndarray:
    """Separable cosine taper over the outer ``_TAPER_PX`` pixels (reduces FFT wrap-around)."""
    profiles = []
    for size in shape:
        ramp = min(_TAPER_PX, size // 4)
        profile = np.ones(size, np.float32)
        if ramp > 0:
            edge = 0.5 - 0.5 * np.cos(np.pi * (np.arange(ramp) + 0.5) / ramp)
            profile[:ramp] = edge
            profile[size - ramp :] = edge[::-1]
        profiles.append(profile)
    return np.outer(profiles[0], profiles[1]).astype(np.float32)


class _FrameFilter:
    """Band-passes and clips frames for registration, in batches held in one reused buffer."""

    def __init__(self, frame_shape, params: dict, weights: np.ndarray | None = None):
        self.bandpass = Bandpass(frame_shape, params["motion_lowpass_sigma"], params["motion_highpass_sigma"])
        self.buffer = np.empty((_BATCH, *frame_shape), np.float32)
        self.clip_sample = None  # the pixels whose values set the clipping level; default a grid over the frame
        if weights is not None:  # only those the registration weighs (the lens's unlit sensor would lower it)
            sample = np.zeros(frame_shape, bool)
            sample[_clip_grid(frame_shape)] = True
            sample &= weights > 0
            self.clip_sample = np.flatnonzero(sample) if sample.any() else None

    def batches(self, frames: np.ndarray):
        """Yield (offset, raw frames, filtered frames) in batches of <= _BATCH frames of ``frames``."""
        for offset in range(0, len(frames), _BATCH):
            raw = frames[offset : offset + _BATCH]
            filtered = self.buffer[: len(raw)]
            self.bandpass.stack(raw, out=filtered)
            _clip_transients(filtered, self.clip_sample)
            yield offset, raw, filtered


def _clip_grid(frame_shape) -> tuple[slice, slice]:
    """Every k-th row and column: about 4096 pixels of a frame."""
    step = max(1, int(np.sqrt(frame_shape[0] * frame_shape[1] / 4096)))
    return slice(None, None, step), slice(None, None, step)


def _clip_transients(filtered: np.ndarray, sample: np.ndarray | None = None) -> None:
    """Clip every band-passed frame of a (n, h, w) stack, in place, to +-``_CLIP_SIGMAS`` robust
    standard deviations of its values (of the flat pixel indices ``sample``; default
    :func:`_clip_grid`'s).

    A cell firing brightly is a compact blob far above everything else in the band-passed frame;
    unclipped, the correlation follows it to whatever blob of the template it lies near, and the
    frame is registered by one cell instead of by the whole field's static structure (vessels,
    resting cells).
    """
    n = len(filtered)
    values = filtered[(slice(None), *_clip_grid(filtered.shape[1:]))] if sample is None else \
        filtered.reshape(n, -1)[:, sample]
    scale = np.median(np.abs(values).reshape(n, -1), axis=1) * (MAD_TO_SIGMA * _CLIP_SIGMAS)
    np.clip(filtered, -scale[:, None, None], scale[:, None, None], out=filtered)


def build_template(movie: MovieSource, params: dict,
                   n_workers: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(filtered template, raw-intensity reference, registration weights or None) from the first
    ``template_frames`` frames, chunks of them in ``n_workers`` processes. The weights
    (:func:`lit_weights` of the frames' mean) leave the sensor outside the lens's image out of
    every registration."""
    stop = min(params["template_frames"], movie.nframes)
    frame_filter = _FrameFilter(movie.frame_shape, params)
    iterations = params["template_iterations"] if params["motion_correction"] else 0
    template = weights = None  # the first round averages the frames as they are
    for round_ in range(iterations + 1):
        registration = None if template is None else _Registration(template[None], params["upsample_factor"],
                                                                    weights)
        state = (frame_filter, registration, params["max_shift"], round_ in (0, iterations))
        filtered_sum = np.zeros(movie.frame_shape, np.float64)
        raw_sum = np.zeros(movie.frame_shape, np.float64)
        for chunk_filtered, chunk_raw in map_chunks(
            _template_sums, movie, params["chunk_frames"], state, n_workers, [(0, stop)]
        ):
            filtered_sum += chunk_filtered
            raw_sum += chunk_raw
        template = (filtered_sum / stop).astype(np.float32)
        if round_ == 0:
            weights = lit_weights(raw_sum / stop, params["motion_highpass_sigma"])
            frame_filter = _FrameFilter(movie.frame_shape, params, weights)
    return template, (raw_sum / stop).astype(np.float32), weights


def unlit_region(mean: np.ndarray) -> np.ndarray | None:
    """The part of the sensor the lens does not light (bool image), or None if there is none:
    the regions touching the frame's edge whose ``mean`` is below ``_DARK_FRACTION`` of the
    bright level, at least ``_DARK_MIN_WIDTH`` px across and covering at least ``_DARK_MIN_AREA``
    of the frame (a dark vessel or a speck of dust is not one)."""
    bright = float(np.percentile(mean, 99))
    if not bright > 0:
        return None
    dark = (mean < _DARK_FRACTION * bright).astype(np.uint8)
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (_DARK_MIN_WIDTH, _DARK_MIN_WIDTH))
    labels, count = scipy.ndimage.label(cv2.morphologyEx(dark, cv2.MORPH_OPEN, disk))
    if count == 0:
        return None
    edge_labels = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    areas = np.bincount(labels.ravel(), minlength=count + 1)
    unlit_labels = [label for label in edge_labels if label and areas[label] >= _DARK_MIN_AREA * mean.size]
    return np.isin(labels, unlit_labels) if unlit_labels else None


def distance_from(region: np.ndarray) -> np.ndarray:
    """Every pixel's distance (px) to the nearest pixel of ``region`` (bool image; 0 inside it)."""
    return cv2.distanceTransform((~region).astype(np.uint8), cv2.DIST_L2, 5)


def lit_weights(mean: np.ndarray, highpass_sigma: float) -> np.ndarray | None:
    """Weights (0 to 1) of the pixels in registration, from the raw frames' ``mean``: 0 on the
    :func:`unlit_region` and within ``_DARK_MARGIN_SIGMAS`` high-pass sigmas of it (where the
    band-pass turns the static edge of the lens's image into structure that would pin the
    registration to the sensor, not the brain), rising to 1 over ``_TAPER_PX`` px; None if the
    whole frame is lit."""
    unlit = unlit_region(mean)
    if unlit is None:
        return None
    ramp = np.clip((distance_from(unlit) - _DARK_MARGIN_SIGMAS * highpass_sigma) / _TAPER_PX, 0, 1)
    return (0.5 - 0.5 * np.cos(np.pi * ramp)).astype(np.float32)


def _template_sums(state, chunk) -> tuple[np.ndarray, np.ndarray]:
    """(sum of filtered frames, sum of raw frames) of one chunk, each registered to the current
    template (unregistered before there is one); raw frames are summed only if ``with_raw`` (the
    first round's give the lit weights, the last round's the reference; zeros otherwise)."""
    frame_filter, registration, max_shift, with_raw = state
    _, frames = chunk
    filtered_sum = np.zeros(frames.shape[1:], np.float64)
    raw_sum = np.zeros(frames.shape[1:], np.float64)
    warper = _Warper(frames.shape[1:])
    for _, raw, filtered in frame_filter.batches(frames):
        if registration is None:
            filtered_sum += filtered.sum(axis=0)
            if with_raw:
                raw_sum += raw.sum(axis=0, dtype=np.float64)
            continue
        shifts = -_rigid_peaks(registration, filtered, max_shift)[0]
        for frame, image, (dy, dx) in zip(raw, filtered, shifts):
            filtered_sum += warper.translate(image, dy, dx)
            if with_raw:
                raw_sum += warper.translate(frame, dy, dx)
    return filtered_sum, raw_sum


def _rigid_peaks(registration: _Registration, filtered: np.ndarray, max_shift: int):
    """Full-frame correlation peaks within ``max_shift`` (or half the frame) of zero lag."""
    height, width = filtered.shape[-2:]
    radius = int(min(max_shift, height // 2 - 1, width // 2 - 1))
    return registration.peaks(filtered, np.zeros((len(filtered), 2), np.int64), radius)


class _Warper:
    """Sub-pixel translation or remapping of frames into a reused float32 buffer (cubic, mirrored borders)."""

    def __init__(self, frame_shape):
        self.shape = tuple(frame_shape)
        self._image = np.empty(self.shape, np.float32)
        self._out = np.empty(self.shape, np.float32)
        self._matrix = np.eye(2, 3)

    def translate(self, image: np.ndarray, dy: float, dx: float) -> np.ndarray:
        """``out[y, x] = image[y - dy, x - dx]`` (the returned buffer is overwritten by the next call)."""
        np.copyto(self._image, image, casting="unsafe")
        self._matrix[0, 2], self._matrix[1, 2] = dx, dy
        return cv2.warpAffine(self._image, self._matrix, self.shape[::-1], dst=self._out,
                              flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)

    def remap(self, image: np.ndarray, map_x: np.ndarray, map_y: np.ndarray) -> np.ndarray:
        """``out[y, x] = image[map_y[y, x], map_x[y, x]]`` (overwritten by the next call)."""
        np.copyto(self._image, image, casting="unsafe")
        return cv2.remap(self._image, map_x, map_y, cv2.INTER_CUBIC, dst=self._out, borderMode=cv2.BORDER_REFLECT)


@dataclass
class _ShiftEstimator:
    """What registering a chunk of frames needs (a worker's inherited state)."""

    frame_filter: _FrameFilter
    registration: _Registration
    block_registration: _Registration | None
    grid: BlockGrid | None
    max_shift: int
    deviation: int


def _chunk_shifts(estimator: _ShiftEstimator, chunk) -> tuple:
    """(first, rigid shifts (n, 2), on border (n,), quality (n,), block shifts (n, blocks, 2) or
    None) of one chunk of raw frames."""
    first, frames = chunk
    n = len(frames)
    grid = estimator.grid
    rigid, border, quality = np.zeros((n, 2)), np.zeros(n, bool), np.ones(n)
    blocks = np.zeros((n, grid.count, 2)) if grid else None
    for offset, raw, filtered in estimator.frame_filter.batches(frames):
        batch = slice(offset, offset + len(raw))
        peaks, border[batch], quality[batch] = _rigid_peaks(estimator.registration, filtered, estimator.max_shift)
        rigid[batch] = -peaks
        if grid:
            deviation = estimator.deviation
            for i, image in enumerate(filtered):
                centre = np.broadcast_to(np.rint(peaks[i]).astype(np.int64), (grid.count, 2))
                block_peaks, _, _ = estimator.block_registration.peaks(grid.cut(image), centre, deviation)
                blocks[offset + i] = np.clip(-block_peaks, -peaks[i] - deviation, -peaks[i] + deviation)
    return first, rigid, border, quality, blocks


def estimate_shifts(
    movie: MovieSource, template: np.ndarray, params: dict, progress: Progress | None = None,
    n_workers: int | None = None, weights: np.ndarray | None = None,
) -> dict:
    """Per-frame rigid shifts (and per-block shifts if ``pw_rigid``), outliers flagged and
    interpolated; chunks of frames are registered by ``n_workers`` processes, with the pixels
    ``weights`` (:func:`lit_weights`) if given."""
    n = movie.nframes
    rigid = np.zeros((n, 2))
    rigid_border = np.zeros(n, bool)
    quality = np.ones(n)
    grid = BlockGrid.from_params(movie.frame_shape, params["strides"], params["overlaps"]) if params["pw_rigid"] else None
    blocks = np.zeros((n, grid.count, 2)) if grid else None
    if params["motion_correction"]:
        estimator = _ShiftEstimator(
            frame_filter=_FrameFilter(movie.frame_shape, params, weights),
            registration=_Registration(template[None], params["upsample_factor"], weights),
            block_registration=_Registration(grid.cut(template), params["upsample_factor"],
                                             None if weights is None else grid.cut(weights)) if grid else None,
            grid=grid, max_shift=params["max_shift"],
            # a block's search stays within half the block, as the frame's does within half the frame
            deviation=min(params["max_deviation_rigid"], grid.height // 2 - 1, grid.width // 2 - 1) if grid else 0,
        )
        for first, chunk_rigid, border, chunk_quality, chunk_blocks in map_chunks(
            _chunk_shifts, movie, params["chunk_frames"], estimator, n_workers
        ):
            frames = slice(first, first + len(chunk_rigid))
            rigid[frames], rigid_border[frames], quality[frames] = chunk_rigid, border, chunk_quality
            if grid:
                blocks[frames] = chunk_blocks
            if progress:
                progress(STAGE, 0.1 + 0.45 * frames.stop / n)
    outliers = flag_outliers(rigid, rigid_border, quality, params["outlier_threshold"], params["outlier_window"],
                             params["outlier_quality_ratio"])
    rigid = _interpolate_outliers(rigid, outliers)
    if grid:
        blocks = _interpolate_outliers(blocks.reshape(n, -1), outliers).reshape(n, grid.count, 2)
        blocks = _smooth_deviations(blocks, rigid, grid)
    return {"rigid": rigid, "blocks": blocks, "grid": grid, "outliers": outliers}


def _smooth_deviations(blocks: np.ndarray, rigid: np.ndarray, grid: BlockGrid) -> np.ndarray:
    """Block shifts with their deviations from the rigid shift median-filtered over 3 x 3 blocks and 5 frames.

    Tissue deformations are smooth in space and time; single blocks are not always reliable
    (a block crossed by one straight vessel cannot tell a shift along the vessel: the aperture
    problem), and their neighbours outvote them.
    """
    n = len(blocks)
    deviation = (blocks - rigid[:, None, :]).reshape(n, len(grid.y_starts), len(grid.x_starts), 2)
    deviation = scipy.ndimage.median_filter(deviation, size=(_SMOOTH_FRAMES, 3, 3, 1), mode="nearest")
    return deviation.reshape(n, grid.count, 2) + rigid[:, None, :]


def flag_outliers(shifts: np.ndarray, on_border: np.ndarray, quality: np.ndarray, threshold: float, window: int,
                  quality_ratio: float) -> np.ndarray:
    """Frames whose shift cannot be trusted: the correlation peak on the search border, or a shift
    more than ``threshold`` px from the running median with a registration quality below
    ``quality_ratio`` times the running median quality. A frame that moved far but registers
    as well as its neighbours is real (fast) motion and keeps its shift."""
    if len(shifts) == 0:
        return np.zeros(0, bool)
    median = scipy.ndimage.median_filter(shifts, size=(window, 1), mode="nearest")
    deviation = np.hypot(*(shifts - median).T)
    typical = scipy.ndimage.median_filter(quality, size=window, mode="nearest")
    return ((deviation > threshold) & (quality < quality_ratio * typical)) | on_border


def _interpolate_outliers(values: np.ndarray, outliers: np.ndarray) -> np.ndarray:
    """``values`` (T, m) with outlier rows replaced by linear interpolation between good rows."""
    good = ~outliers
    if good.all() or not good.any():
        return values
    frames = np.arange(len(values))
    fixed = values.copy()
    for column in range(values.shape[1]):
        fixed[outliers, column] = np.interp(frames[outliers], frames[good], values[good, column])
    return fixed


class _ShiftApplier:
    """Registers raw frames with known shifts and writes them to ``target`` (a worker's inherited state)."""

    def __init__(self, shifts: dict, target: FrameFile):
        self.shifts = shifts
        self.target = target
        frame_shape = target.frame_shape
        self.warper = _Warper(frame_shape)
        grid: BlockGrid | None = shifts["grid"]
        if grid:
            self.weights_y, self.weights_x = grid.interpolation_matrices(frame_shape)
            self.grid_y, self.grid_x = np.mgrid[0 : frame_shape[0], 0 : frame_shape[1]].astype(np.float32)
            self.map_x, self.map_y = np.empty_like(self.grid_x), np.empty_like(self.grid_y)

    def frame(self, t: int, frame: np.ndarray) -> np.ndarray:
        """Frame ``t`` registered (float32; the buffer is overwritten by the next call)."""
        grid: BlockGrid | None = self.shifts["grid"]
        if not grid:
            return self.warper.translate(frame, *self.shifts["rigid"][t])
        block_shifts = self.shifts["blocks"][t].reshape(len(grid.y_starts), len(grid.x_starts), 2).astype(np.float32)
        np.subtract(self.grid_x, self.weights_y @ block_shifts[..., 1] @ self.weights_x.T, out=self.map_x)
        np.subtract(self.grid_y, self.weights_y @ block_shifts[..., 0] @ self.weights_x.T, out=self.map_y)
        return self.warper.remap(frame, self.map_x, self.map_y)


def _register_chunk(applier: _ShiftApplier, chunk) -> np.ndarray:
    """Register one chunk of raw frames, write it to the corrected movie and return the raw
    frames' mean levels."""
    first, frames = chunk
    output = np.empty(frames.shape, applier.target.dtype)
    for i, frame in enumerate(frames):
        _store(applier.frame(first + i, frame), output[i])
    applier.target.write(first, output)
    return frames.mean(axis=(1, 2), dtype=np.float64)


def apply_shifts(
    movie: MovieSource, shifts: dict, output_path: Path, params: dict, progress: Progress | None = None,
    n_workers: int | None = None,
) -> np.ndarray:
    """Write the registered raw frames to ``output_path`` (dataset ``corrected``), atomically,
    its glitched frames replaced (module docstring, step 7); chunks of frames are registered and
    written by ``n_workers`` processes. Returns the glitched frames' indices."""
    n = movie.nframes
    with atomic_path(output_path) as temporary:
        target = create_frame_file(temporary, CORRECTED_DATASET, n, movie.frame_shape, movie.dtype)
        levels, done = [], 0
        for chunk_levels in map_chunks(_register_chunk, movie, params["chunk_frames"],
                                       _ShiftApplier(shifts, target), n_workers):
            levels.append(chunk_levels)
            done += len(chunk_levels)
            if progress:
                progress(STAGE, 0.55 + 0.45 * done / n)
        glitched = glitched_frames(np.concatenate(levels)) if levels else np.zeros(0, bool)
        _replace_frames(target, glitched)
    return np.flatnonzero(glitched)


def _replace_frames(target: FrameFile, replaced: np.ndarray) -> None:
    """Frames ``replaced`` (a mask) of ``target`` interpolated linearly between the nearest frames
    kept (the nearest one alone at either end)."""
    kept = np.flatnonzero(~replaced)
    if not len(kept):
        return
    for t in np.flatnonzero(replaced):
        after = int(np.searchsorted(kept, t))
        before, after = kept[max(after - 1, 0)], kept[min(after, len(kept) - 1)]
        weight = (t - before) / (after - before) if after != before else 0.0
        frame = (1 - weight) * target.read(before, before + 1).astype(np.float32) + \
            weight * target.read(after, after + 1).astype(np.float32)
        stored = np.empty(frame.shape, target.dtype)
        _store(frame, stored)
        target.write(int(t), stored)


def _store(frame: np.ndarray, target: np.ndarray) -> None:
    """Write a float32 frame into ``target`` of the movie's dtype (integers rounded and clipped)."""
    if target.dtype.kind in "ui":
        info = np.iinfo(target.dtype)
        np.rint(frame, out=frame)
        np.clip(frame, info.min, info.max, out=frame)
    np.copyto(target, frame, casting="unsafe")


def rewrite_corrected_movie(
    movie: MovieSource, motion: MotionCorrection, params: dict, output_path: Path, progress: Progress | None = None,
    n_workers: int | None = None,
) -> None:
    """Write the corrected movie again from the shifts of a earlier :func:`correct_motion` run
    (its readout repairs made again)."""
    if "readout" in motion.notes:
        movie = RepairedReadout(movie, motion.notes["readout"])
    rigid = np.stack([motion.rigid.y_shifts, motion.rigid.x_shifts], axis=1).astype(np.float64)
    grid = blocks = None
    if motion.piecewise is not None:
        grid = BlockGrid.from_params(movie.frame_shape, params["strides"], params["overlaps"])
        blocks = np.stack([motion.piecewise.y_shifts, motion.piecewise.x_shifts], axis=-1).astype(np.float64)
    apply_shifts(movie, {"rigid": rigid, "grid": grid, "blocks": blocks}, Path(output_path), params, progress, n_workers)


def correct_motion(
    movie: MovieSource, params: dict, output_path: Path, progress: Progress | None = None, n_workers: int | None = None
) -> MotionCorrection:
    """Register ``movie`` (see module docstring) and write the corrected movie to ``output_path``,
    chunks of frames in ``n_workers`` processes."""
    started = time.perf_counter()
    readout = inspect_readout(movie, params["chunk_frames"])
    movie = RepairedReadout(movie, readout)
    template, reference, weights = build_template(movie, params, n_workers)
    if progress:
        progress(STAGE, 0.1)
    shifts = estimate_shifts(movie, template, params, progress, n_workers, weights)
    for name in ("rigid", "blocks"):  # the precision they are stored in, so a rewrite is identical
        if shifts[name] is not None:
            shifts[name] = shifts[name].astype(np.float32).astype(np.float64)
    estimated = time.perf_counter()
    glitched = apply_shifts(movie, shifts, Path(output_path), params, progress, n_workers)
    outliers = shifts["outliers"]
    rigid = RigidMotion(
        x_shifts=shifts["rigid"][:, 1].astype(np.float32),
        y_shifts=shifts["rigid"][:, 0].astype(np.float32),
        outlier_frames=outliers,
    )
    piecewise = None
    grid: BlockGrid | None = shifts["grid"]
    if grid:
        block_y, block_x = grid.ranges()
        piecewise = PiecewiseRigidMotion(
            block_height=grid.height,
            block_width=grid.width,
            block_count_y=len(grid.y_starts),
            block_count_x=len(grid.x_starts),
            block_y=block_y,
            block_x=block_x,
            x_shifts=shifts["blocks"][..., 1].astype(np.float32),
            y_shifts=shifts["blocks"][..., 0].astype(np.float32),
            outlier_frames=outliers,
        )
    notes = {
        "readout": readout,
        # the part of the frame left out of registration as unlit by the lens (or near its edge)
        "weighted_out_fraction": 0.0 if weights is None else round(float(np.mean(weights == 0)), 4),
        "outlier_frames": int(outliers.sum()),
        "glitched_frames": glitched.tolist(),  # replaced in the corrected movie
        "estimate_seconds": round(estimated - started, 3),
        "apply_seconds": round(time.perf_counter() - estimated, 3),
        "blocks": grid.count if grid else 0,
    }
    return MotionCorrection(rigid=rigid, piecewise=piecewise, reference=reference, notes=notes)
