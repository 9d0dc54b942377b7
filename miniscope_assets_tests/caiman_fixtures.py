"""Test helpers: CaImAn-format result folders built with h5py, field by field.

The writer below reproduces the behaviour of CaImAn's ``save_dict_to_hdf5`` /
``recursively_save_dict_contents_to_group`` (``caiman/utils/utils.py``) -- it is an independent
re-implementation for tests, not CaImAn's code:

- dicts (and the ``params`` / ``estimates`` objects) become groups; ``provenance`` becomes a JSON
  attribute of the root; the keys CaImAn skips (``groups``, ``coordinates``, ``merged_ROIs`` ...)
  are skipped;
- lists/tuples of strings become a fixed-length bytes array, other lists/tuples ``np.array``;
- strings become attributes of their group (CaImAn >= 1.9.9) or string datasets (older, legacy);
- ints/floats/bools and arrays become datasets (arrays that h5py cannot store, e.g. slices,
  are stored as ``|S32`` strings);
- sparse matrices become a group ``data``/``indptr``/``indices``/``shape`` in CSC form;
- ``None`` (and ``dview``) become the string dataset ``'NoneType'``.

The motion_correction group follows ``element_interface.caiman_loader._save_mc``.
"""

from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import scipy.sparse

NONE = "NoneType"
SKIPPED_KEYS = {
    "groups", "idx_tot", "ind_A", "Ab_epoch", "coordinates", "loaded_model",
    "optional_outputs", "merged_ROIs", "empty_merged",
}


# ----------------------------------------------------------------------------------------------
# CaImAn-style dict -> HDF5 writer
# ----------------------------------------------------------------------------------------------


def save_dict_caiman_style(filename: str | Path, dic: dict, *, strings_as_attrs: bool = True) -> None:
    """Write ``dic`` the way CaImAn's ``save_dict_to_hdf5`` does (see module docstring)."""
    with h5py.File(filename, "w") as h5file:
        _save_group(h5file, "/", dic, strings_as_attrs)
        if "provenance" in dic and strings_as_attrs:
            h5file.attrs.create("provenance", data=json.dumps(dic["provenance"]), dtype=h5py.string_dtype())


def _save_group(h5file: h5py.File, path: str, dic: dict, strings_as_attrs: bool) -> None:
    for key, item in dic.items():
        key = str(key)
        if key == "provenance" or key in SKIPPED_KEYS:
            continue
        if isinstance(item, (list, tuple)):
            if len(item) > 0 and all(isinstance(e, str) for e in item):
                item = np.array([e.encode() for e in item])
            else:
                item = np.array(item, dtype=object if any(isinstance(e, slice) for e in item) else None)
        if isinstance(item, str):
            if strings_as_attrs:
                group = h5file.require_group(path)
                group.attrs[key] = item
            else:
                h5file[path + key] = item
        elif isinstance(item, (bool, int, float, np.integer, np.floating, np.bool_)):
            h5file[path + key] = item
        elif isinstance(item, np.ndarray):
            try:
                h5file[path + key] = item
            except (TypeError, ValueError):
                h5file[path + key] = np.array([str(v) for v in item.ravel()]).astype("|S32")
        elif isinstance(item, dict):
            _save_group(h5file, path + key + "/", item, strings_as_attrs)
        elif scipy.sparse.issparse(item):
            csc = scipy.sparse.csc_matrix(item)
            h5file[path + key + "/data"] = csc.data
            h5file[path + key + "/indptr"] = csc.indptr
            h5file[path + key + "/indices"] = csc.indices
            h5file[path + key + "/shape"] = np.array(csc.shape)
        elif item is None or key == "dview":
            h5file[path + key] = NONE
        else:
            raise ValueError(f"cannot save {type(item)} for key {key!r}")


# ----------------------------------------------------------------------------------------------
# A synthetic CaImAn result with known answers
# ----------------------------------------------------------------------------------------------

