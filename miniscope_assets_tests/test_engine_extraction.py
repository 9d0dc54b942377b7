"""Source extraction's decisions on small synthetic windows (the accuracy tests run the whole engine)."""

from __future__ import annotations

import numpy as np
import scipy.sparse

from miniscope_assets.engine.extraction import (
    _accept,
    _follow_the_filling,
    _fragments,
    _merge_duplicates,
    _remove_background_for_seeding,
    _wider_than_a_cell,
)
from miniscope_assets.engine.filters import RingAverage, ring_radii
from miniscope_assets.engine.noise import rise_snr, trace_snr


def _disk(shape, centre, radius) -> np.ndarray:
    yy, xx = np.indices(shape)
    return (((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2) <= radius**2).astype(np.float32)


def _columns(*images) -> np.ndarray:
    return np.stack([image.ravel() for image in images], axis=1)


def _events(rng, n, rate=0.02) -> np.ndarray:
    spikes = (rng.random(n) < rate) * rng.uniform(1, 2, n)
    return np.convolve(spikes, np.exp(-np.arange(40) / 8.0))[:n]


def test_a_mixture_of_two_cells_is_a_fragment_and_a_cell_with_its_own_events_is_not():
    rng = np.random.default_rng(0)
    shape, n = (40, 40), 1000
    cells = [_events(rng, n) for _ in range(3)]
    footprints = _columns(_disk(shape, (12, 12), 6), _disk(shape, (12, 26), 6),  # two cells, not touching
                          _disk(shape, (12, 19), 3),  # a piece between them, touching both
                          _disk(shape, (23, 19), 6))  # a third cell touching all three
    noise = lambda: rng.normal(0, 0.05, n)  # noqa: E731
    projected = np.stack([cells[0] + noise(), cells[1] + noise(),
                          0.5 * cells[0] + 0.4 * cells[1] + noise(),  # no activity of its own
                          cells[2] + 0.3 * cells[0] + noise()])  # some crosstalk, but its own events
    assert trace_snr(projected[2]) > 6  # strong enough to pass the plain SNR test
    demixed = np.stack([cells[0], cells[1], 0.5 * cells[0] + 0.4 * cells[1], cells[2]])
    fragment = _fragments(footprints, projected, demixed, np.ones(4, bool), min_snr=6.0)
    assert fragment.tolist() == [False, False, True, False]
    # a cell is never explained away by its own fragment: the smaller one goes first
    duplicate = np.stack([cells[0] + noise(), 0.9 * cells[0] + noise()])
    pair = _columns(_disk(shape, (12, 12), 6), _disk(shape, (12, 16), 3))
    assert _fragments(pair, duplicate, duplicate, np.ones(2, bool), min_snr=6.0).tolist() == [False, True]


def test_a_small_cell_beside_a_large_source_overlapping_it_is_not_a_fragment():
    """The large source's projected trace carries most of the small cell's events (its footprint
    covers the cell): regressed on it, the cell would be explained away; on its demixed trace, not."""
    rng = np.random.default_rng(4)
    shape, n = (40, 40), 1000
    small, large = _events(rng, n), _events(rng, n)
    small, large = 10 * small / small.max(), 10 * large / large.max()
    footprints = _columns(_disk(shape, (20, 14), 4), _disk(shape, (20, 22), 8))
    noise = lambda: rng.normal(0, 1, n)  # noqa: E731
    projected = np.stack([small + 0.2 * large + noise(), large + 0.9 * small + noise()])
    demixed = np.stack([small, large])
    assert _fragments(footprints, projected, projected, np.ones(2, bool), min_snr=6.0)[0]
    assert _fragments(footprints, projected, demixed, np.ones(2, bool), min_snr=6.0).tolist() == [False, False]


def test_two_sources_on_one_cell_merge_whatever_their_traces_and_overlapping_cells_do_not():
    """A factorisation splits a cell's activity between two copies of its footprint arbitrarily:
    the copies' traces need not correlate. Two cells overlapping by a third of a diameter stay two."""
    rng = np.random.default_rng(5)
    shape, n = (40, 40), 1000
    cell, other = _events(rng, n), _events(rng, n)
    split = rng.uniform(0.2, 0.8, n)  # each frame's activity shared out at random
    footprint = _disk(shape, (20, 20), 6)
    copies = scipy.sparse.csc_matrix(_columns(footprint, np.roll(footprint, 1, axis=1)))
    traces = np.stack([cell * split, cell * (1 - split)])
    assert np.corrcoef(traces)[0, 1] < 0.8
    merged, merged_traces = _merge_duplicates(copies, traces, 0.8)
    assert merged.shape[1] == 1
    assert np.corrcoef(merged_traces[0], cell)[0, 1] > 0.99
    neighbours = scipy.sparse.csc_matrix(_columns(footprint, np.roll(footprint, 4, axis=1)))
    assert _merge_duplicates(neighbours, np.stack([cell, other]), 0.8)[0].shape[1] == 2


def test_a_bright_cell_alone_in_its_window_is_not_fitted_away_as_background():
    """The window's structure regressor used to be that one cell: its own activity was removed."""
    rng = np.random.default_rng(1)
    shape, n, diameter = (48, 48), 600, 10.0
    footprint = _disk(shape, (24, 24), 5)
    activity = _events(rng, n) * 40
    fluctuation = (activity[:, None, None] * footprint[None] + rng.normal(0, 1, (n, *shape))).astype(np.float32)
    mean_image = 50 + footprint * 30  # the cell is the window's only fine structure
    flat = fluctuation.reshape(n, -1)
    ring = RingAverage(shape, *ring_radii(diameter, 1.2))
    residual = _remove_background_for_seeding(flat, ring.apply_stack(fluctuation).reshape(n, -1), mean_image, diameter)
    centre = 24 * shape[1] + 24
    assert np.corrcoef(residual[:, centre], activity)[0, 1] > 0.95
    assert residual[:, centre].std() > 0.8 * flat[:, centre].std()


def _slow_drift(rng, n, timescale) -> np.ndarray:
    """Smooth noise with the given correlation time (samples), scaled to unit peak-to-median."""
    kernel = np.exp(-0.5 * (np.arange(-3 * timescale, 3 * timescale + 1) / timescale) ** 2)
    drift = np.convolve(rng.normal(size=n + 6 * timescale), kernel, "valid")[:n]
    return (drift - np.median(drift)) / (drift.max() - np.median(drift))


def test_a_transient_passes_the_rise_test_and_a_slow_drift_of_the_same_height_does_not():
    """At 20 frames/s (window 20): transients of any decay score about their height over the
    noise; the background drift left on a vessel (2-8 s) and plain noise score far less."""
    rng = np.random.default_rng(2)
    n, window, height = 2000, 20, 10.0
    for decay_frames in (6, 20, 40):  # 0.3-2 s
        spikes = np.zeros(n)
        spikes[rng.choice(n - 100, 5, replace=False) + 50] = 1
        transients = np.convolve(spikes, np.exp(-np.arange(8 * decay_frames) / decay_frames))[:n]
        trace = height * transients / transients.max() + rng.normal(0, 1, n)
        assert rise_snr(trace, window) > 0.8 * height
    for timescale in (40, 160):
        drift = height * _slow_drift(rng, n, timescale) + rng.normal(0, 1, n)
        assert trace_snr(drift) > 0.8 * height  # the plain peak SNR takes a drift for a cell
        assert rise_snr(drift, window) < 0.6 * height
    assert rise_snr(rng.normal(0, 1, n), window) < 6
    assert rise_snr(np.ones(5), 20) == 0.0  # shorter than the window: the plain peak SNR


def test_a_source_whose_trace_only_drifts_is_rejected():
    rng = np.random.default_rng(3)
    shape, n = (40, 40), 1000
    footprints = _columns(_disk(shape, (12, 12), 5), _disk(shape, (28, 28), 5))
    events = _events(rng, n)
    cell, vessel = 12 * events / events.max(), 12 * _slow_drift(rng, n, 40)
    pixel_noise = np.sqrt(footprints[:, 0].sum())  # the projected traces' noise is 1
    signal = (footprints @ np.stack([cell, vessel])).T + rng.normal(0, pixel_noise, (n, footprints.shape[0]))
    keep = _accept(footprints, signal.astype(np.float32), np.stack([cell, vessel]), {"min_snr": 6.0}, rise_window=20)
    assert keep.tolist() == [True, False]


def test_a_source_wider_than_a_cell_is_told_from_cells_of_the_measured_size():
    """A cell whose half-maximum width is the diameter (or 1.4 x it: a full field's cells vary in
    size around the measured median) against what the ring model leaves of a neuropil blob
    (sigma 1.5-3 diameters), cut off at one diameter from its centre."""
    shape, diameter = (80, 80), 10.0
    yy, xx = np.indices(shape)
    distance = np.hypot(yy - 40.3, xx - 39.6)
    cells = [np.exp(-0.5 * (distance / (width * diameter / 2.355)) ** 2) for width in (1.0, 1.3, 1.4)]
    blobs = [np.exp(-0.5 * (distance / (sigma * diameter)) ** 2) * (distance <= diameter) for sigma in (1.5, 3.0)]
    footprints = np.stack([np.where(image >= 0.1 * image.max(), image, 0).ravel() for image in cells + blobs], axis=1)
    wide = _wider_than_a_cell(scipy.sparse.csc_matrix(footprints.astype(np.float32)), shape, diameter)
    assert wide.tolist() == [False, False, False, True, True]


def test_a_source_that_follows_the_registrations_fill_in_is_dropped_and_a_cell_at_the_edge_is_not():
    """Near the frame's edge the mirrored fill-in flickers with the motion: a "source" there
    brightens or darkens when the frame moves its way, or has events only while it is filled in.
    A real cell as much filled in keeps its own events, also while the field drifts towards the
    edge and the cell bleaches."""
    rng = np.random.default_rng(6)
    n = 1000
    walk = np.cumsum(rng.normal(0, 0.3, n))
    filled = (walk - walk.min()) / np.ptp(walk) * 0.6  # up to 60 % of the footprint filled in
    filled[:200] = 0  # and observed whole for a while
    drift = np.linspace(0, 0.5, n) + rng.uniform(0, 0.05, n)  # the field drifting towards the edge
    barely = filled / 10  # at most 6 % of its footprint: cannot make its activity
    noise = lambda: rng.normal(0, 0.5, n)  # noqa: E731
    only_when_filled = 10 * _events(rng, n) * (filled >= 0.1) + noise()
    pairs = [(filled, 5 * filled + noise(), True), (filled, 3 - 5 * filled + noise(), True),
             (filled, only_when_filled, True),
             (filled, 10 * _events(rng, n) + noise(), False),
             (drift, 5 * _events(rng, n) + 12 * np.exp(-np.arange(n) / 1000) + noise(), False),  # bleaching
             (barely, 5 * barely + 0.1 * noise(), False)]
    follows = _follow_the_filling(np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs]), 6.0, 20)
    assert follows.tolist() == [p[2] for p in pairs]
    assert abs(np.corrcoef(pairs[2][0], pairs[2][1])[0, 1]) < 0.35  # not followed: no events while observed
    assert abs(np.corrcoef(pairs[4][0], pairs[4][1])[0, 1]) > 0.35  # without the trends removed: followed
    assert not _follow_the_filling(np.zeros((1, n)), np.zeros((1, n)), 6.0, 20).any()  # no fill: no warning
