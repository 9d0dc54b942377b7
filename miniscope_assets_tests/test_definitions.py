"""The code location loads and validates as `dagster definitions validate` sees it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from dagster import AssetKey

from miniscope_assets.orchestration.definitions import defs

REPO = Path(__file__).resolve().parents[1]


def test_definitions_follow_the_stage_table():
    from miniscope_assets.stages.table import CROSS_SESSION, FINAL_STAGE, STAGES

    raw, processing = defs.resolve_job_def("miniscope_raw_job"), defs.resolve_job_def("miniscope_processing_job")
    registration = defs.resolve_job_def("miniscope_registration_job")
    assert raw.partitions_def.name == "recording"
    assert sorted(processing.partitions_def.partition_dimension_names) == ["paramset", "recording"]
    assert sorted(registration.partitions_def.partition_dimension_names) == ["paramset", "subject"]
    graph = defs.resolve_asset_graph()
    assert {k.path[-1] for k in graph.get_all_asset_keys()} == {"raw_recording", *(s.name for s in STAGES),
                                                               CROSS_SESSION.name}
    for before, after in zip(STAGES, STAGES[1:]):  # each stage depends on the one before it
        assert graph.get(AssetKey(after.name)).parent_keys == {AssetKey(before.name)}
    assert graph.get(AssetKey(CROSS_SESSION.name)).parent_keys == {AssetKey(FINAL_STAGE)}
    assert defs.resolve_sensor_def("new_recordings")


def test_dagster_cli_validates_the_workspace(tmp_path):
    dagster = Path(sys.executable).with_name("dagster")
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "MINISCOPE_WORK_FOLDER": str(tmp_path / "w")}
    completed = subprocess.run([str(dagster), "definitions", "validate", "-w", "workspace.yaml"],
                               cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "All code locations passed validation" in completed.stdout + completed.stderr
