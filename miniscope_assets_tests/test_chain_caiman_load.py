"""The whole asset chain from CaImAn result files (processing_method caiman, task_mode load)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import yaml
from dagster import DagsterInstance
from pynwb import NWBHDF5IO

from miniscope_assets.io.caiman_results import load_caiman_results
from miniscope_assets.io.miniscope_writer import write_v4_recording
from miniscope_assets.orchestration.assets import ALL_ASSETS
from miniscope_assets.stages.curation import CurationRequest, write_curation_file
from miniscope_assets_tests.caiman_fixtures import make_scenario, write_caiman_folder
from miniscope_assets_tests.conftest import movie, write_user_metadata
from miniscope_assets_tests.dagster_helpers import checks, materialize_partition, metadata

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
    }]}))
    return "mouse-7/s1/Miniscope", device / "caiman"


def nwb_content(path):
    """Everything the chain puts into processing/ophys, as arrays."""
    with NWBHDF5IO(str(path), mode="r") as io:
        nwbfile = io.read()
        module = nwbfile.processing["ophys"]
        plane = module["ImageSegmentation"]["PlaneSegmentation"]
        fluorescence = module["Fluorescence"]
        stack = module["MotionCorrection"]["CorrectedImageStack"]
        classification = module["MaskClassification"].to_dataframe()
        return {
            "interfaces": sorted(module.data_interfaces),
            "fluorescence_series": sorted(fluorescence.roi_response_series),
            "ids": plane.id[:],
            "pixel_masks": [np.asarray(plane["pixel_mask"][i].tolist()) for i in range(len(plane))],
            "raw": fluorescence["RoiResponseSeries"].data[:],
            "neuropil": fluorescence["Neuropil"].data[:],
            "denoised": fluorescence["Denoised"].data[:],
            "spikes": fluorescence["Deconvolved"].data[:],
            "dff": module["DfOverF"]["DfOverF"].data[:],
            "xy": stack.xy_translation.data[:],
            "corrected_shape": stack.corrected.data.shape,
            "blocks": module["PiecewiseRigidMotion"].to_dataframe(),
            "images": sorted(module["SummaryImages"].images),
            "mean_image": module["SummaryImages"]["mean"].data[:],
            "mask_types": classification["mask_type"].tolist(),
            "raw_timestamps_linked": fluorescence["RoiResponseSeries"].timestamps is not None,
        }


def hdf5_paths(path):
    names = []
    with h5py.File(path, "r") as f:
        f.visit(names.append)
    return sorted(n for n in names if n.startswith("processing/"))


def test_caiman_results_run_the_whole_chain(workspace, caiman_recording):
    recording_dir, results_dir = caiman_recording
    result, partition = materialize_partition(workspace, recording_dir, ALL_ASSETS, paramset=PARAMSET)
    expected = load_caiman_results(results_dir)
    nwb_path = partition.nwb_path()
    assert nwb_path.name == "sub-mouse-7_ses-20240517T103000_desc-caiman-load_ophys.nwb"
    content = nwb_content(nwb_path)
    assert content["interfaces"] == ["DfOverF", "Fluorescence", "ImageSegmentation", "MaskClassification",
                                     "MotionCorrection", "PiecewiseRigidMotion", "SummaryImages"]
    assert content["fluorescence_series"] == ["Deconvolved", "Denoised", "Neuropil", "RoiResponseSeries"]
    np.testing.assert_array_equal(content["ids"], expected.mask_ids)
    for index, pixel_mask in enumerate(content["pixel_masks"]):
        xpix, ypix, weights = expected.mask_pixels(index)
        np.testing.assert_array_equal(pixel_mask[:, 0], xpix)
        np.testing.assert_array_equal(pixel_mask[:, 1], ypix)
        np.testing.assert_allclose(pixel_mask[:, 2], weights, rtol=1e-6)
    np.testing.assert_array_equal(content["raw"], expected.fluorescence.T)
    np.testing.assert_array_equal(content["neuropil"], expected.neuropil.T)
    np.testing.assert_array_equal(content["denoised"], expected.denoised.T)
    np.testing.assert_array_equal(content["spikes"], expected.spikes.T)
    np.testing.assert_array_equal(content["dff"], expected.dff.T)
    assert expected.motion_rigid is None  # CaImAn keeps no rigid shifts for pw-rigid runs
    np.testing.assert_allclose(content["xy"][:, 0], expected.motion_piecewise.x_shifts.mean(axis=1), rtol=1e-5)
    np.testing.assert_allclose(content["xy"][:, 1], expected.motion_piecewise.y_shifts.mean(axis=1), rtol=1e-5)
    assert content["corrected_shape"] == (120, 56, 40)
    blocks = content["blocks"]
    assert len(blocks) == expected.motion_piecewise.block_y.shape[0]
    np.testing.assert_allclose(np.stack(blocks["x_shifts"].to_numpy()).T, expected.motion_piecewise.x_shifts,
                               rtol=1e-6)
    np.testing.assert_array_equal(blocks["y_start"], expected.motion_piecewise.block_y[:, 0])
    np.testing.assert_allclose(content["mean_image"], expected.summary.mean.T, rtol=1e-6)
    assert content["mask_types"] == list(expected.mask_types)
    assert content["raw_timestamps_linked"]
    assert all(checks(result).values()), checks(result)
    catalog = metadata(result, "mask_classification")
    assert catalog["n_soma"] == int(np.sum(expected.mask_types == "soma"))
    assert metadata(result, "processing")["method"] == "caiman"


def test_rematerializing_replaces_containers_without_duplicates(workspace, caiman_recording):
    recording_dir, _ = caiman_recording
    instance = DagsterInstance.ephemeral()
    _, partition = materialize_partition(workspace, recording_dir, ALL_ASSETS, paramset=PARAMSET, instance=instance)
    before = hdf5_paths(partition.nwb_path())
    size_before = partition.nwb_path().stat().st_size
    again, _ = materialize_partition(workspace, recording_dir, ALL_ASSETS[3:], paramset=PARAMSET, instance=instance)
    assert hdf5_paths(partition.nwb_path()) == before
    assert abs(partition.nwb_path().stat().st_size - size_before) < 0.05 * size_before  # no stale bytes
    # motion_correction replaces its containers and every later stage's (derived from it)
    assert metadata(again, "motion_correction")["replaced_containers"] == (
        "MotionCorrection, PiecewiseRigidMotion, SummaryImages, ImageSegmentation, MaskClassification, "
        "Fluorescence/RoiResponseSeries, Fluorescence/Neuropil, Fluorescence/Denoised, "
        "Fluorescence/Deconvolved, DfOverF"
    )
    assert metadata(again, "segmentation")["replaced_containers"] == "none"


def test_curation_rejecting_two_masks(workspace, caiman_recording):
    recording_dir, results_dir = caiman_recording
    instance = DagsterInstance.ephemeral()
    first, partition = materialize_partition(workspace, recording_dir, ALL_ASSETS, paramset=PARAMSET,
                                             instance=instance)
    assert metadata(first, "curation")["curation_id"] == 0
    write_curation_file(partition.files.curation_input, CurationRequest(reject=[0, 2], note="two were dendrites"))
    second, _ = materialize_partition(workspace, recording_dir, ALL_ASSETS[2:], paramset=PARAMSET,
                                      instance=instance)
    meta = metadata(second, "curation")
    assert (meta["curation_id"], meta["manual_curation"], meta["curation_note"]) == (1, True, "two were dendrites")
    assert (meta["n_masks_before"], meta["n_masks_after"], meta["n_rejected"]) == (3, 1, 2)
    expected = load_caiman_results(results_dir)
    content = nwb_content(partition.nwb_path())
    np.testing.assert_array_equal(content["ids"], [1])
    for name in ("raw", "neuropil", "denoised", "spikes", "dff"):
        assert content[name].shape == (120, 1), name
    np.testing.assert_array_equal(content["raw"][:, 0], expected.fluorescence[1])
    assert content["mask_types"] == [expected.mask_types[1]]
    assert metadata(second, "activity")["curation_id"] == 1
    assert all(checks(second).values())
    # re-running with the same curation keeps its id
    third, _ = materialize_partition(workspace, recording_dir, ALL_ASSETS[2:3], paramset=PARAMSET, instance=instance)
    assert metadata(third, "curation")["curation_id"] == 1


def test_curation_file_naming_an_unknown_mask(workspace, caiman_recording):
    recording_dir, _ = caiman_recording
    _, partition = materialize_partition(workspace, recording_dir, ALL_ASSETS[:2], paramset=PARAMSET)
    write_curation_file(partition.files.curation_input, CurationRequest(reject=[99]))
    from miniscope_assets.errors import MiniscopeInputError
    from miniscope_assets.stages import curation

    with pytest.raises(MiniscopeInputError, match=r"unknown mask id\(s\) \[99\]") as caught:
        curation.run(partition)
    assert str(partition.files.curation_input) in str(caught.value)
