"""Bad CaImAn result folders: every error names the file/folder and the problem."""

from __future__ import annotations

import warnings

import h5py
import numpy as np
import pytest

from miniscope_assets.errors import MiniscopeInputError
from miniscope_assets.io.caiman_results import (
    CaimanResultsWarning,
    find_caiman_results,
    load_caiman_results,
)
from miniscope_assets_tests import caiman_fixtures as fx


def test_missing_folder(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(MiniscopeInputError, match="CaImAn results folder does not exist") as info:
        find_caiman_results(missing)
    assert info.value.path == missing and str(info.value).startswith(str(missing))


def test_empty_folder(tmp_path):
    with pytest.raises(MiniscopeInputError, match=r"no CaImAn result file \(\*\.hdf5 or \*\.h5.*the folder is empty"):
        load_caiman_results(tmp_path)


def test_folder_without_hdf5_lists_what_is_there(tmp_path):
    (tmp_path / "0.avi").write_bytes(b"")
    with pytest.raises(MiniscopeInputError, match="it holds: 0.avi"):
        find_caiman_results(tmp_path)


def test_several_candidate_results_are_named(tmp_path):
    s = fx.make_scenario()
    fx.write_caiman_folder(tmp_path, s, result_name="first.hdf5")
    fx.write_caiman_folder(tmp_path, s, result_name="second.h5")
    with pytest.raises(MiniscopeInputError, match="several CaImAn CNMF result files.*first.hdf5, second.h5"):
        find_caiman_results(tmp_path)


def test_hdf5_that_is_not_a_cnmf_result_says_what_is_missing(tmp_path):
    with h5py.File(tmp_path / "movie.h5", "w") as f:
        f["mov"] = np.zeros((2, 3, 4))
    with h5py.File(tmp_path / "half.hdf5", "w") as f:
        f.create_group("estimates").create_dataset("C", data=np.zeros((1, 2)))
    with pytest.raises(MiniscopeInputError) as info:
        find_caiman_results(tmp_path)
    message = str(info.value)
    assert "no CaImAn CNMF result among the HDF5 files" in message
    assert "movie.h5: no 'estimates' group (top level holds: 'mov')" in message
    assert "half.hdf5: has an 'estimates' group but lacks 'estimates/A'" in message


def test_a_file_given_directly_that_is_not_a_result(tmp_path):
    path = tmp_path / "motion.hdf5"
    with h5py.File(path, "w") as f:
        f.create_group("motion_correction")
    with pytest.raises(MiniscopeInputError, match="not a CaImAn CNMF result: .*needs estimates/A, estimates/C") as info:
        find_caiman_results(path)
    assert info.value.path == path


def test_unreadable_hdf5_is_reported(tmp_path):
    (tmp_path / "broken.hdf5").write_bytes(b"not hdf5 at all")
    with pytest.raises(MiniscopeInputError, match="broken.hdf5: not a readable HDF5 file"):
        find_caiman_results(tmp_path)


def test_missing_optional_motion_group_is_a_warning_naming_it(tmp_path):
    fx.write_caiman_folder(tmp_path, fx.make_scenario(), motion=None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = load_caiman_results(tmp_path)
    messages = [str(w.message) for w in caught if issubclass(w.category, CaimanResultsWarning)]
    assert any(
        "no motion_correction group: motion correction and reference/max/correlation images will be absent" in m
        for m in messages
    )
    assert any("mean image is reconstructed from the CNMF model" in m for m in messages)
    assert result.motion_rigid is None and result.summary.reference is None
    assert result.notes["warnings"]  # the same messages travel with the result


def test_missing_params_group_is_a_warning(tmp_path):
    path = fx.write_caiman_folder(tmp_path, fx.make_scenario())
    with h5py.File(path, "r+") as f:
        del f["params"]
    with pytest.warns(CaimanResultsWarning, match="no params group"):
        result = load_caiman_results(tmp_path)
    assert result.params == {} and result.package_version == "unknown"


def test_missing_frame_size_is_an_error(tmp_path):
    path = fx.write_caiman_folder(tmp_path, fx.make_scenario())
    with h5py.File(path, "r+") as f:
        for name in ("estimates/dims", "dims", "params/data/dims"):
            del f[name]
    with pytest.raises(MiniscopeInputError, match="no frame size: none of estimates/dims, dims, params/data/dims"):
        load_caiman_results(tmp_path)


def test_footprints_not_matching_frame_size(tmp_path):
    path = fx.write_caiman_folder(tmp_path, fx.make_scenario())
    with h5py.File(path, "r+") as f:
        f["estimates/dims"][...] = [5, 9]
    with pytest.raises(MiniscopeInputError, match="estimates/A has 54 rows but the frame 5x9 has 45 pixels"):
        load_caiman_results(tmp_path)


def test_shift_count_not_matching_frames(tmp_path):
    path = fx.write_caiman_folder(tmp_path, fx.make_scenario())
    with h5py.File(path, "r+") as f:
        del f["motion_correction/shifts_rig"]
        f["motion_correction/shifts_rig"] = np.zeros((5, 2))
    with pytest.raises(MiniscopeInputError, match=r"motion_correction/shifts_rig has shape \(5, 2\), expected \(12, ...\)"):
        load_caiman_results(tmp_path)


def test_volumetric_results_are_refused(tmp_path):
    path = fx.write_caiman_folder(tmp_path, fx.make_scenario())
    with h5py.File(path, "r+") as f:
        del f["estimates/dims"]
        f["estimates/dims"] = np.array([3, 3, 6])
    with pytest.raises(MiniscopeInputError, match="volumetric"):
        load_caiman_results(tmp_path)


def test_two_separate_motion_files_are_ambiguous(tmp_path):
    s = fx.make_scenario()
    fx.write_caiman_folder(tmp_path, s, motion="sidecar")
    with h5py.File(tmp_path / "other_motion.h5", "w") as f:
        fx.write_motion_group(f, s)
    with pytest.raises(MiniscopeInputError, match="several separate files hold one: motion_correction.hdf5, other_motion.h5"):
        load_caiman_results(tmp_path)


def _rewrite(path, name, value):
    with h5py.File(path, "a") as f:
        del f[name]
        f[name] = value


@pytest.mark.parametrize("name, value, fragment", [
    ("estimates/A/indices", np.array([b"a", b"b"]), "/estimates/A is not a valid sparse matrix"),
    ("estimates/A/indptr", np.array([0.5, 1.5]), "/estimates/A is not a valid sparse matrix"),
    ("estimates/A/indptr", np.array([0, 10**9]), "/estimates/A is not a valid sparse matrix"),
    ("estimates/A/shape", np.array([3]), "/estimates/A is not a valid sparse matrix"),
    ("estimates/A/data", np.array([np.nan] * 5), "/estimates/A is not a valid sparse matrix"),
    ("estimates/C", np.array([b"not", b"numbers"]), "malformed CaImAn result (ValueError"),
    ("estimates/dims", np.array([b"x", b"y"]), "malformed CaImAn result"),
])
def test_malformed_sparse_or_string_data_is_one_clear_error(tmp_path, name, value, fragment):
    result_file = fx.write_caiman_folder(tmp_path, fx.make_scenario())
    _rewrite(result_file, name, value)
    with pytest.raises(MiniscopeInputError) as caught:
        load_caiman_results(tmp_path)
    assert caught.value.path == result_file and fragment in str(caught.value)


@pytest.mark.parametrize("bad", [np.nan, np.inf, 1e300])
def test_traces_that_float32_cannot_hold_are_an_error_in_c_and_ignored_elsewhere(tmp_path, bad):
    """C is the traces themselves: a value that is NaN, infinite or beyond float32 is refused. In
    an optional trace (YrA or R, S, F_dff) it is a warning, and the trace is left out."""
    result_file = fx.write_caiman_folder(tmp_path, fx.make_scenario())
    with h5py.File(result_file, "r") as f:
        c, yra = f["estimates/C"][()], f["estimates/YrA"][()]
    c[1, 3], yra[0, 2] = bad, bad
    for residuals in ("YrA", "R"):  # R: the older name of YrA, read where YrA is not usable
        _rewrite(result_file, f"estimates/{residuals}", yra)
    with pytest.warns(CaimanResultsWarning, match="estimates/YrA holds 1 value"):
        result = load_caiman_results(tmp_path)
    assert result.notes["fluorescence_source"] == "C (no YrA)" and np.isfinite(result.fluorescence).all()
    _rewrite(result_file, "estimates/C", c)
    with pytest.raises(MiniscopeInputError, match="estimates/C holds 1 value") as caught:
        load_caiman_results(tmp_path)
    assert caught.value.path == result_file
