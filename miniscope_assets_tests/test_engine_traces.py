"""Traces: linear demixing under the ring background model, running baseline, dF/F, deconvolution."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse

from miniscope_assets.engine import validate_params
from miniscope_assets.engine.extraction import Sources
from miniscope_assets.engine.traces import Demixer, compute_dff, deconvolve_traces, running_percentile
from miniscope_assets.errors import ParameterError

SHAPE = (64, 72)


def _blob(cy, cx, sigma=2.5) -> np.ndarray:
    yy, xx = np.mgrid[0 : SHAPE[0], 0 : SHAPE[1]]
    image = np.exp(-0.5 * ((yy - cy) ** 2 + (xx - cx) ** 2) / sigma**2)
    return np.where(image > 0.05, image, 0).ravel()


def test_demixing_recovers_overlapping_traces_under_a_fluctuating_background():
    rng = np.random.default_rng(0)
    footprints = scipy.sparse.csc_matrix(np.stack([_blob(30, 30), _blob(30, 35), _blob(20, 50)], axis=1))
    n = 200
    traces = np.maximum(rng.normal(0, 1, (3, n)).cumsum(axis=1), 0) + rng.exponential(2, (3, n))
    yy, xx = np.mgrid[0 : SHAPE[0], 0 : SHAPE[1]]
    static = 80 + 0.3 * xx + 10 * np.exp(-((yy - 30) ** 2 + (xx - 40) ** 2) / 800)
    global_fluctuation = 5 * np.sin(np.arange(n) / 7)
    frames = (static.ravel()[None] + (footprints @ traces).T + global_fluctuation[:, None]).reshape(n, *SHAPE)
    sources = Sources(
        footprints=footprints.astype(np.float32), background_mean=static.astype(np.float32),
        ring_gain=np.ones(SHAPE, np.float32), notes={},
    )
    demixer = Demixer(sources, validate_params({"neuron_diameter": 8}))
    fluorescence, background = demixer.demix(frames.astype(np.float32))
    np.testing.assert_allclose(fluorescence, traces, atol=0.05)
    a = footprints.toarray()
    # the background's projection onto each footprint, in the same units as the traces
    projected = a.T @ (static.ravel()[:, None] + global_fluctuation[None])
    expected_background = projected / (a**2).sum(axis=0)[:, None]
    np.testing.assert_allclose(background, expected_background, rtol=1e-3, atol=0.05)


def test_running_percentile_follows_a_slow_baseline():
    rng = np.random.default_rng(1)
    n = 2000
    baseline = 10 + 3 * np.sin(np.arange(n) / 800)
    events = np.zeros(n)
    events[rng.choice(n, 40, replace=False)] = 20
    trace = baseline + np.convolve(events, np.exp(-np.arange(30) / 8))[:n] + rng.normal(0, 0.2, n)
    estimate = running_percentile(trace[None], window=300, percentile=8)[0]
    assert np.abs(estimate - baseline)[150:-150].max() < 0.8
    assert running_percentile(trace[None], window=5000, percentile=50).std() == 0  # window > trace: constant
    assert running_percentile(np.zeros((0, n)), window=300, percentile=8).shape == (0, n)  # no traces


def test_dff_uses_trace_and_background_baselines():
    n = 1200
    fluorescence = np.full((1, n), 2.0)
    fluorescence[0, 600:610] += 6.0
    neuropil = np.full((1, n), 98.0)
    dff = compute_dff(fluorescence, neuropil, 20.0, validate_params({"dff_window": 20.0, "dff_percentile": 10}))
    assert abs(dff[0, 605] - 6.0 / 100.0) < 1e-6
    assert np.abs(dff[0, :590]).max() < 1e-9


def test_deconvolution_finds_spikes():
    rng = np.random.default_rng(2)
    n, g = 1500, np.exp(-1 / (0.5 * 20))
    spikes = (rng.random(n) < 0.03).astype(float)
    calcium = np.zeros(n)
    for t in range(n):
        calcium[t] = (g * calcium[t - 1] if t else 0) + spikes[t]
    trace = 3 + 4 * calcium + rng.normal(0, 0.4, n)
    for decay in (None, 0.5):
        denoised, inferred = deconvolve_traces(trace[None].astype(np.float32), 20.0, validate_params({"decay_time": decay}))
        assert (inferred >= 0).all()
        assert np.corrcoef(denoised[0], 3 + 4 * calcium)[0, 1] > 0.95
        smooth = np.convolve(inferred[0], np.ones(3), "same"), np.convolve(spikes, np.ones(3), "same")
        assert np.corrcoef(*smooth)[0, 1] > 0.8


def _rising_traces(seeds, rise, decay, fps=20.0, n=3000):
    """Spike trains and noisy traces of an indicator with a rise time (difference of exponentials)."""
    t = np.arange(0, 5, 1 / fps)
    kernel = np.exp(-t / decay) - np.exp(-t / rise)
    kernel /= kernel.max()
    for seed in seeds:
        rng = np.random.default_rng(seed)
        spikes = (rng.random(n) < 0.03) * rng.uniform(0.5, 1.5, n)
        yield spikes, 2 + np.convolve(spikes, kernel)[:n] + rng.normal(0, 0.3, n)


def _spike_r(params: dict, rise: float, decay: float = 0.8) -> float:
    """Mean correlation of inferred with true spikes (3-frame smoothing) over four seeds."""
    scores = []
    for spikes, trace in _rising_traces(range(20, 24), rise, decay):
        _, inferred = deconvolve_traces(trace[None].astype(np.float32), 20.0, validate_params(params))
        scores.append(np.corrcoef(np.convolve(inferred[0], np.ones(3), "same"),
                                  np.convolve(spikes, np.ones(3), "same"))[0, 1])
    return float(np.mean(scores))


def test_ar2_follows_an_indicator_whose_rise_time_matters():
    """A 150 ms rise at 20 frames/s: AR(1) smears every spike over the rise; AR(2) does not."""
    ar1 = _spike_r({}, rise=0.15)
    assert _spike_r({"decay_time": 0.8, "rise_time": 0.15}, rise=0.15) > max(0.6, ar1 + 0.2)
    assert _spike_r({"rise_time": None}, rise=0.15) > ar1 + 0.1  # both times estimated per trace


@pytest.mark.parametrize("params, message", [
    ({"rise_time": 0.1}, "rise_time 0.1 needs decay_time"),
    ({"rise_time": None, "decay_time": 0.5}, "rise_time null estimates rise and decay together"),
    ({"rise_time": 0.6, "decay_time": 0.5}, "rise_time 0.6 must be shorter than decay_time 0.5"),
])
def test_kinetics_oasis_cannot_fit_are_refused(params, message):
    with pytest.raises(ParameterError, match=message):
        validate_params(params)


def test_flat_traces_are_left_alone():
    denoised, spikes = deconvolve_traces(np.zeros((2, 50), np.float32), 20.0, validate_params({}))
    assert not denoised.any() and not spikes.any()
