"""The Slurm job's side of a heavy stage (see miniscope_assets.orchestration.slurm): the plain
stage code under ``open_dagster_pipes()``, without Dagster itself. Progress goes back as Pipes
logs, the stage's report as one Pipes message; an error ends the job non-zero with the error in
its log and in the Pipes stream."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from dagster_pipes import open_dagster_pipes

from miniscope_assets.stages.table import RunOptions, stage_named
from miniscope_assets.stages.workspace import ProgressLogger, Workspace


def main() -> None:
    with open_dagster_pipes() as pipes:
        extras = pipes.extras
        stage = stage_named(extras["stage"])
        workspace = Workspace(*(Path(extras[name]) for name in ("data_root", "output_root", "work_root",
                                                                   "paramsets_file")))
        target = workspace.partition(extras["recording"], extras["paramset"])
        pipes.log.info(f"Slurm job {os.environ.get('SLURM_JOB_ID', '?')} on {socket.gethostname()}: "
                       f"{stage.name} of {extras['recording']} x {extras['paramset']}")
        report = stage.run(target, RunOptions(progress=ProgressLogger(pipes.log), force=extras["force"]))
        pipes.report_custom_message({"report": report.to_json()})


if __name__ == "__main__":
    main()
