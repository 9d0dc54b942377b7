"""Stage 4: mask classification (soma / dendrite / neuropil / artefact / unknown) with a confidence.

Features of each footprint, on its pixels at or above half its peak once smoothed by a Gaussian
of 1 px ("core"; the smoothing keeps pixel noise in a dim cell's footprint from making it ragged):

- ``area_ratio``: core area / expected soma area ``pi (neuron_diameter / 2)^2``;
- ``elongation``: major / minor axis ratio from the weighted second moments of the core;
- ``solidity``: core area / area of its convex hull (compactness);
- ``consistency``: 90th percentile of the local correlation image over the core (spatial
  consistency; like a seed, a soma must reach ``min_corr`` somewhere in its core, and a dim
  soma's median is lower than its centre);
- ``snr``: peak SNR of the fluorescence trace;
- ``cut``: 1 if the core touches the frame edge (the cell is cut off by it), else 0.

Each criterion has a *margin*: the signed distance of the feature from its threshold in the
criterion's scale (> 0 passes): area within ``soma_area_range`` (log scale 0.15), elongation <=
``max_soma_elongation`` (0.1), solidity >= 0.75 (0.05), consistency >= ``min_corr`` (0.05),
snr >= ``min_snr`` (1). The shape of a cut footprint says nothing about the cell: its lower area
bound, elongation and solidity pass.

The soma probability is ``logistic(intercept + sum_k w_k log sigmoid(margin_k))``: a criterion
passed clearly adds nothing, one failed by ``d`` scale units subtracts about ``w_k x d``. The intercept and weights
are fitted to ground truth from both simulators (a mask is real if it is matched to a true cell)
by ``benchmarks/calibrate_classifier.py`` and stored in ``classifier_calibration.json``; every
weight is held at least at the value where failing one criterion by half its scale alone gives
0.5, so the thresholds stay the rules. A mask is a ``soma`` if its probability is >= 0.5;
otherwise the first failed criterion gives its type: area above the range -> ``neuropil``; below
it -> ``artefact``; too elongated -> ``dendrite``; any other (or none) -> ``unknown``. The
confidence is the probability that the label is right as to soma or not: the soma probability
for a soma, one minus it otherwise. ``axon`` is never assigned: 1-photon resolution cannot tell
axons from dendrites.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import scipy.sparse

from miniscope_assets.engine.extraction import expected_soma_area
from miniscope_assets.results import footprint_pixels

MIN_SOLIDITY = 0.75
RULES = (  # (criterion, the type of a non-soma mask failing it), in the order the type is decided
    ("too_large", "neuropil"), ("too_small", "artefact"), ("elongated", "dendrite"),
    ("irregular", "unknown"), ("inconsistent", "unknown"), ("weak", "unknown"))
CALIBRATION_FILE = Path(__file__).with_name("classifier_calibration.json")
CLASSIFICATION_PARAMS = ("neuron_diameter", "soma_area_range", "max_soma_elongation", "min_corr", "min_snr")
_SMOOTHING_SIGMA = 1.0  # px: footprints are smoothed this much before their core is measured


@dataclass
class Classification:
    types: np.ndarray  # (n,) object: MASK_TYPES entries
    confidence: np.ndarray  # (n,) float32 in [0, 1]
    features: dict  # name -> (n,) float array


def footprint_features(footprints: scipy.sparse.csc_matrix, frame_shape, correlation_image: np.ndarray | None,
                       neuron_diameter: float) -> dict:
    """Shape and consistency features of every footprint (see module docstring)."""
    footprints = footprints.tocsc()
    width = frame_shape[1]
    n = footprints.shape[1]
    features = {name: np.zeros(n) for name in ("area_ratio", "elongation", "solidity", "consistency", "cut")}
    if correlation_image is None:
        features["consistency"][:] = np.nan
    expected = expected_soma_area(neuron_diameter)
    for k in range(n):
        ys, xs, values = footprint_pixels(footprints, k, width)
        if not len(values):
            continue
        ys, xs, weights = _smoothed_core(ys, xs, values, frame_shape)
        features["area_ratio"][k] = len(ys) / expected
        features["cut"][k] = float(ys.min() == 0 or xs.min() == 0 or ys.max() == frame_shape[0] - 1
                                   or xs.max() == width - 1)
        cy, cx = np.average(ys, weights=weights), np.average(xs, weights=weights)
        covariance = np.cov(np.stack([ys - cy, xs - cx]), aweights=weights, bias=True) if len(ys) > 1 else np.zeros((2, 2))
        eigen = np.sort(np.linalg.eigvalsh(covariance + np.eye(2) / 12.0))  # + pixel's own extent
        features["elongation"][k] = np.sqrt(eigen[1] / eigen[0])
        hull = cv2.convexHull(np.stack([xs, ys], axis=1).astype(np.int32))
        hull_area = cv2.contourArea(hull) + 0.5 * cv2.arcLength(hull, True) + 1.0  # pixel-count area of the hull
        features["solidity"][k] = min(len(ys) / hull_area, 1.0)
        if correlation_image is not None:
            features["consistency"][k] = float(np.percentile(correlation_image[ys, xs], 90))
    return features


def _smoothed_core(ys: np.ndarray, xs: np.ndarray, values: np.ndarray, frame_shape) -> tuple[np.ndarray, ...]:
    """(rows, columns, values) of a footprint's core: its pixels at or above half the peak once
    smoothed by a Gaussian of ``_SMOOTHING_SIGMA`` px, so pixel noise in a dim cell's footprint
    does not make its core ragged."""
    pad = int(np.ceil(3 * _SMOOTHING_SIGMA))
    y0, x0 = max(ys.min() - pad, 0), max(xs.min() - pad, 0)
    y1, x1 = min(ys.max() + pad + 1, frame_shape[0]), min(xs.max() + pad + 1, frame_shape[1])
    box = np.zeros((y1 - y0, x1 - x0), np.float32)
    box[ys - y0, xs - x0] = values
    box = cv2.GaussianBlur(box, (0, 0), _SMOOTHING_SIGMA, borderType=cv2.BORDER_CONSTANT)
    core_y, core_x = np.nonzero(box >= 0.5 * box.max())
    return core_y + y0, core_x + x0, box[core_y, core_x].astype(np.float64)


def criterion_margins(features: dict, params: dict) -> dict[str, np.ndarray]:
    """Signed distance of every mask's feature from each criterion's threshold, in the criterion's
    scale (> 0: passes; see the module docstring). The shape criteria of edge-cut footprints pass,
    and so does consistency where there is no correlation image (NaN)."""
    low, high = params["soma_area_range"]
    log_area = np.log(np.maximum(features["area_ratio"], 1e-6))
    consistency = (features["consistency"] - params["min_corr"]) / 0.05
    margins = {
        "too_large": (np.log(high) - log_area) / 0.15,
        "too_small": (log_area - np.log(low)) / 0.15,
        "elongated": (params["max_soma_elongation"] - features["elongation"]) / 0.1,
        "irregular": (features["solidity"] - MIN_SOLIDITY) / 0.05,
        "inconsistent": np.where(np.isnan(consistency), np.inf, consistency),
        "weak": (features["snr"] - params["min_snr"]) / 1.0,
    }
    cut = features["cut"] > 0
    for criterion in ("too_small", "elongated", "irregular"):
        margins[criterion] = np.where(cut, np.inf, margins[criterion])
    return margins


def calibration_inputs(margins: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The soma probability's inputs: per criterion, how far a mask fails it (``log sigmoid`` of
    its margin: 0 when it clearly passes, minus the margin when it clearly fails)."""
    return {criterion: -np.logaddexp(0.0, -np.asarray(margin, np.float64)) for criterion, margin in margins.items()}


