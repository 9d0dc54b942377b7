"""Loading CaImAn CNMF(-E) results written in CaImAn's HDF5 layout (built field by field with h5py)."""

from __future__ import annotations

import json
import warnings
from datetime import timezone

import h5py
import numpy as np
import pytest

from miniscope_assets.io.caiman_results import (
    CaimanResultsWarning,
    caiman_patch_grid,
    find_caiman_results,
    load_caiman_results,
    locate_caiman_files,
)
from miniscope_assets.io.results_file import load_results, save_results
from miniscope_assets_tests import caiman_fixtures as fx


def _load(folder):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CaimanResultsWarning)
        return load_caiman_results(folder)


# ---- masks ---------------------------------------------------------------------------------


def test_l_shaped_footprint_keeps_x_as_column_and_y_as_row(tmp_path):
    s = fx.make_scenario(height=6, width=9)
    fx.write_caiman_folder(tmp_path, s)
    result = _load(tmp_path)

    assert result.frame_shape == (6, 9)
    assert result.footprints.shape == (6 * 9, 3)
    xpix, ypix, weights = result.mask_pixels(0)
    expected = sorted((y * 9 + x, x, y, w) for y, x, w in fx.L_SHAPE)
    assert xpix.tolist() == [e[1] for e in expected]
    assert ypix.tolist() == [e[2] for e in expected]
    np.testing.assert_allclose(weights, [e[3] for e in expected], rtol=1e-6)
    # The L: a vertical stroke at column 1 (rows 1..4) and a foot along row 4 to the right.
    image = result.footprints[:, 0].toarray().reshape(6, 9)  # row-major pixel index y * width + x
    np.testing.assert_allclose(image, s.footprint_image(0))
    assert image[1:5, 1].all() and image[4, 1:4].all() and image[1, 2] == 0


def test_every_footprint_matches_its_image_and_centroid(tmp_path):
    s = fx.make_scenario(height=6, width=9)
    fx.write_caiman_folder(tmp_path, s)
    result = _load(tmp_path)
    for k in range(s.n_masks):
        np.testing.assert_allclose(result.footprints[:, k].toarray().reshape(6, 9), s.footprint_image(k))
    bar_x, bar_y = result.mask_centers()[1]
    expected_x = (6 * 0.7 + 7 * 0.8 + 8 * 0.9) / (0.7 + 0.8 + 0.9)
    assert bar_y == pytest.approx(0.0) and bar_x == pytest.approx(expected_x)
    assert result.mask_npix().tolist() == [6, 3, 4]
    assert result.mask_ids.tolist() == [0, 1, 2]


# ---- traces, classification -----------------------------------------------------------------


def test_traces_map_to_processing_result_fields(tmp_path):
    s = fx.make_scenario()
    fx.write_caiman_folder(tmp_path, s)
    result = _load(tmp_path)
    a = s.arrays
    np.testing.assert_allclose(result.fluorescence, a["C"] + a["YrA"], rtol=1e-6)
    np.testing.assert_allclose(result.denoised, a["C"], rtol=1e-6)
    np.testing.assert_allclose(result.spikes, a["S"], rtol=1e-6)
    np.testing.assert_allclose(result.dff, a["F_dff"], rtol=1e-6)
    assert result.fluorescence.dtype == np.float32
    assert result.nframes == s.nframes
    # neuropil: footprint-weighted background b.f under each mask
    background = (a["b"] @ a["f"])  # (pixels in Fortran order, T)
    a_f = s.a_fortran.toarray()
    expected = (a_f.T @ background) / a_f.sum(axis=0)[:, None]
    np.testing.assert_allclose(result.neuropil, expected, rtol=1e-5)


def test_mask_types_from_component_evaluation_and_confidence_nan_without_cnn(tmp_path):
    fx.write_caiman_folder(tmp_path, fx.make_scenario())
    result = _load(tmp_path)
    assert result.mask_types.tolist() == ["soma", "unknown", "soma"]
    assert np.isnan(result.mask_confidence).all()
    assert result.notes["snr"] == [4.5, 1.2, 3.3]
    assert result.notes["r_values"] == [0.9, 0.1, 0.8]


def test_confidence_from_cnn_preds(tmp_path):
    fx.write_caiman_folder(tmp_path, fx.make_scenario(), cnn=np.array([0.95, 0.05, 0.5]))
    result = _load(tmp_path)
    np.testing.assert_allclose(result.mask_confidence, [0.95, 0.05, 0.5], rtol=1e-6)


def test_without_evaluation_every_component_is_soma_and_a_warning_says_so(tmp_path):
    fx.write_caiman_folder(tmp_path, fx.make_scenario(), evaluated=False)
    with pytest.warns(CaimanResultsWarning, match="idx_components"):
        result = load_caiman_results(tmp_path)
    assert result.mask_types.tolist() == ["soma"] * 3
    assert "no component evaluation" in result.notes["mask_types_source"]


