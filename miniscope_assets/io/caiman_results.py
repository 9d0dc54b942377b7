"""Read CaImAn CNMF / CNMF-E results (HDF5 written by ``CNMF.save``) into a :class:`ProcessingResult`.

Only h5py, numpy and scipy are needed: CaImAn itself is not imported. The file layout, field by
field, and the mapping to :class:`ProcessingResult` are documented in ``docs/caiman_format.md``.
In short:

- ``CNMF.save`` writes the CNMF object's ``__dict__`` with CaImAn's ``save_dict_to_hdf5``
  (``caiman/utils/utils.py``): nested objects/dicts become groups (``/estimates``, ``/params/<group>``),
  arrays become datasets, ``None`` becomes the string dataset ``'NoneType'``, sparse matrices
  become a group of CSC arrays ``data``/``indices``/``indptr``/``shape``, and (CaImAn >= 1.9.9)
  strings become attributes of their group (older files: string datasets).
- DataJoint's ``element_interface`` (``run_caiman.py`` -> ``caiman_loader._save_mc``) adds a
  ``/motion_correction`` group to that file with the shifts and the summary images.

Axis naming: CaImAn calls the first image axis (rows, ``d1``) "x" and the second (columns, ``d2``)
"y", and flattens images in Fortran order (pixel ``p = row + col * d1``). This module converts to
the project's conventions: ``x`` = column, ``y`` = row, footprint pixel index ``y * width + x``.
So CaImAn's ``shifts_rig[:, 0]`` / ``x_shifts_els`` are our **y** shifts and ``shifts_rig[:, 1]`` /
``y_shifts_els`` our **x** shifts (same sign: CaImAn applies ``corrected[r, c] = raw[r - sx, c - sy]``).
"""

from __future__ import annotations

import contextlib
import json
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import scipy.sparse

from miniscope_assets.errors import MiniscopeInputError
from miniscope_assets.io.caiman_mmap import open_caiman_mmap, parse_caiman_mmap_name
from miniscope_assets.results import (
    PiecewiseRigidMotion,
    ProcessingResult,
    RigidMotion,
    SummaryImages,
)

RESULT_SUFFIXES = (".hdf5", ".h5")
REQUIRED_FIELDS = ("estimates/A", "estimates/C")
MOTION_GROUP = "motion_correction"
SPARSE_KEYS = ("data", "indices", "indptr", "shape")
NONE_MARK = "NoneType"


class CaimanResultsWarning(UserWarning):
    """An optional part of a CaImAn result is absent or unusable; loading continues without it."""


@dataclass(frozen=True)
class CaimanResultFiles:
    """The files that make up one CaImAn result folder."""

    cnmf_file: Path  # the CNMF.save() HDF5 file
    motion_file: Path | None  # file holding the motion_correction group (cnmf_file or a sidecar)
    mmap_file: Path | None  # motion-corrected movie (CaImAn .mmap), absolute
    notes: tuple[str, ...] = ()


# --------------------------------------------------------------------------------------------
# HDF5 decoding, following CaImAn's save_dict_to_hdf5 / recursively_load_dict_contents_from_group
# --------------------------------------------------------------------------------------------


def _decode_scalar(value: Any) -> Any:
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if isinstance(value, str):
        return None if value == NONE_MARK else value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def _decode_array(value: np.ndarray) -> Any:
    if value.dtype.kind in "SO":
        decoded = [_decode_scalar(v) for v in value.ravel().tolist()]
        return np.array(decoded, dtype=object).reshape(value.shape)
    return value


def _not_storable(values: np.ndarray) -> int:
    """How many of ``values`` cannot be stored as float32 traces: NaN, infinite or too large."""
    return int(np.count_nonzero(~(np.abs(values) <= np.finfo(np.float32).max)))


def _is_sparse_group(node: Any) -> bool:
    return isinstance(node, h5py.Group) and all(key in node for key in SPARSE_KEYS)


def _read_sparse(group: h5py.Group) -> scipy.sparse.csc_matrix:
    """A CSC matrix from its four arrays, checked (integer indices in range, finite values)."""
    try:
        shape = tuple(np.asarray(group["shape"][()]).ravel().astype(np.int64, casting="safe"))
        if len(shape) != 2 or min(shape) < 0:
            raise ValueError(f"shape {shape} is not two sizes")
        data = np.asarray(group["data"][()]).astype(np.float64, casting="same_kind")
        if not np.all(np.isfinite(data)):
            raise ValueError("data holds values that are not finite")
        indices, indptr = (np.asarray(group[name][()]).astype(np.int64, casting="safe") for name in ("indices", "indptr"))
        matrix = scipy.sparse.csc_matrix((data, indices, indptr), shape=shape)
        matrix.check_format(full_check=True)
    except (ValueError, TypeError) as error:
        raise MiniscopeInputError(group.file.filename, f"{group.name} is not a valid sparse matrix ({error})") from None
    return matrix


