"""The Dagster Definitions loaded by workspace.yaml (`dagster dev -w workspace.yaml`).

Every job runs its steps in the run's own process (the in-process executor): a partition's
stages form a chain, so separate step processes would add a Python start-up per stage and no
parallelism; the processing pool still limits processing steps across runs."""

from __future__ import annotations

from dagster import AssetSelection, Definitions, define_asset_job, in_process_executor

from miniscope_assets.orchestration.assets import (
    PARTITION_ASSETS,
    RECORDING_ASSETS,
    STAGE_ASSETS,
    cross_session_registration,
    raw_recording,
)
from miniscope_assets.orchestration.console import console
from miniscope_assets.orchestration.partitions import recording_partitions, recording_x_paramset, subject_x_paramset
from miniscope_assets.orchestration.resources import MiniscopeStorage
from miniscope_assets.orchestration.sensors import build_recording_sensor
from miniscope_assets.orchestration.slurm import Compute

RAW_JOB = "miniscope_raw_job"
PROCESSING_JOB = "miniscope_processing_job"
REGISTRATION_JOB = "miniscope_registration_job"

raw_job = define_asset_job(
    RAW_JOB,
    selection=AssetSelection.assets(*RECORDING_ASSETS),
    partitions_def=recording_partitions,
    description="The raw NWB file of one recording (RecordingInfo)",
)
processing_job = define_asset_job(
    PROCESSING_JOB,
    selection=AssetSelection.assets(*PARTITION_ASSETS),
    partitions_def=recording_x_paramset,
    description="Processing to Activity for one recording x paramset",
)
registration_job = define_asset_job(
    REGISTRATION_JOB,
    selection=AssetSelection.assets(cross_session_registration),
    partitions_def=subject_x_paramset,
    description="Cross-session registration of one subject x paramset",
)


def build_definitions(storage: MiniscopeStorage, compute: Compute | None = None) -> Definitions:
    """Assets, the three jobs, the new-recordings sensor, the storage resource and the compute
    resource (default: from MINISCOPE_COMPUTE, local unless set)."""
    return Definitions(
        assets=[raw_recording, *STAGE_ASSETS, cross_session_registration],
        jobs=[raw_job, processing_job, registration_job],
        sensors=[build_recording_sensor(raw_job, processing_job, registration_job)],
        resources={"storage": storage, "compute": compute or Compute.from_env()},
        loggers={"console": console},
        executor=in_process_executor,
    )


defs = build_definitions(MiniscopeStorage.from_env())
