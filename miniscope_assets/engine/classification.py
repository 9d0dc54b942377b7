"""Stage 4: mask classification (soma / dendrite / neuropil / artefact / unknown) with a confidence.

Features of each footprint, on its pixels at or above half its peak ("core"):

- ``area_ratio``: core area / expected soma area ``pi (neuron_diameter / 2)^2``;
- ``elongation``: major / minor axis ratio from the weighted second moments of the core;
- ``solidity``: core area / area of its convex hull (compactness);
- ``consistency``: median of the local correlation image over the core (spatial consistency);
- ``snr``: peak SNR of the fluorescence trace.

Each criterion has a soft score in [0, 1] (logistic, 0.5 exactly at the threshold):
area within ``soma_area_range``, elongation <= ``max_soma_elongation``, solidity >= 0.75,
consistency >= ``min_corr``, snr >= ``min_snr``. The first matching rule gives the type:
area above the range -> ``neuropil``; below it -> ``artefact``; too elongated -> ``dendrite``;
any other failed criterion -> ``unknown``; otherwise ``soma``. The confidence is the lowest
score for a soma, and ``1 - score`` of the deciding criterion otherwise. ``axon`` is never
assigned: 1-photon resolution cannot tell axons from dendrites.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import scipy.sparse

from miniscope_assets.engine.extraction import expected_soma_area

MIN_SOLIDITY = 0.75


@dataclass
class Classification:
    types: np.ndarray  # (n,) object: MASK_TYPES entries
    confidence: np.ndarray  # (n,) float32 in [0, 1]
    features: dict  # name -> (n,) float array


def _logistic(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -50, 50)))


def footprint_features(footprints: scipy.sparse.csc_matrix, frame_shape, correlation_image: np.ndarray | None,
                       neuron_diameter: float) -> dict:
    """Shape and consistency features of every footprint (see module docstring)."""
    footprints = footprints.tocsc()
    width = frame_shape[1]
    n = footprints.shape[1]
    features = {name: np.zeros(n) for name in ("area_ratio", "elongation", "solidity", "consistency")}
    expected = expected_soma_area(neuron_diameter)
    for k in range(n):
        start, end = footprints.indptr[k], footprints.indptr[k + 1]
        values = footprints.data[start:end]
        if len(values) == 0:
            continue
        core = values >= 0.5 * values.max()
        ys, xs = np.divmod(footprints.indices[start:end][core], width)
        weights = values[core].astype(np.float64)
        features["area_ratio"][k] = len(ys) / expected
        cy, cx = np.average(ys, weights=weights), np.average(xs, weights=weights)
        covariance = np.cov(np.stack([ys - cy, xs - cx]), aweights=weights, bias=True) if len(ys) > 1 else np.zeros((2, 2))
        eigen = np.sort(np.linalg.eigvalsh(covariance + np.eye(2) / 12.0))  # + pixel's own extent
        features["elongation"][k] = np.sqrt(eigen[1] / eigen[0])
        hull = cv2.convexHull(np.stack([xs, ys], axis=1).astype(np.int32))
        hull_area = cv2.contourArea(hull) + 0.5 * cv2.arcLength(hull, True) + 1.0  # pixel-count area of the hull
        features["solidity"][k] = min(len(ys) / hull_area, 1.0)
        if correlation_image is not None:
            features["consistency"][k] = float(np.median(correlation_image[ys, xs]))
    return features


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
    low, high = params["soma_area_range"]
    log_area = np.log(np.maximum(features["area_ratio"], 1e-6))
    scores = {
        "too_large": _logistic((np.log(high) - log_area) / 0.15),
        "too_small": _logistic((log_area - np.log(low)) / 0.15),
        "elongated": _logistic((params["max_soma_elongation"] - features["elongation"]) / 0.1),
        "irregular": _logistic((features["solidity"] - MIN_SOLIDITY) / 0.05),
        "inconsistent": _logistic((features["consistency"] - params["min_corr"]) / 0.05)
        if correlation_image is not None else np.ones(len(snr)),
        "weak": _logistic((features["snr"] - params["min_snr"]) / 1.0),
    }
    rules = [("too_large", "neuropil"), ("too_small", "artefact"), ("elongated", "dendrite"),
             ("irregular", "unknown"), ("inconsistent", "unknown"), ("weak", "unknown")]
    n = len(snr)
    types = np.full(n, "soma", dtype=object)
    confidence = np.min(np.stack(list(scores.values())), axis=0) if n else np.zeros(0)
    decided = np.zeros(n, bool)
    for criterion, mask_type in rules:
        failing = (scores[criterion] < 0.5) & ~decided
        types[failing] = mask_type
        confidence[failing] = 1.0 - scores[criterion][failing]
        decided |= failing
    return Classification(types=types, confidence=confidence.astype(np.float32), features=features)
