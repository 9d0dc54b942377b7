"""Cross-session registration: the same cells found again across a subject's sessions.

1. **Alignment.** Every session's field of view is aligned to the first session's: rotation
   (searched over +-``max_rotation`` degrees, then refined) and sub-pixel translation by phase
   correlation of the high-passed summary images, then a small non-rigid deformation: the
   shifts of overlapping patches (phase correlation again) on a ``nonrigid_grid`` lattice,
   kept when they improve the match. Quality: the correlation of the aligned images over their
   overlap.
2. **Candidate pairs.** Footprints are moved into the reference frame (their pixel coordinates
   transformed); cells of two sessions whose centroids lie within ``max_distance`` are candidate
   pairs, described by centroid distance and footprint correlation.
3. **Probabilistic model** (CellReg's idea, fitted on the data itself): a two-component mixture
   over all candidate pairs, "same cell" (distance Rayleigh, correlation Beta near 1) against
   "different cells" (distance growing with area, correlation Beta lower), fitted by EM. Each
   pair gets P(same cell).
4. **Identities.** Sessions are taken in registration order. A new session's cells are matched
   one-to-one (Hungarian) to the subject's known cells, each scored by its best appearance;
   pairs with P(same) >= ``min_probability`` join that cell, the others start new cells.
   Earlier sessions' assignments are kept as given, so ids stay stable as sessions are added.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
import scipy.ndimage
import scipy.optimize
import scipy.sparse
import scipy.special
from scipy.spatial import cKDTree


@dataclass(frozen=True)
class RegistrationParams:
    max_rotation: float = 6.0  # degrees searched either way
    max_distance: float | None = None  # px between centroids of a candidate pair (None: 1.2 cell diameters)
    min_probability: float = 0.5  # P(same cell) needed to join a known cell
    highpass_sigma: float = 8.0  # px, background removed before alignment
    nonrigid_grid: int = 4  # patches per side for the non-rigid refinement (0: rigid only)
    max_deformation: float = 8.0  # px, largest patch shift accepted


@dataclass
class SessionCells:
    """One session's cells: footprints (height*width, n) row-major and their ROI ids, with the
    summary image its field of view is aligned by."""

    name: str
    image: np.ndarray
    footprints: scipy.sparse.spmatrix
    roi_ids: np.ndarray


@dataclass
class Alignment:
    """Maps a session's pixel coordinates (x, y) to the reference's: ``matrix @ [x, y, 1]``, then
    plus ``displacement`` (dx, dy), interpolated from its values at the nodes ``node_y`` x
    ``node_x`` of the reference frame (None: rigid)."""

    matrix: np.ndarray  # 2x3
    rotation_deg: float
    x_shift: float
    y_shift: float
    correlation: float  # of the aligned, high-passed images over their overlap
    displacement: np.ndarray | None = None  # (2, len(node_y), len(node_x))
    node_y: np.ndarray | None = None
    node_x: np.ndarray | None = None

    @classmethod
    def identity(cls, correlation: float = 1.0) -> "Alignment":
        return cls(np.array([[1.0, 0, 0], [0, 1.0, 0]]), 0.0, 0.0, 0.0, correlation)

    @property
    def max_deformation(self) -> float:
        return 0.0 if self.displacement is None else float(np.hypot(*self.displacement).max())

    def deformation_at(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(dx, dy) at reference-frame points (x, y)."""
        if self.displacement is None:
            return np.zeros_like(x, dtype=float), np.zeros_like(y, dtype=float)
        rows = np.interp(y, self.node_y, np.arange(len(self.node_y)))
        columns = np.interp(x, self.node_x, np.arange(len(self.node_x)))
        return tuple(scipy.ndimage.map_coordinates(d, [rows, columns], order=1, mode="nearest")
                     for d in self.displacement)

    def apply(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Session points (x, y) in the reference frame."""
        x, y = self.matrix @ np.vstack([x, y, np.ones(np.size(x))])
        dx, dy = self.deformation_at(x, y)
        return x + dx, y + dy

    def warp_image(self, image: np.ndarray, shape: tuple[int, int], border=np.nan) -> np.ndarray:
        """``image`` moved into the reference frame (``border`` outside the session's view)."""
        rigid = cv2.warpAffine(np.asarray(image, np.float32), self.matrix, (shape[1], shape[0]),
                               flags=cv2.INTER_LINEAR, borderValue=border)
        if self.displacement is None:
            return rigid
        yy, xx = np.mgrid[:shape[0], :shape[1]].astype(np.float32)
        dx, dy = (d.reshape(shape).astype(np.float32) for d in self.deformation_at(xx.ravel(), yy.ravel()))
        return cv2.remap(rigid, xx - dx, yy - dy, cv2.INTER_LINEAR, borderValue=border)


@dataclass
class Registration:
    """Every session's alignment and every cell's appearances: ``cells[k]`` maps session name to
    (ROI id, P(same cell) of the match that put it there; NaN for a cell's first appearance)."""

    sessions: list[str]
    alignments: dict[str, Alignment]
    cells: list[dict[str, tuple[int, float]]] = field(default_factory=list)
    footprints: dict[str, scipy.sparse.csc_matrix] = field(default_factory=dict)  # in the reference frame, unit norm

    def global_ids(self, session: str, roi_ids: np.ndarray) -> np.ndarray:
        """The subject-level cell id of each of ``session``'s ROIs."""
        by_roi = {cell[session][0]: number for number, cell in enumerate(self.cells) if session in cell}
        return np.array([by_roi[int(roi)] for roi in roi_ids], dtype=np.int64)

    def cells_in(self, session: str) -> int:
        return sum(session in cell for cell in self.cells)

    def tracked_in_at_least(self, k: int) -> int:
        return sum(len(cell) >= k for cell in self.cells)


def _highpass(image: np.ndarray, sigma: float) -> np.ndarray:
    image = np.nan_to_num(image.astype(np.float32))
    filtered = image - cv2.GaussianBlur(image, (0, 0), sigma)
    return (filtered - filtered.mean()) / (filtered.std() + 1e-9)


def _rotation(shape: tuple[int, int], degrees: float) -> np.ndarray:
    height, width = shape
    return cv2.getRotationMatrix2D(((width - 1) / 2, (height - 1) / 2), degrees, 1.0)


def _warp(image: np.ndarray, matrix: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    return Alignment(matrix, 0, 0, 0, 0).warp_image(image, shape)


def _overlap_correlation(reference: np.ndarray, warped: np.ndarray) -> float:
    valid = np.isfinite(warped)
    if valid.sum() < 16:
        return 0.0
    a, b = reference[valid], warped[valid]
    a, b = a - a.mean(), b - b.mean()
    return float(a @ b / (np.sqrt((a @ a) * (b @ b)) + 1e-12))


def _shifted(matrix: np.ndarray, shift: tuple[float, float]) -> np.ndarray:
    moved = matrix.copy()
    moved[:, 2] += shift
    return moved


def _best_translation(reference: np.ndarray, image: np.ndarray, degrees: float) -> tuple[float, np.ndarray]:
    """(correlation, matrix) of the best translation after rotating ``image`` by ``degrees``."""
    rotation = _rotation(image.shape, degrees)
    rotated = np.nan_to_num(_warp(image, rotation, image.shape))
    window = cv2.createHanningWindow(image.shape[::-1], cv2.CV_32F)
    (dx, dy), _ = cv2.phaseCorrelate(rotated, reference.astype(np.float32), window)
    best = (-np.inf, rotation)
    for sign in (1, -1):  # keep whichever sign of the phase-correlation shift fits
        matrix = _shifted(rotation, (sign * dx, sign * dy))
        score = _overlap_correlation(reference, _warp(image, matrix, reference.shape))
        best = max(best, (score, matrix), key=lambda item: item[0])
    return best


def align(reference_image: np.ndarray, image: np.ndarray, params: RegistrationParams) -> Alignment:
    """The rotation and translation that bring ``image`` onto ``reference_image``."""
    reference = _highpass(reference_image, params.highpass_sigma)
    moving = _highpass(image, params.highpass_sigma)
    angles = np.arange(-params.max_rotation, params.max_rotation + 1e-9, 1.0)
    scored = [(*_best_translation(reference, moving, a), a) for a in angles]
    for step in (0.25, 0.05):
        centre = max(scored, key=lambda item: item[0])[2]
        scored += [(*_best_translation(reference, moving, a), a) for a in centre + step * np.arange(-3, 4)]
    correlation, matrix, degrees = max(scored, key=lambda item: item[0])
    rigid = Alignment(matrix, float(degrees), float(matrix[0, 2]), float(matrix[1, 2]), float(correlation))
    return _with_deformation(reference, moving, rigid, params) if params.nonrigid_grid > 1 else rigid


def _patch_shifts(reference: np.ndarray, aligned: np.ndarray, node_y, node_x, size, limit: float) -> np.ndarray:
    """(dx, dy) by phase correlation of the patch around every node (NaN where unusable)."""
    window = cv2.createHanningWindow((size[1], size[0]), cv2.CV_32F)
    shifts = np.full((2, len(node_y), len(node_x)), np.nan)
    for i, y in enumerate(node_y):
        for j, x in enumerate(node_x):
            top, left = int(round(y - size[0] / 2)), int(round(x - size[1] / 2))
            patch = aligned[top:top + size[0], left:left + size[1]]
            if patch.shape != tuple(size) or np.isnan(patch).mean() > 0.2:
                continue
            target = reference[top:top + size[0], left:left + size[1]].astype(np.float32)
            (dx, dy), _ = cv2.phaseCorrelate(np.nan_to_num(patch).astype(np.float32), target, window)
            if np.hypot(dx, dy) <= limit:
                shifts[:, i, j] = dx, dy
    return np.nan_to_num(shifts)


def _with_deformation(reference: np.ndarray, moving: np.ndarray, rigid: Alignment,
                      params: RegistrationParams, rounds: int = 3, gain: float = 0.01) -> Alignment:
    """``rigid`` refined by the shifts of overlapping patches of the aligned image, estimated
    again on the refined image for a few ``rounds``; kept if the aligned images' correlation
    rises by more than ``gain``."""
    shape = reference.shape
    size = [int(2 * side / (params.nonrigid_grid + 1)) for side in shape]
    node_y, node_x = (np.linspace(s / 2, side - 1 - s / 2, params.nonrigid_grid) for s, side in zip(size, shape))
    best, signs = rigid, (1, -1)  # as for the rigid shift: keep whichever sign fits
    field = np.zeros((2, len(node_y), len(node_x)))
    for _ in range(rounds):
        shifts = _patch_shifts(reference, best.warp_image(moving, shape), node_y, node_x, size, params.max_deformation)
        candidates = []
        for sign in signs:
            candidate = Alignment(rigid.matrix, rigid.rotation_deg, rigid.x_shift, rigid.y_shift, 0.0,
                                  field + sign * shifts, node_y, node_x)
            candidate.correlation = _overlap_correlation(reference, candidate.warp_image(moving, shape))
            candidates.append((candidate.correlation, sign, candidate))
        correlation, sign, candidate = max(candidates, key=lambda item: item[0])
        if correlation <= best.correlation:
            break
        best, signs, field = candidate, (sign,), candidate.displacement
    return best if best.correlation > rigid.correlation + gain else rigid


def _in_reference(cells: SessionCells, alignment: Alignment, shape: tuple[int, int]) -> tuple[np.ndarray, scipy.sparse.csc_matrix]:
    """Centroids (n, 2: x, y) and footprints (pixels, n) of a session's cells in the reference frame."""
    height, width = cells.image.shape
    footprints = scipy.sparse.csc_matrix(cells.footprints, dtype=np.float64)
    if footprints.shape[1] == 0:
        return np.zeros((0, 2)), scipy.sparse.csc_matrix((shape[0] * shape[1], 0))
    pixel, cell = footprints.nonzero()
    weight = np.asarray(footprints[pixel, cell]).ravel()
    x, y = alignment.apply(pixel % width, pixel // width)
    n = footprints.shape[1]
    total = np.maximum(np.bincount(cell, weight, n), 1e-12)
    centroids = np.stack([np.bincount(cell, weight * x, n) / total, np.bincount(cell, weight * y, n) / total], 1)
    column, row = np.rint(x).astype(int), np.rint(y).astype(int)
    inside = (column >= 0) & (column < shape[1]) & (row >= 0) & (row < shape[0])
    moved = scipy.sparse.csc_matrix(
        (weight[inside], (row[inside] * shape[1] + column[inside], cell[inside])), shape=(shape[0] * shape[1], n)
    )
    norms = np.sqrt(np.asarray(moved.multiply(moved).sum(axis=0))).ravel()
    return centroids, moved @ scipy.sparse.diags(1.0 / np.maximum(norms, 1e-12))


def cell_diameter(footprints: scipy.sparse.spmatrix) -> float:
    """Median diameter of the footprints (px), from their areas above half their peak."""
    matrix = scipy.sparse.csc_matrix(footprints)
    if matrix.shape[1] == 0:
        return 10.0
    peaks = matrix.max(axis=0).toarray().ravel()
    areas = [(matrix[:, k].data >= peaks[k] / 2).sum() for k in range(matrix.shape[1])]
    return float(2 * np.sqrt(np.median(areas) / np.pi))


@dataclass
class _Placed:
    """A session's cells in the reference frame."""

    centroids: np.ndarray
    footprints: scipy.sparse.csc_matrix
    roi_ids: np.ndarray


def _pairs(a: _Placed, b: _Placed, radius: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Candidate pairs (index in a, index in b, distance, footprint correlation)."""
    if not len(a.roi_ids) or not len(b.roi_ids):
        empty = np.zeros(0)
        return empty.astype(int), empty.astype(int), empty, empty
    found = cKDTree(a.centroids).query_ball_tree(cKDTree(b.centroids), radius)
    i = np.array([k for k, js in enumerate(found) for _ in js], dtype=int)
    j = np.array([m for js in found for m in js], dtype=int)
    distance = np.hypot(*(a.centroids[i] - b.centroids[j]).T) if i.size else np.zeros(0)
    correlation = np.asarray(a.footprints[:, i].multiply(b.footprints[:, j]).sum(axis=0)).ravel()
    return i, j, distance, np.clip(correlation, 1e-4, 1 - 1e-4)


class SameCellModel:
    """P(same cell | distance, footprint correlation), a two-component mixture fitted by EM."""

    def __init__(self, distance: np.ndarray, correlation: np.ndarray, radius: float):
        self.radius = radius
        same = (correlation > 0.5) & (distance < radius / 2)
        self.weight = float(np.clip(same.mean() if same.size else 0.5, 0.05, 0.95))
        self.sigma = radius / 4
        self.same_beta = (5.0, 1.5)
        self.other_beta = (1.5, 3.0)
        for _ in range(100 if distance.size else 0):
            responsibility = self.probability(distance, correlation)
            self._maximise(distance, correlation, responsibility)

    def probability(self, distance: np.ndarray, correlation: np.ndarray) -> np.ndarray:
        """Posterior of "same cell". The densities share their factor of distance (Rayleigh
        ``d/s^2 exp(-d^2/2s^2)`` against ``2d/R^2``), so it cancels: a pair at distance 0 is fine."""
        log_odds = (np.log(self.weight / (1 - self.weight)) + np.log(self.radius**2 / (2 * self.sigma**2))
                    - distance**2 / (2 * self.sigma**2)
                    + _log_beta_pdf(correlation, *self.same_beta) - _log_beta_pdf(correlation, *self.other_beta))
        return scipy.special.expit(log_odds)

    def _maximise(self, distance, correlation, responsibility):
        total = responsibility.sum()
        self.weight = float(np.clip(responsibility.mean(), 1e-3, 1 - 1e-3))
        if total > 1e-6:
            self.sigma = float(max(np.sqrt((responsibility * distance**2).sum() / (2 * total)), 0.1))
            self.same_beta = _beta_moments(correlation, responsibility)
        if (1 - responsibility).sum() > 1e-6:
            self.other_beta = _beta_moments(correlation, 1 - responsibility)


def _beta_moments(values: np.ndarray, weights: np.ndarray) -> tuple[float, float]:
    mean = float(np.average(values, weights=weights))
    variance = float(max(np.average((values - mean) ** 2, weights=weights), 1e-6))
    common = max(mean * (1 - mean) / variance - 1, 1e-3)
    return max(mean * common, 1e-3), max((1 - mean) * common, 1e-3)


def _log_beta_pdf(x, a, b):
    return (a - 1) * np.log(x) + (b - 1) * np.log1p(-x) - scipy.special.betaln(a, b)


def register_sessions(
    sessions: list[SessionCells],
    params: RegistrationParams = RegistrationParams(),
    previous: Registration | None = None,
) -> Registration:
    """Align ``sessions`` (in registration order) and give their cells subject-level identities.

    ``previous``: an earlier registration of the first sessions (same names and data); their
    alignments and cell assignments are kept, and only the sessions after them are assigned.
    """
    if not sessions:
        return Registration([], {}, [])
    reference = sessions[0]
    shape = reference.image.shape
    kept = previous.sessions if previous is not None else []
    alignments = dict(previous.alignments) if previous is not None else {}
    for session in sessions:
        if session.name not in alignments:
            alignments[session.name] = (Alignment.identity() if session is reference
                                        else align(reference.image, session.image, params))
    placed = {s.name: _Placed(*_in_reference(s, alignments[s.name], shape), np.asarray(s.roi_ids)) for s in sessions}
    radius = params.max_distance or 1.2 * cell_diameter(reference.footprints)
    pairs = {(a.name, b.name): _pairs(placed[a.name], placed[b.name], radius)
             for n, a in enumerate(sessions) for b in sessions[n + 1:]}
    model = SameCellModel(np.concatenate([p[2] for p in pairs.values()] or [np.zeros(0)]),
                          np.concatenate([p[3] for p in pairs.values()] or [np.zeros(0)]), radius)
    cells = [dict(cell) for cell in previous.cells] if previous is not None else []
    for n, session in enumerate(sessions):
        if session.name in kept:
            continue
        _assign(session, sessions[:n], cells, pairs, model, placed, params)
    return Registration([s.name for s in sessions], {s.name: alignments[s.name] for s in sessions}, cells,
                        {s.name: placed[s.name].footprints for s in sessions})


def _assign(session, earlier, cells, pairs, model, placed, params) -> None:
    """Join ``session``'s cells to known cells (one to one, best evidence) or start new ones."""
    position = {int(roi): k for k, roi in enumerate(placed[session.name].roi_ids)}
    score = np.zeros((len(cells), len(position)))
    for other in earlier:
        i, j, distance, correlation = pairs[(other.name, session.name)]
        probability = model.probability(distance, correlation)
        index = {int(roi): k for k, roi in enumerate(placed[other.name].roi_ids)}
        owner = {index[cell[other.name][0]]: c for c, cell in enumerate(cells) if other.name in cell}
        for a, b, p in zip(i, j, probability):
            if a in owner:
                score[owner[a], b] = max(score[owner[a], b], p)
    rows, columns = scipy.optimize.linear_sum_assignment(-score) if score.size else ([], [])
    matched = {}
    for row, column in zip(rows, columns):
        if score[row, column] >= params.min_probability:
            matched[column] = row
    for roi, k in position.items():
        if k in matched:
            cells[matched[k]][session.name] = (roi, float(score[matched[k], k]))
        else:
            cells.append({session.name: (roi, float("nan"))})
