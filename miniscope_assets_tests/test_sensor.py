"""The new-recordings sensor: partitions and runs for stable new folders, idempotent cursor."""

from __future__ import annotations

import yaml
from dagster import DagsterInstance, build_sensor_context

from miniscope_assets.io.miniscope_writer import write_v3_recording, write_v4_recording
from miniscope_assets.orchestration.definitions import miniscope_job
from miniscope_assets.orchestration.sensors import build_recording_sensor
from miniscope_assets_tests.conftest import movie
from miniscope_assets_tests.dagster_helpers import storage_for

sensor = build_recording_sensor(miniscope_job)


def tick(instance, workspace, cursor):
    """One sensor evaluation; dynamic partition requests are applied to the instance."""
    with build_sensor_context(instance=instance, cursor=cursor,
                              resources={"storage": storage_for(workspace)}) as context:
        result = sensor(context)
        instance.add_dynamic_partitions("recording", [
            key for request in result.dynamic_partitions_requests
            if request.partitions_def_name == "recording" for key in request.partition_keys
        ])
        instance.add_dynamic_partitions("paramset", [
            key for request in result.dynamic_partitions_requests
            if request.partitions_def_name == "paramset" for key in request.partition_keys
        ])
        return result


def run_partitions(result):
    return sorted(
        (r.partition_key.keys_by_dimension["recording"], r.partition_key.keys_by_dimension["paramset"])
        for r in result.run_requests
    )


def test_new_folder_becomes_partitions_and_runs_once(workspace, data_root):
    instance = DagsterInstance.ephemeral()
    write_v4_recording(data_root / "m1" / "s1", list(movie(nframes=30)), per_device_layout=True)
    first = tick(instance, workspace, None)
    assert first.run_requests == []  # seen once: wait until it stops changing
    second = tick(instance, workspace, first.cursor)
    assert run_partitions(second) == [("m1--s1--Miniscope", "default")]
    assert instance.get_dynamic_partitions("recording") == ["m1--s1--Miniscope"]
    assert instance.get_dynamic_partitions("paramset") == ["default"]
    assert workspace.registry.folder("m1--s1--Miniscope") == "m1/s1/Miniscope"
    third = tick(instance, workspace, second.cursor)
    assert third.run_requests == [] and third.dynamic_partitions_requests == []


def test_folder_still_being_written_is_not_picked_up(workspace, data_root):
    instance = DagsterInstance.ephemeral()
    folder = write_v3_recording(data_root / "v3", list(movie(nframes=30)))
    first = tick(instance, workspace, None)
    with open(folder / "timestamp.dat", "a") as handle:  # the copy is still growing
        handle.write("1\t31\t1550\t0\n")
    second = tick(instance, workspace, first.cursor)
    assert second.run_requests == []
    third = tick(instance, workspace, second.cursor)
    assert run_partitions(third) == [("v3", "default")]


def test_new_paramset_runs_for_known_recordings(workspace, data_root):
    instance = DagsterInstance.ephemeral()
    write_v4_recording(data_root / "rec", list(movie(nframes=30)))
    cursor = tick(instance, workspace, tick(instance, workspace, None).cursor).cursor
    workspace.paramsets_file.write_text(yaml.safe_dump({"paramsets": [
        {"name": "default", "method": "builtin", "params": {}},
        {"name": "small_cells", "method": "builtin", "params": {"gSig": 2}},
    ]}))
    result = tick(instance, workspace, cursor)
    assert run_partitions(result) == [("rec", "small_cells")]
    assert sorted(instance.get_dynamic_partitions("paramset")) == ["default", "small_cells"]
    assert tick(instance, workspace, result.cursor).run_requests == []


def test_behaviour_camera_and_incomplete_folders_are_ignored(workspace, data_root):
    import json

    instance = DagsterInstance.ephemeral()
    behav = write_v4_recording(data_root / "s", list(movie(nframes=30)), per_device_layout=True,
                               device_name="BehavCam_0")
    meta = json.loads((behav / "metaData.json").read_text())
    meta["deviceType"] = "WebCam-320x240"
    (behav / "metaData.json").write_text(json.dumps(meta))
    incomplete = write_v4_recording(data_root / "half", list(movie(nframes=30)))
    (incomplete / "timeStamps.csv").unlink()
    result = tick(instance, workspace, tick(instance, workspace, None).cursor)
    assert result.run_requests == []


def test_broken_paramset_file_skips_with_the_reason(workspace, data_root):
    workspace.paramsets_file.write_text("paramsets: [{name: x, method: nope}]")
    with build_sensor_context(instance=DagsterInstance.ephemeral(),
                              resources={"storage": storage_for(workspace)}) as context:
        result = sensor(context)
    assert "method 'nope'" in result.skip_message and str(workspace.paramsets_file) in result.skip_message
