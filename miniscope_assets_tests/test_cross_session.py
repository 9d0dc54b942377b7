"""Cross-session registration against ground truth: sessions of one simulated population of cells
seen through a field of view that shifts (up to 20 px) and rotates (up to 5 degrees), with
different cells active in each session."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import scipy.sparse

from miniscope_assets.engine.cross_session import RegistrationParams, SessionCells, register_sessions
from miniscope_assets.simulation import (
    SimulatedSession,
    alignment_error_px,
    registration_accuracy,
    simulate_sessions,
)


@pytest.mark.parametrize("seed", range(6))
def test_two_sessions_match_with_high_precision_and_recall(seed):
    sessions = simulate_sessions(2, n_cells=300, max_shift=20, max_rotation=5, presence=0.85, seed=seed)
    registration = register_sessions([s.cells for s in sessions])
    precision, recall = registration_accuracy(sessions, registration)
    assert precision >= 0.95 and recall >= 0.95, (precision, recall)
    assert alignment_error_px(sessions, registration) < 1.0
    assert registration.alignments[sessions[1].cells.name].correlation > 0.5


def test_the_largest_shift_and_rotation():
    (first,) = simulate_sessions(1, n_cells=300, max_shift=20, seed=3)
    for angle, shift in ((5.0, (20.0, -20.0)), (-5.0, (-20.0, 20.0))):
        moved = _moved(first, angle, shift)
        precision, recall = registration_accuracy(moved, register_sessions([s.cells for s in moved]))
        assert precision >= 0.95 and recall >= 0.95, (angle, shift, precision, recall)


def _moved(first: SimulatedSession, angle: float, shift: tuple[float, float]) -> list[SimulatedSession]:
    """``first``, and the same cells seen with exactly ``angle`` and ``shift`` (every cell active)."""
    size = first.cells.image.shape[0]
    transform = cv2.getRotationMatrix2D(((size - 1) / 2, (size - 1) / 2), angle, 1.0)
    transform[:, 2] += shift
    image = cv2.warpAffine(first.cells.image, transform, (size, size), borderMode=cv2.BORDER_REFLECT)
    pixel, cell = first.cells.footprints.nonzero()
    x, y = transform @ np.vstack([pixel % size, pixel // size, np.ones(pixel.size)])
    inside = (x >= 0) & (x < size - 0.5) & (y >= 0) & (y < size - 0.5)
    values = np.asarray(first.cells.footprints[pixel, cell]).ravel()[inside]
    rows = np.rint(y[inside]).astype(int) * size + np.rint(x[inside]).astype(int)
    footprints = scipy.sparse.csc_matrix((values, (rows, cell[inside])), shape=first.cells.footprints.shape)
    moved = SessionCells("moved", image, footprints, first.cells.roi_ids)
    return [first, SimulatedSession(moved, first.population_ids, transform)]


def test_many_sessions_keep_their_accuracy():
    sessions = simulate_sessions(5, n_cells=300, seed=7)
    registration = register_sessions([s.cells for s in sessions])
    precision, recall = registration_accuracy(sessions, registration)
    assert precision >= 0.95 and recall >= 0.95
    assert len(registration.cells) <= 300 * 1.05  # cells are not split into several ids


def test_a_new_session_keeps_the_earlier_ids():
    sessions = simulate_sessions(3, n_cells=300, seed=11)
    two = register_sessions([s.cells for s in sessions[:2]])
    three = register_sessions([s.cells for s in sessions], previous=two)
    earlier = [{name: match for name, match in cell.items() if name in two.sessions} for cell in three.cells]
    assert earlier[:len(two.cells)] == two.cells and not any(earlier[len(two.cells):])
    assert registration_accuracy(sessions, three)[0] >= 0.95


def test_sessions_without_cells_register_to_no_matches():
    sessions = simulate_sessions(2, n_cells=50, presence=0.0, seed=1)
    registration = register_sessions([s.cells for s in sessions])
    assert registration.cells == [] and registration.sessions == ["session-0", "session-1"]


def test_a_small_non_rigid_deformation_is_followed():
    """Sessions deformed smoothly by up to 3 px besides the shift and rotation: the non-rigid
    refinement keeps the matches that a rigid alignment loses."""
    sessions = simulate_sessions(2, n_cells=300, deformation=3.0, seed=2)
    nonrigid = register_sessions([s.cells for s in sessions])
    rigid = register_sessions([s.cells for s in sessions], RegistrationParams(nonrigid_grid=0))
    assert registration_accuracy(sessions, nonrigid) >= (0.95, 0.95)
    assert alignment_error_px(sessions, nonrigid) < 1.0 < alignment_error_px(sessions, rigid)
    assert registration_accuracy(sessions, rigid)[1] < 0.95
    assert nonrigid.alignments["session-1"].max_deformation > 1.0


def test_the_same_session_twice_matches_every_cell_with_itself():
    (session,) = simulate_sessions(1, n_cells=200, seed=5)
    twin = SessionCells("twin", session.cells.image.copy(), session.cells.footprints.copy(), session.cells.roi_ids)
    registration = register_sessions([session.cells, twin])
    assert all(cell["session-0"][0] == cell["twin"][0] for cell in registration.cells)
    assert registration.tracked_in_at_least(2) == len(registration.cells) == len(session.cells.roi_ids)
