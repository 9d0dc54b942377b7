"""Read and write a ProcessingResult as one HDF5 file (the built-in engine's result format)."""

from __future__ import annotations

import contextlib
import json
from datetime import datetime
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np
import scipy.sparse

from miniscope_assets.atomic import atomic_path
from miniscope_assets.engine.motion import MotionCorrection
from miniscope_assets.engine.pipeline import MovieSummary
from miniscope_assets.errors import MiniscopeInputError
from miniscope_assets.results import (
    PiecewiseRigidMotion,
    ProcessingResult,
    RigidMotion,
    SummaryImages,
)

FORMAT_NAME = "miniscope-assets-results"
FORMAT_VERSION = 1
MOTION_FORMAT = "miniscope-assets-motion"
SUMMARY_FORMAT = "miniscope-assets-movie-summary"
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
                _compressed(summary, name, np.asarray(image, dtype=np.float32))
            masks = f.create_group("masks")
            masks.create_dataset("ids", data=result.mask_ids.astype(np.int64))
            masks.create_dataset("types", data=result.mask_types.astype(object), dtype=_STRING)
            masks.create_dataset("confidence", data=result.mask_confidence.astype(np.float32))
            footprints = result.footprints.tocsc()
            group = masks.create_group("footprints")
            _compressed(group, "data", footprints.data.astype(np.float32))
            _compressed(group, "indices", footprints.indices.astype(np.int64))
            _compressed(group, "indptr", footprints.indptr.astype(np.int64))
            group.create_dataset("shape", data=np.asarray(footprints.shape, dtype=np.int64))
            traces = f.create_group("traces")
            for name in ProcessingResult.TRACE_FIELDS:
                trace = getattr(result, name)
                if trace is not None:
                    _compressed(traces, name, np.asarray(trace, dtype=np.float32))
            _write_motion(f.create_group("motion"), result.motion_rigid, result.motion_piecewise)
    return path


def _compressed(group: h5py.Group, name: str, data: np.ndarray) -> None:
    """A dataset, LZF-compressed (fast, lossless) when it has elements."""
    group.create_dataset(name, data=data, compression="lzf" if data.size and data.ndim else None)


def _write_motion(group: h5py.Group, rigid: RigidMotion | None, piecewise: PiecewiseRigidMotion | None) -> None:
    if rigid is not None:
        _write_arrays(group.create_group("rigid"), rigid.__dict__)
    if piecewise is not None:
        node = group.create_group("piecewise")
        fields = dict(piecewise.__dict__)
        for name in _PIECEWISE_SCALARS:
            node.attrs[name] = int(fields.pop(name))
        _write_arrays(node, fields)


def _read_motion(group: h5py.Group) -> tuple[RigidMotion | None, PiecewiseRigidMotion | None]:
    rigid = piecewise = None
    if "rigid" in group:
        rigid = RigidMotion(**_read_arrays(group["rigid"]))
    if "piecewise" in group:
        node = group["piecewise"]
        scalars = {name: int(node.attrs[name]) for name in _PIECEWISE_SCALARS}
        piecewise = PiecewiseRigidMotion(**scalars, **_read_arrays(node))
    return rigid, piecewise


@contextlib.contextmanager
def _writing(path: Path, format_name: str, **attrs) -> Iterator[h5py.File]:
    """A new HDF5 file of ``format_name`` (with ``attrs``), renamed into place when complete."""
    with atomic_path(path) as temporary:
        with h5py.File(temporary, "w") as f:
            f.attrs.update(format=format_name, **attrs)
            yield f


@contextlib.contextmanager
def _reading(path: Path, format_name: str, what: str) -> Iterator[h5py.File]:
    """``path`` open for reading once its format is checked; unreadable content is one clear error."""
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") != format_name:
                raise MiniscopeInputError(path, f"not a {format_name} file")
            yield f
    except (OSError, KeyError) as error:
        raise MiniscopeInputError(path, f"unreadable {what} ({error})") from error


def save_motion_correction(motion: MotionCorrection, path: str | Path) -> Path:
    """Write the engine's motion correction (shifts, reference, notes) atomically."""
    path = Path(path)
    with _writing(path, MOTION_FORMAT, notes=json.dumps(motion.notes, sort_keys=True, default=str)) as f:
        f.create_dataset("reference", data=np.asarray(motion.reference, dtype=np.float32))
        _write_motion(f, motion.rigid, motion.piecewise)
    return path


def load_motion_correction(path: str | Path) -> MotionCorrection:
    """Read a file written by :func:`save_motion_correction`."""
    with _reading(Path(path), MOTION_FORMAT, "motion correction") as f:
        rigid, piecewise = _read_motion(f)
        return MotionCorrection(rigid=rigid, piecewise=piecewise, reference=f["reference"][()],
                                notes=json.loads(f.attrs["notes"]))


def save_movie_summary(summary: MovieSummary, path: str | Path) -> Path:
    """Write the engine's MovieSummary (neuron size, summary images) atomically."""
    path = Path(path)
    with _writing(path, SUMMARY_FORMAT, neuron_size=json.dumps(summary.neuron_size, sort_keys=True)) as f:
        _write_arrays(f.create_group("images"), summary.images.as_dict())
    return path


def load_movie_summary(path: str | Path) -> MovieSummary:
    """Read a file written by :func:`save_movie_summary`."""
    with _reading(Path(path), SUMMARY_FORMAT, "movie summary") as f:
        return MovieSummary(json.loads(f.attrs["neuron_size"]), SummaryImages(**_read_arrays(f["images"])))


def _write_arrays(group: h5py.Group, arrays: dict) -> None:
    for name, value in arrays.items():
        if value is not None:
            _compressed(group, name, np.asarray(value))


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
        rigid, piecewise = _read_motion(f["motion"])
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
