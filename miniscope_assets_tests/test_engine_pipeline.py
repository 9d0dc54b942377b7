"""run_engine end to end on simulated ground truth: accuracy, result contents, streaming, determinism.

Matching rule (miniscope_assets.simulation.evaluate): true and found masks are paired one-to-one by
the Hungarian assignment on centroid distance; a pair matches when the distance is at most the
mean neuron radius (5 px), after moving the true centroids by the motion template's offset.
"""

from __future__ import annotations

import json
import tracemalloc
from datetime import timezone
from pathlib import Path

import h5py
import numpy as np
import pytest

import miniscope_assets
from miniscope_assets.engine import ArrayMovie, run_engine
from miniscope_assets.engine.filters import bandpass
from miniscope_assets.io.results_file import load_results, save_results
from miniscope_assets.results import MASK_TYPES
from miniscope_assets.simulation import Simulation, SimulationConfig, evaluate

CHUNK = 64
STAGES = ("motion_correction", "binning", "summary_images", "source_extraction", "traces")


class ChunkCheckingMovie:
    """A MovieSource that only offers iter_chunks and fails on requests larger than ``limit`` frames."""

    def __init__(self, frames: np.ndarray, limit: int):
        self._movie = ArrayMovie(frames)
        self.nframes, self.frame_shape, self.dtype = self._movie.nframes, self._movie.frame_shape, self._movie.dtype
        self.limit = limit
        self.largest_request = 0
        self.frames_read = 0

    def iter_chunks(self, chunk_frames: int, start: int = 0, stop: int | None = None):
        assert 0 < chunk_frames <= self.limit, f"requested {chunk_frames} frames at once"
        self.largest_request = max(self.largest_request, chunk_frames)
        for first, frames in self._movie.iter_chunks(chunk_frames, start, stop):
            assert len(frames) <= self.limit
            self.frames_read += len(frames)
            yield first, frames.copy()


def _frames(simulation: Simulation) -> np.ndarray:
    return np.concatenate([frames for _, frames in simulation.iter_chunks(250)])


@pytest.fixture(scope="module")
def processed(tmp_path_factory):
    simulation = Simulation(SimulationConfig(height=120, width=120, nframes=1000, n_neurons=30, fps=20.0, seed=0))
    movie = ChunkCheckingMovie(_frames(simulation), limit=CHUNK)
    calls: list[tuple[str, float]] = []
    work_dir = tmp_path_factory.mktemp("engine")
    result = run_engine(movie, {"chunk_frames": CHUNK}, work_dir, 20.0, progress=lambda s, f: calls.append((s, f)))
    return simulation, movie, result, work_dir, calls


def test_accuracy_against_ground_truth(processed):
    simulation, _, result, _, _ = processed
    figures = evaluate(result, simulation)
    print({k: v for k, v in figures.items() if k != "trace_corr"})
    assert figures["motion_rms_px"] < 0.3  # required: 0.5
    assert figures["f1"] >= 0.9  # required: 0.85
    assert figures["median_iou"] >= 0.7
    assert figures["median_trace_corr"] >= 0.9  # required: 0.85
    # deconvolved activity vs true spikes, both smoothed with a 0.1 s Gaussian
    assert figures["median_spike_corr"] >= 0.8
    by_kind = np.array(list(figures["recall_by_kind"].values()))
    assert by_kind.sum(axis=0).tolist() == [figures["n_matched"], figures["n_true"]]


def test_matched_masks_are_classified_as_somata(processed):
    simulation, _, result, _, _ = processed
    figures = evaluate(result, simulation)
    soma = result.mask_types == "soma"
    assert soma.sum() >= 0.8 * figures["n_matched"]
    assert (result.mask_confidence[soma] >= 0.5).all()


def test_result_contents(processed):
    _, movie, result, _, _ = processed
    result.validate()
    k = result.n_masks
    assert result.method == "builtin" and result.package_version == miniscope_assets.__version__
    assert result.params["chunk_frames"] == CHUNK and result.params["pw_rigid"] is False
    assert result.creation_time.tzinfo is not None and result.creation_time.utcoffset() == timezone.utc.utcoffset(None)
    assert result.frame_shape == (120, 120) and result.nframes == 1000
    assert result.mask_ids.tolist() == list(range(k))
    assert set(result.mask_types) <= set(MASK_TYPES)
    assert ((result.mask_confidence >= 0) & (result.mask_confidence <= 1)).all()
    for name in result.TRACE_FIELDS:
        trace = getattr(result, name)
        assert trace.dtype == np.float32 and trace.shape == (k, 1000) and np.isfinite(trace).all()
    assert (result.spikes >= 0).all()
    assert result.footprints.format == "csc" and result.footprints.shape == (120 * 120, k)
    assert set(result.summary.as_dict()) == {"mean", "reference", "max_projection", "correlation", "peak_to_noise"}
    assert result.motion_rigid.x_shifts.shape == (1000,) and result.motion_piecewise is None
    assert result.corrected_movie == "corrected.h5"
    notes = json.loads(json.dumps(result.notes))
    assert set(STAGES) | {"neuron_size", "classification"} <= set(notes["stage_seconds"])
    assert sum(notes["mask_types"].values()) == k
    # no diameter in the paramset: measured on the data (the simulated somata are 10 px across)
    assert result.params["neuron_diameter"] is None
    assert notes["neuron_size"]["source"] == "measured"
    assert notes["neuron_size"]["diameter_px"] == pytest.approx(10, rel=0.15)


