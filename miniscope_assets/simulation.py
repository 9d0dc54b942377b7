"""Synthetic 1-photon Miniscope recordings with ground truth.

:class:`Simulation` is a :class:`~miniscope_assets.engine.movie.MovieSource`: frames are rendered
chunk by chunk (each frame from its own seeded generator), so any chunking gives identical,
deterministic frames and a 600x600x3000 movie never sits in memory.

Forward model, per frame ``t`` (tissue = "scene" coordinates, sensor = frame coordinates)::

    scene_t  = tissue background x (1 + slow global fluctuation)        (smooth field, texture, vessels)
             + low-rank background components                          (smooth fields x slow processes)
             + neuropil                                                (large blurred sources, own activity)
             + sum_k brightness_k * footprint_k * (baseline + calcium_k(t))
    signal_t = vignetting(sensor) x warp(scene_t, motion_t [+ non-rigid field_t])
    frame_t  = uint8(round(signal_t + sqrt(gain * signal_t + read_noise^2) * N(0, 1)))

Spikes are Poisson; calcium is AR(2) (rise ``rise_time``, decay ``decay_time``, a log-normal
jump per spike, unit peak for a unit jump);
shot noise is the Gaussian approximation of Poisson photon noise.
Motion is a mean-reverting random walk with occasional jumps (sub-pixel, cubic interpolation).
Ground-truth footprints, calcium and spikes are in scene coordinates, which equal frame
coordinates at zero motion; the correction shifts the engine should find are ``-motion``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import cv2
import numpy as np
import scipy.ndimage
import scipy.sparse
import scipy.spatial

if TYPE_CHECKING:
    from miniscope_assets.engine.cross_session import Registration, SessionCells

_SMOOTH_FIELD_SCALE = 8  # smooth components are rendered at 1/8 resolution and upsampled


@dataclass(frozen=True)
class SimulationConfig:
    """Parameters of a simulated recording (lengths in pixels, times in seconds, levels in counts)."""

    height: int = 120
    width: int = 120
    nframes: int = 1000
    n_neurons: int = 25
    fps: float = 20.0
    seed: int = 0
    neuron_radius: float = 5.0  # mean soma radius (half-maximum of the footprint)
    neuron_radius_spread: float = 0.15  # relative standard deviation of the radius
    max_elongation: float = 1.5  # largest major/minor axis ratio
    firing_rate: float = 0.6  # mean Poisson spike rate per neuron (log-normal across neurons), Hz
    decay_time: tuple[float, float] = (0.3, 1.0)  # calcium decay time range (uniform per neuron)
    rise_time: float = 0.05  # calcium rise time (0: instantaneous)
    spike_amplitude_jitter: float = 0.3  # log-normal sigma of the calcium jump per spike
    spike_amplitude: float = 8.0  # mean peak fluorescence of one spike at the soma centre
    neuron_baseline: float = 0.3  # resting soma fluorescence, in spike amplitudes
    background_level: float = 110.0  # diffuse background at the image centre
    vignetting: float = 0.45  # relative intensity drop at the corners
    background_fluctuation: float = 0.1  # relative amplitude of the slow global fluctuation
    n_background_components: int = 3  # low-rank smooth background components
    background_component_amplitude: float = 6.0
    neuropil_sources: int | None = None  # default: n_neurons // 3 + 2
    neuropil_amplitude: float = 10.0
    gain: float = 0.2  # counts per photon: shot-noise variance = gain x signal
    read_noise: float = 1.5  # sensor read noise, standard deviation
    motion_step: float = 0.12  # random-walk step per frame, standard deviation
    motion_jump_rate: float = 0.05  # sudden jumps per second
    motion_jump_size: float = 2.5  # mean jump length
    max_motion: float = 6.0  # motion is clipped to +-max_motion per axis
    nonrigid_amplitude: float = 0.0  # peak non-rigid (shear) displacement; 0 = rigid only


class Simulation:
    """A simulated recording: a MovieSource (uint8 frames) plus its ground truth.

    Ground truth (K neurons, T frames; positions are (y, x) in scene = corrected coordinates):
    ``footprints`` (sparse (H*W, K), unit peak), ``centers`` (K, 2), ``radii``, ``elongation``,
    ``orientation``, ``brightness`` (peak counts per unit calcium), ``firing_rates`` (Hz),
    ``decay_times`` (s), ``spikes`` and ``calcium`` (K, T), ``motion`` (T, 2 applied (y, x)
    displacement), ``x_shifts`` / ``y_shifts`` (the expected correction, ``-motion``) and, with
    ``nonrigid_amplitude > 0``, ``nonrigid_coefficients`` (T, 2) and :meth:`nonrigid_displacement`.
    """

    dtype = np.dtype(np.uint8)

    def __init__(self, config: SimulationConfig | None = None):
        self.config = config = config or SimulationConfig()
        if config.height < 16 or config.width < 16 or config.nframes < 1 or config.n_neurons < 0:
            raise ValueError(f"invalid simulation size in {config}")
        self.nframes = config.nframes
        self.frame_shape = (config.height, config.width)
        rng = np.random.default_rng([config.seed, 0])
        self._pad = int(np.ceil(config.max_motion + config.nonrigid_amplitude)) + 4
        self._make_neurons(rng)
        self._make_activity(rng)
        self._make_background(rng)
        self._make_motion(rng)

    # ----------------------------------------------------------------- ground truth
    @property
    def n_neurons(self) -> int:
        return self.centers.shape[0]

    @cached_property
    def footprints(self) -> scipy.sparse.csc_matrix:
        """(height*width, n_neurons) unit-peak soma footprints in scene (= corrected) coordinates."""
        return _footprint_matrix(
            self.frame_shape, self.centers, self.radii, self.elongation, self.orientation
        )

    @property
    def fps(self) -> float:
        return self.config.fps

    @property
    def match_distance(self) -> float:
        """Largest centroid distance at which a found mask counts as a true neuron, px."""
        return self.config.neuron_radius

    @property
    def x_shifts(self) -> np.ndarray:
        """Correction shifts the engine should find (x = column), i.e. minus the applied motion."""
        return -self.motion[:, 1]

    @property
    def y_shifts(self) -> np.ndarray:
        """Correction shifts the engine should find (y = row), i.e. minus the applied motion."""
        return -self.motion[:, 0]

    def nonrigid_displacement(self, frame: int) -> tuple[np.ndarray, np.ndarray]:
        """(dy, dx) extra non-rigid motion (height, width) of ``frame``; zeros when rigid.

        The field is a shear: ``dx = A a_x(t) (2 y / (H-1) - 1)``, ``dy = A a_y(t) (2 x / (W-1) - 1)``
        with ``A = nonrigid_amplitude`` and ``a = nonrigid_coefficients[t]`` (columns y, x) in [-1, 1].
        The local correction shift is ``-(motion + displacement)``.
        """
        height, width = self.frame_shape
        amplitude = self.config.nonrigid_amplitude
        coef_y, coef_x = self.nonrigid_coefficients[frame]
        rows = np.linspace(-1.0, 1.0, height, dtype=np.float32)[:, None]
        cols = np.linspace(-1.0, 1.0, width, dtype=np.float32)[None, :]
        dx = np.broadcast_to(amplitude * coef_x * rows, (height, width)).astype(np.float32)
        dy = np.broadcast_to(amplitude * coef_y * cols, (height, width)).astype(np.float32)
        return dy, dx

    # ----------------------------------------------------------------- MovieSource
    def iter_chunks(self, chunk_frames: int, start: int = 0, stop: int | None = None):
        """Yield (first frame index, uint8 frames) for frames start..stop."""
        stop = self.nframes if stop is None else min(stop, self.nframes)
        for first in range(start, stop, chunk_frames):
            last = min(first + chunk_frames, stop)
            yield first, np.stack([self.render_frame(t) for t in range(first, last)])

    def render_frame(self, t: int) -> np.ndarray:
        """Frame ``t`` as uint8 (height, width)."""
        cfg = self.config
        height, width = self.frame_shape
        pad = self._pad
        scene = self._scene(t)
        dy_motion, dx_motion = self.motion[t]
        if cfg.nonrigid_amplitude > 0:
            dy, dx = self.nonrigid_displacement(t)
            map_x = self._grid_x + np.float32(pad - dx_motion) - dx
            map_y = self._grid_y + np.float32(pad - dy_motion) - dy
            warped = cv2.remap(scene, map_x, map_y, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
        else:
            matrix = np.array([[1, 0, pad - dx_motion], [0, 1, pad - dy_motion]], dtype=np.float64)
            warped = cv2.warpAffine(
                scene, matrix, (width, height),
                flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT,
            )
        signal = np.maximum(warped * self._vignette, 0.0)
        noise = np.random.default_rng([cfg.seed, 1, t]).standard_normal((height, width), dtype=np.float32)
        frame = signal + np.sqrt(cfg.gain * signal + cfg.read_noise**2) * noise
        return np.clip(np.rint(frame), 0, 255).astype(np.uint8)

    # ----------------------------------------------------------------- model construction
    def _make_neurons(self, rng: np.random.Generator) -> None:
        cfg = self.config
        height, width = self.frame_shape
        pad = self._pad
        margin = cfg.neuron_radius * 1.2
        min_distance = cfg.neuron_radius * 1.3  # closer pairs overlap
        centers: list[tuple[float, float]] = []
        attempts = 0
        while len(centers) < cfg.n_neurons and attempts < 10000 * max(cfg.n_neurons, 1):
            attempts += 1
            candidate = (rng.uniform(margin, height - 1 - margin), rng.uniform(margin, width - 1 - margin))
            if all(np.hypot(candidate[0] - y, candidate[1] - x) >= min_distance for y, x in centers):
                centers.append(candidate)
        self.centers = np.asarray(centers, dtype=np.float64).reshape(-1, 2)  # (y, x)
        k = self.centers.shape[0]
        self.radii = cfg.neuron_radius * np.clip(1 + cfg.neuron_radius_spread * rng.standard_normal(k), 0.6, 1.5)
        self.elongation = rng.uniform(1.0, cfg.max_elongation, k)
        self.orientation = rng.uniform(0, np.pi, k)
        self.brightness = cfg.spike_amplitude * rng.lognormal(0.0, 0.25, k)
        self._footprints_padded = _footprint_matrix(
            (height + 2 * pad, width + 2 * pad), self.centers + pad,
            self.radii, self.elongation, self.orientation,
        )

    def _make_activity(self, rng: np.random.Generator) -> None:
        cfg = self.config
        k, t = self.n_neurons, cfg.nframes
        self.firing_rates = np.clip(cfg.firing_rate * rng.lognormal(0.0, 0.4, k), 0.2, 3.0)
        self.decay_times = rng.uniform(cfg.decay_time[0], cfg.decay_time[1], k)
        self.spikes = rng.poisson(self.firing_rates[:, None] / cfg.fps, (k, t)).astype(np.float32)
        jumps = self.spikes * rng.lognormal(0.0, cfg.spike_amplitude_jitter, (k, t)).astype(np.float32)
        self.calcium = _calcium(jumps, self.decay_times * cfg.fps, cfg.rise_time * cfg.fps)

    def _make_background(self, rng: np.random.Generator) -> None:
        cfg = self.config
        height, width = self.frame_shape
        pad = self._pad
        shape = (height + 2 * pad, width + 2 * pad)
        yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
        large = _smooth_noise(rng, shape, max(shape) / 4)
        texture = _smooth_noise(rng, shape, 2.5)
        vessels = np.zeros(shape, np.float32)
        for _ in range(max(1, max(shape) // 150)):
            y0, slope, curve = rng.uniform(0, shape[0]), rng.uniform(-0.5, 0.5), rng.uniform(-1, 1) / max(shape)
            centre_line = y0 + slope * (xx - shape[1] / 2) + curve * (xx - shape[1] / 2) ** 2
            vessels = np.maximum(vessels, np.exp(-0.5 * ((yy - centre_line) / rng.uniform(1.5, 3.0)) ** 2))
        self._tissue = cfg.background_level * (0.85 + 0.15 * large) * (1 + 0.06 * texture) * (1 - 0.25 * vessels)
        self._global_fluctuation = cfg.background_fluctuation * _slow_process(rng, cfg.nframes, cfg.fps * 8.0)
        # Low-rank smooth components and neuropil sources live on a coarse grid (upsampled per frame).
        coarse = (shape[0] // _SMOOTH_FIELD_SCALE + 2, shape[1] // _SMOOTH_FIELD_SCALE + 2)
        components = [np.maximum(_smooth_noise(rng, coarse, max(coarse) / 3) + 1.0, 0) / 2
                      for _ in range(cfg.n_background_components)]
        traces = [cfg.background_component_amplitude * (_slow_process(rng, cfg.nframes, cfg.fps * 2.0) + 1.0)
                  for _ in range(cfg.n_background_components)]
        n_neuropil = cfg.n_neurons // 3 + 2 if cfg.neuropil_sources is None else cfg.neuropil_sources
        cy, cx = np.mgrid[0 : coarse[0], 0 : coarse[1]].astype(np.float32)
        for _ in range(n_neuropil):
            sigma = rng.uniform(3.0, 6.0) * cfg.neuron_radius / _SMOOTH_FIELD_SCALE
            y0, x0 = rng.uniform(0, coarse[0]), rng.uniform(0, coarse[1])
            components.append(np.exp(-0.5 * ((cy - y0) ** 2 + (cx - x0) ** 2) / sigma**2))
            spikes = rng.poisson(rng.uniform(1.0, 4.0) / cfg.fps, cfg.nframes).astype(np.float32)
            activity = _calcium(spikes[None], np.array([1.5 * cfg.fps]), cfg.rise_time * cfg.fps)[0]
            traces.append(cfg.neuropil_amplitude * activity / max(float(activity.max()), 1.0))
        self._smooth_spatial = np.stack(components).reshape(len(components), -1).astype(np.float32)
        self._smooth_temporal = np.stack(traces).astype(np.float32) if traces else np.zeros((0, cfg.nframes), np.float32)
        corner = np.hypot((height - 1) / 2, (width - 1) / 2)
        sy, sx = np.mgrid[0:height, 0:width].astype(np.float32)
        radius = np.hypot(sy - (height - 1) / 2, sx - (width - 1) / 2) / corner
        self._vignette = (1 - cfg.vignetting * radius**2).astype(np.float32)
        self._grid_y, self._grid_x = sy, sx

    def _make_motion(self, rng: np.random.Generator) -> None:
        cfg = self.config
        motion = np.zeros((cfg.nframes, 2))
        for t in range(1, cfg.nframes):
            step = cfg.motion_step * rng.standard_normal(2)
            if rng.random() < cfg.motion_jump_rate / cfg.fps:
                angle = rng.uniform(0, 2 * np.pi)
                step += rng.exponential(cfg.motion_jump_size) * np.array([np.sin(angle), np.cos(angle)])
            motion[t] = np.clip(0.995 * motion[t - 1] + step, -cfg.max_motion, cfg.max_motion)
        self.motion = motion  # (T, 2): applied (y, x) displacement of the tissue
        self.nonrigid_coefficients = np.stack(
            [_slow_process(rng, cfg.nframes, cfg.fps * 3.0) for _ in range(2)], axis=1
        ).clip(-1, 1) if cfg.nonrigid_amplitude > 0 else np.zeros((cfg.nframes, 2))

    def _scene(self, t: int) -> np.ndarray:
        cfg = self.config
        shape = self._tissue.shape
        neurons = self._footprints_padded @ (self.brightness * (cfg.neuron_baseline + self.calcium[:, t]))
        coarse = (self._smooth_temporal[:, t] @ self._smooth_spatial).reshape(
            shape[0] // _SMOOTH_FIELD_SCALE + 2, shape[1] // _SMOOTH_FIELD_SCALE + 2
        )
        smooth = cv2.resize(
            coarse, (coarse.shape[1] * _SMOOTH_FIELD_SCALE, coarse.shape[0] * _SMOOTH_FIELD_SCALE),
            interpolation=cv2.INTER_LINEAR,
        )[: shape[0], : shape[1]]
        scene = self._tissue * np.float32(1 + self._global_fluctuation[t]) + smooth
        scene += neurons.reshape(shape).astype(np.float32)
        return scene.astype(np.float32)


def _footprint_matrix(shape, centers, radii, elongation, orientation) -> scipy.sparse.csc_matrix:
    """(shape[0]*shape[1], n) float32 matrix of soma profiles, one column per neuron."""
    columns = [
        _soma_profile(shape, center, r, e, theta)
        for center, r, e, theta in zip(centers, radii, elongation, orientation)
    ]
    if not columns:
        return scipy.sparse.csc_matrix((shape[0] * shape[1], 0), dtype=np.float32)
    return scipy.sparse.hstack(columns, format="csc").astype(np.float32)


def _soma_profile(shape, center, radius, elongation, orientation) -> scipy.sparse.csc_matrix:
    """Unit-peak soma-like profile ``exp(-ln2 d^3)`` (d = elliptical radius / radius), cut at 0.05."""
    extent = int(np.ceil(radius * np.sqrt(elongation) * 1.8))
    cy, cx = center
    y0, y1 = max(int(cy) - extent, 0), min(int(cy) + extent + 2, shape[0])
    x0, x1 = max(int(cx) - extent, 0), min(int(cx) + extent + 2, shape[1])
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float64)
    cos, sin = np.cos(orientation), np.sin(orientation)
    u = ((xx - cx) * cos + (yy - cy) * sin) / (radius * np.sqrt(elongation))
    v = (-(xx - cx) * sin + (yy - cy) * cos) / (radius / np.sqrt(elongation))
    profile = np.exp(-np.log(2) * np.hypot(u, v) ** 3)
    profile[profile < 0.05] = 0
    rows = (yy * shape[1] + xx).astype(np.int64).ravel()
    values = profile.ravel()
    keep = values > 0
    return scipy.sparse.csc_matrix(
        (values[keep], (rows[keep], np.zeros(keep.sum(), np.int64))), shape=(shape[0] * shape[1], 1)
    )


def _calcium(jumps: np.ndarray, decay_frames: np.ndarray, rise_frames: float) -> np.ndarray:
    """AR(2) calcium per row: double-exponential response to ``jumps`` with unit peak per unit jump.

    ``c[t] = (d + r) c[t-1] - d r c[t-2] + jumps[t] / peak`` with ``d = exp(-1 / decay)`` and
    ``r = exp(-1 / rise)`` (AR(1) when ``rise_frames`` is 0).
    """
    d = np.exp(-1.0 / decay_frames)
    r = np.exp(-1.0 / rise_frames) if rise_frames > 0 else 0.0
    lags = np.arange(int(10 * max(rise_frames, 1)) + 2)
    response = (d[:, None] ** (lags + 1) - r ** (lags + 1)) / np.where(d[:, None] - r != 0, d[:, None] - r, 1)
    peak = response.max(axis=1) if rise_frames > 0 else np.ones_like(d)
    calcium = np.empty_like(jumps, dtype=np.float32)
    previous = np.zeros(jumps.shape[0])
    before = np.zeros(jumps.shape[0])
    for t in range(jumps.shape[1]):
        current = (d + r) * previous - d * r * before + jumps[:, t] / peak
        calcium[:, t] = current
        before, previous = previous, current
    return calcium


def _smooth_noise(rng: np.random.Generator, shape, sigma: float) -> np.ndarray:
    """Gaussian-filtered white noise scaled to unit maximum magnitude (spatial scale ``sigma``)."""
    field = cv2.GaussianBlur(rng.standard_normal(shape).astype(np.float32), (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    return field / max(float(np.abs(field).max()), 1e-12)


def _slow_process(rng: np.random.Generator, n: int, timescale_frames: float) -> np.ndarray:
    """Smooth random process of ``n`` samples with unit standard deviation (Gaussian-filtered noise)."""
    padding = int(3 * timescale_frames)
    noise = rng.standard_normal(n + 2 * padding)
    kernel = np.exp(-0.5 * (np.arange(-padding, padding + 1) / timescale_frames) ** 2)
    smooth = np.convolve(noise, kernel / kernel.sum(), mode="same")[padding : padding + n]
    return (smooth - smooth.mean()) / max(float(smooth.std()), 1e-12)


def evaluate(result, simulation, max_distance: float | None = None, spike_sigma: float = 0.1) -> dict:
    """Accuracy of a ProcessingResult against the ground truth of ``simulation``: a
    :class:`Simulation` or any object with its ground-truth attributes (``frame_shape``, ``fps``,
    ``match_distance``, ``centers``, ``footprints``, ``calcium``, ``spikes``, ``x_shifts``,
    ``y_shifts``), such as a minisim case.

    - motion: RMS and largest error of the rigid shifts (x and y together, px) after removing the
      constant offset (the template's own position).
    - detection: true and found masks are paired one-to-one (Hungarian assignment on centroid
      distance) and a pair matches if the distance is at most ``max_distance`` (default: the
      truth's ``match_distance``; for the project simulator the mean neuron radius); true
      centroids are first moved by the template offset.
      Returns precision, recall, F1, the indices of the matched found masks and the median IoU
      of matched footprints (pixels >= 20% of peak; true footprints moved by the template offset).
    - recall by kind of true cell (``recall_by_kind``: kind -> [found, total], see
      :func:`kinds_of_cells`): where the cells a method misses are.
    - detection by footprint overlap (``iou_precision``, ``iou_recall``, ``iou_f1``), the default
      criterion of minisim's own scorer (``minisim.testing.score``): found footprints are moved
      back by the template offset (whole pixels), each footprint is binarised to the fewest pixels
      holding 90% of its summed weight, masks are paired one-to-one maximising their total IoU, and a pair
      matches at IoU >= 0.5. It asks for the cell's whole image, its out-of-focus light included.
    - traces: median Pearson correlation of matched fluorescence traces with the true calcium,
      and of the denoised traces (where the result has them): the raw trace carries the shot
      noise, so at low photon counts its correlation is bounded by the noise, not the demixing.
    - spikes: median correlation of matched deconvolved activity with the true spikes, both
      smoothed with a Gaussian of ``spike_sigma`` seconds.
    """
    from scipy.ndimage import gaussian_filter1d
    from scipy.optimize import linear_sum_assignment

    figures: dict = {}
    offset = np.zeros(2)
    if result.motion_rigid is not None:
        error = np.stack([result.motion_rigid.y_shifts - simulation.y_shifts,
                          result.motion_rigid.x_shifts - simulation.x_shifts], axis=1)
        offset = error.mean(axis=0)
        centred = error - offset
        figures["motion_rms_px"] = float(np.sqrt((centred**2).sum(axis=1).mean()))
        figures["motion_max_px"] = float(np.sqrt((centred**2).sum(axis=1)).max())
        figures["motion_offset_px"] = offset.round(3).tolist()
    max_distance = simulation.match_distance if max_distance is None else max_distance
    true_centres = simulation.centers + offset  # (y, x)
    found_centres = result.mask_centers()[:, ::-1] if result.n_masks else np.zeros((0, 2))
    distance = np.hypot(*(true_centres[:, None, :] - found_centres[None, :, :]).transpose(2, 0, 1))
    if distance.size:
        rows, cols = linear_sum_assignment(np.where(distance <= max_distance, distance, 1e6))
        matched = distance[rows, cols] <= max_distance
        rows, cols = rows[matched], cols[matched]
    else:
        rows = cols = np.zeros(0, np.int64)
    n_true, n_found, n_match = len(true_centres), len(found_centres), len(rows)
    figures["matched_masks"] = np.sort(cols).tolist()
    figures.update(n_true=n_true, n_found=n_found, n_matched=n_match, **_detection_scores(n_match, n_found, n_true))
    figures.update(_overlap_detection(result.footprints, simulation.footprints, simulation.frame_shape, offset))
    found_true = np.zeros(n_true, bool)
    found_true[rows] = True
    figures["recall_by_kind"] = {
        kind: [int(found_true[members].sum()), int(members.sum())]
        for kind, members in kinds_of_cells(true_centres, simulation.frame_shape, simulation.match_distance).items()
    }
    if n_match:
        height, width = simulation.frame_shape
        moved = np.array([[1, 0, offset[1]], [0, 1, offset[0]]], dtype=np.float64)
        ious = []
        for t, f in zip(rows, cols):
            true_mask = cv2.warpAffine(
                simulation.footprints[:, [t]].toarray().reshape(height, width).astype(np.float32), moved, (width, height)
            )
            found_mask = result.footprints[:, [f]].toarray().reshape(height, width)
            a = true_mask >= 0.2 * true_mask.max()
            b = found_mask >= 0.2 * found_mask.max()
            ious.append((a & b).sum() / max((a | b).sum(), 1))
        figures["median_iou"] = float(np.median(ious))
        trace_corr = [_pearson(result.fluorescence[f], simulation.calcium[t]) for t, f in zip(rows, cols)]
        figures["median_trace_corr"] = float(np.median(trace_corr))
        figures["trace_corr"] = np.round(trace_corr, 3).tolist()
        if result.denoised is not None:
            figures["median_denoised_corr"] = float(np.median(
                [_pearson(result.denoised[f], simulation.calcium[t]) for t, f in zip(rows, cols)]))
        if result.spikes is not None:
            sigma = spike_sigma * simulation.fps
            spike_corr = [
                _pearson(gaussian_filter1d(result.spikes[f].astype(np.float64), sigma),
                         gaussian_filter1d(simulation.spikes[t].astype(np.float64), sigma))
                for t, f in zip(rows, cols)
            ]
            figures["median_spike_corr"] = float(np.median(spike_corr))
    return figures


def _overlap_detection(found: scipy.sparse.spmatrix, true: scipy.sparse.spmatrix, frame_shape, offset,
                       fraction: float = 0.9, min_iou: float = 0.5) -> dict:
    """Precision, recall and F1 of footprint-overlap matching (see :func:`evaluate`)."""
    from scipy.optimize import linear_sum_assignment

    found_masks = _energy_masks(_shifted(found, frame_shape, -np.rint(offset).astype(int)), fraction)
    true_masks = _energy_masks(true, fraction)
    n_found, n_true = found_masks.shape[1], true_masks.shape[1]
    n_match = 0
    if n_found and n_true:
        intersection = (found_masks.T @ true_masks).toarray()
        union = np.add.outer(found_masks.sum(axis=0).A1, true_masks.sum(axis=0).A1) - intersection
        iou = intersection / np.maximum(union, 1)
        rows, cols = linear_sum_assignment(-iou)
        n_match = int((iou[rows, cols] >= min_iou).sum())
    return {f"iou_{name}": value for name, value in _detection_scores(n_match, n_found, n_true).items()}


def _detection_scores(n_match: int, n_found: int, n_true: int) -> dict:
    """Precision, recall and F1 of ``n_match`` pairs among ``n_found`` found and ``n_true`` true cells."""
    precision = n_match / n_found if n_found else 0.0
    recall = n_match / n_true if n_true else 0.0
    return {"precision": precision, "recall": recall,
            "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0}


def _energy_masks(footprints: scipy.sparse.spmatrix, fraction: float = 0.9) -> scipy.sparse.csc_matrix:
    """(pixels, masks) 0/1 matrix: each footprint's brightest pixels holding ``fraction`` of its summed weight."""
    footprints = scipy.sparse.csc_matrix(footprints)
    rows, columns = [], []
    for k in range(footprints.shape[1]):
        start, stop = footprints.indptr[k], footprints.indptr[k + 1]
        values = np.clip(footprints.data[start:stop], 0, None)
        if values.sum() <= 0:
            continue
        order = np.argsort(values)[::-1]
        count = min(int(np.searchsorted(np.cumsum(values[order]), fraction * values.sum())) + 1, len(order))
        rows.append(footprints.indices[start:stop][order[:count]])
        columns.append(np.full(count, k))
    rows = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    columns = np.concatenate(columns) if columns else np.zeros(0, np.int64)
    return scipy.sparse.csc_matrix((np.ones(len(rows), np.float32), (rows, columns)), shape=footprints.shape)


def _shifted(footprints: scipy.sparse.spmatrix, frame_shape, offset) -> scipy.sparse.csc_matrix:
    """``footprints`` (pixels, k) moved by the whole-pixel ``offset`` (dy, dx); pixels leaving the frame are dropped."""
    height, width = frame_shape
    coo = footprints.tocoo()
    y, x = coo.row // width + offset[0], coo.row % width + offset[1]
    inside = (y >= 0) & (y < height) & (x >= 0) & (x < width)
    return scipy.sparse.csc_matrix((coo.data[inside], (y[inside] * width + x[inside], coo.col[inside])),
                                   shape=footprints.shape)


def kinds_of_cells(centres: np.ndarray, frame_shape, half_diameter: float) -> dict[str, np.ndarray]:
    """Boolean masks of the (y, x) ``centres`` by kind: ``close``, a neighbour's centre within a
    third of a diameter (in a 1-photon projection their footprints nearly coincide: only their
    activity tells them apart); ``edge``, not close and the centre within half a diameter of the
    frame's edge (the frame cuts the cell); ``isolated``, the others."""
    if len(centres) > 1:
        nearest = scipy.spatial.cKDTree(centres).query(centres, k=2)[0][:, 1]
    else:
        nearest = np.full(len(centres), np.inf)
    close = nearest < 2 * half_diameter / 3
    height, width = frame_shape
    to_edge = np.minimum.reduce([centres[:, 0], centres[:, 1], height - 1 - centres[:, 0], width - 1 - centres[:, 1]])
    edge = ~close & (to_edge < half_diameter)
    return {"isolated": ~close & ~edge, "close": close, "edge": edge}


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, np.float64) - np.mean(a)
    b = np.asarray(b, np.float64) - np.mean(b)
    denominator = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denominator) if denominator > 0 else 0.0