def _read_node(node: Any) -> Any:
    """A dataset or group decoded the way CaImAn's loader does (None, bools, strings, sparse)."""
    if isinstance(node, h5py.Dataset):
        value = node[()]
        if isinstance(value, np.ndarray):
            return _decode_array(value)
        return _decode_scalar(value)
    if _is_sparse_group(node):
        return _read_sparse(node)
    out: dict[str, Any] = {key: _decode_scalar(val) for key, val in node.attrs.items()}
    for key in node:
        out[key] = _read_node(node[key])
    return out


def _get(group: h5py.Group, name: str) -> Any:
    """Decoded value of ``name`` in ``group``: a dataset, a sparse/dict group or a string attribute.

    Returns None when absent or stored as CaImAn's ``'NoneType'`` marker.
    """
    if name in group:
        return _read_node(group[name])
    if name in group.attrs:  # CaImAn >= 1.9.9 stores strings as attributes of their group
        return _decode_scalar(group.attrs[name])
    return None


def _present(group: h5py.Group, name: str) -> bool:
    """True when ``name`` is stored and is not CaImAn's ``'NoneType'`` marker (without reading big data)."""
    if name not in group:
        return False
    node = group[name]
    if isinstance(node, h5py.Group):
        return True
    if node.shape == () and node.dtype.kind in "SO":
        return _decode_scalar(node[()]) is not None
    return True