def test_corrected_movie_file(processed):
    simulation, _, result, work_dir, _ = processed
    assert sorted(p.name for p in work_dir.iterdir()) == ["corrected.h5"]  # temporary files are gone
    with h5py.File(work_dir / "corrected.h5", "r") as f:
        corrected = f["corrected"]
        assert corrected.shape == (1000, 120, 120) and corrected.dtype == np.uint8
        assert corrected.chunks is None and corrected.compression is None  # contiguous: written in place by the workers
        frames = corrected[()]
    raw = _frames(simulation)
    # registration: band-passed frames match the band-passed reference far better after correction
    reference = bandpass(result.summary.reference, 1.5, 6.0)[12:-12, 12:-12].ravel()
    offset = np.hypot(simulation.x_shifts - simulation.x_shifts.mean(), simulation.y_shifts - simulation.y_shifts.mean())
    moving = np.flatnonzero(offset > 2)[::10]
    assert len(moving) > 10

    def similarity(frame):
        return np.corrcoef(bandpass(frame, 1.5, 6.0)[12:-12, 12:-12].ravel(), reference)[0, 1]

    assert np.mean([similarity(frames[t]) for t in moving]) > np.mean([similarity(raw[t]) for t in moving]) + 0.12
    np.testing.assert_allclose(frames.mean(axis=0), result.summary.mean, atol=1e-3)


def test_reads_only_chunks(processed):
    _, movie, _, _, _ = processed
    assert movie.largest_request == CHUNK
    # two passes over the movie (estimate, apply) plus the row-banding check and the template
    # rounds over its first frames
    assert movie.frames_read <= 2 * 1000 + 5 * 200


def test_progress_reports_every_stage(processed):
    *_, calls = processed
    for stage in STAGES:
        fractions = [f for s, f in calls if s == stage]
        assert len(fractions) >= 3, stage
        assert all(0 <= f <= 1 for f in fractions) and fractions == sorted(fractions)
        assert fractions[-1] == pytest.approx(1.0)


def test_result_file_roundtrip(processed, tmp_path):
    _, _, result, _, _ = processed
    loaded = load_results(save_results(result, tmp_path / "results.h5"))
    assert loaded.params == result.params
    np.testing.assert_array_equal(loaded.footprints.toarray(), result.footprints.toarray())
    np.testing.assert_array_equal(loaded.dff, result.dff)


def test_deterministic(tmp_path):
    simulation = Simulation(SimulationConfig(height=72, width=80, nframes=300, n_neurons=10, seed=9))
    frames = _frames(simulation)
    params = {"patch_size": 40, "patch_overlap": 16}
    first = run_engine(ArrayMovie(frames), params, tmp_path / "a", 20.0)
    second = run_engine(ArrayMovie(frames), params, tmp_path / "b", 20.0)
    assert first.n_masks >= 5
    np.testing.assert_array_equal(first.footprints.toarray(), second.footprints.toarray())
    for name in first.TRACE_FIELDS:
        np.testing.assert_array_equal(getattr(first, name), getattr(second, name))
    np.testing.assert_array_equal(first.mask_types, second.mask_types)
    np.testing.assert_array_equal(first.motion_rigid.x_shifts, second.motion_rigid.x_shifts)
    with h5py.File(tmp_path / "a" / "corrected.h5") as a, h5py.File(tmp_path / "b" / "corrected.h5") as b:
        np.testing.assert_array_equal(a["corrected"][()], b["corrected"][()])