@dataclass
class SimulatedSession:
    """One session of a simulated population: what registration sees (``cells``) and the truth:
    the population index of each ROI and the transform from population to session pixels."""

    cells: "SessionCells"
    population_ids: np.ndarray
    transform: np.ndarray  # 2x3: population (x, y) -> session (x, y), then plus ``deformation``
    deformation: np.ndarray | None = None  # (2, size, size): (dx, dy) at each session pixel

    def seen(self, points: np.ndarray) -> np.ndarray:
        """Population points (2, n) as this session sees them (2, n)."""
        seen = self.transform @ np.vstack([points, np.ones(points.shape[1])])
        if self.deformation is not None:
            rows, columns = seen[::-1]
            seen = seen + np.stack([scipy.ndimage.map_coordinates(d, [rows, columns], order=1, mode="nearest")
                                    for d in self.deformation])
        return seen


def simulate_sessions(n_sessions: int, n_cells: int = 300, size: int = 256, max_shift: float = 20.0,
                      max_rotation: float = 5.0, presence: float = 0.85, cell_radius: float = 4.0,
                      deformation: float = 0.0, seed: int = 0) -> list[SimulatedSession]:
    """Sessions of one population of cells seen through a field of view that moves between
    sessions (shift up to ``max_shift`` px, rotation up to ``max_rotation`` degrees; the first
    session is the population's own frame). Each cell is active (found) in a session with
    probability ``presence``; footprints vary a little in shape, position and size between
    sessions; summary images carry the cells over a vessel-like background and noise. With
    ``deformation`` > 0, every session but the first is also deformed smoothly (up to that many
    px), as tissue and lens settle between sessions."""
    from miniscope_assets.engine.cross_session import SessionCells

    rng = np.random.default_rng(seed)
    margin = max_shift + 2 * cell_radius
    positions = _spaced_points(rng, n_cells, size, margin, 2.2 * cell_radius)
    background = _smooth_field(rng, (size, size), 12.0) + 0.6 * _smooth_field(rng, (size, size), 3.0)
    centre = ((size - 1) / 2, (size - 1) / 2)
    sessions = []
    for index in range(n_sessions):
        angle = 0.0 if index == 0 else rng.uniform(-max_rotation, max_rotation)
        shift = (0.0, 0.0) if index == 0 else rng.uniform(-max_shift, max_shift, 2)
        transform = cv2.getRotationMatrix2D(centre, angle, 1.0)
        transform[:, 2] += shift
        warp = None
        if deformation and index:
            warp = np.stack([_smooth_field(rng, (size, size), size / 5) for _ in range(2)])
            warp *= deformation / max(np.abs(warp).max(), 1e-9)
        session = SimulatedSession(None, np.zeros(0, int), transform, warp)
        seen = session.seen(positions.T)
        present = (rng.random(len(positions)) < presence) & np.all((seen > 3 * cell_radius)
                                                                   & (seen < size - 3 * cell_radius), axis=0)
        ids = np.flatnonzero(present)
        columns = [_blob(rng, seen[:, k] + rng.normal(0, 0.3, 2), cell_radius, size) for k in ids]
        footprints = scipy.sparse.hstack(columns).tocsc() if columns else scipy.sparse.csc_matrix((size * size, 0))
        brightness = rng.uniform(0.5, 1.0, len(ids))
        cells_image = (footprints @ brightness).reshape(size, size) if len(ids) else np.zeros((size, size))
        yy, xx = np.mgrid[:size, :size].astype(np.float32)
        if warp is not None:  # the population point a session pixel shows: undo the deformation, then the transform
            xx, yy = xx - warp[0].astype(np.float32), yy - warp[1].astype(np.float32)
        inverse = cv2.invertAffineTransform(transform)
        map_x, map_y = (np.float32(row[0]) * xx + np.float32(row[1]) * yy + np.float32(row[2]) for row in inverse)
        seen_background = cv2.remap(background.astype(np.float32), map_x, map_y, cv2.INTER_LINEAR,
                                    borderMode=cv2.BORDER_REFLECT)
        image = cells_image + 0.3 * seen_background + rng.normal(0, 0.05, (size, size))
        session.cells = SessionCells(f"session-{index}", image.astype(np.float32), footprints, np.arange(len(ids)))
        session.population_ids = ids
        sessions.append(session)
    return sessions


