"""Calibrate the mask classifier's soma probability on ground truth from both simulators.

    .venv/bin/python benchmarks/calibrate_classifier.py [--work DIR] [--fit-only] [--check]

The engine runs with default parameters on calibration cases (minisim seeds 300-305, project
simulator seeds 600-605: used nowhere else), each mask is labelled real if it is matched to a
true cell (``miniscope_assets.simulation.evaluate``: Hungarian matching of centroids within half a
cell diameter), and a logistic regression of that label on the classifier's inputs
(``classification.calibration_inputs``) is fitted. Its weights are written to
``miniscope_assets/engine/classifier_calibration.json`` (with the cases and the fit's figures).

The fit is then checked on held-out cases it never saw: bench_accuracy.py's minisim cases
(seeds 100-105) and project-simulator seeds 700-702. The script prints a reliability table
(mean predicted probability against the fraction of real cells, in ten bins), the Brier score
and the expected calibration error for both sets, and draws ``docs/classifier_calibration.png``
(needs matplotlib). Rendered movies and per-mask features are kept in DIR and reused;
``--fit-only`` refits from them, ``--check`` only evaluates the current weights.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_accuracy import CASES as ACCURACY_CASES  # noqa: E402
from bench_accuracy import load_truth, render_case  # noqa: E402
from bench_engine import run_child, write_simulated_movie  # noqa: E402

from miniscope_assets.atomic import atomic_path  # noqa: E402
from miniscope_assets.engine import classification  # noqa: E402
from miniscope_assets.simulation import SimulationConfig  # noqa: E402
from miniscope_assets_tests.minisim_cases import MinisimCase  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CALIBRATION = [
    MinisimCase("sparse", size=256, seconds=60, density=12_000, motion_um=2.0, seed=300),
    MinisimCase("dense", size=256, seconds=60, density=30_000, motion_um=2.0, seed=301),
    MinisimCase("CA1 dim", size=256, seconds=60, density=45_000, photons=300, neuropil=0.8, motion_um=3.0, seed=302),
    MinisimCase("dim bleaching", size=256, seconds=60, density=16_000, photons=250, neuropil=0.8, bleaching=1.0,
                motion_um=3.0, seed=303),
    MinisimCase("fast motion", size=256, seconds=60, density=16_000, motion_um=5.0, max_shift_um=10.0, seed=304),
    MinisimCase("wide field", size=400, seconds=50, density=45_000, motion_um=2.0, seed=305),
    SimulationConfig(height=200, width=200, nframes=1500, n_neurons=60, seed=600),
    SimulationConfig(height=200, width=200, nframes=1500, n_neurons=30, neuron_radius=7.5, seed=601),
    SimulationConfig(height=200, width=200, nframes=1500, n_neurons=110, neuron_radius=3.5, seed=602),
    SimulationConfig(height=200, width=200, nframes=1500, n_neurons=60, spike_amplitude=4.0, seed=603),
    SimulationConfig(height=200, width=200, nframes=1500, n_neurons=60, neuropil_amplitude=20.0, seed=604),
    SimulationConfig(height=400, width=400, nframes=1500, n_neurons=170, seed=605),
]
HELD_OUT = [
    *ACCURACY_CASES.values(),
    SimulationConfig(height=200, width=200, nframes=1500, n_neurons=60, seed=700),
    SimulationConfig(height=300, width=300, nframes=2000, n_neurons=90, neuropil_amplitude=15.0, seed=701),
    SimulationConfig(height=200, width=200, nframes=1500, n_neurons=45, neuron_radius=6.5, spike_amplitude=5.0,
                     seed=702),
]
ACCURACY_WORK = ROOT / "benchmarks" / "_accuracy"
WEIGHTS_PATH = ROOT / "miniscope_assets" / "engine" / "classifier_calibration.json"
PLOT_PATH = ROOT / "docs" / "classifier_calibration.png"
BINS = np.linspace(0, 1, 11)
FAIL_MARGIN = 0.5  # criterion scales: failing one criterion by this much means "not a soma"


@dataclass
class CaseMasks:
    """Per-mask classifier features of one case and whether each mask is a real cell."""

    name: str
    features: dict  # name -> (n,) array, as classification.footprint_features (+ "snr")
    params: dict  # the classification parameters of the run (with the measured neuron_diameter)
    real: np.ndarray  # (n,) bool


def case_name(case) -> str:
    """The case's seed and the settings that differ from the simulator's defaults."""
    kind, default = ("minisim", MinisimCase("")) if isinstance(case, MinisimCase) else ("project", SimulationConfig())
    changed = [f"{f.name}={getattr(case, f.name):g}" for f in fields(case)
               if f.name not in ("name", "seed", "tags") and getattr(case, f.name) != getattr(default, f.name)
               and isinstance(getattr(case, f.name), (int, float))]
    return f"{kind} seed {case.seed}: {', '.join(changed)}"


def _stem(case, work: Path) -> Path:
    """Where the case's movie is rendered (bench_accuracy.py's renders are reused)."""
    if case in ACCURACY_CASES.values():
        return ACCURACY_WORK / case.name.replace(" ", "_")
    if isinstance(case, MinisimCase):
        return work / f"minisim_{case.seed}"
    return work / f"project_{case.seed}"


def _render(case, stem: Path) -> dict:
    if isinstance(case, MinisimCase):
        return render_case(case, stem)
    return write_simulated_movie(case, stem.with_suffix(".h5"))


def _collect(case, stem: Path) -> dict:
    """Child: the engine with default parameters on the case; per-mask features and labels."""
    import tempfile

    from miniscope_assets.engine import run_engine
    from miniscope_assets.engine.h5movie import H5Movie
    from miniscope_assets.engine.noise import trace_snr
    from miniscope_assets.simulation import Simulation, evaluate

    if isinstance(case, MinisimCase):
        truth, movie, fps = load_truth(stem.with_suffix(".npz")), H5Movie(stem.with_suffix(".h5"), "corrected"), case.fps
    else:
        truth, movie, fps = Simulation(case), H5Movie(stem.with_suffix(".h5"), "movie"), case.fps
    with tempfile.TemporaryDirectory(dir=stem.parent) as work_dir:
        result = run_engine(movie, {}, Path(work_dir), fps)
    figures = evaluate(result, truth)
    params = {**result.params, "neuron_diameter": result.notes["neuron_size"]["diameter_px"]}
    features = classification.footprint_features(result.footprints, result.frame_shape, result.summary.correlation,
                                                 params["neuron_diameter"])
    features["snr"] = np.array([trace_snr(trace) for trace in result.fluorescence])
    real = np.zeros(result.n_masks, bool)
    real[figures["matched_masks"]] = True
    return {"features": {k: np.asarray(v, np.float64) for k, v in features.items()}, "real": real,
            "params": {k: params[k] for k in classification.CLASSIFICATION_PARAMS}, "f1": figures["f1"]}


def load_masks(cases: list, work: Path) -> list[CaseMasks]:
    """Features and labels of every case (rendered and run once, then read from ``work``)."""
    masks = []
    for case in cases:
        stem = _stem(case, work)
        saved = work / f"{'minisim' if isinstance(case, MinisimCase) else 'project'}_{case.seed}_masks.json"
        if not saved.is_file():
            if not stem.with_suffix(".h5").is_file():
                stem.parent.mkdir(parents=True, exist_ok=True)
                run_child(_render, case, stem)
            report = run_child(_collect, case, stem)
            print(f"{case_name(case)}: {len(report['real'])} masks, {int(report['real'].sum())} real, "
                  f"F1 {report['f1']:.3f}", flush=True)
            with atomic_path(saved) as temporary:
                temporary.write_text(json.dumps({"features": {k: v.tolist() for k, v in report["features"].items()},
                                                 "params": report["params"], "real": report["real"].tolist()}))
        data = json.loads(saved.read_text())
        masks.append(CaseMasks(case_name(case), {k: np.array(v) for k, v in data["features"].items()},
                               data["params"], np.array(data["real"], bool)))
    return masks


def _inputs(masks: list[CaseMasks]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(inputs, labels, sample weights): every case weighs the same in the fit."""
    rows, labels, weights = [], [], []
    for case in masks:
        inputs = classification.calibration_inputs(classification.criterion_margins(case.features, case.params))
        rows.append(np.stack([inputs[name] for name in classification.CALIBRATION_INPUTS], axis=1))
        labels.append(case.real.astype(np.float64))
        weights.append(np.full(len(case.real), 1.0 / max(len(case.real), 1)))
    weights = np.concatenate(weights)
    return np.concatenate(rows), np.concatenate(labels), weights * len(weights) / weights.sum()


