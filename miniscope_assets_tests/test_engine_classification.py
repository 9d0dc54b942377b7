"""Mask classification rules on synthetic footprints."""

from __future__ import annotations

import cv2
import numpy as np
import scipy.sparse

from miniscope_assets.engine import classify_sources, validate_params
from miniscope_assets.engine.classification import soma_probability

SHAPE = (96, 96)


def _ellipse(center, axes, angle=0.0) -> np.ndarray:
    image = np.zeros(SHAPE, np.float32)
    cv2.ellipse(image, center, axes, angle, 0, 360, 1.0, thickness=-1)
    return cv2.GaussianBlur(image, (0, 0), 1.0)


def _matrix(images) -> scipy.sparse.csc_matrix:
    columns = [np.where(image > 0.05 * image.max(), image / image.max(), 0).ravel() for image in images]
    return scipy.sparse.csc_matrix(np.stack(columns, axis=1))


def test_types_follow_documented_rules():
    params = validate_params({"neuron_diameter": 10})
    horseshoe = _ellipse((70, 70), (9, 9)) - 1.5 * _ellipse((70, 75), (7, 7))
    images = [
        _ellipse((20, 20), (5, 5)),  # soma-sized disk
        _ellipse((50, 20), (6, 4), 30),  # slightly elongated soma
        _ellipse((20, 60), (14, 2), 45),  # long and thin -> dendrite
        _ellipse((60, 60), (17, 17)),  # far larger than a soma -> neuropil
        _ellipse((85, 15), (1, 1)),  # a few pixels -> artefact
        np.maximum(horseshoe, 0),  # soma-sized but not compact -> unknown
    ]
    result = classify_sources(_matrix(images), SHAPE, np.full(len(images), 20.0), None, params)
    assert result.types.tolist() == ["soma", "soma", "dendrite", "neuropil", "artefact", "unknown"]
    assert ((result.confidence >= 0.5) & (result.confidence <= 1)).all()
    assert result.features["elongation"][2] > 3 and result.features["area_ratio"][3] > 3
    assert result.features["solidity"][0] > 0.9 > result.features["solidity"][5]


def test_weak_or_inconsistent_sources_are_not_somata():
    params = validate_params({"neuron_diameter": 10, "min_snr": 3.0, "min_corr": 0.8})
    images = [_ellipse((20, 20), (5, 5)), _ellipse((60, 60), (5, 5)), _ellipse((20, 70), (5, 5))]
    correlation = np.full(SHAPE, 0.95, np.float32)
    correlation[50:70, 50:70] = 0.3  # the second source does not look like one cell in the data
    result = classify_sources(_matrix(images), SHAPE, np.array([20.0, 20.0, 1.0]), correlation, params)
    assert result.types.tolist() == ["soma", "unknown", "unknown"]
    assert result.confidence[0] > 0.9


def test_confidence_is_lower_near_a_threshold():
    params = validate_params({"neuron_diameter": 10})
    disk = _ellipse((40, 40), (5, 5))
    near, far = (classify_sources(_matrix([disk]), SHAPE, np.array([snr]), None, params) for snr in (6.2, 30.0))
    assert near.types[0] == far.types[0] == "soma"
    assert 0.5 <= near.confidence[0] < far.confidence[0] <= 1


def test_confidence_is_the_calibrated_probability_of_the_label():
    params = validate_params({"neuron_diameter": 10})
    images = [_ellipse((20, 20), (5, 5)), _ellipse((60, 60), (17, 17))]
    result = classify_sources(_matrix(images), SHAPE, np.full(2, 20.0), None, params)
    probability = soma_probability(result.features, params)
    assert result.types.tolist() == ["soma", "neuropil"]
    np.testing.assert_allclose(result.confidence, [probability[0], 1 - probability[1]], rtol=1e-6)


def test_a_soma_cut_by_the_frame_edge_is_judged_without_its_shape():
    params = validate_params({"neuron_diameter": 10})
    images = [_ellipse((40, -2), (6, 6)), _ellipse((40, 40), (6, 2))]  # a cap of a disk cut by the edge; a sliver inside
    result = classify_sources(_matrix(images), SHAPE, np.full(2, 20.0), None, params)
    assert result.features["cut"].tolist() == [1.0, 0.0]
    assert result.features["elongation"][0] > 1.7  # what made it a "dendrite" before
    assert result.types.tolist() == ["soma", "dendrite"]


def test_no_masks():
    result = classify_sources(scipy.sparse.csc_matrix((SHAPE[0] * SHAPE[1], 0)), SHAPE, np.zeros(0), None,
                              validate_params({"neuron_diameter": 10}))
    assert result.types.shape == (0,) and result.confidence.shape == (0,)