# An L-shaped footprint in a non-square FOV, as (y=row, x=column, weight), and two more masks.
L_SHAPE = [(1, 1, 0.10), (2, 1, 0.20), (3, 1, 0.30), (4, 1, 0.40), (4, 2, 0.50), (4, 3, 0.60)]
TOP_BAR = [(0, 6, 0.70), (0, 7, 0.80), (0, 8, 0.90)]
BLOB = [(2, 5, 0.25), (2, 6, 0.35), (3, 5, 0.45), (3, 6, 0.55)]


@dataclass
class Scenario:
    """Arrays of a synthetic result: images in (row, col) = (y, x), CaImAn arrays as CaImAn stores them."""

    height: int
    width: int
    nframes: int
    masks: list[list[tuple[int, int, float]]]
    pw_rigid: bool
    background: str  # "global" (b, f) or "ring" (W, b0)
    strides: tuple[int, int] = (2, 3)
    overlaps: tuple[int, int] = (2, 2)
    arrays: dict[str, Any] = field(default_factory=dict)

    @property
    def n_masks(self) -> int:
        return len(self.masks)

    def footprint_image(self, k: int) -> np.ndarray:
        image = np.zeros((self.height, self.width))
        for y, x, w in self.masks[k]:
            image[y, x] = w
        return image

    @property
    def a_fortran(self) -> scipy.sparse.csc_matrix:
        columns = [self.footprint_image(k).ravel(order="F") for k in range(self.n_masks)]
        return scipy.sparse.csc_matrix(np.stack(columns, axis=1))

    def movie(self) -> np.ndarray:
        """(T, H, W) float32 movie: the CNMF model plus a little structure."""
        a = self.a_fortran.toarray()
        y = a @ self.arrays["C"]
        if self.background == "global":
            y = y + self.arrays["b"] @ self.arrays["f"]
        frames = y.T.reshape(self.nframes, self.width, self.height).transpose(0, 2, 1)
        return (frames + 1.0).astype(np.float32)


def patch_grid(dims: tuple[int, int], strides: tuple[int, int], overlaps: tuple[int, int]) -> np.ndarray:
    """Independent re-statement of CaImAn's sliding_window patch starts (rows slowest)."""
    out = []
    win = (strides[0] + overlaps[0], strides[1] + overlaps[1])
    rows = list(range(0, dims[0] - win[0], strides[0])) + [dims[0] - win[0]]
    cols = list(range(0, dims[1] - win[1], strides[1])) + [dims[1] - win[1]]
    for r in rows:
        for c in cols:
            out.append([r, r + win[0], c, c + win[1]])
    return np.array(out)


def make_scenario(
    *, height: int = 6, width: int = 9, nframes: int = 12, pw_rigid: bool = False,
    background: str = "global", seed: int = 0,
) -> Scenario:
    rng = np.random.default_rng(seed)
    s = Scenario(height, width, nframes, [L_SHAPE, TOP_BAR, BLOB], pw_rigid, background)
    k, t, d = s.n_masks, nframes, height * width
    s.arrays["C"] = rng.uniform(0.0, 5.0, (k, t))
    s.arrays["YrA"] = rng.normal(0.0, 0.5, (k, t))
    s.arrays["S"] = np.maximum(rng.normal(0.0, 1.0, (k, t)), 0.0)
    s.arrays["F_dff"] = rng.normal(0.0, 0.2, (k, t))
    if background == "global":
        b_image = np.linspace(1.0, 2.0, d).reshape(height, width)  # (row, col) image
        s.arrays["b"] = b_image.ravel(order="F")[:, None]  # (d, 1), Fortran pixel order
        s.arrays["f"] = rng.uniform(10.0, 20.0, (1, t))
    else:
        s.arrays["b"] = np.zeros((d, 0))
        s.arrays["f"] = np.zeros((0, t))
        s.arrays["W"] = scipy.sparse.random(d, d, density=0.05, random_state=seed, format="csr")
        s.arrays["b0"] = rng.uniform(5.0, 6.0, d)
    s.arrays["idx_components"] = np.array([0, 2])
    s.arrays["idx_components_bad"] = np.array([1])
    s.arrays["SNR_comp"] = np.array([4.5, 1.2, 3.3])
    s.arrays["r_values"] = np.array([0.9, 0.1, 0.8])
    s.arrays["cnn_preds"] = np.array([], dtype=np.float64)  # use_cnn=False: CaImAn stores []
    s.arrays["Cn"] = rng.uniform(0.0, 1.0, (height, width))
    s.arrays["shifts_rig"] = rng.normal(0.0, 2.0, (t, 2))  # [:, 0] rows ("x"), [:, 1] cols ("y")
    grid = patch_grid((height, width), s.strides, s.overlaps)
    s.arrays["coord_shifts_els"] = grid
    s.arrays["x_shifts_els"] = rng.normal(0.0, 1.0, (t, len(grid)))  # row shifts per block
    s.arrays["y_shifts_els"] = rng.normal(5.0, 1.0, (t, len(grid)))  # column shifts per block
    for name in ("reference_image", "average_image", "max_image", "correlation_image"):
        s.arrays[name] = rng.uniform(0.0, 100.0, (height, width)).astype(np.float32)
    return s