@pytest.mark.parametrize("pw_rigid", [False, True], ids=["rigid", "piecewise"])
def test_one_and_two_workers_agree(tmp_path, pw_rigid):
    """Work split over processes gives the same result, bit for bit."""
    simulation = Simulation(SimulationConfig(height=96, width=112, nframes=400, n_neurons=14, seed=4))
    frames = _frames(simulation)
    params = {"patch_size": 48, "patch_overlap": 16, "chunk_frames": 50, "pw_rigid": pw_rigid,
              "strides": [32, 32], "overlaps": [16, 16]}
    one = run_engine(ArrayMovie(frames), params, tmp_path / "one", 20.0, n_workers=1)
    two = run_engine(ArrayMovie(frames), params, tmp_path / "two", 20.0, n_workers=2)
    assert (one.notes["n_workers"], two.notes["n_workers"]) == (1, 2)
    assert one.notes["neuron_size"] == two.notes["neuron_size"]
    assert one.n_masks >= 8
    np.testing.assert_array_equal(one.mask_types, two.mask_types)
    np.testing.assert_array_equal(one.footprints.toarray(), two.footprints.toarray())
    for name in one.TRACE_FIELDS:
        np.testing.assert_array_equal(getattr(one, name), getattr(two, name), err_msg=name)
    for name, image in one.summary.as_dict().items():
        np.testing.assert_array_equal(image, two.summary.as_dict()[name], err_msg=name)
    np.testing.assert_array_equal(one.motion_rigid.x_shifts, two.motion_rigid.x_shifts)
    if pw_rigid:
        np.testing.assert_array_equal(one.motion_piecewise.y_shifts, two.motion_piecewise.y_shifts)
    with h5py.File(tmp_path / "one" / "corrected.h5") as a, h5py.File(tmp_path / "two" / "corrected.h5") as b:
        np.testing.assert_array_equal(a["corrected"][:], b["corrected"][:])


def test_the_engine_imports_nothing_from_the_readers():
    """The engine reads any MovieSource and keeps its own format (engine/h5movie.py); io/ is the
    data layer's."""
    engine = Path(miniscope_assets.engine.__file__).parent
    assert not [p.name for p in engine.glob("*.py") if "miniscope_assets.io" in p.read_text()]


def test_memory_does_not_grow_with_movie_length(tmp_path):
    """Peak Python/numpy allocations for a 4x longer movie grow far less than the extra frames would need."""
    config = dict(height=64, width=64, n_neurons=6, seed=4)
    # both lengths bin to 100 frames for source finding, so only the streaming stages see the length
    params = {"chunk_frames": 50, "max_init_frames": 100, "patch_size": 64, "patch_overlap": 0}
    peaks = {}
    for nframes in (200, 1000):
        frames = _frames(Simulation(SimulationConfig(nframes=nframes, **config)))
        tracemalloc.start()
        run_engine(ArrayMovie(frames), params, tmp_path / str(nframes), 20.0)
        peaks[nframes] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    extra_frames_float32 = 800 * 64 * 64 * 4
    assert peaks[1000] - peaks[200] < 0.25 * extra_frames_float32, peaks


def test_rejects_bad_input(tmp_path):
    movie = ArrayMovie(np.zeros((5, 32, 32), np.uint8))
    with pytest.raises(ValueError, match="fps"):
        run_engine(movie, {}, tmp_path, 0.0)
    with pytest.raises(ValueError, match="unknown"):
        run_engine(movie, {"no_such_key": 1}, tmp_path, 20.0)
    with pytest.raises(ValueError, match=r"the movie's frames \(1 x 64 px\) are too small to process"):
        run_engine(ArrayMovie(np.zeros((50, 1, 64), np.uint8)), {}, tmp_path, 20.0)


@pytest.mark.parametrize("shape", [(1, 64, 64), (3, 64, 64), (200, 2, 64), (200, 5, 5), (200, 8, 200)])
def test_tiny_movies_give_valid_empty_results(tmp_path, shape):
    """One to three frames, frames two pixels high or five wide: processed to a result with no
    masks (nothing there is a cell), not a crash."""
    noise = np.random.default_rng(0).normal(100, 5, shape).clip(0, 255).astype(np.uint8)
    result = run_engine(ArrayMovie(noise), {}, tmp_path, 20.0, n_workers=1)
    assert result.n_masks == 0 and result.motion_rigid.x_shifts.shape == (shape[0],)
    assert np.isfinite(result.summary.correlation).all() and np.isfinite(result.summary.mean).all()


def test_a_movie_without_cells_longer_than_the_dff_window_gives_a_valid_empty_result(tmp_path):
    """No source found in a movie longer than the dF/F baseline window (here 10 s of 40 s): an
    empty result, not a crash in the running baseline of no traces."""
    noise = np.random.default_rng(1).normal(100, 5, (200, 48, 48)).clip(0, 255).astype(np.uint8)
    result = run_engine(ArrayMovie(noise), {"dff_window": 10.0}, tmp_path, 5.0, n_workers=1)
    assert result.n_masks == 0
    assert result.fluorescence.shape == result.dff.shape == (0, 200)