def test_missing_optional_traces_are_reported(tmp_path):
    fx.write_caiman_folder(tmp_path, fx.make_scenario(), with_yra=False, with_spikes=False, with_dff=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = load_caiman_results(tmp_path)
    messages = [str(w.message) for w in caught]
    assert any("no estimates/YrA" in m and "fluorescence equals the denoised trace C" in m for m in messages)
    assert any("no estimates/S" in m for m in messages)
    assert result.spikes is None and result.dff is None
    np.testing.assert_allclose(result.fluorescence, result.denoised)


def test_ring_model_background_gives_no_neuropil(tmp_path):
    fx.write_caiman_folder(tmp_path, fx.make_scenario(background="ring"))
    result = _load(tmp_path)
    assert result.neuropil is None
    assert "ring-model" in result.notes["neuropil_source"]
    assert result.notes["background_model"].startswith("ring model")


# ---- motion -----------------------------------------------------------------------------------


def test_rigid_shifts_swap_caiman_axis_names(tmp_path):
    s = fx.make_scenario(pw_rigid=False)
    fx.write_caiman_folder(tmp_path, s)
    result = _load(tmp_path)
    shifts = s.arrays["shifts_rig"]
    np.testing.assert_allclose(result.motion_rigid.y_shifts, shifts[:, 0])  # CaImAn "x" = rows
    np.testing.assert_allclose(result.motion_rigid.x_shifts, shifts[:, 1])  # CaImAn "y" = columns
    assert result.motion_piecewise is None


def test_piecewise_blocks_and_shifts(tmp_path):
    s = fx.make_scenario(height=6, width=9, pw_rigid=True)
    fx.write_caiman_folder(tmp_path, s)
    result = _load(tmp_path)
    pw = result.motion_piecewise
    assert result.motion_rigid is None
    # strides (2, 3) + overlaps (2, 2): blocks 4 rows x 5 columns; row starts 0, 2; column starts 0, 3, 4
    assert (pw.block_height, pw.block_width) == (4, 5)
    assert (pw.block_count_y, pw.block_count_x) == (2, 3)
    assert pw.block_y.tolist() == [[0, 4]] * 3 + [[2, 6]] * 3
    assert pw.block_x.tolist() == [[0, 5], [3, 8], [4, 9]] * 2
    np.testing.assert_allclose(pw.y_shifts, s.arrays["x_shifts_els"])
    np.testing.assert_allclose(pw.x_shifts, s.arrays["y_shifts_els"])
    assert pw.x_shifts.shape == (s.nframes, 6)


def test_patch_grid_matches_caimans_sliding_window_order():
    grid = caiman_patch_grid((6, 9), (2, 3), (2, 2))
    np.testing.assert_array_equal(grid, fx.patch_grid((6, 9), (2, 3), (2, 2)))
    grid = caiman_patch_grid((600, 608), (48, 48), (24, 24))
    assert grid[-1].tolist() == [600 - 72, 600, 608 - 72, 608]
    assert (grid[:, 1] <= 600).all() and (grid[:, 3] <= 608).all()


def test_motion_correction_in_a_separate_file(tmp_path):
    s = fx.make_scenario(pw_rigid=True)
    cnmf = fx.write_caiman_folder(tmp_path, s, motion="sidecar")
    files = locate_caiman_files(tmp_path)
    assert files.cnmf_file == cnmf.resolve()
    assert files.motion_file == (tmp_path / "motion_correction.hdf5").resolve()
    result = _load(tmp_path)
    np.testing.assert_allclose(result.motion_piecewise.y_shifts, s.arrays["x_shifts_els"])
    np.testing.assert_allclose(result.summary.reference, s.arrays["reference_image"])


def test_shifts_from_estimates_when_no_motion_group(tmp_path):
    s = fx.make_scenario()
    fx.write_caiman_folder(tmp_path, s, motion=None, shifts=s.arrays["shifts_rig"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = load_caiman_results(tmp_path)
    assert any("no motion_correction group: shifts read from estimates/shifts" in str(w.message) for w in caught)
    np.testing.assert_allclose(result.motion_rigid.x_shifts, s.arrays["shifts_rig"][:, 1])


# ---- summary images, movie, metadata ------------------------------------------------------------


def test_summary_images_from_motion_correction_group(tmp_path):
    s = fx.make_scenario()
    fx.write_caiman_folder(tmp_path, s)
    summary = _load(tmp_path).summary
    np.testing.assert_allclose(summary.reference, s.arrays["reference_image"])
    np.testing.assert_allclose(summary.mean, s.arrays["average_image"])
    np.testing.assert_allclose(summary.max_projection, s.arrays["max_image"])
    np.testing.assert_allclose(summary.correlation, s.arrays["correlation_image"])
    assert summary.peak_to_noise is None


def test_corrected_movie_is_the_memmap_beside_the_result(tmp_path):
    s = fx.make_scenario()
    fx.write_caiman_folder(tmp_path, s, mmap=True)
    fx.write_caiman_mmap(tmp_path, s.movie(), base="rec_els_", order="F", trailing_underscore=True)
    result = _load(tmp_path)
    assert result.corrected_movie == str((tmp_path / "memmap__d1_6_d2_9_d3_1_order_C_frames_12.mmap").resolve())


def test_no_motion_group_mean_image_is_computed_from_the_memmap(tmp_path):
    s = fx.make_scenario()
    fx.write_caiman_folder(tmp_path, s, motion=None, mmap=True)
    with pytest.warns(CaimanResultsWarning, match="no motion_correction group: motion correction .* will be absent"):
        result = load_caiman_results(tmp_path)
    assert result.motion_rigid is None and result.motion_piecewise is None
    np.testing.assert_allclose(result.summary.mean, s.movie().mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(result.summary.max_projection, s.movie().max(axis=0), rtol=1e-6)
    np.testing.assert_allclose(result.summary.correlation, s.arrays["Cn"])  # estimates/Cn
    assert result.corrected_movie is not None


def test_params_version_and_creation_time(tmp_path):
    s = fx.make_scenario()
    fx.write_caiman_folder(tmp_path, s)
    result = _load(tmp_path)
    assert result.method == "caiman"
    assert result.package_version == "1.11.3"
    assert result.creation_time.tzinfo is not None
    assert result.creation_time.timestamp() == 1_700_000_000
    assert result.params["motion"]["strides"] == [2, 3]
    assert result.params["motion"]["pw_rigid"] is False
    assert result.params["data"]["fr"] == 20.0
    assert result.params["data"]["fnames"] == ["/data/rec/0.avi", "/data/rec/1.avi"]
    assert result.params["data"]["mmap_F"] is None  # 'NoneType' marker
    assert result.params["temporal"]["solvers"] == ["ECOS", "SCS"]
    assert result.params["init"]["method_init"] == "corr_pnr"  # string attribute
    json.dumps(result.params)  # JSON-compatible


def test_legacy_string_datasets_and_no_version(tmp_path):
    s = fx.make_scenario()
    path = fx.write_caiman_folder(tmp_path, s, legacy_strings=True, version=None)
    with h5py.File(path) as f:
        assert "method_init" in f["params/init"] and "provenance" not in f.attrs
    result = _load(tmp_path)
    assert result.params["init"]["method_init"] == "corr_pnr"
    assert result.package_version == "unknown"
    assert result.creation_time.tzinfo == timezone.utc
    assert result.creation_time.timestamp() == pytest.approx(path.stat().st_mtime)


def test_select_components_result_types_all_soma(tmp_path):
    s = fx.make_scenario()
    path = fx.write_caiman_folder(tmp_path, s, evaluated=False)
    with h5py.File(path, "r+") as f:
        del f["estimates/discarded_components"]
        f.create_group("estimates/discarded_components").create_dataset("C", data=np.zeros((1, s.nframes)))
    with warnings.catch_warnings():
        warnings.simplefilter("error", CaimanResultsWarning)
        result = load_caiman_results(tmp_path)
    assert result.mask_types.tolist() == ["soma"] * 3
    assert "select_components" in result.notes["mask_types_source"]


def test_result_file_path_is_accepted_and_round_trips_through_results_file(tmp_path):
    path = fx.write_caiman_folder(tmp_path / "caiman", fx.make_scenario(pw_rigid=True))
    assert find_caiman_results(path) == path
    result = _load(path)
    saved = save_results(result, tmp_path / "out.h5")
    again = load_results(saved)
    np.testing.assert_allclose(again.footprints.toarray(), result.footprints.toarray())
    np.testing.assert_allclose(again.motion_piecewise.x_shifts, result.motion_piecewise.x_shifts)
    assert again.mask_types.tolist() == result.mask_types.tolist()
    assert again.method == "caiman"


@pytest.mark.parametrize("empty_c_shape", [(0, 12), (0,)])
def test_result_without_components(tmp_path, empty_c_shape):
    s = fx.make_scenario()
    path = fx.write_caiman_folder(tmp_path, s)
    with h5py.File(path, "r+") as f:
        est = f["estimates"]
        for name in ("A", "C", "YrA", "R", "S", "F_dff", "idx_components", "idx_components_bad",
                     "SNR_comp", "r_values", "cnn_preds"):
            del est[name]
        est["A/data"], est["A/indices"], est["A/indptr"] = np.zeros(0), np.zeros(0, int), np.zeros(1, int)
        est["A/shape"] = np.array([54, 0])
        est["C"] = np.zeros(empty_c_shape)
        for name in ("YrA", "S", "F_dff"):
            est[name] = np.zeros((0, 12))
        for name in ("idx_components", "idx_components_bad", "SNR_comp", "r_values", "cnn_preds"):
            est[name] = np.zeros(0)
    result = _load(tmp_path)
    assert result.n_masks == 0 and result.nframes == 12
    assert result.fluorescence.shape == (0, 12) and result.footprints.shape == (54, 0)
    assert result.motion_rigid.x_shifts.shape == (12,)