def params_dict(s: Scenario, *, version: str | None = "1.11.3") -> dict:
    """A CNMFParams.__dict__ with the groups and the value types CaImAn really holds."""
    data = {
        "fnames": ["/data/rec/0.avi", "/data/rec/1.avi"],
        "dims": (s.height, s.width),
        "fr": 20.0,
        "decay_time": 0.4,
        "dxy": (1.0, 1.0),
        "var_name_hdf5": "mov",
        "last_commit": "GITW-0123abcd",
        "mmap_F": None,
        "mmap_C": None,
    }
    if version is not None:
        data["caiman_version"] = version
    return {
        "data": data,
        "patch": {"rf": 40, "stride": 20, "only_init": True, "nb_patch": 0, "low_rank_background": None,
                  "del_duplicates": True, "border_pix": 0, "n_processes": 4},
        "preprocess": {"p": 1, "noise_range": [0.25, 0.5], "noise_method": "mean", "pixels": None, "sn": None},
        "init": {"method_init": "corr_pnr", "K": None, "gSig": (3, 3), "gSiz": (13, 13), "center_psf": True,
                 "ring_size_factor": 1.4, "nb": 0 if s.background == "ring" else 1, "min_corr": 0.8,
                 "min_pnr": 10.0, "normalize_init": False, "ssub": 1, "tsub": 2, "ssub_B": 2,
                 "sigma_smooth_snmf": (0.5, 0.5, 0.5)},
        "spatial": {"expandCore": np.ones((5, 5), dtype=int), "se": None, "thr_method": "nrg",
                    "update_background_components": True},
        "temporal": {"p": 1, "method_deconvolution": "oasis", "solvers": ["ECOS", "SCS"], "s_min": None},
        "merging": {"do_merge": True, "merge_thr": 0.7, "merge_parallel": False, "max_merge_area": None},
        "quality": {"min_SNR": 3.0, "rval_thr": 0.85, "use_cnn": False, "min_cnn_thr": 0.9, "gSig_range": None},
        "online": {"init_batch": s.nframes, "ring_CNN": False},
        "motion": {"border_nan": "copy", "gSig_filt": (3, 3), "is3D": False, "max_deviation_rigid": 3,
                   "max_shifts": (5, 5), "min_mov": None, "niter_rig": 1, "nonneg_movie": True,
                   "overlaps": s.overlaps, "pw_rigid": s.pw_rigid, "strides": s.strides,
                   "splits_els": 14, "splits_rig": 14, "upsample_factor_grid": 4, "use_cuda": False,
                   "indices": (slice(None), slice(None))},
        "ring_CNN": {"n_channels": 2, "lr_scheduler": None, "path_to_model": None},
    }


