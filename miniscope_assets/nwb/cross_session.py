"""The subject-level NWB file of a cross-session registration.

``processing/ophys`` holds:

- ``CrossSessionCells`` (DynamicTable): one row per cell and session it was found in: the
  subject-level ``global_cell_id``, the session's ``session_id`` and processed ``session_file``
  (relative to this file's folder), the ``plane_segmentation`` path in that file, the ``roi_id``
  (the PlaneSegmentation row id), ``match_probability`` (P(same cell) of the match that joined it;
  NaN for a cell's first appearance) and ``n_sessions`` (sessions the cell was found in);
- ``SessionAlignment`` (DynamicTable): per session, the rotation and shifts that map its pixels
  onto the first session's, the largest non-rigid displacement after them, the aligned images'
  correlation, and its cell count;
- ``AlignedSummaryImages`` (Images): each session's summary image moved into the first
  session's frame (0 outside its field of view).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from hdmf.common import DynamicTable, VectorData
from pynwb.base import Images
from pynwb.image import GrayscaleImage

from miniscope_assets.engine.cross_session import Registration, SessionCells
from miniscope_assets.layout import cross_session_id
from miniscope_assets.nwb.raw import build_nwbfile, write_nwbfile
from miniscope_assets.nwb.update import ophys_module

PLANE_SEGMENTATION = "processing/ophys/ImageSegmentation/PlaneSegmentation"


def _table(name: str, description: str, columns: dict[str, tuple[str, list]]) -> DynamicTable:
    return DynamicTable(
        name=name, description=description,
        columns=[VectorData(name=column, description=text, data=values)
                 for column, (text, values) in columns.items()],
    )


def write_cross_session_nwb(subject, registration: Registration, partitions: dict, cells: dict[str, SessionCells]) -> Path:
    """Write ``subject``'s registration (sessions in registration order) to its NWB file."""
    path = subject.nwb_path()
    first = partitions[registration.sessions[0]].recording.record()
    paramset = subject.paramset
    identifier = hashlib.sha256(f"{subject.subject}|{paramset.param_hash}|{registration.sessions}".encode()).hexdigest()
    nwbfile = build_nwbfile(
        first, cross_session_id(paramset.name), identifier,
        f"Cross-session registration of subject {subject.subject}, paramset {paramset.name}: "
        f"{len(registration.sessions)} sessions aligned to the first one's field of view",
    )
    session_ids = {k: p.recording.identity.processed_session_id(paramset.name) for k, p in partitions.items()}
    files = {k: os.path.relpath(p.nwb_path(), path.parent) for k, p in partitions.items()}
    rows = [(number, name, roi, probability, len(cell))
            for number, cell in enumerate(registration.cells) for name, (roi, probability) in cell.items()]
    module = ophys_module(nwbfile)
    module.add(_table("CrossSessionCells", "The same cells across sessions: one row per cell and session", {
        "global_cell_id": ("subject-level cell id", [r[0] for r in rows]),
        "session_id": ("session_id of the processed file the ROI is in", [session_ids[r[1]] for r in rows]),
        "session_file": ("processed NWB file, relative to this file's folder", [files[r[1]] for r in rows]),
        "plane_segmentation": ("the PlaneSegmentation in that file", [PLANE_SEGMENTATION] * len(rows)),
        "roi_id": ("row id of the ROI in that PlaneSegmentation", [int(r[2]) for r in rows]),
        "match_probability": ("P(same cell) of the match that joined this ROI to the cell; NaN for its first "
                              "appearance", [float(r[3]) for r in rows]),
        "n_sessions": ("sessions the cell was found in", [r[4] for r in rows]),
    }))
    alignments = [registration.alignments[name] for name in registration.sessions]
    module.add(_table("SessionAlignment", "How each session's field of view maps onto the first session's", {
        "session_id": ("session_id of the processed file", [session_ids[n] for n in registration.sessions]),
        "session_file": ("processed NWB file, relative to this file's folder", [files[n] for n in registration.sessions]),
        "rotation_degrees": ("rotation about the image centre, degrees", [a.rotation_deg for a in alignments]),
        "x_shift_px": ("column shift after the rotation, px", [a.x_shift for a in alignments]),
        "y_shift_px": ("row shift after the rotation, px", [a.y_shift for a in alignments]),
        "max_deformation_px": ("largest non-rigid displacement after the rotation and shift, px",
                               [a.max_deformation for a in alignments]),
        "alignment_correlation": ("correlation of the aligned high-passed summary images over their overlap",
                                  [a.correlation for a in alignments]),
        "n_cells": ("cells registered from the session", [registration.cells_in(n) for n in registration.sessions]),
    }))
    shape = cells[registration.sessions[0]].image.shape
    images = [
        GrayscaleImage(name=session_ids[name], description=f"summary image of {session_ids[name]} in the first "
                       "session's frame (0 outside its field of view)",
                       data=registration.alignments[name].warp_image(cells[name].image, shape, border=0).T)
        for name in registration.sessions
    ]
    module.add(Images(name="AlignedSummaryImages", images=images,
                      description="Each session's summary image aligned to the first session"))
    return write_nwbfile(path, nwbfile)
