"""The code location loads and validates as `dagster definitions validate` sees it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from miniscope_assets.orchestration.definitions import defs

REPO = Path(__file__).resolve().parents[1]


def test_definitions_resolve():
    job = defs.resolve_job_def("miniscope_job")
    assert job.partitions_def is not None
    assert defs.resolve_sensor_def("new_recordings")


def test_dagster_cli_validates_the_workspace(tmp_path):
    dagster = Path(sys.executable).with_name("dagster")
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "MINISCOPE_WORK_FOLDER": str(tmp_path / "w")}
    completed = subprocess.run([str(dagster), "definitions", "validate", "-w", "workspace.yaml"],
                               cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "All code locations passed validation" in completed.stdout + completed.stderr
