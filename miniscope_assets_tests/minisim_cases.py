"""Independent ground truth: Miniscope V4 recordings of CA1 from minisim (PyPI).

minisim is the Miniscope organisation's physics-based forward model (optics, scatter, neuropil,
vessels, vignette, bleaching, rigid brain motion, an 8-bit sensor). It shares no code or
assumption with ``miniscope_assets.simulation``. A :class:`MinisimCase` names one recording by
the few settings that make a case easy or hard; :func:`simulate` renders it and returns the movie
(uint8) and a :class:`MinisimTruth` that ``miniscope_assets.simulation.evaluate`` scores against.
Shared by the tests and ``benchmarks/bench_accuracy.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse


@dataclass(frozen=True)
class MinisimCase:
    """One minisim recording: the V4 scope cropped to ``size`` px, a CA1 region, rigid motion."""

    name: str
    size: int = 200  # frame height and width, px (1.655 um/px)
    seconds: float = 50.0
    fps: float = 20.0
    density: float = 16_000.0  # somata per mm^3 (CA1 preset: 45 000)
    photons: float = 600.0  # photons per unit fluorescence (V4 preset: 600; fewer = lower SNR)
    neuropil: float = 0.4  # neuropil amplitude (CA1 preset: 0.4)
    motion_um: float = 2.0  # brain-motion amplitude, um (0: none)
    max_shift_um: float = 8.0  # largest brain displacement, um
    bleaching: float | None = None  # excitation intensity of photobleaching (None: none)
    seed: int = 0
    tags: tuple[str, ...] = field(default=(), compare=False)

    def spec(self):
        """The minisim ``Spec`` of this case."""
        from minisim.presets import build_spec, ca1, miniscope_v4
        from minisim.spec import Bleaching, BrainMotion, Neuropil, Sensor

        scope = miniscope_v4()
        scope = scope.model_copy(update={"image_sensor": scope.image_sensor.model_copy(
            update={"n_px_height": self.size, "n_px_width": self.size})})
        region = ca1()
        region = region.model_copy(update={
            "population": region.population.model_copy(update={"density_per_mm3": self.density}),
            "neuropil": Neuropil(amplitude=self.neuropil) if self.neuropil else None,
        })
        extra = []
        if self.motion_um:
            extra.append(BrainMotion(motion_amplitude_um=self.motion_um, max_shift_um=self.max_shift_um))
        if self.bleaching is not None:
            extra.append(Bleaching(excitation_intensity=self.bleaching))
        return build_spec(scope, region, duration_s=self.seconds, fps=self.fps, seed=self.seed,
                          sensor=Sensor(photons_per_unit=self.photons), extra_steps=extra)


@dataclass
class MinisimTruth:
    """The detectable cells of a minisim recording, in the attributes ``evaluate`` reads."""

    frame_shape: tuple[int, int]
    fps: float
    footprints: scipy.sparse.csc_matrix  # (height*width, cells), unit peak
    centers: np.ndarray  # (cells, 2) footprint centroids (y, x), px
    calcium: np.ndarray  # (cells, frames)
    spikes: np.ndarray  # (cells, frames)
    y_shifts: np.ndarray  # correction the engine should find, px
    x_shifts: np.ndarray
    diameter: float  # median equivalent diameter of the footprints above half their peak, px

    @property
    def n_neurons(self) -> int:
        return self.centers.shape[0]

    @property
    def match_distance(self) -> float:
        """Half a cell diameter (the matching rule of the accuracy issue), px."""
        return self.diameter / 2


def simulate(case: MinisimCase) -> tuple[np.ndarray, MinisimTruth]:
    """Render ``case`` in memory: (uint8 movie (T, H, W), truth of its detectable cells)."""
    import minisim

    recording = minisim.simulate(case.spec())
    movie = np.clip(np.rint(np.asarray(recording.observed)), 0, 255).astype(np.uint8)
    return movie, truth_of(recording.ground_truth, movie.shape[1:], case.fps, movie.shape[0])


def truth_of(ground_truth, frame_shape: tuple[int, int], fps: float, nframes: int) -> MinisimTruth:
    """The detectable cells of a minisim ``GroundTruth`` as a :class:`MinisimTruth`."""
    detectable = ground_truth.detectable_subset()
    stack = np.asarray(detectable.A_observed, dtype=np.float64)  # (cells, H, W)
    peaks = stack.reshape(len(stack), -1).max(axis=1)
    keep = peaks > 0
    stack, peaks = stack[keep], peaks[keep]
    unit = stack / peaks[:, None, None]
    ys, xs = np.mgrid[: frame_shape[0], : frame_shape[1]]
    weight = unit.sum(axis=(1, 2))
    centers = np.stack([(unit * ys).sum(axis=(1, 2)) / weight, (unit * xs).sum(axis=(1, 2)) / weight], axis=1)
    half_area = (unit >= 0.5).sum(axis=(1, 2))
    flat = unit.reshape(len(unit), -1).T
    flat[flat < 1e-3] = 0
    shifts = np.zeros((nframes, 2)) if ground_truth.shifts is None else np.asarray(ground_truth.shifts)
    return MinisimTruth(
        frame_shape=tuple(frame_shape), fps=fps,
        footprints=scipy.sparse.csc_matrix(flat),
        centers=centers,
        calcium=np.asarray(detectable.C)[keep],
        spikes=np.asarray(detectable.S)[keep],
        y_shifts=-shifts[:, 0], x_shifts=-shifts[:, 1],
        diameter=float(np.median(2 * np.sqrt(half_area / np.pi))),
    )
