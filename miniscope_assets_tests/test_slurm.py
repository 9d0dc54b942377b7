"""Processing as a Slurm job through Dagster Pipes, on a real single-node Slurm cluster (started
by .ci/run from Debian's packages): the same results as a local run, with the job's id; a failing
job fails the step with its log; a cancelled run leaves no job behind."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from dagster import DagsterInstance, materialize

from miniscope_assets.example import simulated_frames
from miniscope_assets.io.miniscope_writer import write_v4_recording
from miniscope_assets.orchestration.partitions import partition_key
from miniscope_assets.orchestration.slurm import Compute
from miniscope_assets.simulation import Simulation, SimulationConfig
from miniscope_assets.stages.workspace import Workspace
from miniscope_assets_tests.conftest import service_or_skip, write_user_metadata
from miniscope_assets_tests.dagster_helpers import (
    ALL_ASSETS,
    checks,
    materialize_stages,
    metadata,
    register,
    storage_for,
)

pytestmark = pytest.mark.services
RECORDING = "mouse-7/2024_05_17/10_30_00/Miniscope"
# --export=NONE: the job gets nothing from the submitting environment; its script carries what Pipes needs
SMALL_JOB = {"backend": "slurm", "cpus": 1, "memory": "2G", "time": "00:10:00", "poll_interval_s": 0.5,
             "sbatch_args": ["--export=NONE"]}


@pytest.fixture(autouse=True)
def slurm_cluster():
    running = shutil.which("sbatch") is not None and subprocess.run(
        ["sinfo", "-h", "-o", "%t"], capture_output=True, text=True).stdout.strip() in {"idle", "mix", "alloc"}
    service_or_skip("Slurm cluster", running, "bash .ci/run starts one (see .ci/services.sh)")


@pytest.fixture(scope="module")
def frames():
    simulation = Simulation(SimulationConfig(height=80, width=80, nframes=300, n_neurons=8, fps=20.0, seed=11))
    return list(simulated_frames(simulation))


def workspace_with_recording(root: Path, frames) -> Workspace:
    write_user_metadata(root / "data" / "mouse-7")
    write_v4_recording(root / "data" / "mouse-7" / "2024_05_17" / "10_30_00", frames, fps=20.0,
                       frames_per_file=150, per_device_layout=True)
    return Workspace(root / "data", root / "nwb", root / "work", root / "data" / "paramsets.yaml")


def materialize_processing(workspace: Workspace, compute: Compute, instance=None, raise_on_error=True,
                           key=None):
    """recording_info then processing (only processing when the recording's ``key`` is given)."""
    instance = instance or DagsterInstance.ephemeral()
    if key is None:
        key = register(workspace, RECORDING, instance)
        materialize_stages(workspace, key, ["recording_info"], instance)
    return materialize(ALL_ASSETS, selection=["processing"], partition_key=partition_key(key, "default"),
                       instance=instance, raise_on_error=raise_on_error,
                       resources={"storage": storage_for(workspace), "compute": compute})


def comparable(values: dict) -> dict:
    """Metadata without what differs between any two runs: times, places, file dates (in the
    input hash), the cores used (results do not depend on them) and the job itself."""
    varying = {"results_path", "input_hash", "processing_time", "n_workers"}
    return {k: v for k, v in values.items()
            if k not in varying and not k.endswith("runtime_s") and not k.startswith("slurm_")}


def test_processing_as_a_slurm_job_gives_the_local_results_and_the_job_id(tmp_path, frames):
    local_workspace = workspace_with_recording(tmp_path / "local", frames)
    slurm_workspace = workspace_with_recording(tmp_path / "slurm", frames)
    local = materialize_processing(local_workspace, Compute())
    instance = DagsterInstance.ephemeral()
    remote = materialize_processing(slurm_workspace, Compute(**SMALL_JOB), instance)

    local_meta, slurm_meta = metadata(local, "processing"), metadata(remote, "processing")
    assert slurm_meta["slurm_job_id"].isdigit() and slurm_meta["slurm_node"]
    assert "slurm_job_id" not in local_meta
    assert slurm_meta["n_workers"] == SMALL_JOB["cpus"]  # the job's allocation, not the node's cores
    assert comparable(slurm_meta) == comparable(local_meta) and len(comparable(local_meta)) >= 4
    assert checks(remote) == checks(local) and all(checks(remote).values())
    files = [next(w.partition(w.registry.key_for(RECORDING), "default").files.work_dir.rglob("results.h5"))
             for w in (local_workspace, slurm_workspace)]
    with h5py.File(files[0], "r") as a, h5py.File(files[1], "r") as b:
        assert sorted(a["traces"]) == sorted(b["traces"]) and len(a["traces"]) >= 3 and a["masks/ids"].size > 0
        np.testing.assert_array_equal(a["masks/ids"][()], b["masks/ids"][()])
        for name in a["traces"]:
            np.testing.assert_allclose(a["traces"][name][()], b["traces"][name][()], rtol=1e-5, atol=1e-6)
    assert Path(slurm_meta["slurm_log"]).is_file()
    messages = [entry.user_message for entry in instance.all_logs(remote.run_id)]
    job = slurm_meta["slurm_job_id"]
    assert any(m.startswith(f"Slurm job {job} submitted: sbatch") for m in messages)
    assert any(f"Slurm job {job} on " in m for m in messages)  # logged by the job, through Pipes
    assert any(m.endswith("traces: 100%") for m in messages)  # the stage's progress, through Pipes


def test_a_failing_job_fails_the_step_with_its_log(tmp_path, frames):
    workspace = workspace_with_recording(tmp_path, frames)
    instance = DagsterInstance.ephemeral()
    key = register(workspace, RECORDING, instance)
    materialize_stages(workspace, key, ["recording_info"], instance)
    movie = workspace.data_root / RECORDING / "0.avi"
    movie.write_bytes(b"RIFF" + os.urandom(2000))  # the job's stage fails on its first read
    result = materialize_processing(workspace, Compute(**SMALL_JOB), instance, raise_on_error=False, key=key)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    message = failure.step_failure_data.error.message
    assert "Slurm job" in message and "ended FAILED" in message
    assert "0.avi" in message  # the stage's own error, from the job's log tail


CANCELLED_RUN = """
import sys
from pathlib import Path
from dagster import DagsterInstance, materialize
from miniscope_assets.orchestration.slurm import Compute
from miniscope_assets.stages.workspace import Workspace
from miniscope_assets_tests.dagster_helpers import ALL_ASSETS, register, storage_for
from miniscope_assets.orchestration.partitions import partition_key

root, recording = Path(sys.argv[1]), sys.argv[2]
workspace = Workspace(root / "data", root / "nwb", root / "work", root / "data" / "paramsets.yaml")
instance = DagsterInstance.ephemeral()
key = register(workspace, recording, instance)
compute = Compute(backend="slurm", cpus=1, memory="1G", poll_interval_s=0.2, sbatch_args=["--begin=now+3600"])
materialize(ALL_ASSETS, selection=["processing"], partition_key=partition_key(key, "default"), instance=instance,
            resources={"storage": storage_for(workspace), "compute": compute}, raise_on_error=False)
"""


def queued_jobs() -> list[str]:
    listing = subprocess.run(["squeue", "-h", "-n", "miniscope-processing", "-o", "%i %T"],
                             capture_output=True, text=True, check=True)
    return listing.stdout.split("\n")[:-1]


def test_a_cancelled_run_leaves_no_job_in_the_queue(tmp_path, frames):
    workspace_with_recording(tmp_path, frames)
    assert queued_jobs() == []
    process = subprocess.Popen([sys.executable, "-c", CANCELLED_RUN, str(tmp_path), RECORDING],
                               cwd=Path(__file__).parents[1])
    try:
        deadline = time.monotonic() + 60
        while not queued_jobs() and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.2)
        (job,) = queued_jobs()
        assert job.endswith("PENDING")  # held by --begin: only a cancellation can end it
        process.send_signal(signal.SIGINT)  # what terminating the run does to its step
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    deadline = time.monotonic() + 10
    while queued_jobs() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert queued_jobs() == []