def fit_logistic(x: np.ndarray, y: np.ndarray, weights: np.ndarray, ridge: float = 1e-3) -> np.ndarray:
    """Weighted, lightly L2-regularised logistic regression by Newton's method: (intercept,
    coefficients). Every coefficient is held at least at ``intercept / -log sigmoid(-FAIL_MARGIN)``,
    so failing any one criterion by FAIL_MARGIN of its scale makes a mask not a soma even where
    the calibration cases hold few such masks (the documented rules stay rules)."""
    design = np.column_stack([np.ones(len(x)), x])
    penalty = np.diag([0.0] + [ridge * len(x)] * x.shape[1])
    beta = np.zeros(design.shape[1])
    floored = np.zeros(design.shape[1], bool)
    for _ in range(20):
        free = ~floored
        for _ in range(100):
            p = 1.0 / (1.0 + np.exp(-np.clip(design @ beta, -50, 50)))
            gradient = (design.T @ (weights * (p - y)) + penalty @ beta)[free]
            hessian = ((design * (weights * p * (1 - p))[:, None]).T @ design + penalty)[np.ix_(free, free)]
            step = np.linalg.solve(hessian, gradient)
            beta[free] -= step
            floor = beta[0] / np.logaddexp(0.0, FAIL_MARGIN)
            beta[1:][floored[1:]] = floor
            if np.abs(step).max() < 1e-9:
                break
        below = np.concatenate([[False], beta[1:] < floor - 1e-9])
        if not (below & ~floored).any():
            return beta
        floored |= below
        beta[1:][floored[1:]] = floor
    return beta


