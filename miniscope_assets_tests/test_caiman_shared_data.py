"""Real CaImAn result files, where they are provided under ../shared/data (read-only)."""

from __future__ import annotations

import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest

from miniscope_assets.io.caiman_mmap import open_caiman_mmap, parse_caiman_mmap_name
from miniscope_assets.io.caiman_results import CaimanResultsWarning, load_caiman_results

SHARED_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def _cnmf_files() -> list[Path]:
    if not SHARED_DATA.is_dir():
        return []
    found = []
    for path in sorted(SHARED_DATA.rglob("*")):
        if path.suffix.lower() not in (".hdf5", ".h5") or not path.is_file():
            continue
        try:
            with h5py.File(path, "r") as f:
                if "estimates/A" in f and "estimates/C" in f:
                    found.append(path)
        except OSError:
            continue
    return found


def _mmaps() -> list[Path]:
    if not SHARED_DATA.is_dir():
        return []
    return sorted(p for p in SHARED_DATA.rglob("*.mmap") if parse_caiman_mmap_name(p) is not None)


CNMF_FILES = _cnmf_files()
MMAPS = _mmaps()


@pytest.mark.skipif(
    not CNMF_FILES,
    reason=f"no real CaImAn result (*.hdf5/*.h5 with estimates/A and estimates/C) under {SHARED_DATA.resolve()}",
)
@pytest.mark.parametrize("path", CNMF_FILES, ids=lambda p: p.name)
def test_real_caiman_result_loads(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CaimanResultsWarning)
        result = load_caiman_results(path)
    height, width = result.frame_shape
    assert result.footprints.shape == (height * width, result.n_masks)
    assert result.fluorescence.shape == (result.n_masks, result.nframes)
    assert np.isfinite(result.fluorescence).all()
    assert result.summary.mean.shape == (height, width)
    with h5py.File(path, "r") as f:
        a = f["estimates/A"]
        assert result.footprints.nnz == a["data"].shape[0]
        if "motion_correction/shifts_rig" in f:
            shifts = f["motion_correction/shifts_rig"][()]
            np.testing.assert_allclose(result.motion_rigid.y_shifts, shifts[:, 0])
            np.testing.assert_allclose(result.motion_rigid.x_shifts, shifts[:, 1])
    for k in range(min(result.n_masks, 5)):  # pixels stay inside the frame
        xpix, ypix, _ = result.mask_pixels(k)
        assert (xpix < width).all() and (ypix < height).all()


@pytest.mark.skipif(not MMAPS, reason=f"no real CaImAn .mmap movie under {SHARED_DATA.resolve()}")
@pytest.mark.parametrize("path", MMAPS, ids=lambda p: p.name)
def test_real_caiman_mmap_reads(path):
    movie = open_caiman_mmap(path)
    first, frames = next(movie.iter_chunks(min(movie.nframes, 10)))
    assert first == 0 and frames.shape[1:] == movie.frame_shape
    assert np.isfinite(frames).all()
