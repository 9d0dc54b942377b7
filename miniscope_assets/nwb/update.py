"""Put a stage's containers into the processed NWB file, never leaving it half-written.

The processed file is small (no raw movie): every change is made to a copy in memory that is
then written beside the file and renamed over it (a file holding the kept corrected movie is
copied on disk instead):

- a stage whose containers (and every later stage's) are absent is *appended*: the file is
  copied, the copy opened in append mode, the containers added, and the copy renamed into place;
- a stage whose containers are present is *replaced*: its own and every later stage's
  containers are removed (they were derived from what is replaced, and may reference it) and the
  file is exported to a temporary path with the new ones, leaving no stale bytes.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from typing import Callable, Iterator

from pynwb import NWBHDF5IO, NWBFile
from pynwb.base import ProcessingModule

from miniscope_assets.atomic import atomic_hdf5, atomic_path
from miniscope_assets.errors import MiniscopeInputError

IN_MEMORY_LIMIT = 1 << 30  # bytes: processed files up to this size are rewritten in memory

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
    in_memory = nwb_path.stat().st_size <= IN_MEMORY_LIMIT
    with NWBHDF5IO(str(nwb_path), mode="r") as reader:
        nwbfile = reader.read()
        if any(present(nwbfile, path) for path in replaced):
            removed = remove_containers(nwbfile, replaced)
            add(nwbfile)
            with new_hdf5(nwb_path, in_memory) as target, NWBHDF5IO(**target, mode="w") as writer:
                writer.export(src_io=reader, nwbfile=nwbfile)
            return removed
    with new_hdf5(nwb_path, in_memory, copy_of=nwb_path) as target, NWBHDF5IO(**target, mode="a") as io:
        nwbfile = io.read()
        add(nwbfile)
        io.write(nwbfile)
    return []


@contextlib.contextmanager
def new_hdf5(final_path: Path, in_memory: bool = True, copy_of: Path | None = None) -> Iterator[dict]:
    """NWBHDF5IO arguments for a file (empty, or a copy of ``copy_of``) that replaces
    ``final_path`` atomically when done: built in memory (a full disk is then a clean error) or,
    for files too large for that, on disk."""
    if in_memory:
        with atomic_hdf5(final_path, copy_of=copy_of) as handle:
            yield {"file": handle}
    else:
        with atomic_path(final_path) as temporary:
            if copy_of is not None:
                shutil.copyfile(copy_of, temporary)
            yield {"path": str(temporary)}
