"""The processing result every backend produces (built-in engine, CaImAn) and every asset reads.

Conventions (see docs/conventions.md):
- Images are (height, width) arrays; ``x`` is the column, ``y`` the row.
- Footprints are a sparse (height*width, n_masks) matrix; the pixel index is row-major
  (``y * width + x``), i.e. numpy's C order.
- Motion shifts are the displacement applied to register each frame to the template:
  ``corrected[y, x] = raw[y - y_shift, x - x_shift]``.
- Traces are (n_masks, n_frames) float32.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import scipy.sparse

MASK_TYPES = ("soma", "axon", "dendrite", "neuropil", "artefact", "unknown")


@dataclass
class RigidMotion:
    """Per-frame rigid shifts, in pixels."""

    x_shifts: np.ndarray
    y_shifts: np.ndarray
    outlier_frames: np.ndarray | None = None  # bool per frame: shift was an outlier (already corrected)


@dataclass
class PiecewiseRigidMotion:
    """Per-frame, per-block shifts of piecewise-rigid registration, in pixels."""

    block_height: int
    block_width: int
    block_count_y: int
    block_count_x: int
    block_y: np.ndarray  # (n_blocks, 2): [start, end) rows of each block
    block_x: np.ndarray  # (n_blocks, 2): [start, end) columns of each block
    x_shifts: np.ndarray  # (n_frames, n_blocks)
    y_shifts: np.ndarray  # (n_frames, n_blocks)
    outlier_frames: np.ndarray | None = None


@dataclass
class SummaryImages:
    """Summary images of the motion-corrected movie, each (height, width)."""

    mean: np.ndarray
    reference: np.ndarray | None = None
    max_projection: np.ndarray | None = None
    correlation: np.ndarray | None = None
    peak_to_noise: np.ndarray | None = None

    def as_dict(self) -> dict[str, np.ndarray]:
        """The images that are present, by field name."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if getattr(self, f.name) is not None
        }

    def display_image(self) -> np.ndarray:
        """The image to draw figures on: the correlation image where there is one, else the mean."""
        return self.correlation if self.correlation is not None else self.mean


def footprint_centroids(footprints: scipy.sparse.spmatrix, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, columns) of the weighted centroid of every footprint column (row-major pixels of a
    frame ``width`` px wide); 0 for an empty footprint."""
    rows, columns = np.divmod(np.arange(footprints.shape[0]), width)
    weights = np.asarray(footprints.sum(axis=0)).ravel()
    weights[weights == 0] = 1.0
    return np.asarray(footprints.T @ rows).ravel() / weights, np.asarray(footprints.T @ columns).ravel() / weights


def footprint_pixels(footprints: scipy.sparse.csc_matrix, k: int, width: int) -> tuple[np.ndarray, ...]:
    """(rows, columns, values) of the stored pixels of footprint column ``k`` (row-major pixels
    of a frame ``width`` px wide)."""
    start, end = footprints.indptr[k], footprints.indptr[k + 1]
    rows, columns = np.divmod(footprints.indices[start:end], width)
    return rows, columns, footprints.data[start:end]


@dataclass
class ProcessingResult:
    """Motion correction, masks, classification and traces of one recording x paramset."""

    method: str
    package_version: str
    params: dict
    creation_time: datetime
    frame_shape: tuple[int, int]
    nframes: int
    summary: SummaryImages
    mask_ids: np.ndarray
    footprints: scipy.sparse.csc_matrix
    mask_types: np.ndarray
    mask_confidence: np.ndarray
    fluorescence: np.ndarray
    motion_rigid: RigidMotion | None = None
    motion_piecewise: PiecewiseRigidMotion | None = None
    neuropil: np.ndarray | None = None
    denoised: np.ndarray | None = None
    dff: np.ndarray | None = None
    spikes: np.ndarray | None = None
    # Motion-corrected movie: our HDF5 file (dataset "corrected", (frames, height, width)) or
    # CaImAn's .mmap; opened with miniscope_assets.io.corrected_movie.open_corrected_movie.
    corrected_movie: str | None = None
    notes: dict = field(default_factory=dict)

    TRACE_FIELDS = ("fluorescence", "neuropil", "denoised", "dff", "spikes")

    @property
    def n_masks(self) -> int:
        return int(self.mask_ids.shape[0])

    def validate(self) -> None:
        """Raise ValueError if arrays disagree in shape."""
        height, width = self.frame_shape
        n = self.n_masks
        if self.footprints.shape != (height * width, n):
            raise ValueError(
                f"footprints shape {self.footprints.shape} != ({height * width}, {n})"
            )
        if len(np.unique(self.mask_ids)) != n:
            raise ValueError("mask ids are not unique")
        if self.mask_types.shape != (n,) or self.mask_confidence.shape != (n,):
            raise ValueError("mask_types / mask_confidence must have one entry per mask")
        unknown = set(self.mask_types.tolist()) - set(MASK_TYPES)
        if unknown:
            raise ValueError(f"unknown mask types {sorted(unknown)}; allowed: {MASK_TYPES}")
        for name in self.TRACE_FIELDS:
            trace = getattr(self, name)
            if trace is not None and trace.shape != (n, self.nframes):
                raise ValueError(f"{name} shape {trace.shape} != ({n}, {self.nframes})")
        for image_name, image in self.summary.as_dict().items():
            if image.shape != self.frame_shape:
                raise ValueError(f"summary image {image_name} shape {image.shape} != {self.frame_shape}")

    def mask_pixels(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(xpix, ypix, weights) of the mask at position ``index`` (not its id)."""
        column = self.footprints.getcol(index).tocoo()
        order = np.argsort(column.row, kind="stable")
        pixel = column.row[order]
        ypix, xpix = np.divmod(pixel, self.frame_shape[1])
        return xpix.astype(np.int64), ypix.astype(np.int64), column.data[order].astype(np.float32)

    def mask_centers(self) -> np.ndarray:
        """(n_masks, 2) weighted centroids as (x, y) in pixels."""
        cy, cx = footprint_centroids(self.footprints, self.frame_shape[1])
        return np.stack([cx, cy], axis=1)

    def mask_npix(self) -> np.ndarray:
        """Number of nonzero pixels per mask."""
        return np.diff(self.footprints.tocsc().indptr).astype(np.int64)

    def select(self, indices: np.ndarray) -> "ProcessingResult":
        """A copy holding only the masks at ``indices`` (positions, in the given order)."""
        indices = np.asarray(indices, dtype=np.int64)
        traces = {
            name: None if getattr(self, name) is None else getattr(self, name)[indices]
            for name in self.TRACE_FIELDS
        }
        return dataclasses.replace(
            self,
            mask_ids=self.mask_ids[indices],
            footprints=self.footprints.tocsc()[:, indices].tocsc(),
            mask_types=self.mask_types[indices],
            mask_confidence=self.mask_confidence[indices],
            **traces,
        )
