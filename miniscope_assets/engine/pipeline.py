"""run_engine: motion correction -> binned copy -> neuron size -> summary images -> sources -> traces
-> classification."""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np

import miniscope_assets
from miniscope_assets.engine.binning import BinnedMovie, write_binned
from miniscope_assets.engine.classification import Classification, classify_sources
from miniscope_assets.engine.extraction import Sources, extract_sources
from miniscope_assets.engine.h5movie import H5Movie
from miniscope_assets.engine.motion import MotionCorrection, correct_motion
from miniscope_assets.engine.movie import MovieSource
from miniscope_assets.engine.neuron_size import estimate_neuron_size
from miniscope_assets.engine.params import validate_params
from miniscope_assets.engine.summary import compute_summary_images
from miniscope_assets.engine.traces import Traces, extract_traces
from miniscope_assets.engine.workers import worker_count
from miniscope_assets.errors import ParameterError
from miniscope_assets.results import ProcessingResult, SummaryImages

CORRECTED_MOVIE = "corrected.h5"
MIN_FRAME_SIDE = 2  # px: a one-pixel-wide frame has no two-dimensional shift to register
DEFAULT_NEURON_DIAMETER = 10.0  # px, when the paramset gives none and too few cells can be measured


@dataclass(frozen=True)
class MovieSummary:
    """What the stages after binning take from the whole corrected movie: the neuron size they
    use (:func:`neuron_size_of`) and the summary images."""

    neuron_size: dict
    images: SummaryImages


def neuron_size_of(binned: BinnedMovie, params: dict, n_workers: int | None = None) -> dict:
    """The neuron diameter the stages use and where it comes from: the paramset's, else the one
    measured on the data (:mod:`~miniscope_assets.engine.neuron_size`), else the default."""
    if params["neuron_diameter"] is not None:
        return {"diameter_px": params["neuron_diameter"], "source": "paramset"}
    size = estimate_neuron_size(binned, n_workers)
    measured = {"cells_measured": size.cells_measured, "quartiles_px": size.quartiles}
    if size.diameter is None:
        return {"diameter_px": DEFAULT_NEURON_DIAMETER, "source": "default (too few cells to measure)", **measured}
    return {"diameter_px": size.diameter, "source": "measured", **measured}


def run_engine(
    movie: MovieSource,
    params: dict,
    work_dir: Path,
    fps: float,
    progress: Callable[[str, float], None] | None = None,
    motion: tuple[MotionCorrection, Path] | None = None,
    n_workers: int | None = None,
    shared_summary: Callable[[Callable[[], MovieSummary]], MovieSummary] | None = None,
    binned: BinnedMovie | None = None,
) -> ProcessingResult:
    """Process ``movie`` with the built-in engine.

    ``motion``: motion correction done before (its result and corrected movie, shared by runs
    with the same motion parameters), and ``binned`` a binned copy of that movie for ``params``
    if there is one (else written here); without ``motion``, motion correction writes
    ``work_dir / corrected.h5``. ``shared_summary(compute)``: the MovieSummary of an earlier run
    on the same corrected movie with the same ``SUMMARY_PARAMS``, else ``compute()``'s (it
    stores it for the next); without it, computed here. ``params`` are validated here too (so
    raw user dicts work); ``progress(stage, fraction)`` is called when every stage starts (0)
    and ends (1), and during the streaming stages. ``n_workers`` processes share the work (None
    or 0: every core); the results do not depend on their number.
    """
    params = validate_params(params)
    n_workers = worker_count(n_workers)
    if not (isinstance(fps, (int, float)) and np.isfinite(fps) and fps > 0):
        raise ParameterError(f"fps must be a positive number, got {fps!r}")
    if movie.nframes < 1:
        raise ParameterError("the movie has no frames")
    if min(movie.frame_shape) < MIN_FRAME_SIDE:
        raise ParameterError(f"the movie's frames ({' x '.join(map(str, movie.frame_shape))} px) are too small to "
                             f"process: at least {MIN_FRAME_SIDE} px a side")
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    def timed(stage: str, function, *args, **kwargs):
        if progress:
            progress(stage, 0.0)
        started = time.perf_counter()
        value = function(*args, **kwargs)
        timings[stage] = round(time.perf_counter() - started, 3)
        if progress:
            progress(stage, 1.0)
        return value

    if motion is None:
        corrected_path = work_dir / CORRECTED_MOVIE
        motion = timed("motion_correction", correct_motion, movie, params, corrected_path, progress, n_workers), corrected_path
    motion, corrected_path = motion
    corrected = H5Movie(corrected_path)
    descriptor, binned_path = tempfile.mkstemp(suffix=".h5", prefix="binned_", dir=work_dir)
    os.close(descriptor)
    try:
        if binned is None:
            binned = timed("binning", write_binned, corrected, params, fps, Path(binned_path), progress)

        def summarise() -> MovieSummary:
            size = timed("neuron_size", neuron_size_of, binned, params, n_workers)
            images = timed("summary_images", compute_summary_images, corrected,
                           {**params, "neuron_diameter": size["diameter_px"]},
                           binned.mean_image, binned.max_image, motion.reference, progress, n_workers)
            return MovieSummary(size, images)

        movie_summary = shared_summary(summarise) if shared_summary else summarise()
        size, summary = movie_summary.neuron_size, movie_summary.images
        stage_params = {**params, "neuron_diameter": size["diameter_px"]}
        sources = timed("source_extraction", extract_sources, binned, stage_params, fps, motion, progress, n_workers)
    finally:
        os.unlink(binned_path)
    traces = timed("traces", extract_traces, corrected, sources, stage_params, fps, progress, n_workers)
    classification = timed(
        "classification", classify_sources,
        sources.footprints, movie.frame_shape, traces.snr, summary.correlation, stage_params,
    )
    result = assemble_result(movie, params, fps, motion, summary, sources, traces, classification, timings)
    result.notes["n_workers"] = n_workers
    result.notes["neuron_size"] = size
    result.corrected_movie = os.path.relpath(corrected_path, work_dir)
    return result


def assemble_result(
    movie: MovieSource,
    params: dict,
    fps: float,
    motion: MotionCorrection,
    summary: SummaryImages,
    sources: Sources,
    traces: Traces,
    classification: Classification,
    timings: dict[str, float],
) -> ProcessingResult:
    """The ProcessingResult of the stage outputs (validated)."""
    n_masks = sources.footprints.shape[1]
    types, counts = np.unique(classification.types, return_counts=True) if n_masks else ([], [])
    result = ProcessingResult(
        method="builtin",
        package_version=miniscope_assets.__version__,
        params=params,
        creation_time=datetime.now(timezone.utc),
        frame_shape=tuple(movie.frame_shape),
        nframes=movie.nframes,
        summary=summary,
        mask_ids=np.arange(n_masks, dtype=np.int64),
        footprints=sources.footprints,
        mask_types=classification.types,
        mask_confidence=classification.confidence,
        fluorescence=traces.fluorescence,
        motion_rigid=motion.rigid,
        motion_piecewise=motion.piecewise,
        neuropil=traces.neuropil,
        denoised=traces.denoised,
        dff=traces.dff,
        spikes=traces.spikes,
        corrected_movie=CORRECTED_MOVIE,
        notes={
            "stage_seconds": timings,
            "motion": motion.notes,
            "extraction": sources.notes,
            "traces": traces.notes,
            "mask_types": {str(t): int(c) for t, c in zip(types, counts)},
            "fps": float(fps),
        },
    )
    result.validate()
    return result
