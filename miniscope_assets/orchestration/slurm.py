"""Heavy stages as Slurm jobs through Dagster Pipes.

The ``compute`` resource says where a stage with a pool (processing) runs: in the Dagster step
(``backend: local``, the default) or as a Slurm job (``backend: slurm``). A job runs
``miniscope_assets.orchestration.slurm_job`` under ``open_dagster_pipes()``: the same stage
code, its progress sent back as Pipes logs and its report as one Pipes message, from which the
step reports exactly what a local run reports, plus the job's id and node. The job's script,
log and Pipes message file live in ``<work root>/@slurm/<run>-<stage>-<partition>/`` (or
``job_dir``), which must be on a filesystem the compute nodes share. Interrupting the step
(cancelling the Dagster run) cancels the job; a job that fails, is cancelled or times out
fails the step with the tail of its log.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
import warnings
from pathlib import Path

from dagster import (
    AssetExecutionContext,
    ConfigurableResource,
    Failure,
    PipesEnvContextInjector,
    PipesFileMessageReader,
    PreviewWarning,
    open_pipes_session,
)
from pydantic import Field

from miniscope_assets.atomic import translated_write_errors, write_text_atomic
from miniscope_assets.stages.workspace import StageReport

BACKENDS = ("local", "slurm")
JOB_MODULE = "miniscope_assets.orchestration.slurm_job"
ACTIVE_STATES = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "RESIZING"}
LOG_TAIL_LINES = 30
SCONTROL_PATIENCE_S = 60.0
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_ENV_PREFIX = "MINISCOPE_SLURM_"


class Compute(ConfigurableResource):
    """Where heavy stages run, and the Slurm job's resources (a paramset's ``job_resources``
    override cpus, memory, time, partition and account)."""

    backend: str = Field(default="local", description="local (in the Dagster step) or slurm")
    cpus: int = Field(default=2, description="sbatch --cpus-per-task")
    memory: str = Field(default="8G", description="sbatch --mem")
    time: str = Field(default="04:00:00", description="sbatch --time")
    partition: str = Field(default="", description="sbatch --partition (empty: the cluster's default)")
    account: str = Field(default="", description="sbatch --account (empty: the user's default)")
    python: str = Field(default="", description="Python on the compute nodes (empty: this interpreter)")
    job_dir: str = Field(default="", description="shared folder for job files (empty: <work root>/@slurm)")
    sbatch_args: list[str] = Field(default_factory=list, description="more sbatch arguments, e.g. --qos=long")
    poll_interval_s: float = Field(default=2.0, description="how often the job's state is read")

    @classmethod
    def from_env(cls, environ=None) -> "Compute":
        """MINISCOPE_COMPUTE (local | slurm) and MINISCOPE_SLURM_<FIELD> (CPUS, MEMORY, TIME,
        PARTITION, ACCOUNT, PYTHON, JOB_DIR, SBATCH_ARGS as shell words)."""
        env = os.environ if environ is None else environ
        fields = {"backend": env.get("MINISCOPE_COMPUTE", "local")}
        if fields["backend"] not in BACKENDS:
            raise ValueError(f"MINISCOPE_COMPUTE={fields['backend']!r} is not one of {', '.join(BACKENDS)}")
        for name in ("cpus", "memory", "time", "partition", "account", "python", "job_dir", "sbatch_args"):
            value = env.get(_ENV_PREFIX + name.upper())
            if value is not None:
                fields[name] = shlex.split(value) if name == "sbatch_args" else value
        return cls(**fields)

    @property
    def on_slurm(self) -> bool:
        if self.backend not in BACKENDS:
            raise Failure(f"compute backend {self.backend!r} is not one of {', '.join(BACKENDS)}")
        return self.backend == "slurm"

    def sbatch_command(self, job_resources: dict, job_name: str, log: Path, script: Path) -> list[str]:
        resources = {"cpus": str(self.cpus), "memory": self.memory, "time": self.time,
                     "partition": self.partition, "account": self.account, **job_resources}
        options = {"cpus": "--cpus-per-task", "memory": "--mem", "time": "--time",
                   "partition": "--partition", "account": "--account"}
        return ["sbatch", "--parsable", f"--job-name={job_name}", f"--output={log}",
                *(f"{flag}={resources[name]}" for name, flag in options.items() if resources[name]),
                *self.sbatch_args, str(script)]

    def run_job(self, context: AssetExecutionContext, work_root: Path, extras: dict,
                job_resources: dict) -> tuple[StageReport, dict]:
        """Run the stage described by ``extras`` as a Slurm job; its report, and the job's
        metadata (id, node, state)."""
        folder = Path(self.job_dir or work_root / "@slurm") / _UNSAFE.sub(
            "_", f"{context.run_id[:8]}-{extras['stage']}-{context.partition_key}")
        with translated_write_errors(folder):
            folder.mkdir(parents=True, exist_ok=True)
        log = folder / "slurm.log"
        reader = PipesFileMessageReader(str(folder / "messages.jsonl"))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PreviewWarning)  # a reader's writer count is preview in 1.13
            with open_pipes_session(context=context, context_injector=PipesEnvContextInjector(),
                                    message_reader=reader, extras=extras) as session:
                script = write_text_atomic(folder / "job.sh", _job_script(self.python or sys.executable,
                                                                          session.get_bootstrap_env_vars()))
                command = self.sbatch_command(job_resources, f"miniscope-{extras['stage']}", log, script)
                job_id = _submit(command)
                context.log.info(f"Slurm job {job_id} submitted: {shlex.join(command)}")
                try:
                    job = self._wait(job_id)
                except BaseException:  # the run was cancelled or the step interrupted: no orphan job
                    subprocess.run(["scancel", job_id], capture_output=True, check=False)
                    context.log.warning(f"Slurm job {job_id} cancelled")
                    raise
        if job["JobState"] != "COMPLETED":
            raise Failure(f"Slurm job {job_id} ended {job['JobState']} (exit code {job.get('ExitCode', '?')}); "
                          f"last lines of {log}:\n{_tail(log)}")
        messages = [m for m in session.get_custom_messages() if isinstance(m, dict) and "report" in m]
        if not messages:
            raise Failure(f"Slurm job {job_id} completed without sending its report; last lines of {log}:\n{_tail(log)}")
        job_metadata = {"slurm_job_id": job_id, "slurm_node": job.get("NodeList", ""), "slurm_log": log}
        return StageReport.from_json(messages[-1]["report"]), job_metadata

    def _wait(self, job_id: str) -> dict:
        """The job's final `scontrol show job` fields, once it has left the active states; a
        controller that does not answer for about a minute fails the step."""
        failures = 0
        while True:
            job = _job_fields(job_id)
            if job is not None and job.get("JobState") not in ACTIVE_STATES:
                return job
            failures = 0 if job is not None else failures + 1
            if failures * self.poll_interval_s > SCONTROL_PATIENCE_S:
                raise Failure(f"scontrol has not shown Slurm job {job_id} for {SCONTROL_PATIENCE_S} s")
            time.sleep(self.poll_interval_s)


def _job_script(python: str, pipes_environment: dict) -> str:
    """The job: the Pipes bootstrap variables set in the script itself (a cluster may submit
    with --export=NONE, or through a wrapper), then the stage under Pipes."""
    exports = "".join(f"export {name}={shlex.quote(value)}\n" for name, value in pipes_environment.items())
    return f"#!/bin/sh\n{exports}exec {shlex.quote(python)} -m {JOB_MODULE}\n"


def _submit(command: list[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise Failure("sbatch is not on PATH: the compute backend 'slurm' needs a Slurm client on this host") from None
    if done.returncode != 0:
        raise Failure(f"sbatch refused the job (exit {done.returncode}): {done.stderr.strip()}")
    return done.stdout.strip().split(";")[0]


def _job_fields(job_id: str) -> dict | None:
    """The job's `scontrol show job` fields, or None when the controller does not answer."""
    done = subprocess.run(["scontrol", "show", "job", "--oneliner", job_id], capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        return None
    return dict(field.split("=", 1) for field in done.stdout.split() if "=" in field)


def _tail(log: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError as error:
        return f"(no log: {error})"
