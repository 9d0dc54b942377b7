"""Source extraction's decisions on small synthetic windows (the accuracy tests run the whole engine)."""

from __future__ import annotations

import numpy as np

from miniscope_assets.engine.extraction import _fragments, _remove_background_for_seeding
from miniscope_assets.engine.filters import RingAverage, ring_radii
from miniscope_assets.engine.noise import trace_snr


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
    fragment = _fragments(footprints, projected, np.ones(4, bool), min_snr=6.0)
    assert fragment.tolist() == [False, False, True, False]
    # a cell is never explained away by its own fragment: the smaller one goes first
    duplicate = np.stack([cells[0] + noise(), 0.9 * cells[0] + noise()])
    pair = _columns(_disk(shape, (12, 12), 6), _disk(shape, (12, 16), 3))
    assert _fragments(pair, duplicate, np.ones(2, bool), min_snr=6.0).tolist() == [False, True]


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
