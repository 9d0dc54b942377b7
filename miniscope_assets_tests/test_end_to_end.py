"""End to end with the built-in engine: a simulated V4 recording with known neurons through every
asset, into a raw NWB file and a processed NWB file that read back with every container."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from dagster import DagsterInstance

from miniscope_assets.example import simulated_frames
from miniscope_assets.io.miniscope_writer import write_v4_recording
from miniscope_assets.simulation import Simulation, SimulationConfig
from miniscope_assets.stages.checks import inspect_nwb
from miniscope_assets.stages.curation import CurationRequest, write_curation_file
from miniscope_assets.stages.processing import load_processing_result
from miniscope_assets.stages.workspace import Workspace
from miniscope_assets_tests.conftest import write_user_metadata
from miniscope_assets_tests.dagster_helpers import PARTITION_STAGES, checks, materialize_partition, metadata
from miniscope_assets_tests.nwb_helpers import assert_matches, read_ophys

RECORDING = "mouse-7/2024_05_17/10_30_00/Miniscope"
EXPECTED_INTERFACES = ["DfOverF", "Fluorescence", "ImageSegmentation", "MaskClassification",
                       "MotionOutlierFrames", "RigidMotionShifts", "SummaryImages"]


@pytest.fixture(scope="module")
def simulation():
    return Simulation(SimulationConfig(height=80, width=80, nframes=400, n_neurons=10, fps=20.0, seed=7))


@pytest.fixture
def recording(data_root, simulation):
    write_user_metadata(data_root / "mouse-7")
    write_v4_recording(data_root / "mouse-7" / "2024_05_17" / "10_30_00", simulated_frames(simulation),
                       fps=20.0, frames_per_file=150, per_device_layout=True)
    return RECORDING


def test_whole_chain_into_a_raw_and_a_processed_file(workspace, recording, simulation):
    run, partition = materialize_partition(workspace, recording)
    nwb_path = partition.nwb_path()
    folder = workspace.output_root / "sub-mouse-7"
    assert nwb_path == folder / "sub-mouse-7_ses-20240517T103000-Miniscope-default_ophys.nwb"
    raw_path = partition.recording.raw_nwb_path()
    assert raw_path == folder / "sub-mouse-7_ses-20240517T103000-Miniscope_ophys.nwb"
    assert sorted(workspace.output_root.rglob("*.nwb")) == sorted([nwb_path, raw_path])
    content = read_ophys(nwb_path)
    assert content["interfaces"] == EXPECTED_INTERFACES
    assert content["series"] == ["Deconvolved", "Denoised", "Neuropil", "RoiResponseSeries"]
    assert content["images"] == ["correlation", "max_projection", "mean", "peak_to_noise", "reference"]
    engine_result = load_processing_result(partition)
    assert_matches(content, engine_result)
    np.testing.assert_allclose(content["xy"][:, 0], engine_result.motion_rigid.x_shifts, rtol=1e-6)
    assert content["corrected"] is None  # the corrected movie is opt-in per paramset
    np.testing.assert_array_equal(content["times"], partition.recording_info().timestamps)
    with h5py.File(nwb_path, "r") as f:  # the processed file stands alone, without the raw movie
        assert "acquisition" not in f or not list(f["acquisition"])
        assert f["general/subject/subject_id"][()].decode() == "mouse-7"
        assert "Miniscope" in f["general/devices"]
    # the engine found the simulated neurons (accuracy itself is tested in test_engine_*)
    assert abs(engine_result.n_masks - simulation.n_neurons) <= 3
    assert all(checks(run).values()), checks(run)
    messages = inspect_nwb(nwb_path)
    assert messages.passed and messages.metadata["messages_by_importance"].get("CRITICAL", 0) == 0
    catalog = {name: metadata(run, name) for name in PARTITION_STAGES}
    assert catalog["segmentation"]["n_masks"] == engine_result.n_masks
    assert catalog["processing"]["param_hash"] == workspace.paramset("default").param_hash
    for png in ("masks_png",):
        assert Path(catalog["segmentation"][png]).stat().st_size > 1000
    assert catalog["motion_correction"]["max_shift_px"] > 0.5
    readout = ("row_banding_removed", "stuck_pixels_repaired", "flickering_pixels_repaired", "glitched_frames_replaced")
    assert [catalog["motion_correction"][key] for key in readout] == [False, 0, 0.0, 0]  # a clean recording
    assert catalog["activity"]["dff_max"] > 0


def test_curation_and_reuse(workspace, recording):
    instance = DagsterInstance.ephemeral()
    _, partition = materialize_partition(workspace, recording, instance=instance)
    engine_result = load_processing_result(partition)
    results_mtime = (partition.files.processing_dir / "results.h5").stat().st_mtime_ns
    rejected = [int(engine_result.mask_ids[1]), int(engine_result.mask_ids[3])]
    write_curation_file(partition.files.curation_input, CurationRequest(reject=rejected, note="not cells"))
    # re-materialize from processing on: same inputs, so the engine result is reused
    run, _ = materialize_partition(workspace, recording, instance=instance, with_raw=False)
    assert metadata(run, "processing")["reused_existing_results"] is True
    assert (partition.files.processing_dir / "results.h5").stat().st_mtime_ns == results_mtime
    assert metadata(run, "curation")["curation_id"] == 1
    content = read_ophys(partition.nwb_path())
    keep = [i for i, mask_id in enumerate(engine_result.mask_ids) if mask_id not in rejected]
    assert_matches(content, engine_result.select(np.asarray(keep)))
    assert content["interfaces"] == EXPECTED_INTERFACES  # nothing stale, nothing duplicated
    with h5py.File(partition.nwb_path(), "r") as f:
        assert f["processing/ophys/Fluorescence/RoiResponseSeries/data"].shape == (400, engine_result.n_masks - 2)
    log = json.loads(partition.files.curation_log.read_text())
    assert [entry["curation_id"] for entry in log] == [0, 1]
    # forced: the engine runs again
    forced, _ = materialize_partition(workspace, recording, ["processing"], instance=instance, with_raw=False,
                                      run_config={"ops": {"processing": {"config": {"force": True}}}})
    assert metadata(forced, "processing")["reused_existing_results"] is False


def test_the_work_and_output_folders_can_be_moved(workspace, recording, tmp_path):
    _, partition = materialize_partition(workspace, recording)
    for path in workspace.work_root.rglob("*.json"):  # every stored reference is relative to its root
        stored = json.loads(path.read_text())
        if path.name == "recording.json":  # the acquisition software's own metadata is kept as written
            stored["info"]["device"].pop("metadata")
        assert str(tmp_path) not in json.dumps(stored), path
    with h5py.File(partition.files.processing_dir / "results.h5", "r") as f:
        assert not f.attrs["corrected_movie"].startswith("/")
    moved = Workspace(workspace.data_root, tmp_path / "moved_nwb", tmp_path / "moved_work", workspace.paramsets_file)
    workspace.work_root.rename(moved.work_root)
    workspace.output_root.rename(moved.output_root)
    write_curation_file(moved.partition(partition.recording_key, "default").files.curation_input,
                        CurationRequest(reject=[0], note="moved"))
    run, moved_partition = materialize_partition(moved, recording, PARTITION_STAGES[1:], with_raw=False)
    assert metadata(run, "curation")["curation_id"] == 1
    assert moved_partition.nwb_path().is_relative_to(moved.output_root) and moved_partition.nwb_path().is_file()


def test_a_paramset_keeping_the_corrected_movie(workspace, recording):
    import yaml

    workspace.paramsets_file.write_text(yaml.safe_dump({"paramsets": [
        {"name": "movie", "method": "builtin", "keep_corrected_movie": True}]}))
    _, partition = materialize_partition(workspace, recording, paramset="movie")
    content = read_ophys(partition.nwb_path())
    assert content["corrected"].shape == (400, 80, 80)
    with h5py.File(partition.nwb_path(), "r") as f:
        assert f["processing/ophys/MotionCorrected/data"].compression == "gzip"
    (motion,) = (workspace.work_root / partition.recording_key / "motion").iterdir()
    assert not (motion / "corrected.h5").exists()  # the cache is removed once written into the file
