"""Sensor: complete, quiet recording folders become partitions and runs; changed ones run again;
gone ones are retired (see miniscope_assets.stages.discovery for the rules)."""

import json
import time

from dagster import DefaultSensorStatus, RunRequest, SensorEvaluationContext, SensorResult, SkipReason, sensor

from miniscope_assets.errors import MiniscopeInputError
from miniscope_assets.orchestration.instance import instance_versions, missing_limits, observation
from miniscope_assets.orchestration.partitions import (
    PARAMSET,
    RECORDING,
    SUBJECT,
    paramset_partitions,
    partition_key,
    recording_partitions,
    subject_key,
    subject_partitions,
)
from miniscope_assets.orchestration.resources import MiniscopeStorage
from miniscope_assets.settings import seconds_from_env
from miniscope_assets.stages.discovery import plan_runs, quiet_period_from_env

SENSOR_INTERVAL_S = int(seconds_from_env("MINISCOPE_SENSOR_INTERVAL_S", 30, low=1))


def build_recording_sensor(raw_job, processing_job, registration_job):
    """A sensor requesting ``raw_job`` runs per recording, ``processing_job`` runs per
    recording x paramset and ``registration_job`` runs per subject x paramset."""

    @sensor(
        name="new_recordings",
        jobs=[raw_job, processing_job, registration_job],
        minimum_interval_seconds=SENSOR_INTERVAL_S,
        default_status=DefaultSensorStatus.RUNNING,
        description="Scans the data root for complete recording folders that stopped changing",
    )
    def new_recordings(context: SensorEvaluationContext, storage: MiniscopeStorage):
        workspace = storage.workspace()
        if not workspace.data_root.is_dir():
            return SkipReason(f"{workspace.data_root}: data root does not exist (nothing scanned, nothing retired)")
        try:
            plan = plan_runs(
                workspace, json.loads(context.cursor) if context.cursor else None,
                instance_versions(context.instance), time.time(), quiet_period_from_env(),
            )
        except MiniscopeInputError as error:
            return SkipReason(str(error))
        if plan.processing_runs and (problem := missing_limits(context.instance)):
            context.log.warning(problem)  # asked only when processing is about to be queued
        for line in plan.waiting:
            context.log.info(f"waiting: {line}")
        for line in plan.errors:
            context.log.error(line)
        existing = {
            name: set(context.instance.get_dynamic_partitions(name)) for name in (RECORDING, PARAMSET, SUBJECT)
        }
        requests = []
        add_recordings = [k for k in plan.live_recordings if k not in existing[RECORDING]]
        add_paramsets = [p for p in plan.paramsets if p not in existing[PARAMSET]]
        retire = [k for k in plan.retired if k in existing[RECORDING]]
        if add_recordings:
            requests.append(recording_partitions.build_add_request(add_recordings))
        if add_paramsets:
            requests.append(paramset_partitions.build_add_request(add_paramsets))
        add_subjects = sorted({s for s in plan.subjects if s not in existing[SUBJECT]})
        if add_subjects:
            requests.append(subject_partitions.build_add_request(add_subjects))
        if retire:
            requests.append(recording_partitions.build_delete_request(retire))
        runs = [RunRequest(job_name=raw_job.name, partition_key=key, run_key=run_key)
                for key, run_key in plan.raw_runs]
        runs += [RunRequest(job_name=processing_job.name, partition_key=partition_key(key, paramset), run_key=run_key)
                 for key, paramset, run_key in plan.processing_runs]
        runs += [RunRequest(job_name=registration_job.name, partition_key=subject_key(subject, paramset),
                            run_key=run_key) for subject, paramset, run_key in plan.registration_runs]
        return SensorResult(
            run_requests=runs,
            dynamic_partitions_requests=requests,
            asset_events=[observation(key, fingerprint) for key, fingerprint in plan.observations],
            cursor=json.dumps(plan.cursor),
        )

    return new_recordings
