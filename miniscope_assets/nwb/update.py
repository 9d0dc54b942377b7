"""Put a stage's containers into the processed NWB file, never leaving it half-written.

The processed file is small (no raw movie), and every change goes through a temporary copy
that is renamed over it:

- a stage whose containers (and every later stage's) are absent is *appended*: the file is
  copied, the copy opened in append mode, the containers added, and the copy renamed into place;
- a stage whose containers are present is *replaced*: its own and every later stage's
  containers are removed (they were derived from what is replaced, and may reference it) and the
  file is exported to a temporary path with the new ones, leaving no stale bytes.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

from pynwb import NWBHDF5IO, NWBFile
from pynwb.base import ProcessingModule

from miniscope_assets.errors import MiniscopeInputError
from miniscope_assets.io.atomic import atomic_path

OPHYS = "ophys"
ContainerPath = tuple[str, ...]  # (data interface,) or (data interface, series inside it)


def ophys_module(nwbfile: NWBFile) -> ProcessingModule:
    """The ``processing/ophys`` module, created on first use."""
    if OPHYS not in nwbfile.processing:
        nwbfile.create_processing_module(OPHYS, "Optical physiology processed by miniscope-assets")
    return nwbfile.processing[OPHYS]


def present(nwbfile: NWBFile, path: ContainerPath) -> bool:
    if OPHYS not in nwbfile.processing or path[0] not in nwbfile.processing[OPHYS].data_interfaces:
        return False
    return len(path) == 1 or path[1] in nwbfile.processing[OPHYS][path[0]].roi_response_series


def remove_containers(nwbfile: NWBFile, paths: list[ContainerPath]) -> list[str]:
    """Remove the given containers where present; return what was removed."""
    removed = []
    for path in paths:
        if not present(nwbfile, path):
            continue
        interfaces = nwbfile.processing[OPHYS].data_interfaces
        if len(path) == 1:
            interfaces.pop(path[0])
        else:
            container = interfaces[path[0]]
            container.roi_response_series.pop(path[1])
            if not container.roi_response_series:
                interfaces.pop(path[0])
        removed.append("/".join(path))
    return removed


def update_stage(nwb_path: str | Path, replaced: list[ContainerPath], add: Callable[[NWBFile], None]) -> list[str]:
    """Add a stage's containers to the file at ``nwb_path``, replacing ``replaced`` (the stage's
    own and later stages' containers) where present. Returns the names of removed containers."""
    nwb_path = Path(nwb_path)
    if not nwb_path.is_file():
        raise MiniscopeInputError(nwb_path, "processed NWB file is missing: materialize motion_correction first")
    with NWBHDF5IO(str(nwb_path), mode="r") as reader:
        nwbfile = reader.read()
        if any(present(nwbfile, path) for path in replaced):
            removed = remove_containers(nwbfile, replaced)
            add(nwbfile)
            with atomic_path(nwb_path) as temporary:
                with NWBHDF5IO(str(temporary), mode="w") as writer:
                    writer.export(src_io=reader, nwbfile=nwbfile)
            return removed
    with atomic_path(nwb_path) as temporary:
        shutil.copyfile(nwb_path, temporary)
        with NWBHDF5IO(str(temporary), mode="a") as io:
            nwbfile = io.read()
            add(nwbfile)
            io.write(nwbfile)
    return []