def estimates_dict(s: Scenario, *, evaluated: bool = True, with_dff: bool = True, with_yra: bool = True,
                   with_spikes: bool = True, cnn: np.ndarray | None = None, shifts: Any = None) -> dict:
    """An Estimates.__dict__ as CNMF(-E) leaves it."""
    a = s.arrays
    est = {
        "A": s.a_fortran,
        "C": a["C"],
        "f": a["f"],
        "b": a["b"],
        "R": a["YrA"] if with_yra else None,
        "W": a.get("W"),
        "b0": a.get("b0"),
        "YrA": a["YrA"] if with_yra else None,
        "S": a["S"] if with_spikes else None,
        "sn": np.full(s.height * s.width, 0.5),
        "g": [np.array([0.9])] * s.n_masks,
        "bl": [0.0] * s.n_masks,
        "c1": [0.0] * s.n_masks,
        "neurons_sn": [0.1] * s.n_masks,
        "lam": [0.0] * s.n_masks,
        "center": np.array([[3.0, 1.5], [0.0, 7.0], [2.5, 5.5]]),
        "merged_ROIs": [],  # skipped by CaImAn's writer
        "coordinates": None,  # skipped
        "F_dff": a["F_dff"] if with_dff else None,
        "idx_components": a["idx_components"] if evaluated else None,
        "idx_components_bad": a["idx_components_bad"] if evaluated else None,
        "SNR_comp": a["SNR_comp"] if evaluated else None,
        "r_values": a["r_values"] if evaluated else None,
        "cnn_preds": (a["cnn_preds"] if cnn is None else cnn) if evaluated else None,
        "noisyC": None,
        "C_on": None,
        "Ab": None,
        "dims": (s.height, s.width),
        "shifts": [] if shifts is None else shifts,
        "A_thr": None,
        "discarded_components": None,
        "Cn": a["Cn"],
    }
    return est


def cnmf_dict(s: Scenario, *, mmap_file: str | None = None, version: str | None = "1.11.3",
              provenance_time: int = 1_700_000_000, **estimate_options: Any) -> dict:
    """A CNMF.__dict__ (what CNMF.save writes)."""
    return {
        "runmode": "CNMF",
        "dview": None,
        "dims": (s.height, s.width),
        "empty_merged": None,
        "provenance": [
            {"event": "create", "time": provenance_time - 100, "description": "CNMF Object created"},
            {"event": "fit", "time": provenance_time, "description": "Ran fit"},
        ],
        "params": params_dict(s, version=version),
        "estimates": estimates_dict(s, **estimate_options),
        "mmap_file": mmap_file,
        "skip_refinement": False,
        "remove_very_bad_comps": False,
    }


def write_motion_group(target: h5py.File, s: Scenario) -> None:
    """element-interface's /motion_correction group (caiman_loader._save_mc layout)."""
    a = s.arrays
    group = target.require_group("motion_correction")
    if s.pw_rigid:
        group.create_dataset("x_shifts_els", data=a["x_shifts_els"])
        group.create_dataset("y_shifts_els", data=a["y_shifts_els"])
        group.create_dataset("coord_shifts_els", data=a["coord_shifts_els"])
    else:
        group.create_dataset("shifts_rig", data=a["shifts_rig"])
        group.create_dataset("coord_shifts_rig", data=a["coord_shifts_els"])
    for name in ("reference_image", "correlation_image", "average_image", "max_image"):
        group.create_dataset(name, data=a[name])


def write_caiman_mmap(folder: Path, movie: np.ndarray, *, base: str = "memmap_", order: str = "C",
                      trailing_underscore: bool = False) -> Path:
    """A CaImAn .mmap: float32 (pixels, frames) in ``order``, pixels Fortran-flattened, shape in the name."""
    t, h, w = movie.shape
    suffix = "_" if trailing_underscore else ""
    path = Path(folder) / f"{base}_d1_{h}_d2_{w}_d3_1_order_{order}_frames_{t}{suffix}.mmap"
    yr = movie.reshape(t, h * w, order="F").T.astype(np.float32)  # (pixels, frames)
    data = yr if order == "C" else yr.T  # F order bytes of yr == C order bytes of yr.T
    np.ascontiguousarray(data).tofile(path)
    return path


