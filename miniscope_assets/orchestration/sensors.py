"""Sensor: new recording folders (and new or changed paramsets) become partitions and runs."""

import json
import os

from dagster import DefaultSensorStatus, RunRequest, SensorEvaluationContext, SensorResult, SkipReason, sensor

from miniscope_assets.errors import MiniscopeInputError
from miniscope_assets.orchestration.partitions import (
    PARAMSET,
    RECORDING,
    paramset_partitions,
    partition_key,
    recording_partitions,
)
from miniscope_assets.orchestration.resources import MiniscopeStorage
from miniscope_assets.stages.discovery import plan_runs

SENSOR_INTERVAL_S = int(os.environ.get("MINISCOPE_SENSOR_INTERVAL_S", "30"))


def build_recording_sensor(job):
    """A sensor requesting ``job`` runs for new recording x paramset partitions."""

    @sensor(
        name="new_recordings",
        job=job,
        minimum_interval_seconds=SENSOR_INTERVAL_S,
        default_status=DefaultSensorStatus.RUNNING,
        description="Scans the data root for complete recording folders that stopped changing",
    )
    def new_recordings(context: SensorEvaluationContext, storage: MiniscopeStorage):
        workspace = storage.workspace()
        try:
            plan = plan_runs(workspace, json.loads(context.cursor) if context.cursor else None)
        except MiniscopeInputError as error:
            return SkipReason(str(error))
        existing = {
            RECORDING: set(context.instance.get_dynamic_partitions(RECORDING)),
            PARAMSET: set(context.instance.get_dynamic_partitions(PARAMSET)),
        }
        add_recordings = [k for k in plan.recording_keys if k not in existing[RECORDING]]
        add_paramsets = [p for p in plan.paramsets if p not in existing[PARAMSET]]
        requests = []
        if add_recordings:
            requests.append(recording_partitions.build_add_request(add_recordings))
        if add_paramsets:
            requests.append(paramset_partitions.build_add_request(add_paramsets))
        if plan.waiting:
            context.log.info(f"waiting for folders to stop changing: {', '.join(plan.waiting)}")
        return SensorResult(
            run_requests=[
                RunRequest(partition_key=partition_key(recording, paramset), run_key=run_key)
                for recording, paramset, run_key in plan.runs
            ],
            dynamic_partitions_requests=requests,
            cursor=json.dumps(plan.cursor),
        )

    return new_recordings
