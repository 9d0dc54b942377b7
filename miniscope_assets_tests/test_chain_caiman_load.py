"""The whole asset chain from CaImAn result files (processing_method caiman, task_mode load)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import yaml
from dagster import DagsterInstance

from miniscope_assets.io.caiman_results import load_caiman_results
from miniscope_assets.io.miniscope_writer import write_v4_recording
from miniscope_assets.stages.curation import CurationRequest, write_curation_file
from miniscope_assets_tests.caiman_fixtures import make_scenario, write_caiman_folder
from miniscope_assets_tests.conftest import movie, write_user_metadata
from miniscope_assets_tests.dagster_helpers import PARTITION_STAGES, checks, materialize_partition, metadata
from miniscope_assets_tests.nwb_helpers import assert_matches, read_ophys

PARAMSET = "caiman_load"


@pytest.fixture
def caiman_recording(workspace, data_root):
    """A V4 recording with CaImAn results (pw-rigid, with memmap) in its 'caiman' subfolder."""
    write_user_metadata(data_root / "mouse-7")
    device = write_v4_recording(data_root / "mouse-7" / "s1", list(movie()), frames_per_file=50,
                                per_device_layout=True)
    scenario = make_scenario(height=40, width=56, nframes=120, pw_rigid=True)
    write_caiman_folder(device / "caiman", scenario, mmap=True)
    workspace.paramsets_file.write_text(yaml.safe_dump({"paramsets": [{
        "name": PARAMSET, "method": "caiman", "task_mode": "load",
        "results_dir": "{recording}/caiman", "description": "CaImAn CNMF-E results from the lab",
        "keep_corrected_movie": True,
    }]}))
    return "mouse-7/s1/Miniscope", device / "caiman"


def hdf5_paths(path):
    names = []
    with h5py.File(path, "r") as f:
        f.visit(names.append)
    return sorted(n for n in names if n.startswith("processing/"))


def test_caiman_results_run_the_whole_chain(workspace, caiman_recording):
    recording_dir, results_dir = caiman_recording
    result, partition = materialize_partition(workspace, recording_dir, PARTITION_STAGES, paramset=PARAMSET)
    expected = load_caiman_results(results_dir)
    nwb_path = partition.nwb_path()
    assert nwb_path.name == "sub-mouse-7_ses-20240517T103000-Miniscope-caiman-load_ophys.nwb"
    content = read_ophys(nwb_path)
    assert content["interfaces"] == ["DfOverF", "Fluorescence", "ImageSegmentation", "MaskClassification",
                                     "MotionCorrected", "PiecewiseRigidMotion", "RigidMotionShifts", "SummaryImages"]
    assert content["series"] == ["Deconvolved", "Denoised", "Neuropil", "RoiResponseSeries"]
    assert_matches(content, expected)
    assert expected.motion_rigid is None  # CaImAn keeps no rigid shifts for pw-rigid runs
    np.testing.assert_allclose(content["xy"][:, 0], expected.motion_piecewise.x_shifts.mean(axis=1), rtol=1e-5)
    np.testing.assert_allclose(content["xy"][:, 1], expected.motion_piecewise.y_shifts.mean(axis=1), rtol=1e-5)
    assert content["corrected"].shape == (120, 56, 40)
    blocks = content["blocks"]
    assert len(blocks) == expected.motion_piecewise.block_y.shape[0]
    np.testing.assert_allclose(np.stack(blocks["x_shifts"].to_numpy()).T, expected.motion_piecewise.x_shifts,
                               rtol=1e-6)
    np.testing.assert_array_equal(blocks["y_start"], expected.motion_piecewise.block_y[:, 0])
    np.testing.assert_allclose(content["mean_image"], expected.summary.mean.T, rtol=1e-6)
    np.testing.assert_array_equal(content["times"], partition.recording_info().timestamps)
    assert all(checks(result).values()), checks(result)
    catalog = metadata(result, "mask_classification")
    assert catalog["n_soma"] == int(np.sum(expected.mask_types == "soma"))
    assert metadata(result, "processing")["method"] == "caiman"


def test_rematerializing_replaces_containers_without_duplicates(workspace, caiman_recording):
    recording_dir, _ = caiman_recording
    instance = DagsterInstance.ephemeral()
    _, partition = materialize_partition(workspace, recording_dir, PARTITION_STAGES, paramset=PARAMSET, instance=instance)
    before = hdf5_paths(partition.nwb_path())
    size_before = partition.nwb_path().stat().st_size
    again, _ = materialize_partition(workspace, recording_dir, PARTITION_STAGES[2:], with_raw=False, paramset=PARAMSET, instance=instance)
    assert hdf5_paths(partition.nwb_path()) == before
    assert abs(partition.nwb_path().stat().st_size - size_before) < 0.05 * size_before  # no stale bytes
    # motion_correction writes the file anew: every later stage then appends to it
    assert metadata(again, "motion_correction")["replaced_containers"] == "whole file"
    assert metadata(again, "segmentation")["replaced_containers"] == "none"
    # a later stage alone replaces its containers and the ones after it
    alone, _ = materialize_partition(workspace, recording_dir, ["mask_classification"], with_raw=False,
                                     paramset=PARAMSET, instance=instance)
    assert metadata(alone, "mask_classification")["replaced_containers"] == (
        "MaskClassification, Fluorescence/RoiResponseSeries, Fluorescence/Neuropil, Fluorescence/Denoised, "
        "Fluorescence/Deconvolved, DfOverF"
    )
    assert hdf5_paths(partition.nwb_path()) == [p for p in before if "Fluorescence" not in p and "DfOverF" not in p]


def test_curation_rejecting_two_masks(workspace, caiman_recording):
    recording_dir, results_dir = caiman_recording
    instance = DagsterInstance.ephemeral()
    first, partition = materialize_partition(workspace, recording_dir, PARTITION_STAGES, paramset=PARAMSET,
                                             instance=instance)
    assert metadata(first, "curation")["curation_id"] == 0
    write_curation_file(partition.files.curation_input, CurationRequest(reject=[0, 2], note="two were dendrites"))
    second, _ = materialize_partition(workspace, recording_dir, PARTITION_STAGES[1:], with_raw=False, paramset=PARAMSET,
                                      instance=instance)
    meta = metadata(second, "curation")
    assert (meta["curation_id"], meta["manual_curation"], meta["curation_note"]) == (1, True, "two were dendrites")
    assert (meta["n_masks_before"], meta["n_masks_after"], meta["n_rejected"]) == (3, 1, 2)
    expected = load_caiman_results(results_dir)
    content = read_ophys(partition.nwb_path())
    np.testing.assert_array_equal(content["ids"], [1])
    assert_matches(content, expected.select([1]))
    assert metadata(second, "activity")["curation_id"] == 1
    assert all(checks(second).values())
    # re-running with the same curation keeps its id
    third, _ = materialize_partition(workspace, recording_dir, ["curation"], with_raw=False, paramset=PARAMSET, instance=instance)
    assert metadata(third, "curation")["curation_id"] == 1


def test_curation_file_naming_an_unknown_mask(workspace, caiman_recording):
    recording_dir, _ = caiman_recording
    _, partition = materialize_partition(workspace, recording_dir, ["processing"], paramset=PARAMSET)
    write_curation_file(partition.files.curation_input, CurationRequest(reject=[99]))
    from miniscope_assets.errors import MiniscopeInputError
    from miniscope_assets.stages import curation
    from miniscope_assets.stages.table import RunOptions

    with pytest.raises(MiniscopeInputError, match=r"unknown mask id\(s\) \[99\]") as caught:
        curation.run(partition, RunOptions())
    assert str(partition.files.curation_input) in str(caught.value)