def write_caiman_folder(
    folder: Path,
    s: Scenario,
    *,
    motion: str | None = "in_file",  # "in_file" | "sidecar" | None
    mmap: bool = False,
    legacy_strings: bool = False,
    result_name: str | None = None,
    **cnmf_options: Any,
) -> Path:
    """A results folder as element-interface's run_caiman leaves it; returns the CNMF file."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    mmap_path = write_caiman_mmap(folder, s.movie()) if mmap else None
    if result_name is None:
        result_name = (mmap_path.stem if mmap_path else "caiman_results") + ".hdf5"
    path = folder / result_name
    dic = cnmf_dict(s, mmap_file=None if mmap_path is None else f"/elsewhere/{mmap_path.name}", **cnmf_options)
    save_dict_caiman_style(path, dic, strings_as_attrs=not legacy_strings)
    if motion == "in_file":
        with h5py.File(path, "r+") as f:
            write_motion_group(f, s)
    elif motion == "sidecar":
        with h5py.File(folder / "motion_correction.hdf5", "w") as f:
            write_motion_group(f, s)
    return path


# ----------------------------------------------------------------------------------------------
# A fake, importable ``caiman`` package (records calls, writes real CaImAn-layout files)
# ----------------------------------------------------------------------------------------------

FAKE_SOURCES = {
    "caiman/__init__.py": '''
        """Fake CaImAn for miniscope-assets tests."""
        __version__ = "0.0-fake"
        CALLS = []

        def stop_server(dview=None):
            CALLS.append(("stop_server", dview))
        ''',
    "caiman/cluster.py": '''
        import caiman

        def setup_cluster(backend="multiprocessing", n_processes=None, single_thread=False):
            caiman.CALLS.append(("setup_cluster", backend, n_processes))
            return None, "fake-dview", n_processes or 2

        def stop_server(dview=None):
            caiman.CALLS.append(("stop_server", dview))
        ''',
    "caiman/mmapping.py": '''
        import os, re
        import numpy as np
        import caiman

        NAME = re.compile(r"_d1_(\\d+)_d2_(\\d+)_d3_(\\d+)_order_([CF])_frames_(\\d+)_?\\.mmap$")

        def load_memmap(filename, mode="r"):
            d1, d2, d3, order, t = NAME.search(os.path.basename(filename)).groups()
            d1, d2, t = int(d1), int(d2), int(t)
            yr = np.memmap(filename, mode=mode, dtype=np.float32, shape=(d1 * d2, t), order=order)
            return yr, (d1, d2), t

        def save_memmap(filenames, base_name="Yr", order="F", border_to_0=0, **kwargs):
            caiman.CALLS.append(("save_memmap", list(filenames), base_name, order, border_to_0))
            parts = [np.asarray(load_memmap(f)[0]) for f in filenames]
            _, dims, _ = load_memmap(filenames[0])
            yr = np.concatenate(parts, axis=1)
            name = f"{base_name}_d1_{dims[0]}_d2_{dims[1]}_d3_1_order_{order}_frames_{yr.shape[1]}.mmap"
            data = yr if order == "C" else yr.T
            np.ascontiguousarray(data, dtype=np.float32).tofile(name)
            return name
        ''',
    "caiman/summary_images.py": '''
        import numpy as np
        import caiman

        def correlation_pnr(images, gSig=None, swap_dim=True):
            caiman.CALLS.append(("correlation_pnr", images.shape, gSig, swap_dim))
            images = np.asarray(images, dtype=np.float64)
            cn = images.std(axis=0) / (images.std(axis=0).max() or 1.0)
            pnr = images.max(axis=0) / (images.std(axis=0) + 1.0)
            return cn, pnr
        ''',
    "caiman/motion_correction.py": '''
        import os
        import numpy as np
        import caiman

        H, W, T_PER_FILE = 6, 9, 5

        def _grid(dims, strides, overlaps):
            win = (strides[0] + overlaps[0], strides[1] + overlaps[1])
            rows = list(range(0, dims[0] - win[0], strides[0])) + [dims[0] - win[0]]
            cols = list(range(0, dims[1] - win[1], strides[1])) + [dims[1] - win[1]]
            return [(r, c) for r in rows for c in cols]

        class MotionCorrect:
            def __init__(self, fname, dview=None, **kwargs):
                caiman.CALLS.append(("MotionCorrect", list(fname), dview, dict(kwargs)))
                self.fname = list(fname)
                self.pw_rigid = bool(kwargs.get("pw_rigid", False))
                self.strides = tuple(kwargs.get("strides", (96, 96)))
                self.overlaps = tuple(kwargs.get("overlaps", (32, 32)))

            def motion_correct(self, template=None, save_movie=False):
                caiman.CALLS.append(("motion_correct", save_movie))
                temp = os.environ["CAIMAN_TEMP"]
                rng = np.random.default_rng(1)
                names, shifts, xs, ys = [], [], [], []
                n_blocks = len(_grid((H, W), self.strides, self.overlaps))
                for i, f in enumerate(self.fname):
                    movie = rng.uniform(0, 10, (T_PER_FILE, H, W)).astype(np.float32)
                    stem = os.path.splitext(os.path.basename(f))[0]
                    kind = "els" if self.pw_rigid else "rig"
                    name = os.path.join(temp, f"{stem}_{kind}__d1_{H}_d2_{W}_d3_1_order_F_frames_{T_PER_FILE}_.mmap")
                    movie.reshape(T_PER_FILE, H * W, order="F").tofile(name)  # F order (pixels, frames)
                    names.append(name)
                    shifts += [[0.5 * i + 0.1 * t, -0.2 * t] for t in range(T_PER_FILE)]
                    xs += [[0.01 * t + b for b in range(n_blocks)] for t in range(T_PER_FILE)]
                    ys += [[-0.01 * t - b for b in range(n_blocks)] for t in range(T_PER_FILE)]
                self.shifts_rig = shifts
                self.x_shifts_els, self.y_shifts_els = xs, ys
                self.total_template_rig = np.full((H, W), 3.0, dtype=np.float32)
                self.total_template_els = np.full((H, W), 4.0, dtype=np.float32)
                self.fname_tot_rig = names
                self.fname_tot_els = names
                self.mmap_file = names
                return self
        ''',
    "caiman/source_extraction/__init__.py": "",
    "caiman/source_extraction/cnmf/__init__.py": '''
        from . import params
        from .cnmf import CNMF
        ''',
    "caiman/source_extraction/cnmf/params.py": '''
        import copy
        import caiman

        GROUPS = ("data", "patch", "preprocess", "init", "spatial", "temporal", "merging",
                  "quality", "online", "motion", "ring_CNN")

        class CNMFParams:
            def __init__(self, params_dict=None):
                caiman.CALLS.append(("CNMFParams", copy.deepcopy(params_dict)))
                for g in GROUPS:
                    setattr(self, g, {})
                self.motion.update(pw_rigid=False, strides=(96, 96), overlaps=(32, 32), border_nan="copy")
                self.init.update(gSig=(4, 4))
                self.data.update(caiman_version="0.0-fake")
                self.unrouted = {}
                self.change_params(params_dict or {})

            def change_params(self, params_dict):
                for key, value in params_dict.items():
                    if key in GROUPS and isinstance(value, dict):
                        getattr(self, key).update(value)
                    else:
                        hit = [g for g in GROUPS if key in getattr(self, g)]
                        for g in hit:
                            getattr(self, g)[key] = value
                        if not hit:
                            self.unrouted[key] = value

            def get_group(self, group):
                return dict(getattr(self, group))

            def to_groups(self):
                return {g: dict(getattr(self, g)) for g in GROUPS}
        ''',
    "caiman/source_extraction/cnmf/cnmf.py": '''
        import importlib.util
        import sys
        import numpy as np
        import scipy.sparse
        import caiman

        SAVER = {saver_path!r}

        def _saver():
            spec = importlib.util.spec_from_file_location("_fake_caiman_saver", SAVER)
            module = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = module  # dataclasses need their module registered
            spec.loader.exec_module(module)
            return module

        class Estimates:
            def __init__(self):
                self.A = self.C = self.b = self.f = self.YrA = self.S = None
                self.W = self.b0 = self.F_dff = None
                self.idx_components = self.idx_components_bad = None
                self.SNR_comp = self.r_values = self.cnn_preds = None
                self.dims = None
                self.shifts = []
                self.discarded_components = None

            def evaluate_components(self, imgs, params, dview=None):
                caiman.CALLS.append(("evaluate_components", imgs.shape, dview))
                self.idx_components = np.array([0])
                self.idx_components_bad = np.array([1])
                self.SNR_comp = np.array([5.0, 0.5])
                self.r_values = np.array([0.9, 0.2])
                self.cnn_preds = []
                return self

        class CNMF:
            def __init__(self, n_processes, dview=None, params=None, **kwargs):
                caiman.CALLS.append(("CNMF", n_processes, dview))
                self.runmode = "CNMF"
                self.dview = dview
                self.params = params
                self.estimates = Estimates()
                self.mmap_file = None
                self.dims = None

            def fit(self, images):
                caiman.CALLS.append(("fit", images.shape))
                t, h, w = images.shape
                self.dims = (h, w)
                a = np.zeros((h, w, 2))
                a[1:3, 1, 0] = 1.0
                a[0, 5:8, 1] = 0.5
                self.estimates.A = scipy.sparse.csc_matrix(a.reshape(h * w, 2, order="F"))
                self.estimates.C = np.vstack([np.linspace(0, 1, t), np.linspace(1, 0, t)])
                self.estimates.YrA = np.full((2, t), 0.25)
                self.estimates.S = np.zeros((2, t))
                self.estimates.b = np.zeros((h * w, 0))
                self.estimates.f = np.zeros((0, t))
                self.estimates.W = scipy.sparse.eye(h * w, format="csr")
                self.estimates.b0 = np.ones(h * w)
                self.estimates.dims = (h, w)
                return self

            def save(self, filename):
                caiman.CALLS.append(("save", filename))
                if ".hdf5" not in filename:
                    raise Exception("File extension not supported for cnmf.save")
                d = {{"runmode": self.runmode, "dview": None, "dims": self.dims,
                     "params": self.params.to_groups(), "estimates": dict(vars(self.estimates)),
                     "mmap_file": self.mmap_file,
                     "provenance": [{{"event": "fit", "time": 1_700_000_500}}]}}
                _saver().save_dict_caiman_style(filename, d)
        ''',
}


def install_fake_caiman(root: Path) -> Path:
    """Write the fake ``caiman`` package under ``root``; put ``root`` on sys.path to use it."""
    root = Path(root)
    for relative, source in FAKE_SOURCES.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        text = textwrap.dedent(source)
        if "{saver_path!r}" in text:
            text = text.replace("{saver_path!r}", repr(str(Path(__file__).resolve())))
            text = text.replace("{{", "{").replace("}}", "}")
        path.write_text(text)
    return root


def install_unrelated_caiman(root: Path) -> Path:
    """A package named ``caiman`` without ``source_extraction`` (like the unrelated PyPI project)."""
    path = Path(root) / "caiman" / "__init__.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('"""Not CaImAn: an unrelated project that happens to be called caiman."""\n')
    return Path(root)