def _jsonable(value: Any) -> Any:
    """Plain JSON-compatible Python (lists, floats, str, None) from decoded HDF5 values."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if scipy.sparse.issparse(value):
        return f"<sparse matrix {value.shape[0]}x{value.shape[1]}>"
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            return [_jsonable(v) for v in value.tolist()]
        return _jsonable(value.tolist())
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.generic):
        return value.item()
    return value


# --------------------------------------------------------------------------------------------
# Locating the files
# --------------------------------------------------------------------------------------------


def _classify(path: Path) -> tuple[str, str]:
    """('cnmf' | 'motion' | 'other', detail) for one HDF5 file."""
    try:
        handle = h5py.File(path, "r")
    except OSError as error:
        return "other", f"not a readable HDF5 file ({error})"
    with handle:
        keys = sorted(handle.keys())
        if "estimates" in handle and isinstance(handle["estimates"], h5py.Group):
            missing = [f for f in REQUIRED_FIELDS if f not in handle]
            if not missing:
                return "cnmf", ""
            return "other", f"has an 'estimates' group but lacks {', '.join(repr(m) for m in missing)}"
        if MOTION_GROUP in handle:
            return "motion", ""
        shown = ", ".join(repr(k) for k in keys[:8]) + (", ..." if len(keys) > 8 else "")
        return "other", f"no 'estimates' group (top level holds: {shown or 'nothing'})"


def _hdf5_candidates(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in RESULT_SUFFIXES and not p.name.startswith(".")
    )


def find_caiman_results(results_dir: str | Path) -> Path:
    """The CNMF result file (``CNMF.save`` HDF5) in ``results_dir``.

    Like element-interface's loader, a result is an ``.hdf5``/``.h5`` file holding
    ``estimates/A`` (and here also ``estimates/C``); other HDF5 files in the folder (raw movies,
    a separate motion-correction file) are ignored. Exactly one result must be present.
    ``results_dir`` may also be the result file itself.
    """
    return locate_caiman_files(results_dir).cnmf_file


def locate_caiman_files(results_dir: str | Path) -> CaimanResultFiles:
    """The CNMF result file, the file holding the motion_correction group and the .mmap movie."""
    results_dir = Path(results_dir)
    if not results_dir.exists():
        raise MiniscopeInputError(results_dir, "CaImAn results folder does not exist")
    if results_dir.is_file():
        kind, detail = _classify(results_dir)
        if kind != "cnmf":
            raise MiniscopeInputError(
                results_dir,
                f"not a CaImAn CNMF result: {detail or 'no estimates group'}; a result written by "
                f"CNMF.save() needs {', '.join(REQUIRED_FIELDS)}",
            )
        folder, cnmf_file = results_dir.parent, results_dir
        others = [
            p for p in _hdf5_candidates(folder) if p != cnmf_file and _classify(p)[0] == "motion"
        ]
    else:
        folder = results_dir
        candidates = _hdf5_candidates(folder)
        if not candidates:
            present = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
            shown = ", ".join(present[:10]) + (", ..." if len(present) > 10 else "")
            raise MiniscopeInputError(
                folder,
                "no CaImAn result file (*.hdf5 or *.h5 written by CNMF.save) in this folder"
                + (f"; it holds: {shown}" if present else "; the folder is empty"),
            )
        classified = [(p, *_classify(p)) for p in candidates]
        results = [p for p, kind, _ in classified if kind == "cnmf"]
        if not results:
            details = "; ".join(f"{p.name}: {detail}" for p, kind, detail in classified if kind != "cnmf")
            motion_only = [p.name for p, kind, _ in classified if kind == "motion"]
            extra = (
                f"; {', '.join(motion_only)} only hold{'s' if len(motion_only) == 1 else ''} a "
                "motion_correction group" if motion_only else ""
            )
            raise MiniscopeInputError(
                folder,
                f"no CaImAn CNMF result among the HDF5 files (a result needs "
                f"{' and '.join(REQUIRED_FIELDS)}): {details}{extra}",
            )
        if len(results) > 1:
            raise MiniscopeInputError(
                folder,
                f"several CaImAn CNMF result files, expected exactly one: "
                f"{', '.join(p.name for p in results)}; move the others to a separate folder",
            )
        cnmf_file = results[0]
        others = [p for p, kind, _ in classified if kind == "motion"]

    notes: list[str] = []
    with h5py.File(cnmf_file, "r") as handle:
        in_file = MOTION_GROUP in handle
        stored_mmap = _get(handle, "mmap_file")
    if in_file:
        motion_file: Path | None = cnmf_file
        if others:
            notes.append(
                f"motion_correction group read from {cnmf_file.name}; ignored the separate "
                f"file(s) {', '.join(p.name for p in others)}"
            )
    elif len(others) == 1:
        motion_file = others[0]
    elif len(others) > 1:
        raise MiniscopeInputError(
            folder,
            f"{cnmf_file.name} has no motion_correction group and several separate files hold one: "
            f"{', '.join(p.name for p in others)}; keep exactly one",
        )
    else:
        motion_file = None
    mmap_file, mmap_note = _find_mmap(folder, cnmf_file, stored_mmap)
    if mmap_note:
        notes.append(mmap_note)
    return CaimanResultFiles(
        cnmf_file=cnmf_file.resolve(),
        motion_file=None if motion_file is None else motion_file.resolve(),
        mmap_file=mmap_file,
        notes=tuple(notes),
    )


def _find_mmap(folder: Path, cnmf_file: Path, stored: Any) -> tuple[Path | None, str]:
    """The motion-corrected CaImAn memmap beside the result, chosen without guessing.

    Preference: the file named by the result's ``mmap_file`` field (matched by name, the stored
    path is from the machine that ran CaImAn); the memmap whose stem is the result's stem
    (element-interface names the result ``<mmap stem>.hdf5``); the only memmap; the only C-order
    memmap (the one CNMF reads). Otherwise none, with a note naming the candidates.
    """
    mmaps = sorted(
        p for p in folder.glob("*.mmap") if p.is_file() and parse_caiman_mmap_name(p) is not None
    )
    if not mmaps:
        return None, ""
    if isinstance(stored, str) and stored:
        stored_name = stored.replace("\\", "/").rsplit("/", 1)[-1]
        for p in mmaps:
            if p.name == stored_name:
                return p.resolve(), ""
    for p in mmaps:
        if p.stem == cnmf_file.stem:
            return p.resolve(), ""
    if len(mmaps) == 1:
        return mmaps[0].resolve(), ""
    c_order = [p for p in mmaps if parse_caiman_mmap_name(p).order == "C"]  # type: ignore[union-attr]
    if len(c_order) == 1:
        return c_order[0].resolve(), ""
    return None, (
        "corrected movie not set: several CaImAn memmaps and none named by the result: "
        + ", ".join(p.name for p in mmaps)
    )


# --------------------------------------------------------------------------------------------
# Geometry helpers
# --------------------------------------------------------------------------------------------


def caiman_patch_grid(dims: tuple[int, int], strides: tuple[int, int], overlaps: tuple[int, int]) -> np.ndarray:
    """Patches of CaImAn's piecewise-rigid registration, as ``coord_shifts_els`` rows.

    Each row is ``[row_start, row_end, col_start, col_end]`` (CaImAn's ``[x0, x1, y0, y1]``).
    Patches are ``strides + overlaps`` pixels wide, start every ``strides`` pixels and the last
    one in each direction is aligned to the image edge; rows vary slowest -- the order of
    CaImAn's ``sliding_window`` and therefore of the columns of ``x_shifts_els``.
    """
    starts = []
    for size, stride, overlap in zip(dims, strides, overlaps):
        window = int(stride) + int(overlap)
        first = list(range(0, int(size) - window, int(stride))) + [int(size) - window]
        starts.append([max(0, s) for s in first])
    window_r = int(strides[0]) + int(overlaps[0])
    window_c = int(strides[1]) + int(overlaps[1])
    return np.array(
        [[r, r + window_r, c, c + window_c] for r in starts[0] for c in starts[1]], dtype=np.int64
    )


def fortran_to_row_major(footprints: scipy.sparse.spmatrix, frame_shape: tuple[int, int]) -> scipy.sparse.csc_matrix:
    """Re-index a (d1*d2, K) matrix from CaImAn's Fortran pixel order to row-major ``y*width+x``."""
    height, width = frame_shape
    matrix = scipy.sparse.csc_matrix(footprints, copy=True)
    pixel = matrix.indices.astype(np.int64)
    col, row = np.divmod(pixel, height)  # Fortran: pixel = row + col * height
    converted = scipy.sparse.csc_matrix(
        (matrix.data, row * width + col, matrix.indptr.copy()), shape=matrix.shape
    )
    converted.sort_indices()
    return converted


def _fortran_image(vector: np.ndarray, frame_shape: tuple[int, int]) -> np.ndarray:
    return np.reshape(np.asarray(vector, dtype=np.float64).ravel(), frame_shape, order="F")


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


class _Loader:
    def __init__(self, files: CaimanResultFiles):
        self.files = files
        self.path = files.cnmf_file
        self.notes: dict[str, Any] = {
            "caiman_file": str(files.cnmf_file),
            "motion_correction_file": None if files.motion_file is None else str(files.motion_file),
        }
        self.warnings: list[str] = list(files.notes)

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        warnings.warn(CaimanResultsWarning(f"{self.path}: {message}"), stacklevel=4)

    def fail(self, problem: str) -> MiniscopeInputError:
        return MiniscopeInputError(self.path, problem)

    # -- fields --------------------------------------------------------------------------------

    def frame_shape(self, f: h5py.File, estimates: h5py.Group) -> tuple[int, int]:
        sources = [("estimates/dims", _get(estimates, "dims")), ("dims", _get(f, "dims"))]
        if "params" in f and "data" in f["params"]:
            sources.append(("params/data/dims", _get(f["params/data"], "dims")))
        for where, value in sources:
            if value is None:
                continue
            dims = [int(v) for v in np.asarray(value).ravel()]
            if len(dims) == 3 and dims[2] != 1:
                raise self.fail(f"{where} = {tuple(dims)}: volumetric (3-D) CaImAn results are not supported")
            if len(dims) not in (2, 3) or min(dims[:2]) < 1:
                raise self.fail(f"{where} = {tuple(dims)} is not a (rows, columns) frame size")
            return dims[0], dims[1]
        raise self.fail(
            "no frame size: none of estimates/dims, dims, params/data/dims is set "
            "(required to unflatten estimates/A)"
        )

    def footprints(self, estimates: h5py.Group, frame_shape: tuple[int, int]) -> scipy.sparse.csc_matrix:
        node = estimates["A"]
        if _is_sparse_group(node):
            a = _read_sparse(node)
        elif isinstance(node, h5py.Dataset) and node.ndim == 2:
            a = scipy.sparse.csc_matrix(node[()])
        else:
            raise self.fail(
                "estimates/A is neither a sparse group (data, indices, indptr, shape) nor a 2-D dataset"
            )
        n_pixels = frame_shape[0] * frame_shape[1]
        if a.shape[0] != n_pixels:
            raise self.fail(
                f"estimates/A has {a.shape[0]} rows but the frame {frame_shape[0]}x{frame_shape[1]} "
                f"has {n_pixels} pixels"
            )
        return a

    def traces(self, f: h5py.File, estimates: h5py.Group, n_masks: int) -> tuple[np.ndarray, int]:
        c = _get(estimates, "C")
        if c is None:
            raise self.fail("estimates/C is 'NoneType': CNMF was saved before it was fitted")
        c = np.asarray(c, dtype=np.float64)
        if n_masks == 0 and c.size == 0:  # no components found: take T from elsewhere
            c = np.zeros((0, self.frames_hint(f, estimates)))
        if c.ndim != 2 or c.shape[0] != n_masks:
            raise self.fail(f"estimates/C has shape {c.shape}, expected ({n_masks}, frames) to match estimates/A")
        if bad := _not_storable(c):
            raise self.fail(f"estimates/C holds {bad} value(s) that are NaN, infinite or beyond float32's range")
        return c, c.shape[1]

    def frames_hint(self, f: h5py.File, estimates: h5py.Group) -> int:
        """Frame count of a result without components: from the background, shifts or memmap."""
        ftrace = _get(estimates, "f")
        if ftrace is not None and np.ndim(ftrace) == 2:
            return int(np.shape(ftrace)[1])
        motion_file = self.files.motion_file
        if motion_file is not None:
            with contextlib.ExitStack() as stack:
                handle = f if motion_file == self.path else stack.enter_context(h5py.File(motion_file, "r"))
                group = handle.get(MOTION_GROUP)
                for name in ("shifts_rig", "x_shifts_els"):
                    if group is not None and name in group and group[name].ndim == 2:
                        return int(group[name].shape[0])
        if self.files.mmap_file is not None:
            return open_caiman_mmap(self.files.mmap_file).nframes
        return 0

    def optional_trace(self, estimates: h5py.Group, name: str, n_masks: int, nframes: int) -> np.ndarray | None:
        value = _get(estimates, name)
        if value is None:
            return None
        value = np.asarray(value)
        if n_masks == 0 and value.size == 0:
            return np.zeros((0, nframes))
        if value.dtype == object or value.shape != (n_masks, nframes):
            self.warn(f"estimates/{name} has shape {value.shape}, expected ({n_masks}, {nframes}); ignored")
            return None
        value = value.astype(np.float64)
        if bad := _not_storable(value):
            self.warn(f"estimates/{name} holds {bad} value(s) that are NaN, infinite or beyond float32's range; "
                      "ignored")
            return None
        return value

    def per_mask(self, estimates: h5py.Group, name: str, n_masks: int) -> np.ndarray | None:
        value = _get(estimates, name)
        if value is None:
            return None
        value = np.asarray(value)
        if value.dtype == object or value.size == 0:
            return None
        value = value.ravel().astype(np.float64)
        if value.shape != (n_masks,):
            self.warn(f"estimates/{name} has {value.size} values for {n_masks} components; ignored")
            return None
        return value

    def classification(self, estimates: h5py.Group, n_masks: int) -> tuple[np.ndarray, str]:
        good = _get(estimates, "idx_components")
        bad = _get(estimates, "idx_components_bad")
        types = np.array(["soma"] * n_masks, dtype=object)
        if good is None:
            if "discarded_components" in estimates and isinstance(estimates["discarded_components"], h5py.Group):
                return types, "all 'soma': select_components() kept only accepted components (rejected ones are in estimates/discarded_components)"
            self.warn("no estimates/idx_components (component evaluation was not run): every component is typed 'soma'")
            return types, "all 'soma': no component evaluation in the file"
        good = np.asarray(good).ravel().astype(np.int64)
        if good.size and (good.min() < 0 or good.max() >= n_masks):
            raise self.fail(f"estimates/idx_components holds indices outside 0..{n_masks - 1}")
        types[:] = "unknown"
        types[good] = "soma"
        if bad is not None:
            bad = np.asarray(bad).ravel().astype(np.int64)
            if np.intersect1d(good, bad).size:
                self.warn("estimates/idx_components and idx_components_bad overlap; accepted wins")
        return types, "'soma' for estimates/idx_components, 'unknown' for the rest (idx_components_bad)"

    def params(self, f: h5py.File) -> dict:
        if "params" not in f or not isinstance(f["params"], h5py.Group):
            self.warn("no params group: CaImAn parameters (and piecewise block sizes) are unknown")
            return {}
        return _jsonable(_read_node(f["params"]))

    def version(self, params: dict) -> str:
        version = params.get("data", {}).get("caiman_version") if isinstance(params.get("data"), dict) else None
        return str(version) if version else "unknown"

    def creation_time(self, f: h5py.File) -> tuple[datetime, str]:
        provenance = f.attrs.get("provenance")
        if provenance is not None:
            try:
                events = json.loads(_decode_scalar(provenance))
                times = [int(e["time"]) for e in events if isinstance(e, dict) and "time" in e]
                if times:
                    return datetime.fromtimestamp(max(times), tz=timezone.utc), "provenance attribute (last event)"
            except (ValueError, TypeError):
                pass
        mtime = self.path.stat().st_mtime
        return datetime.fromtimestamp(mtime, tz=timezone.utc), "file modification time"

    def neuropil(
        self, estimates: h5py.Group, a: scipy.sparse.csc_matrix, nframes: int
    ) -> tuple[np.ndarray | None, str]:
        b = _get(estimates, "b")
        f = _get(estimates, "f")
        ring = _present(estimates, "W")
        if b is None or f is None:
            why = "ring-model background (W, b0) needs the movie" if ring else "no estimates/b and estimates/f"
            return None, f"none: {why}"
        b = b.toarray() if scipy.sparse.issparse(b) else np.asarray(b, dtype=np.float64)
        f = np.asarray(f, dtype=np.float64)
        if b.ndim == 1:
            b = b[:, None]
        if f.ndim == 1:
            f = f[None, :]
        if b.shape[1] == 0 or f.shape[0] == 0:
            why = "ring-model background (W, b0) needs the movie" if ring else "no background components (nb=0)"
            return None, f"none: {why}"
        if b.shape[0] != a.shape[0] or f.shape != (b.shape[1], nframes):
            self.warn(f"estimates/b {b.shape} and estimates/f {f.shape} do not fit the footprints; neuropil not computed")
            return None, "none: b/f shapes inconsistent"
        weights = np.asarray(a.sum(axis=0)).ravel()
        weights[weights == 0] = 1.0
        under_mask = np.asarray(a.T @ b)  # (K, nb): footprint-weighted background pixels
        return (under_mask @ f) / weights[:, None], f"footprint-weighted b.f ({b.shape[1]} background components)"

    # -- motion correction ----------------------------------------------------------------------

    def motion(
        self,
        group: h5py.Group | None,
        estimates: h5py.Group,
        frame_shape: tuple[int, int],
        nframes: int,
        params: dict,
    ) -> tuple[RigidMotion | None, PiecewiseRigidMotion | None, dict[str, np.ndarray], str]:
        motion_params = params.get("motion", {}) if isinstance(params.get("motion"), dict) else {}
        images: dict[str, np.ndarray] = {}
        if group is None:
            shifts = _get(estimates, "shifts")
            rigid, piecewise, source = self.shifts_from_estimates(shifts, frame_shape, nframes, motion_params)
            return rigid, piecewise, images, source
        where = f"{self.files.motion_file.name}:/{MOTION_GROUP}" if self.files.motion_file else MOTION_GROUP
        for name, field in (
            ("reference_image", "reference"),
            ("average_image", "mean"),
            ("max_image", "max_projection"),
            ("correlation_image", "correlation"),
            ("pnr_image", "peak_to_noise"),
        ):
            value = _get(group, name)
            if value is None:
                continue
            value = np.asarray(value, dtype=np.float64)
            if value.shape != frame_shape:
                raise MiniscopeInputError(
                    self.files.motion_file or self.path,
                    f"{MOTION_GROUP}/{name} has shape {value.shape}, expected {frame_shape} (estimates dims)",
                )
            images[field] = value
        rigid = piecewise = None
        shifts_rig = _get(group, "shifts_rig")
        if shifts_rig is not None:
            shifts_rig = np.asarray(shifts_rig, dtype=np.float64)
            self.check_frames(f"{MOTION_GROUP}/shifts_rig", shifts_rig, nframes, 2)
            rigid = RigidMotion(x_shifts=shifts_rig[:, 1].copy(), y_shifts=shifts_rig[:, 0].copy())
        x_els, y_els = _get(group, "x_shifts_els"), _get(group, "y_shifts_els")
        if x_els is not None and y_els is not None:
            piecewise = self.piecewise(
                np.asarray(x_els, dtype=np.float64),
                np.asarray(y_els, dtype=np.float64),
                _get(group, "coord_shifts_els"),
                frame_shape,
                nframes,
                motion_params,
            )
        if rigid is None and piecewise is None:
            self.warn(f"{where} holds no shifts (shifts_rig or x_shifts_els/y_shifts_els): motion will be absent")
        return rigid, piecewise, images, where

    def check_frames(self, name: str, shifts: np.ndarray, nframes: int, min_cols: int) -> None:
        if shifts.ndim != 2 or shifts.shape[0] != nframes or shifts.shape[1] < min_cols:
            raise MiniscopeInputError(
                self.files.motion_file or self.path,
                f"{name} has shape {shifts.shape}, expected ({nframes}, ...) -- one row per frame of estimates/C",
            )

    def piecewise(
        self,
        x_els: np.ndarray,
        y_els: np.ndarray,
        coords: Any,
        frame_shape: tuple[int, int],
        nframes: int,
        motion_params: dict,
    ) -> PiecewiseRigidMotion | None:
        self.check_frames(f"{MOTION_GROUP}/x_shifts_els", x_els, nframes, 1)
        self.check_frames(f"{MOTION_GROUP}/y_shifts_els", y_els, nframes, 1)
        if x_els.shape != y_els.shape:
            raise MiniscopeInputError(
                self.files.motion_file or self.path,
                f"x_shifts_els {x_els.shape} and y_shifts_els {y_els.shape} differ in shape",
            )
        strides, overlaps = motion_params.get("strides"), motion_params.get("overlaps")
        if coords is None:
            if strides is None or overlaps is None:
                self.warn("x_shifts_els without coord_shifts_els or params/motion strides+overlaps: piecewise motion dropped")
                return None
            coords = caiman_patch_grid(frame_shape, strides, overlaps)
        coords = np.asarray(coords, dtype=np.int64)
        if coords.ndim != 2 or coords.shape[1] < 4 or coords.shape[0] != x_els.shape[1]:
            raise MiniscopeInputError(
                self.files.motion_file or self.path,
                f"{MOTION_GROUP}/coord_shifts_els has shape {coords.shape}, expected ({x_els.shape[1]}, 4) "
                "-- one [row0, row1, col0, col1] per block",
            )
        height, width = frame_shape
        block_y = np.clip(coords[:, 0:2], 0, height)
        block_x = np.clip(coords[:, 2:4], 0, width)
        if strides is not None and overlaps is not None:
            block_height = int(strides[0]) + int(overlaps[0])
            block_width = int(strides[1]) + int(overlaps[1])
        else:
            block_height = int((coords[:, 1] - coords[:, 0]).max())
            block_width = int((coords[:, 3] - coords[:, 2]).max())
        return PiecewiseRigidMotion(
            block_height=block_height,
            block_width=block_width,
            block_count_y=len(np.unique(coords[:, 0])),
            block_count_x=len(np.unique(coords[:, 2])),
            block_y=block_y,
            block_x=block_x,
            x_shifts=y_els.copy(),  # CaImAn "y" = columns = our x
            y_shifts=x_els.copy(),  # CaImAn "x" = rows = our y
        )

    def shifts_from_estimates(
        self, shifts: Any, frame_shape: tuple[int, int], nframes: int, motion_params: dict
    ) -> tuple[RigidMotion | None, PiecewiseRigidMotion | None, str]:
        if shifts is None or np.asarray(shifts).size == 0:
            self.warn(f"no {MOTION_GROUP} group: motion correction and reference/max/correlation images will be absent")
            return None, None, "none"
        shifts = np.asarray(shifts, dtype=np.float64)
        self.warn(f"no {MOTION_GROUP} group: shifts read from estimates/shifts; reference/max/correlation images will be absent")
        if shifts.ndim == 2 and shifts.shape == (nframes, 2):
            return RigidMotion(x_shifts=shifts[:, 1].copy(), y_shifts=shifts[:, 0].copy()), None, "estimates/shifts (rigid)"
        if shifts.ndim == 3 and shifts.shape[0] == 2 and shifts.shape[1] == nframes:
            piecewise = self.piecewise(shifts[0], shifts[1], None, frame_shape, nframes, motion_params)
            return None, piecewise, "estimates/shifts (piecewise)"
        self.warn(f"estimates/shifts has shape {shifts.shape}, not (frames, 2) or (2, frames, blocks); ignored")
        return None, None, "none"

    # -- summary images ---------------------------------------------------------------------------

    def summary(
        self,
        images: dict[str, np.ndarray],
        estimates: h5py.Group,
        a_fortran: scipy.sparse.csc_matrix,
        c: np.ndarray,
        frame_shape: tuple[int, int],
    ) -> tuple[SummaryImages, str]:
        if "correlation" not in images:
            cn = _get(estimates, "Cn")
            if cn is not None and np.asarray(cn).shape == frame_shape:
                images["correlation"] = np.asarray(cn, dtype=np.float64)
        source = f"{MOTION_GROUP}/average_image"
        if "mean" not in images:
            if self.files.mmap_file is not None:
                mean, maximum = _movie_mean_max(self.files.mmap_file)
                images["mean"] = mean
                images.setdefault("max_projection", maximum)
                source = f"computed from {self.files.mmap_file.name}"
            else:
                images["mean"] = self.model_mean(estimates, a_fortran, c, frame_shape)
                source = "model reconstruction A.mean(C) + background (no average_image, no memmap)"
                self.warn("no average image and no memmap: the mean image is reconstructed from the CNMF model")
        return SummaryImages(**images), source

    def model_mean(
        self, estimates: h5py.Group, a: scipy.sparse.csc_matrix, c: np.ndarray, frame_shape: tuple[int, int]
    ) -> np.ndarray:
        mean = np.asarray(a @ (c.mean(axis=1) if c.size else np.zeros(a.shape[1]))).ravel()
        b, f, b0 = _get(estimates, "b"), _get(estimates, "f"), _get(estimates, "b0")
        if b is not None and f is not None:
            b = b.toarray() if scipy.sparse.issparse(b) else np.asarray(b, dtype=np.float64)
            f = np.asarray(f, dtype=np.float64)
            b = b[:, None] if b.ndim == 1 else b
            f = f[None, :] if f.ndim == 1 else f
            if b.shape[0] == mean.shape[0] and b.shape[1] == f.shape[0] and b.shape[1] > 0:
                mean = mean + b @ f.mean(axis=1)
        if b0 is not None and np.asarray(b0).size == mean.shape[0]:
            mean = mean + np.asarray(b0, dtype=np.float64).ravel()
        return _fortran_image(mean, frame_shape)


def _movie_mean_max(path: Path, chunk_frames: int = 500) -> tuple[np.ndarray, np.ndarray]:
    movie = open_caiman_mmap(path)
    total = np.zeros(movie.frame_shape, dtype=np.float64)
    maximum = np.full(movie.frame_shape, -np.inf)
    for _, frames in movie.iter_chunks(chunk_frames):
        total += frames.sum(axis=0, dtype=np.float64)
        maximum = np.maximum(maximum, frames.max(axis=0))
    count = max(movie.nframes, 1)
    return total / count, np.where(np.isfinite(maximum), maximum, 0.0)


def load_caiman_results(results_dir: str | Path) -> ProcessingResult:
    """Load a CaImAn result folder (or the result file itself) as a :class:`ProcessingResult`.

    Required: ``estimates/A``, ``estimates/C`` and a frame size (``estimates/dims``, ``dims`` or
    ``params/data/dims``). Everything else is optional; each absent optional part is reported
    with a :class:`CaimanResultsWarning` and listed in ``result.notes["warnings"]``.
    """
    files = locate_caiman_files(results_dir)
    try:
        return _load(files)
    except MiniscopeInputError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, OSError) as error:  # data of the wrong kind or shape
        raise MiniscopeInputError(files.cnmf_file, f"malformed CaImAn result ({type(error).__name__}: {error})") from None


