"""Read and write a ProcessingResult as one HDF5 file (the built-in engine's result format)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import h5py
import numpy as np
import scipy.sparse

from miniscope_assets.errors import MiniscopeInputError
from miniscope_assets.io.atomic import atomic_path
from miniscope_assets.results import (
    PiecewiseRigidMotion,
    ProcessingResult,
    RigidMotion,
    SummaryImages,
)

FORMAT_NAME = "miniscope-assets-results"
FORMAT_VERSION = 1
_PIECEWISE_SCALARS = ("block_height", "block_width", "block_count_y", "block_count_x")
_STRING = h5py.string_dtype()


def save_results(result: ProcessingResult, path: str | Path) -> Path:
    """Write ``result`` to ``path`` atomically and return the path."""
    result.validate()
    path = Path(path)
    with atomic_path(path) as temporary:
        with h5py.File(temporary, "w") as f:
            f.attrs.update(
                format=FORMAT_NAME,
                format_version=FORMAT_VERSION,
                method=result.method,
                package_version=result.package_version,
                creation_time=result.creation_time.isoformat(),
                params=json.dumps(result.params, sort_keys=True),
                frame_shape=np.asarray(result.frame_shape, dtype=np.int64),
                nframes=result.nframes,
                corrected_movie=result.corrected_movie or "",
                notes=json.dumps(result.notes, sort_keys=True, default=str),
            )
            summary = f.create_group("summary")
            for name, image in result.summary.as_dict().items():
                summary.create_dataset(name, data=np.asarray(image, dtype=np.float32))
            masks = f.create_group("masks")
            masks.create_dataset("ids", data=result.mask_ids.astype(np.int64))
            masks.create_dataset("types", data=result.mask_types.astype(object), dtype=_STRING)
            masks.create_dataset("confidence", data=result.mask_confidence.astype(np.float32))
            footprints = result.footprints.tocsc()
            group = masks.create_group("footprints")
            group.create_dataset("data", data=footprints.data.astype(np.float32))
            group.create_dataset("indices", data=footprints.indices.astype(np.int64))
            group.create_dataset("indptr", data=footprints.indptr.astype(np.int64))
            group.create_dataset("shape", data=np.asarray(footprints.shape, dtype=np.int64))
            traces = f.create_group("traces")
            for name in ProcessingResult.TRACE_FIELDS:
                trace = getattr(result, name)
                if trace is not None:
                    traces.create_dataset(name, data=np.asarray(trace, dtype=np.float32))
            motion = f.create_group("motion")
            if result.motion_rigid is not None:
                _write_arrays(motion.create_group("rigid"), result.motion_rigid.__dict__)
            if result.motion_piecewise is not None:
                piecewise = motion.create_group("piecewise")
                fields = dict(result.motion_piecewise.__dict__)
                for name in _PIECEWISE_SCALARS:
                    piecewise.attrs[name] = int(fields.pop(name))
                _write_arrays(piecewise, fields)
    return path


def _write_arrays(group: h5py.Group, arrays: dict) -> None:
    for name, value in arrays.items():
        if value is not None:
            group.create_dataset(name, data=np.asarray(value))


def _read_arrays(group: h5py.Group) -> dict:
    return {name: group[name][()] for name in group}


def load_results(path: str | Path) -> ProcessingResult:
    """Read a result file written by :func:`save_results`."""
    path = Path(path)
    if not path.is_file():
        raise MiniscopeInputError(path, "processing result file does not exist")
    try:
        f = h5py.File(path, "r")
    except OSError as error:
        raise MiniscopeInputError(path, f"not a readable HDF5 file ({error})") from error
    with f:
        if f.attrs.get("format") != FORMAT_NAME:
            raise MiniscopeInputError(path, f"not a {FORMAT_NAME} file (no 'format' attribute)")
        summary = SummaryImages(**_read_arrays(f["summary"]))
        group = f["masks/footprints"]
        shape = tuple(int(v) for v in group["shape"][()])
        footprints = scipy.sparse.csc_matrix(
            (group["data"][()], group["indices"][()], group["indptr"][()]), shape=shape
        )
        traces = {name: f["traces"][name][()] for name in f["traces"]}
        rigid = piecewise = None
        if "rigid" in f["motion"]:
            rigid = RigidMotion(**_read_arrays(f["motion/rigid"]))
        if "piecewise" in f["motion"]:
            node = f["motion/piecewise"]
            scalars = {name: int(node.attrs[name]) for name in _PIECEWISE_SCALARS}
            piecewise = PiecewiseRigidMotion(**scalars, **_read_arrays(node))
        attrs = f.attrs
        result = ProcessingResult(
            method=str(attrs["method"]),
            package_version=str(attrs["package_version"]),
            params=json.loads(attrs["params"]),
            creation_time=datetime.fromisoformat(str(attrs["creation_time"])),
            frame_shape=tuple(int(v) for v in attrs["frame_shape"]),
            nframes=int(attrs["nframes"]),
            summary=summary,
            mask_ids=f["masks/ids"][()],
            footprints=footprints,
            mask_types=np.asarray(f["masks/types"].asstr()[()], dtype=object),
            mask_confidence=f["masks/confidence"][()],
            motion_rigid=rigid,
            motion_piecewise=piecewise,
            corrected_movie=str(attrs["corrected_movie"]) or None,
            notes=json.loads(attrs["notes"]),
            **traces,
        )
    result.validate()
    return result