def registration_accuracy(sessions: list[SimulatedSession], registration: "Registration") -> tuple[float, float]:
    """Precision and recall of the matched ROI pairs over every pair of sessions; the truth is
    every cell active (found) in both sessions of a pair."""
    truth = {s.cells.name: s for s in sessions}
    correct = predicted = actual = 0
    names = registration.sessions
    for n, a in enumerate(names):
        for b in names[n + 1:]:
            pairs = [(cell[a][0], cell[b][0]) for cell in registration.cells if a in cell and b in cell]
            hits = sum(truth[a].population_ids[i] == truth[b].population_ids[j] for i, j in pairs)
            correct, predicted = correct + hits, predicted + len(pairs)
            actual += len(set(truth[a].population_ids) & set(truth[b].population_ids))
    return correct / max(predicted, 1), correct / max(actual, 1)


def alignment_error_px(sessions: list[SimulatedSession], registration: "Registration") -> float:
    """Largest distance between where the registration puts a session's view of a grid of
    population points and where the first session sees them."""
    size = sessions[0].cells.image.shape[0]
    grid = np.stack(np.meshgrid(np.linspace(0.2, 0.8, 5) * size, np.linspace(0.2, 0.8, 5) * size), -1).reshape(-1, 2)
    reference = sessions[0].seen(grid.T)
    return max((float(np.hypot(*(np.stack(registration.alignments[s.cells.name].apply(*s.seen(grid.T)))
                                  - reference)).max()) for s in sessions[1:]), default=0.0)


