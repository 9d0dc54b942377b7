"""Replace a stage's containers in an existing NWB file, cleanly and atomically.

Each processing stage owns some containers in ``processing/ophys``. Re-running a stage removes
its own containers and those of every later stage (they were derived from what is being
replaced, and a later container may reference an earlier one), adds the new ones, and exports
the whole file to a temporary path that is then renamed over the old one. The export copies
untouched datasets (the raw movie) inside HDF5 without decompressing them, and leaves no
stale bytes behind.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from pynwb import NWBHDF5IO, NWBFile
from pynwb.base import ProcessingModule

from miniscope_assets.io.atomic import atomic_path

OPHYS = "ophys"

# Stage -> containers it owns, as (data interface,) or (data interface, series inside it).
STAGE_CONTAINERS: dict[str, list[tuple[str, ...]]] = {
    "motion_correction": [
        ("MotionCorrection",),
        ("RigidMotionShifts",),
        ("MotionOutlierFrames",),
        ("PiecewiseRigidMotion",),
        ("SummaryImages",),
    ],
    "segmentation": [("ImageSegmentation",)],
    "mask_classification": [("MaskClassification",)],
    "fluorescence": [("Fluorescence", "RoiResponseSeries"), ("Fluorescence", "Neuropil")],
    "activity": [("Fluorescence", "Denoised"), ("Fluorescence", "Deconvolved"), ("DfOverF",)],
}
STAGE_ORDER = list(STAGE_CONTAINERS)


def ophys_module(nwbfile: NWBFile) -> ProcessingModule:
    """The ``processing/ophys`` module, created on first use."""
    if OPHYS not in nwbfile.processing:
        nwbfile.create_processing_module(OPHYS, "Optical physiology processed by miniscope-assets")
    return nwbfile.processing[OPHYS]


def stale_containers(stage: str) -> list[tuple[str, ...]]:
    """Containers removed when ``stage`` is rewritten: its own and all later stages'."""
    start = STAGE_ORDER.index(stage)
    return [path for later in STAGE_ORDER[start:] for path in STAGE_CONTAINERS[later]]


def remove_containers(nwbfile: NWBFile, paths: list[tuple[str, ...]]) -> list[str]:
    """Remove the given containers where present; return what was removed."""
    if OPHYS not in nwbfile.processing:
        return []
    interfaces = nwbfile.processing[OPHYS].data_interfaces
    removed = []
    for path in paths:
        if path[0] not in interfaces:
            continue
        if len(path) == 1:
            interfaces.pop(path[0])
            removed.append(path[0])
            continue
        container = interfaces[path[0]]
        if path[1] in container.roi_response_series:
            container.roi_response_series.pop(path[1])
            removed.append("/".join(path))
        if not container.roi_response_series:
            interfaces.pop(path[0])
    return removed


def rewrite_stage(nwb_path: str | Path, stage: str, add: Callable[[NWBFile], None]) -> list[str]:
    """Replace ``stage``'s containers (and later stages') with what ``add`` puts in the file.

    Returns the names of removed containers.
    """
    nwb_path = Path(nwb_path)
    with NWBHDF5IO(str(nwb_path), mode="r") as reader:
        nwbfile = reader.read()
        removed = remove_containers(nwbfile, stale_containers(stage))
        add(nwbfile)
        with atomic_path(nwb_path) as temporary:
            with NWBHDF5IO(str(temporary), mode="w") as writer:
                writer.export(src_io=reader, nwbfile=nwbfile)
    return removed
