"""The Dagster Definitions loaded by workspace.yaml (`dagster dev -w workspace.yaml`)."""

from __future__ import annotations

from dagster import AssetSelection, Definitions, define_asset_job

from miniscope_assets.orchestration.assets import ALL_ASSETS
from miniscope_assets.orchestration.partitions import recording_x_paramset
from miniscope_assets.orchestration.resources import MiniscopeStorage
from miniscope_assets.orchestration.sensors import build_recording_sensor

JOB_NAME = "miniscope_job"

miniscope_job = define_asset_job(
    JOB_NAME,
    selection=AssetSelection.assets(*ALL_ASSETS),
    partitions_def=recording_x_paramset,
    description="All assets of one recording x paramset partition, from RecordingInfo to Activity",
)


def build_definitions(storage: MiniscopeStorage) -> Definitions:
    """Assets, the main job, the new-recordings sensor and the storage resource."""
    return Definitions(
        assets=ALL_ASSETS,
        jobs=[miniscope_job],
        sensors=[build_recording_sensor(miniscope_job)],
        resources={"storage": storage},
    )


defs = build_definitions(MiniscopeStorage.from_env())
