"""Trigger CaImAn (motion correction + CNMF-E) on a recording's AVI files, when CaImAn is installed.

CaImAn is distributed on conda-forge only; the PyPI package named ``caiman`` is an unrelated
project. Nothing here imports CaImAn at module import time: :func:`caiman_available` checks for it
and :func:`run_caiman` imports it when called.

The output folder receives what :func:`miniscope_assets.io.caiman_results.load_caiman_results`
reads, in the layout of DataJoint's ``element_interface.run_caiman``:

- ``memmap__d1_<rows>_d2_<cols>_d3_1_order_C_frames_<T>.mmap``: the motion-corrected movie CNMF
  analysed (CaImAn's ``save_memmap``),
- ``<same stem>.hdf5``: ``CNMF.save()`` output plus a ``/motion_correction`` group (shifts,
  ``coord_shifts_*`` block grid, reference/average/max/correlation images, and ``pnr_image``),
- CaImAn's intermediate motion-correction memmap(s) (``CAIMAN_TEMP`` points at the output folder
  during the run).
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import importlib.util
import math
import os
from pathlib import Path
from typing import Any, Iterator

import h5py
import numpy as np

from miniscope_assets.errors import MiniscopeInputError, ParameterError
from miniscope_assets.io.caiman_mmap import open_caiman_mmap
from miniscope_assets.io.caiman_results import MOTION_GROUP, caiman_patch_grid

INSTALL_MESSAGE = (
    "CaImAn is not installed: the package 'caiman' with 'caiman.source_extraction.cnmf' cannot be "
    "imported in this Python environment. CaImAn is distributed on conda-forge, not PyPI: install "
    "it with `conda install -c conda-forge caiman` (or mamba), then run `caimanmanager install` "
    "once to set up its data/model folder. Do not `pip install caiman`: the PyPI package named "
    "`caiman` is an unrelated project. Alternatively use the built-in method, which needs no "
    "extra installation: set `method: builtin` on the paramset (processing_method: builtin)."
)

CNMF_GROUPS = (
    "data", "patch", "preprocess", "init", "spatial", "temporal",
    "merging", "quality", "online", "motion", "ring_CNN",
)

# CNMF-E defaults for 1-photon miniscope data (after CaImAn's demo_pipeline_cnmfE), by CNMFParams group.
CNMFE_DEFAULTS: dict[str, dict[str, Any]] = {
    "data": {"decay_time": 0.4},
    "motion": {
        "pw_rigid": True,
        "max_shifts": (5, 5),
        "gSig_filt": (3, 3),
        "strides": (48, 48),
        "overlaps": (24, 24),
        "max_deviation_rigid": 3,
        "border_nan": "copy",
    },
    "init": {
        "method_init": "corr_pnr",
        "K": None,
        "gSig": (3, 3),
        "gSiz": (13, 13),
        "center_psf": True,
        "ring_size_factor": 1.4,
        "nb": 0,
        "min_corr": 0.8,
        "min_pnr": 10,
        "normalize_init": False,
        "ssub": 1,
        "tsub": 2,
        "ssub_B": 2,
    },
    "patch": {
        "rf": 40,
        "stride": 20,
        "only_init": True,
        "nb_patch": 0,
        "low_rank_background": None,
        "del_duplicates": True,
    },
    "spatial": {"update_background_components": True},
    "preprocess": {"p": 1},
    "temporal": {"p": 1, "method_deconvolution": "oasis"},
    "merging": {"merge_thr": 0.7},
    "quality": {"min_SNR": 3, "rval_thr": 0.85, "use_cnn": False},
}

# Flat keys we default, routed to their group(s) so a flat override replaces our default.
_FLAT_ROUTES: dict[str, tuple[str, ...]] = {}
for _group, _values in CNMFE_DEFAULTS.items():
    for _key in _values:
        _FLAT_ROUTES.setdefault(_key, ())
        _FLAT_ROUTES[_key] += (_group,)
_FLAT_ROUTES.update({"merge_thresh": ("merging",), "gnb": ("init",), "k": ("init",)})
_FLAT_RENAMES = {"merge_thresh": "merge_thr", "gnb": "nb", "k": "K"}

# What makes this run CNMF-E with a ring-model background: not overridable.
_FIXED = {("init", "method_init"): "corr_pnr", ("init", "center_psf"): True, ("init", "nb"): 0}
_SET_BY_RUN = {("data", "fnames"), ("data", "fr"), ("data", "dims")}
_RUN_KEYS = ("n_processes",)  # our own keys, not CaImAn parameters


class CaimanNotInstalledError(RuntimeError):
    """CaImAn (conda-forge) is needed but cannot be imported."""

    def __init__(self, message: str = INSTALL_MESSAGE):
        super().__init__(message)


def caiman_available() -> bool:
    """True when a real CaImAn (with ``caiman.source_extraction.cnmf``) can be imported."""
    try:
        if importlib.util.find_spec("caiman") is None:
            return False
        importlib.import_module("caiman.source_extraction.cnmf")
    except Exception:  # ImportError, or a broken/unrelated 'caiman' failing on import
        return False
    return True


def caiman_params_dict(params: dict, avi_paths: list[Path], fps: float) -> tuple[dict, dict]:
    """(CNMFParams ``params_dict``, run options) from a paramset's ``params``.

    ``params`` may hold CNMFParams groups (``{"motion": {...}, "init": {...}}``) and/or flat
    CaImAn keys (``{"gSig": [3, 3]}``); both override :data:`CNMFE_DEFAULTS`. The returned dict
    lists the group dicts first and the remaining flat keys after them, the form
    ``CNMFParams(params_dict=...)`` accepts (CaImAn >= 1.9). ``fnames``/``fr`` come from the
    recording; ``method_init='corr_pnr'``, ``center_psf=True`` and ``nb=0`` (ring model) are fixed.
    """
    if not isinstance(params, dict):
        raise ParameterError(f"CaImAn params must be a mapping, got {type(params).__name__}")
    nested = copy.deepcopy(CNMFE_DEFAULTS)
    flat: dict[str, Any] = {}
    run = {key: params[key] for key in _RUN_KEYS if key in params}
    for key, value in params.items():
        if key in _RUN_KEYS:
            continue
        if key in CNMF_GROUPS:
            if not isinstance(value, dict):
                raise ParameterError(f"CaImAn params group {key!r} must be a mapping, got {value!r}")
            nested.setdefault(key, {}).update(value)
        elif key in _FLAT_ROUTES:
            for group in _FLAT_ROUTES[key]:
                nested[group][_FLAT_RENAMES.get(key, key)] = value
        else:
            flat[key] = value
    for (group, key), fixed in _FIXED.items():
        if nested.get(group, {}).get(key, fixed) != fixed or flat.get(key, fixed) != fixed:
            raise ParameterError(
                f"CaImAn param {group}.{key} is fixed to {fixed!r} for CNMF-E with a ring-model background"
            )
    if nested["init"].get("ring_size_factor") is None:
        raise ParameterError("CaImAn param init.ring_size_factor must be set (ring-model background)")
    for group, key in _SET_BY_RUN:
        if key in nested.get(group, {}) or key in flat:
            raise ParameterError(f"CaImAn param {group}.{key} is set from the recording; remove it from params")
    if "n_processes" in run and not (isinstance(run["n_processes"], int) and run["n_processes"] >= 1):
        raise ParameterError(f"n_processes must be a positive integer, got {run['n_processes']!r}")
    nested["data"].update(fnames=[str(p) for p in avi_paths], fr=float(fps))
    return {**nested, **flat}, run


@contextlib.contextmanager
def _environment(name: str, value: str) -> Iterator[None]:
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


def _validate_inputs(avi_paths: list[Path], fps: float, output_dir: Path) -> list[Path]:
    if not avi_paths:
        raise MiniscopeInputError(output_dir, "no AVI files given to run CaImAn on")
    paths = [Path(p) for p in avi_paths]
    for path in paths:
        if not path.is_file():
            raise MiniscopeInputError(path, "AVI file does not exist")
    if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise ParameterError(f"fps must be a positive number, got {fps!r}")
    return paths


def _summary_from_mmap(path: Path) -> tuple[np.ndarray, np.ndarray]:
    movie = open_caiman_mmap(path)
    total = np.zeros(movie.frame_shape, dtype=np.float64)
    maximum = np.full(movie.frame_shape, -np.inf, dtype=np.float64)
    for _, frames in movie.iter_chunks(500):
        total += frames.sum(axis=0, dtype=np.float64)
        maximum = np.maximum(maximum, frames.max(axis=0))
    return (total / max(movie.nframes, 1)).astype(np.float32), maximum.astype(np.float32)


def write_motion_correction_group(
    path: Path,
    *,
    dims: tuple[int, int],
    strides: tuple[int, int],
    overlaps: tuple[int, int],
    reference_image: np.ndarray,
    average_image: np.ndarray,
    max_image: np.ndarray,
    correlation_image: np.ndarray,
    shifts_rig: np.ndarray | None = None,
    x_shifts_els: np.ndarray | None = None,
    y_shifts_els: np.ndarray | None = None,
    pnr_image: np.ndarray | None = None,
) -> None:
    """Add element-interface's ``/motion_correction`` group to a ``CNMF.save`` file.

    Datasets as ``element_interface.caiman_loader._save_mc`` writes them (CaImAn axis naming:
    "x" = rows): ``shifts_rig`` (T, 2) and ``coord_shifts_rig`` for rigid registration, or
    ``x_shifts_els``/``y_shifts_els`` (T, n_blocks) and ``coord_shifts_els`` (n_blocks, 4) for
    piecewise-rigid; ``reference_image``, ``average_image``, ``max_image``,
    ``correlation_image`` (rows, cols). ``pnr_image`` is our addition (CNMF-E's peak-to-noise).
    """
    grid = caiman_patch_grid(dims, strides, overlaps)
    with h5py.File(path, "r+") as f:
        group = f.require_group(MOTION_GROUP)
        if x_shifts_els is not None and y_shifts_els is not None:
            group.create_dataset("x_shifts_els", data=np.asarray(x_shifts_els, dtype=np.float64))
            group.create_dataset("y_shifts_els", data=np.asarray(y_shifts_els, dtype=np.float64))
            group.create_dataset("coord_shifts_els", data=grid)
        if shifts_rig is not None:
            group.create_dataset("shifts_rig", data=np.asarray(shifts_rig, dtype=np.float64))
            if x_shifts_els is None:
                group.create_dataset("coord_shifts_rig", data=grid)
        for name, image in (
            ("reference_image", reference_image),
            ("correlation_image", correlation_image),
            ("average_image", average_image),
            ("max_image", max_image),
            ("pnr_image", pnr_image),
        ):
            if image is not None:
                image = np.nan_to_num(np.asarray(image, dtype=np.float32))
                group.create_dataset(name, data=image)


def run_caiman(avi_paths: list[Path], params: dict, fps: float, output_dir: Path) -> Path:
    """Motion-correct and run CNMF-E on ``avi_paths`` with CaImAn; return ``output_dir``.

    Raises :class:`CaimanNotInstalledError` when CaImAn cannot be imported. The result is
    written as ``<memmap stem>.hdf5`` in ``output_dir`` (see module docstring), first under a
    hidden temporary name and renamed once the motion_correction group is in it.
    """
    if not caiman_available():
        raise CaimanNotInstalledError()
    output_dir = Path(output_dir)
    paths = _validate_inputs(avi_paths, fps, output_dir)
    params_dict, run = caiman_params_dict(params, paths, fps)
    output_dir.mkdir(parents=True, exist_ok=True)

    import caiman  # noqa: F401  (real CaImAn from conda-forge)
    import caiman.cluster
    import caiman.mmapping
    import caiman.summary_images
    from caiman.motion_correction import MotionCorrect
    from caiman.source_extraction.cnmf.cnmf import CNMF
    from caiman.source_extraction.cnmf.params import CNMFParams

    n_processes = run.get("n_processes")
    dview = None
    with _environment("CAIMAN_TEMP", str(output_dir)):
        try:
            if n_processes != 1:
                _, dview, n_processes = caiman.cluster.setup_cluster(
                    backend="multiprocessing", n_processes=n_processes, single_thread=False
                )
            opts = CNMFParams(params_dict=params_dict)
            motion = opts.get_group("motion")
            mc = MotionCorrect([str(p) for p in paths], dview=dview, **motion)
            mc.motion_correct(save_movie=True)
            pw_rigid = bool(motion["pw_rigid"])
            if pw_rigid:
                fname_mc = mc.fname_tot_els
                border = max(np.max(np.abs(mc.x_shifts_els)), np.max(np.abs(mc.y_shifts_els)))
            else:
                fname_mc = mc.fname_tot_rig
                border = np.max(np.abs(mc.shifts_rig))
            border_px = 0 if motion.get("border_nan") == "copy" else int(np.ceil(border))
            fname_new = caiman.mmapping.save_memmap(
                list(fname_mc), base_name=str(output_dir / "memmap_"), order="C", border_to_0=border_px
            )
            yr, dims, nframes = caiman.mmapping.load_memmap(fname_new)
            images = np.reshape(yr.T, [nframes] + list(dims), order="F")
            opts.change_params({"data": {"dims": dims}, "patch": {"border_pix": border_px}})
            gsig = opts.get_group("init")["gSig"]
            correlation, pnr = caiman.summary_images.correlation_pnr(
                images, gSig=int(np.atleast_1d(gsig)[0]), swap_dim=False
            )
            cnm = CNMF(n_processes=n_processes, dview=dview, params=opts)
            cnm.fit(images)
            cnm.estimates.evaluate_components(images, cnm.params, dview=dview)
            cnm.estimates.Cn = correlation
            cnm.mmap_file = str(fname_new)

            final = output_dir / (Path(fname_new).stem + ".hdf5")
            partial = output_dir / f".{final.stem}.partial.hdf5"
            cnm.save(str(partial))
            shifts_rig = getattr(mc, "shifts_rig", None)
            if shifts_rig is not None and len(shifts_rig) != nframes:
                shifts_rig = None  # e.g. only the piecewise pass covers every frame
            average, maximum = _summary_from_mmap(Path(fname_new))
            write_motion_correction_group(
                partial,
                dims=(int(dims[0]), int(dims[1])),
                strides=tuple(motion["strides"]),
                overlaps=tuple(motion["overlaps"]),
                reference_image=mc.total_template_els if pw_rigid else mc.total_template_rig,
                average_image=average,
                max_image=maximum,
                correlation_image=correlation,
                pnr_image=pnr,
                shifts_rig=None if shifts_rig is None else np.asarray(shifts_rig),
                x_shifts_els=np.asarray(mc.x_shifts_els) if pw_rigid else None,
                y_shifts_els=np.asarray(mc.y_shifts_els) if pw_rigid else None,
            )
            os.replace(partial, final)
        finally:
            for leftover in output_dir.glob(".*.partial.hdf5"):
                leftover.unlink(missing_ok=True)
            if dview is not None:
                stop = getattr(caiman.cluster, "stop_server", None) or getattr(caiman, "stop_server")
                stop(dview=dview)
    return output_dir
