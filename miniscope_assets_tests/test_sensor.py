"""The new-recordings sensor: recordings are processed once, complete; changes re-run them;
renamed or deleted folders are retired; what the CLI did is not repeated."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import pytest
import yaml
from dagster import DagsterInstance, build_sensor_context
from dagster._core.definitions.dynamic_partitions_request import DeleteDynamicPartitionsRequest

from miniscope_assets.example import simulated_frames
from miniscope_assets.io.miniscope_writer import write_v3_recording, write_v4_recording
from miniscope_assets.orchestration.definitions import processing_job, raw_job, registration_job
from miniscope_assets.orchestration.sensors import build_recording_sensor
from miniscope_assets.simulation import Simulation, SimulationConfig
from miniscope_assets_tests.conftest import SESSION, movie, write_user_metadata
from miniscope_assets_tests.dagster_helpers import PARTITION_STAGES, materialize_stages, storage_for

sensor = build_recording_sensor(raw_job, processing_job, registration_job)
JOB_STAGES = {raw_job.name: ["recording_info"], processing_job.name: PARTITION_STAGES,
              registration_job.name: ["cross_session_registration"]}


@pytest.fixture(autouse=True)
def no_quiet_period(monkeypatch):
    """Quiet = unchanged between two consecutive ticks (the period itself is tested in test_discovery)."""
    monkeypatch.setenv("MINISCOPE_QUIET_PERIOD_S", "0")


class Ticker:
    """Evaluates the sensor like the daemon would and, on request, runs what it asked for."""

    def __init__(self, workspace):
        self.workspace = workspace
        self.instance = DagsterInstance.ephemeral()
        self.cursor = None
        self.run_keys = set()  # the daemon skips a run request whose run key it has seen

    def tick(self):
        with build_sensor_context(instance=self.instance, cursor=self.cursor,
                                  resources={"storage": storage_for(self.workspace)}) as context:
            result = sensor(context)
        for request in result.dynamic_partitions_requests:
            if isinstance(request, DeleteDynamicPartitionsRequest):
                for key in request.partition_keys:
                    self.instance.delete_dynamic_partition(request.partitions_def_name, key)
            else:
                self.instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        for event in result.asset_events:
            self.instance.report_runless_asset_event(event)
        self.cursor = result.cursor
        return result

    def execute(self, result) -> list:
        """Run every requested run in-process; return what ran as (job, partition) pairs."""
        ran = []
        for request in result.run_requests:
            if request.run_key in self.run_keys:
                continue
            self.run_keys.add(request.run_key)
            materialize_stages(self.workspace, request.partition_key, JOB_STAGES[request.job_name], self.instance)
            ran.append((request.job_name, str(request.partition_key)))
        return ran

    def settle(self, ticks: int = 6) -> list:
        """Tick and run until the sensor asks for nothing more; return every run."""
        ran = []
        for _ in range(ticks):
            ran += self.execute(self.tick())
        return ran

    def materializations(self, asset: str, partition: str) -> int:
        from dagster import AssetKey, AssetRecordsFilter

        return len(self.instance.fetch_materializations(
            AssetRecordsFilter(asset_key=AssetKey(asset), asset_partitions=[partition]), limit=100).records)


def staged_recording(staging: Path, nframes: int = 300) -> Path:
    """A simulated V4 session (per-device layout, 100 frames per AVI) outside the data root."""
    simulation = Simulation(SimulationConfig(height=48, width=48, nframes=nframes, n_neurons=4, fps=20.0, seed=11))
    write_v4_recording(staging / "s1", simulated_frames(simulation), fps=20.0, frames_per_file=100,
                       per_device_layout=True)
    return staging / "s1"


def copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source, target)


def raw_frames(path: Path) -> int:
    with h5py.File(path, "r") as f:
        return f["acquisition/OnePhotonSeries/data"].shape[0]


def test_a_recording_copied_file_by_file_is_processed_once_complete(workspace, data_root, tmp_path):
    session = staged_recording(tmp_path / "staging")
    target = data_root / "mouse-7" / "s1"
    write_user_metadata(data_root / "mouse-7")
    ticker = Ticker(workspace)
    for name in ("metaData.json", "Miniscope/metaData.json", "Miniscope/timeStamps.csv", "Miniscope/0.avi",
                 "Miniscope/1.avi"):
        copy(session / name, target / name)
        for _ in range(3):  # the copy pauses for longer than the sensor interval
            assert ticker.tick().run_requests == []
    copy(session / "Miniscope/2.avi", target / "Miniscope/2.avi")
    ran = ticker.settle()
    key = "mouse-7.Miniscope.20240517T103000"
    assert ran == [("miniscope_raw_job", key), ("miniscope_processing_job", f"default|{key}")]
    recording = workspace.recording(key)
    assert raw_frames(recording.raw_nwb_path()) == 300
    assert ticker.materializations("recording_info", key) == 1
    assert ticker.materializations("activity", f"default|{key}") == 1


def test_a_file_added_after_processing_runs_it_again_and_replaces_the_outputs(workspace, data_root, tmp_path):
    session = staged_recording(tmp_path / "staging", nframes=400)
    target = data_root / "mouse-7" / "s1"
    write_user_metadata(data_root / "mouse-7")
    rows = (session / "Miniscope/timeStamps.csv").read_text().splitlines()
    for name in ("metaData.json", "Miniscope/metaData.json", "Miniscope/0.avi", "Miniscope/1.avi", "Miniscope/2.avi"):
        copy(session / name, target / name)
    (target / "Miniscope/timeStamps.csv").write_text("\n".join(rows[:301]) + "\n")
    ticker = Ticker(workspace)
    assert len(ticker.settle()) == 2
    key = "mouse-7.Miniscope.20240517T103000"
    partition = workspace.partition(key, "default")
    first_fingerprint = partition.recording.record().fingerprint
    copy(session / "Miniscope/3.avi", target / "Miniscope/3.avi")
    copy(session / "Miniscope/timeStamps.csv", target / "Miniscope/timeStamps.csv")
    ran = ticker.settle()
    assert ran == [("miniscope_raw_job", key), ("miniscope_processing_job", f"default|{key}")]
    assert partition.recording.record().fingerprint != first_fingerprint
    assert raw_frames(partition.recording.raw_nwb_path()) == 400
    with h5py.File(partition.nwb_path(), "r") as f:
        assert f["processing/ophys/Fluorescence/RoiResponseSeries/data"].shape[0] == 400
    assert sorted(p.name for p in workspace.output_root.rglob("*")) == sorted(
        [partition.nwb_path().name, partition.recording.raw_nwb_path().name, "sub-mouse-7"])
    assert ticker.settle() == []


def test_a_renamed_folder_retires_the_old_partition(workspace, data_root, tmp_path):
    write_user_metadata(data_root / "mouse-7")
    write_v4_recording(data_root / "mouse-7" / "s1", list(movie(nframes=30)), per_device_layout=True)
    ticker = Ticker(workspace)
    ticker.tick(), ticker.tick()
    old = "mouse-7.Miniscope.20240517T103000"
    assert ticker.instance.get_dynamic_partitions("recording") == [old]
    (data_root / "mouse-7" / "s1").rename(data_root / "mouse-7" / "s1_renamed")
    ticker.tick()
    assert ticker.instance.get_dynamic_partitions("recording") == []
    with pytest.raises(Exception, match="retired"):
        workspace.recording(old)
    result = ticker.tick()  # the renamed folder is the same recording: it takes the outputs over
    (new,) = workspace.registry.live()  # under a new key: the old one keeps the old folder's history
    assert new.startswith(old + "-") and [str(r.partition_key) for r in result.run_requests] == [new]
    assert workspace.registry.live() == {new: "mouse-7/s1_renamed/Miniscope"}


def test_the_sensor_does_not_repeat_what_the_cli_did(workspace, data_root, tmp_path, monkeypatch):
    from miniscope_assets import settings
    from miniscope_assets.cli import run_recordings

    write_user_metadata(data_root / "mouse-7")
    simulation = Simulation(SimulationConfig(height=48, width=48, nframes=200, n_neurons=4, fps=20.0, seed=11))
    write_v4_recording(data_root / "mouse-7" / "s1", simulated_frames(simulation), fps=20.0, per_device_layout=True)
    current = settings.Settings(workspace.data_root, workspace.output_root, workspace.work_root,
                                workspace.paramsets_file, tmp_path / "dagster_home")
    run_recordings(current, "mouse-7/s1", None)  # a session folder: its device is the recording
    ticker = Ticker(workspace)
    ticker.instance = DagsterInstance.get()  # the CLI's instance (DAGSTER_HOME set by the CLI)
    assert ticker.settle() == []


def test_new_paramset_runs_for_known_recordings_only(workspace, data_root):
    write_v4_recording(data_root / "rec", list(movie(nframes=30)))
    key = "unknown.Miniscope.20240517T103000"
    ticker = Ticker(workspace)
    ticker.tick()
    first = ticker.tick()
    assert [r.job_name for r in first.run_requests] == ["miniscope_raw_job"]
    ticker.execute(first)
    assert [str(r.partition_key) for r in ticker.tick().run_requests] == [f"default|{key}"]
    workspace.paramsets_file.write_text(yaml.safe_dump({"paramsets": [
        {"name": "default", "method": "builtin", "params": {}},
        {"name": "small_cells", "method": "builtin", "params": {"neuron_diameter": 6}},
    ]}))
    result = ticker.tick()
    assert sorted(str(r.partition_key) for r in result.run_requests) == [f"default|{key}", f"small_cells|{key}"]
    assert sorted(ticker.instance.get_dynamic_partitions("paramset")) == ["default", "small_cells"]
    shutil.rmtree(data_root / "rec")  # a deleted recording is retired: no run for it any more
    result = ticker.tick()
    assert result.run_requests == [] and ticker.instance.get_dynamic_partitions("recording") == []


def test_incomplete_and_behaviour_camera_folders_are_not_run(workspace, data_root):
    import json

    behav = write_v4_recording(data_root / "s", list(movie(nframes=30)), per_device_layout=True,
                               device_name="BehavCam_0")
    meta = json.loads((behav / "metaData.json").read_text())
    meta["deviceType"] = "WebCam-320x240"
    (behav / "metaData.json").write_text(json.dumps(meta))
    short = write_v4_recording(data_root / "short", list(movie(nframes=30)), frames_per_file=10)
    (short / "2.avi").unlink()  # a movie file still missing: 20 frames for 30 timestamp rows
    folder = write_v3_recording(data_root / "v3", list(movie(nframes=30)))
    ticker = Ticker(workspace)
    ticker.tick()
    with open(folder / "timestamp.dat", "a") as handle:  # the V3 copy is still growing
        handle.write("1\t31\t1550\t0\n")
    assert ticker.tick().run_requests == []
    (request,) = ticker.tick().run_requests
    assert str(request.partition_key) == "mouse1.Miniscope.v3"  # V3: the animal and folder name
    (again,) = ticker.tick().run_requests  # not run yet: asked again under the same run key (deduplicated)
    assert again.run_key == request.run_key
    assert list(workspace.registry.live().values()) == ["v3"]
    status = json.loads(ticker.cursor)["folders"]["short"]["status"]
    assert status == "incomplete: 20 frames in the AVI files but 30 timestamp rows"


def test_broken_paramset_file_skips_with_the_reason(workspace, data_root):
    workspace.paramsets_file.write_text("paramsets: [{name: x, method: nope}]")
    with build_sensor_context(instance=DagsterInstance.ephemeral(),
                              resources={"storage": storage_for(workspace)}) as context:
        result = sensor(context)
    assert "method 'nope'" in result.skip_message and str(workspace.paramsets_file) in result.skip_message


def test_two_sessions_of_a_subject_are_registered_across_sessions(workspace, data_root):
    """Two sessions of one mouse processed from the sensor, then their registration: one
    subject-level NWB file whose table gives every cell of day 1 its ROI on day 2."""
    from pynwb import NWBHDF5IO

    from miniscope_assets.stages.checks import inspect_nwb

    write_user_metadata(data_root / "mouse")
    frames = list(simulated_frames(Simulation(SimulationConfig(height=64, width=64, nframes=300, n_neurons=6, seed=2))))
    for day in ("day1", "day2"):
        folder = write_v4_recording(data_root / "mouse" / day, frames, frames_per_file=100)
        (folder / "session.yaml").write_text(yaml.safe_dump({**SESSION, "session_id": day}))
    ticker = Ticker(workspace)
    ran = ticker.settle()
    registrations = [partition for job, partition in ran if job == registration_job.name]
    assert registrations == ["default|mouse-7"]
    assert not ticker.execute(ticker.tick())  # nothing changed: nothing runs again
    subject = workspace.subject("mouse-7", "default")
    with NWBHDF5IO(str(subject.nwb_path()), "r") as io:
        nwbfile = io.read()
        cells = nwbfile.processing["ophys"]["CrossSessionCells"].to_dataframe()
        alignment = nwbfile.processing["ophys"]["SessionAlignment"].to_dataframe()
        assert set(nwbfile.processing["ophys"]["AlignedSummaryImages"].images) == set(alignment.session_id)
    assert list(alignment.session_id) == ["day1-Miniscope-default", "day2-Miniscope-default"]
    assert abs(alignment.x_shift_px).max() < 0.5 and abs(alignment.rotation_degrees).max() < 0.5
    per_session = cells.groupby("session_id").size()
    assert len(per_session) == 2 and per_session.iloc[0] == per_session.iloc[1] >= 4
    assert (cells.groupby("global_cell_id").size() == 2).all()  # the same movie twice: every cell in both
    assert (cells.groupby("global_cell_id").roi_id.nunique() == 1).all()
    assert ticker.materializations("cross_session_registration", "default|mouse-7") == 1
    outcome = inspect_nwb(subject.nwb_path())
    assert outcome.passed, outcome.description
