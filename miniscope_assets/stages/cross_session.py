"""Cross-session registration stage: one subject x paramset, every processed session of the
subject registered (miniscope_assets.engine.cross_session), written to a subject-level NWB file.

Sessions are registered in the order they first arrived (later arrivals by recording start
time). The state (``registration.json``) keeps each session's signature (its partition and
curation round); when the sessions registered before are unchanged and still come first, their
alignments and cell ids are kept and only the new sessions are matched: ids stay stable as
sessions arrive. Any change to an earlier session registers all sessions again. Cells are the
masks classified ``soma``.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import scipy.sparse

from miniscope_assets.atomic import write_text_atomic
from miniscope_assets.engine.cross_session import Alignment, Registration, SessionCells, register_sessions
from miniscope_assets.errors import MiniscopeInputError
from miniscope_assets.nwb.cross_session import write_cross_session_nwb
from miniscope_assets.stages import figures
from miniscope_assets.stages.checks import inspect_nwb
from miniscope_assets.stages.curation import current_curation, load_curated_result
from miniscope_assets.stages.table import RunOptions
from miniscope_assets.stages.workspace import Partition, StageReport, SubjectPartition

CELL_TYPE = "soma"


def _signature(partition: Partition) -> str:
    return f"{partition.recording_key}#{current_curation(partition)['curation_hash']}"


def _cells(partition: Partition) -> SessionCells:
    """The session's cells (soma masks) from its latest curated result, with its summary image."""
    result = load_curated_result(partition)
    keep = np.flatnonzero(np.asarray(result.mask_types) == CELL_TYPE)
    return SessionCells(partition.recording_key, result.summary.display_image(),
                        result.footprints.tocsc()[:, keep], np.asarray(result.mask_ids)[keep])


def _load_state(subject: SubjectPartition) -> dict | None:
    path = subject.files.state
    return json.loads(path.read_text()) if path.is_file() else None


def _previous(state: dict | None, signatures: dict[str, str]) -> tuple[list[str], Registration | None]:
    """The earlier order of sessions, and the earlier registration if still valid (its sessions
    unchanged); None otherwise."""
    if state is None:
        return [], None
    order = [name for name in state["sessions"] if name in signatures]
    unchanged = all(signatures.get(name) == state["signatures"][name] for name in state["sessions"])
    if not unchanged:
        return order, None
    alignments = {name: Alignment(**{key: np.asarray(value) if isinstance(value, list) else value
                                     for key, value in a.items()})
                  for name, a in state["alignments"].items()}
    cells = [{name: (int(roi), float(p)) for name, (roi, p) in cell.items()} for cell in state["cells"]]
    return order, Registration(state["sessions"], alignments, cells)


def _state(registration: Registration, signatures: dict[str, str]) -> dict:
    return {
        "sessions": registration.sessions,
        "signatures": {name: signatures[name] for name in registration.sessions},
        "alignments": {name: {key: value.tolist() if isinstance(value, np.ndarray) else value
                              for key, value in dataclasses.asdict(a).items()}
                       for name, a in registration.alignments.items()},
        "cells": registration.cells,
    }


def run(subject: SubjectPartition, options: RunOptions) -> StageReport:
    """Register the subject's processed sessions and write the subject-level NWB file."""
    partitions = {p.recording_key: p for p in subject.sessions()}
    if not partitions:
        raise MiniscopeInputError(subject.files.work_dir, f"subject {subject.subject!r} has no session processed "
                                  f"with paramset {subject.paramset.name!r} yet")
    signatures = {key: _signature(p) for key, p in partitions.items()}
    order, previous = _previous(_load_state(subject), signatures)
    starts = {key: p.recording_info().recording_datetime for key, p in partitions.items()}
    order += sorted((k for k in partitions if k not in order), key=lambda k: (starts[k], k))
    loaded = {key: _cells(partitions[key]) for key in order}
    options.progress("registration", 0.1)
    registration = register_sessions([loaded[key] for key in order], previous=previous)
    options.progress("registration", 0.8)
    nwb_path = write_cross_session_nwb(subject, registration, {k: partitions[k] for k in order},
                                       loaded)
    write_text_atomic(subject.files.state, json.dumps(_state(registration, signatures), indent=1))
    figure = _figure(subject, registration, loaded)
    tracked = {k: registration.tracked_in_at_least(k) for k in range(1, len(order) + 1)}
    return StageReport(
        metadata={
            "subject": subject.subject,
            "sessions_registered": len(order),
            "sessions": ", ".join(partitions[k].recording.identity.session for k in order),
            "cells": len(registration.cells),
            "cells_per_session": ", ".join(str(registration.cells_in(k)) for k in order),
            "tracked_all_sessions": tracked[len(order)],
            "tracked_in_at_least_k_sessions": ", ".join(f"{k}: {n}" for k, n in tracked.items()),
            "min_alignment_correlation": round(min(a.correlation for a in registration.alignments.values()), 4),
            "max_rotation_deg": round(max(abs(a.rotation_deg) for a in registration.alignments.values()), 3),
            "max_deformation_px": round(max(a.max_deformation for a in registration.alignments.values()), 3),
            "ids_kept_from_previous_registration": previous is not None,
            "registered_cells_png": figure,
            "nwb_path": nwb_path,
        },
        checks=[inspect_nwb(nwb_path)],
    )


def _figure(subject: SubjectPartition, registration: Registration, cells: dict[str, SessionCells]):
    """Every session's cells, moved into the first session's frame, outlined in their cell's colour."""
    reference = cells[registration.sessions[0]]
    footprints = scipy.sparse.hstack([registration.footprints[name] for name in registration.sessions])
    ids = np.concatenate([registration.global_ids(name, cells[name].roi_ids) for name in registration.sessions])
    return figures.masks_on_image(subject.files.figure, reference.image, footprints, ids)
