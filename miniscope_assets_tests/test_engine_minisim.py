"""The engine with default parameters against independent ground truth (minisim).

minisim (the Miniscope organisation's physics-based simulator) shares no code or assumption with
the project's own simulator. The cases vary density, photons (SNR), neuropil, bleaching and
motion; their seeds are used nowhere else (the engine was developed on seed 0, the accuracy
benchmark uses seeds from 100).
"""

from __future__ import annotations

import numpy as np
import pytest

from miniscope_assets.engine import run_engine
from miniscope_assets.engine.movie import ArrayMovie
from miniscope_assets.simulation import evaluate
from miniscope_assets_tests.minisim_cases import MinisimCase, simulate

pytest.importorskip("minisim")
pytestmark = pytest.mark.slow  # about 3.5 min on 2 cores: four cases rendered and processed

# The thresholds hold for the four cases together (detection F1 >= 0.93, soma-class F1 >=
# 0.90, pooled over their ~290 cells); each case alone must reach CASE_MIN_F1. One case holds about
# 60 cells, so one or two cells more or less move its F1 by 0.015-0.03: the fast-motion case went
# from 0.943 to 0.935 and 0.918 with the same engine code between OpenCV 4.13, 4.14 and 5.0 (whose
# cubic warps no longer round sub-pixel shifts to 1/32 px, in the simulator's rendering as in the
# correction). Measured figures: docs/engine.md.
CASES = [
    MinisimCase("sparse", size=256, seconds=50, density=12_000, motion_um=2.0, seed=11),
    MinisimCase("dense", size=256, seconds=50, density=30_000, motion_um=2.0, seed=12),
    MinisimCase("dim, neuropil, bleaching", size=256, seconds=50, density=16_000, photons=350, neuropil=0.6,
                bleaching=1.0, motion_um=2.0, seed=13),
    MinisimCase("fast motion", size=256, seconds=50, density=16_000, motion_um=5.0, max_shift_um=10.0, seed=14),
]
MIN_F1, MIN_SOMA_F1, CASE_MIN_F1 = 0.93, 0.90, 0.90
MIN_IOU_F1 = 0.85  # mean over the cases: 0.89-0.94 measured, 0.25-0.57 before footprints were completed


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """Every case rendered, processed with default parameters and scored, by name."""
    return {case.name: _score(case, tmp_path_factory.mktemp("minisim")) for case in CASES}


def _score(case: MinisimCase, work_dir):
    movie, truth = simulate(case)
    result = run_engine(ArrayMovie(movie), {}, work_dir, case.fps)
    figures = evaluate(result, truth)
    soma = evaluate(result.select(np.flatnonzero(result.mask_types == "soma")), truth)
    print(case.name, {k: round(v, 3) for k, v in figures.items() if isinstance(v, float)},
          "soma F1", round(soma["f1"], 3), "diameter", result.notes["neuron_size"], "true", round(truth.diameter, 2))
    figures["neuron_size"] = result.notes["neuron_size"]
    figures["minisim_iou_f1"] = _minisim_overlap_f1(result, truth, figures["motion_offset_px"])
    figures["soma_probability"] = np.where(result.mask_types == "soma", result.mask_confidence,
                                           1 - result.mask_confidence)
    return truth, figures, soma


@pytest.fixture(params=CASES, ids=[case.name for case in CASES])
def scored(request, runs):
    return runs[request.param.name]


def _minisim_overlap_f1(result, truth, offset) -> float:
    """F1 by minisim's own footprint matching (its scorer's default: IoU >= 0.5 of 90%-energy masks)."""
    from minisim.metrics import hungarian_match

    height, width = truth.frame_shape
    found = result.footprints.T.toarray().reshape(-1, height, width)
    match = hungarian_match(found, truth.footprints.T.toarray().reshape(-1, height, width), metric="iou",
                            shift=(-offset[0], -offset[1]))
    return 2 * len(match.matched_pairs(0.5)) / (len(found) + truth.n_neurons)


def _pooled_f1(scores: list[dict]) -> float:
    matched = sum(s["n_matched"] for s in scores)
    return 2 * matched / (sum(s["n_found"] for s in scores) + sum(s["n_true"] for s in scores))


def test_detection_over_all_cases(runs):
    figures = [f for _, f, _ in runs.values()]
    somata = [soma for _, _, soma in runs.values()]
    assert _pooled_f1(figures) >= MIN_F1, [round(f["f1"], 3) for f in figures]
    assert _pooled_f1(somata) >= MIN_SOMA_F1, [round(s["f1"], 3) for s in somata]


def test_detection(scored):
    truth, figures, soma = scored
    assert truth.n_neurons >= 20
    assert figures["f1"] >= CASE_MIN_F1, figures
    assert soma["f1"] >= CASE_MIN_F1, soma


def test_footprints_are_whole_cells(runs):
    """Footprints hold a cell's whole image, its out-of-focus light included, as minisim's own scorer
    asks (evaluate's iou_f1 is that criterion; checked against minisim's code)."""
    for _, figures, _ in runs.values():
        assert figures["iou_f1"] == pytest.approx(figures["minisim_iou_f1"], abs=0.01)
    assert np.mean([f["iou_f1"] for _, f, _ in runs.values()]) >= MIN_IOU_F1, [
        round(f["iou_f1"], 3) for _, f, _ in runs.values()]


def test_confidence_is_calibrated(scored):
    """The classifier's soma probability (confidence of a soma, 1 - confidence otherwise) predicts
    the fraction of masks that are real cells; calibrated on other minisim and project seeds."""
    _, figures, _ = scored
    probability = figures["soma_probability"]
    observed = figures["n_matched"] / figures["n_found"]
    assert abs(probability.mean() - observed) <= 0.05, (probability.mean(), observed)


def test_neuron_size_measured(scored):
    truth, figures, _ = scored
    assert figures["neuron_size"]["source"] == "measured"
    assert figures["neuron_size"]["diameter_px"] == pytest.approx(truth.diameter, rel=0.12)


def test_traces(scored):
    """The raw demixed traces follow the true calcium; the denoised ones closer still."""
    _, figures, _ = scored
    assert figures["median_trace_corr"] >= 0.9
    assert figures["median_denoised_corr"] >= max(0.95, figures["median_trace_corr"])


def test_motion(scored):
    _, figures, _ = scored
    assert figures["motion_rms_px"] <= 0.3
    assert figures["motion_max_px"] <= 1.5