CALIBRATION_INPUTS = tuple(criterion for criterion, _ in RULES)


@functools.lru_cache(maxsize=1)
def load_calibration() -> dict:
    """The calibrated weights (``classifier_calibration.json``, written by
    ``benchmarks/calibrate_classifier.py``)."""
    return json.loads(CALIBRATION_FILE.read_text())


def probability_of(margins: dict[str, np.ndarray]) -> np.ndarray:
    """Calibrated probability that each mask is a real cell body, from its criterion margins."""
    calibration = load_calibration()
    inputs = calibration_inputs(margins)
    logit = calibration["intercept"] + sum(weight * inputs[name] for name, weight in calibration["weights"].items())
    return 1.0 / (1.0 + np.exp(-np.clip(logit, -50, 50)))


def soma_probability(features: dict, params: dict) -> np.ndarray:
    """Calibrated probability that each mask is a real cell body, from its features."""
    return probability_of(criterion_margins(features, params))


def classify_sources(
    footprints: scipy.sparse.csc_matrix,
    frame_shape: tuple[int, int],
    snr: np.ndarray,
    correlation_image: np.ndarray | None,
    params: dict,
) -> Classification:
    """Type and confidence of every mask (see module docstring)."""
    features = footprint_features(footprints, frame_shape, correlation_image, params["neuron_diameter"])
    features["snr"] = np.asarray(snr, np.float64)
    margins = criterion_margins(features, params)
    probability = probability_of(margins)
    soma = probability >= 0.5
    types = np.full(len(probability), "unknown", dtype=object)
    types[soma] = "soma"
    decided = soma.copy()
    for criterion, mask_type in RULES:
        failing = (margins[criterion] < 0) & ~decided
        types[failing] = mask_type
        decided |= failing
    confidence = np.where(soma, probability, 1.0 - probability)
    return Classification(types=types, confidence=confidence.astype(np.float32), features=features)