def save_calibration(masks: list[CaseMasks]) -> None:
    """Fit the soma probability on ``masks`` and write its weights for the engine."""
    x, y, weights = _inputs(masks)
    beta = fit_logistic(x, y, weights)
    document = {
        "about": "soma probability = logistic(intercept + sum(weights[name] * input[name])) with the inputs of "
                 "classification.calibration_inputs; fitted by benchmarks/calibrate_classifier.py on the cases "
                 "below (label: the mask is matched to a true cell)",
        "intercept": round(float(beta[0]), 4),
        "weights": {name: round(float(b), 4) for name, b in zip(classification.CALIBRATION_INPUTS, beta[1:])},
        "fail_margin": FAIL_MARGIN,
        "cases": [case_name(case) for case in CALIBRATION],
        "masks": int(len(y)), "real": int(y.sum()),
    }
    with atomic_path(WEIGHTS_PATH) as temporary:
        temporary.write_text(json.dumps(document, indent=1) + "\n")
    classification.load_calibration.cache_clear()
    print(json.dumps({k: document[k] for k in ("intercept", "weights", "masks", "real")}))


def reliability(masks: list[CaseMasks]) -> dict:
    """Reliability of the engine's soma probability on ``masks``: per-bin figures, Brier, ECE."""
    p = np.concatenate([classification.soma_probability(case.features, case.params) for case in masks])
    y = np.concatenate([case.real for case in masks]).astype(np.float64)
    which = np.clip(np.digitize(p, BINS) - 1, 0, len(BINS) - 2)
    bins = [(float(p[which == b].mean()), float(y[which == b].mean()), int((which == b).sum()))
            for b in range(len(BINS) - 1) if (which == b).any()]
    ece = sum(n * abs(predicted - observed) for predicted, observed, n in bins) / len(p)
    soma = p >= 0.5
    return {"bins": bins, "brier": float(np.mean((p - y) ** 2)), "ece": float(ece), "masks": len(p),
            "real": int(y.sum()), "soma_precision": float(y[soma].mean()) if soma.any() else 0.0,
            "soma_recall": float(soma[y > 0].mean()) if (y > 0).any() else 0.0}


def _print_reliability(title: str, figures: dict) -> None:
    print(f"\n{title}: {figures['masks']} masks, {figures['real']} real; Brier {figures['brier']:.3f}, "
          f"ECE {figures['ece']:.3f}; soma class precision {figures['soma_precision']:.3f}, "
          f"recall {figures['soma_recall']:.3f}")
    print("| predicted | observed | masks |\n|---|---|---|")
    for predicted, observed, n in figures["bins"]:
        print(f"| {predicted:.2f} | {observed:.2f} | {n} |")


def plot(calibration: dict, held_out: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(4.6, 4.2))
    axes.plot([0, 1], [0, 1], color="0.6", linestyle=":", label="perfect calibration")
    for figures, label, marker in ((calibration, "calibration cases", "o"), (held_out, "held-out cases", "s")):
        predicted, observed, counts = (np.array(v) for v in zip(*figures["bins"]))
        line, = axes.plot(predicted, observed, marker=marker, label=f"{label} ({figures['masks']} masks, "
                          f"ECE {figures['ece']:.3f})")
        for x, y, n in zip(predicted, observed, counts):
            axes.annotate(str(n), (x, y), textcoords="offset points", xytext=(4, -9), fontsize=6,
                          color=line.get_color())
    axes.set_xlabel("soma probability p (confidence: p for a soma, 1 - p otherwise)", fontsize=8)
    axes.set_ylabel("fraction matched to a true cell (numbers: masks per bin)", fontsize=8)
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.legend(loc="upper left", fontsize=7)
    axes.set_title("Mask classifier reliability (minisim + project simulator)", fontsize=9)
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "_calibration")
    parser.add_argument("--fit-only", action="store_true", help="refit from the saved features")
    parser.add_argument("--check", action="store_true", help="evaluate the current weights only")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    calibration_masks = load_masks(CALIBRATION, args.work)
    if not args.check:
        save_calibration(calibration_masks)
    held_out_masks = load_masks(HELD_OUT, args.work)
    calibration, held_out = reliability(calibration_masks), reliability(held_out_masks)
    _print_reliability("calibration cases (in sample)", calibration)
    _print_reliability("held-out cases", held_out)
    for case in held_out_masks:
        figures = reliability([case])
        print(f"  {case.name}: {figures['masks']} masks, {figures['real']} real, soma precision "
              f"{figures['soma_precision']:.3f} recall {figures['soma_recall']:.3f}, Brier {figures['brier']:.3f}")
    try:
        plot(calibration, held_out, PLOT_PATH)
        print(f"\nreliability plot: {PLOT_PATH.relative_to(ROOT)}")
    except ImportError:
        print("\nmatplotlib is not installed: no plot")


if __name__ == "__main__":
    multiprocessing.set_start_method("spawn", force=True)
    main()
