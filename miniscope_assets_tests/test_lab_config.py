"""What a lab gets without any server: the shipped instance limits whichever way Dagster starts,
the UI hint and command, figures as images in the metadata, and the Slurm job's command line."""

from __future__ import annotations

import base64
import os
import re
import shlex
from pathlib import Path

import cv2
import numpy as np
import pytest
from dagster import DagsterInstance
from dagster._core.instance.ref import InstanceRef

from miniscope_assets import cli, settings
from miniscope_assets.orchestration.instance import missing_limits
from miniscope_assets.orchestration.reporting import report_metadata
from miniscope_assets.orchestration.slurm import Compute
from miniscope_assets.stages import figures
from miniscope_assets.stages.figures import THUMBNAIL_BYTES

REPOSITORY = Path(__file__).parents[1]


def limits(instance: DagsterInstance) -> tuple:
    config = instance.get_concurrency_config()
    return config.pool_config.default_pool_limit, config.run_queue_config.max_concurrent_runs


def test_the_shipped_limits_hold_for_the_cli_and_for_dagster_dev_from_the_repository(tmp_path, monkeypatch):
    monkeypatch.setenv("MINISCOPE_WORK_FOLDER", str(tmp_path / "work"))
    for name in ("DAGSTER_HOME", "MINISCOPE_DATA_ROOT", "MINISCOPE_OUTPUT_ROOT", "MINISCOPE_WORK_ROOT"):
        monkeypatch.delenv(name, raising=False)
    through_cli = cli.prepare_instance(settings.from_env())
    assert limits(through_cli) == (1, 2) and missing_limits(through_cli) is None
    # `dagster dev` / `dg dev` without DAGSTER_HOME: a temporary home configured from ./dagster.yaml
    assert (REPOSITORY / "dagster.yaml").resolve() == (REPOSITORY / "miniscope_assets" / "dagster.yaml")
    temporary = tmp_path / "tmp_home"
    temporary.mkdir()
    from_repository = DagsterInstance.from_ref(InstanceRef.from_dir(str(temporary), config_dir=str(REPOSITORY)))
    assert limits(from_repository) == (1, 2)


def test_an_instance_without_a_processing_limit_is_named():
    message = missing_limits(DagsterInstance.ephemeral())
    assert "'miniscope_processing' pool" in message and "miniscope-assets ui" in message


def test_the_ui_hint_keeps_the_settings_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in [name for name in os.environ if name.startswith("MINISCOPE_")]:
        monkeypatch.delenv(name)  # e.g. the CI's own settings
    monkeypatch.setenv("MINISCOPE_WORK_FOLDER", "relative_work")
    monkeypatch.setenv("MINISCOPE_QUIET_PERIOD_S", "60")
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    current = settings.from_env()
    words = shlex.split(cli.ui_command(current))
    assert words[0] == "env" and words[-1] == "ui" and Path(words[-2]).is_file()  # the venv's script
    assignments = dict(word.split("=", 1) for word in words[1:-2])
    assert assignments["DAGSTER_HOME"] == str(tmp_path / "relative_work" / "dagster_home")
    assert assignments.pop("MINISCOPE_QUIET_PERIOD_S") == "60" and "MINISCOPE_WORK_FOLDER" not in assignments
    assert all(Path(value).is_absolute() for value in assignments.values())
    assert settings.from_env(assignments) == current  # the same settings, wherever it is run


def test_the_ui_command_starts_dagster_dev_on_the_cli_instance(tmp_path, monkeypatch):
    monkeypatch.setenv("MINISCOPE_WORK_FOLDER", str(tmp_path))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    started = {}
    monkeypatch.setattr(cli.os, "execve", lambda path, argv, env: started.update(argv=argv, env=env))
    cli.main(["ui", "--port", "3001"])
    assert Path(started["argv"][0]).name == "dagster" and started["argv"][1:] == [
        "dev", "-m", "miniscope_assets.orchestration.definitions", "--port", "3001"]
    assert started["env"]["DAGSTER_HOME"] == str(tmp_path / "dagster_home")
    assert (tmp_path / "dagster_home" / "dagster.yaml").read_text() == (REPOSITORY / "dagster.yaml").read_text()


@pytest.mark.parametrize("kind", ["image", "traces"])
def test_figures_become_small_images_the_ui_renders(tmp_path, kind):
    rng = np.random.default_rng(1)
    if kind == "image":
        path = figures.image_png(tmp_path / "summary.png", rng.normal(size=(600, 600)))  # noise: hard to compress
    else:
        path = figures.traces_plot(tmp_path / "traces.png", rng.normal(size=(8, 3000)), np.arange(8), 30.0)
    metadata = report_metadata({"summary_png": path, "n_masks": 3})
    assert metadata["n_masks"] == 3 and metadata["summary_png"].value == str(path)
    markdown = metadata["summary_figure"].value
    match = re.fullmatch(r"!\[summary\]\(data:image/(png|jpeg);base64,([A-Za-z0-9+/=]+)\)\n\n`(.+)`", markdown)
    assert match and match.group(3) == str(path)
    data = base64.b64decode(match.group(2))
    assert len(data) <= THUMBNAIL_BYTES
    thumbnail = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    original = cv2.imread(str(path))
    assert max(thumbnail.shape[:2]) <= 320
    assert thumbnail.shape[0] / thumbnail.shape[1] == pytest.approx(original.shape[0] / original.shape[1], rel=0.02)


def test_slurm_job_resources_come_from_the_resource_and_the_paramset():
    compute = Compute.from_env({"MINISCOPE_COMPUTE": "slurm", "MINISCOPE_SLURM_CPUS": "8",
                                "MINISCOPE_SLURM_PARTITION": "general", "MINISCOPE_SLURM_SBATCH_ARGS": "--qos=long -N 1"})
    assert compute.on_slurm
    command = compute.sbatch_command({"memory": "48G", "account": "lab"}, "miniscope-processing",
                                     Path("/w/slurm.log"), Path("/w/job.sh"))
    assert command == ["sbatch", "--parsable", "--job-name=miniscope-processing", "--output=/w/slurm.log",
                       "--cpus-per-task=8", "--mem=48G", "--time=04:00:00", "--partition=general", "--account=lab",
                       "--qos=long", "-N", "1", "/w/job.sh"]
    assert not Compute.from_env({}).on_slurm
    with pytest.raises(ValueError, match="MINISCOPE_COMPUTE='slrum' is not one of local, slurm"):
        Compute.from_env({"MINISCOPE_COMPUTE": "slrum"})