def _load(files: CaimanResultFiles) -> ProcessingResult:
    loader = _Loader(files)
    try:
        handle = h5py.File(files.cnmf_file, "r")
    except OSError as error:
        raise MiniscopeInputError(files.cnmf_file, f"not a readable HDF5 file ({error})") from error
    with handle as f:
        if not isinstance(f.get("estimates"), h5py.Group):
            raise loader.fail("no 'estimates' group: not a CNMF result file")
        estimates = f["estimates"]
        frame_shape = loader.frame_shape(f, estimates)
        a_fortran = loader.footprints(estimates, frame_shape)
        n_masks = a_fortran.shape[1]
        c, nframes = loader.traces(f, estimates, n_masks)
        params = loader.params(f)
        yra = loader.optional_trace(estimates, "YrA", n_masks, nframes)
        if yra is None:
            yra = loader.optional_trace(estimates, "R", n_masks, nframes)
            if yra is None:
                loader.warn("no estimates/YrA (residuals): fluorescence equals the denoised trace C")
        spikes = loader.optional_trace(estimates, "S", n_masks, nframes)
        if spikes is None:
            loader.warn("no estimates/S (deconvolved activity): spikes will be absent")
        dff = loader.optional_trace(estimates, "F_dff", n_masks, nframes)
        mask_types, types_source = loader.classification(estimates, n_masks)
        cnn = loader.per_mask(estimates, "cnn_preds", n_masks)
        snr = loader.per_mask(estimates, "SNR_comp", n_masks)
        r_values = loader.per_mask(estimates, "r_values", n_masks)
        neuropil, neuropil_source = loader.neuropil(estimates, a_fortran, nframes)
        creation_time, time_source = loader.creation_time(f)
        runmode = _decode_scalar(f.attrs.get("runmode")) if "runmode" in f.attrs else _get(f, "runmode")
        if files.motion_file is None or files.motion_file == files.cnmf_file:
            group = f[MOTION_GROUP] if MOTION_GROUP in f else None
            rigid, piecewise, images, motion_source = loader.motion(group, estimates, frame_shape, nframes, params)
        else:
            with h5py.File(files.motion_file, "r") as side:
                rigid, piecewise, images, motion_source = loader.motion(
                    side[MOTION_GROUP], estimates, frame_shape, nframes, params
                )
        summary, summary_source = loader.summary(images, estimates, a_fortran, c, frame_shape)
        background = "none"
        if _present(estimates, "W"):
            background = "ring model (estimates/W, estimates/b0)"
        elif _present(estimates, "b"):
            background = "global low-rank (estimates/b, estimates/f)"

    loader.notes.update(
        caiman_runmode=runmode,
        mask_types_source=types_source,
        confidence_source="estimates/cnn_preds" if cnn is not None else "none (NaN): no CNN predictions",
        fluorescence_source="C + YrA" if yra is not None else "C (no YrA)",
        neuropil_source=neuropil_source,
        background_model=background,
        motion_source=motion_source,
        summary_mean_source=summary_source,
        creation_time_source=time_source,
        snr=None if snr is None else snr.tolist(),
        r_values=None if r_values is None else r_values.tolist(),
        warnings=loader.warnings,
    )
    fluorescence = c + yra if yra is not None else c
    result = ProcessingResult(
        method="caiman",
        package_version=loader.version(params),
        params=params,
        creation_time=creation_time,
        frame_shape=frame_shape,
        nframes=int(nframes),
        summary=summary,
        mask_ids=np.arange(n_masks, dtype=np.int64),
        footprints=fortran_to_row_major(a_fortran, frame_shape),
        mask_types=mask_types,
        mask_confidence=(cnn if cnn is not None else np.full(n_masks, np.nan)).astype(np.float32),
        fluorescence=fluorescence.astype(np.float32),
        motion_rigid=rigid,
        motion_piecewise=piecewise,
        neuropil=None if neuropil is None else neuropil.astype(np.float32),
        denoised=c.astype(np.float32),
        dff=None if dff is None else dff.astype(np.float32),
        spikes=None if spikes is None else spikes.astype(np.float32),
        corrected_movie=None if files.mmap_file is None else str(files.mmap_file),
        notes=loader.notes,
    )
    try:
        result.validate()
    except ValueError as error:
        raise MiniscopeInputError(files.cnmf_file, f"inconsistent CaImAn result: {error}") from error
    return result