def _spaced_points(rng, n: int, size: int, margin: float, spacing: float) -> np.ndarray:
    points = []
    while len(points) < n:
        candidate = rng.uniform(margin, size - margin, 2)
        if all(np.hypot(*(candidate - p)) >= spacing for p in points[-400:]) or len(points) > 50 * n:
            points.append(candidate)
    return np.asarray(points)


def _smooth_field(rng, shape: tuple[int, int], sigma: float) -> np.ndarray:
    field = cv2.GaussianBlur(rng.standard_normal(shape).astype(np.float32), (0, 0), sigma)
    return field / (field.std() + 1e-9)


def _blob(rng, centre: np.ndarray, radius: float, size: int) -> scipy.sparse.csc_matrix:
    """A footprint (size*size, 1) row-major: an elongated Gaussian, cut below 10 % of its peak."""
    sigma = radius / 2 * rng.uniform(0.85, 1.15)
    elongation, angle = rng.uniform(1.0, 1.4), rng.uniform(0, np.pi)
    reach = int(np.ceil(3 * sigma * elongation))
    x0, y0 = (int(round(c)) for c in centre)
    yy, xx = np.mgrid[max(y0 - reach, 0):min(y0 + reach + 1, size), max(x0 - reach, 0):min(x0 + reach + 1, size)]
    dx, dy = xx - centre[0], yy - centre[1]
    u = dx * np.cos(angle) + dy * np.sin(angle)
    v = -dx * np.sin(angle) + dy * np.cos(angle)
    blob = np.exp(-(u**2 / (elongation * sigma) ** 2 + v**2 * elongation / sigma**2) / 2)
    keep = blob >= 0.1
    rows = (yy[keep] * size + xx[keep]).ravel()
    return scipy.sparse.csc_matrix((blob[keep], (rows, np.zeros(rows.size, int))), shape=(size * size, 1))
