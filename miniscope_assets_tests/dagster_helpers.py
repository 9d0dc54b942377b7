"""Materialize recordings and partitions in-process on an ephemeral Dagster instance."""

from __future__ import annotations

from dagster import DagsterInstance, materialize

from miniscope_assets.orchestration.assets import STAGE_ASSETS, cross_session_registration, raw_recording
from miniscope_assets.orchestration.partitions import PARAMSET, RECORDING, partition_key
from miniscope_assets.orchestration.resources import MiniscopeStorage
from miniscope_assets.orchestration.slurm import Compute
from miniscope_assets.stages.table import STAGES
from miniscope_assets.stages.workspace import Workspace

ALL_ASSETS = [raw_recording, *STAGE_ASSETS, cross_session_registration]
PARTITION_STAGES = [stage.name for stage in STAGES if stage.per_paramset]


def storage_for(workspace: Workspace) -> MiniscopeStorage:
    return MiniscopeStorage(
        data_root=str(workspace.data_root),
        output_root=str(workspace.output_root),
        work_root=str(workspace.work_root),
        paramsets_file=str(workspace.paramsets_file),
    )


def register(workspace: Workspace, recording_dir: str, instance: DagsterInstance, paramsets=("default",)) -> str:
    """Register the recording and add its partitions; return its key."""
    key = workspace.register(recording_dir, workspace.read(recording_dir).identity)
    for dimension, keys in ((RECORDING, [key]), (PARAMSET, list(paramsets))):
        missing = [k for k in keys if not instance.has_dynamic_partition(dimension, k)]
        if missing:
            instance.add_dynamic_partitions(dimension, missing)
    return key


def materialize_stages(workspace, partition, stages, instance, run_config=None):
    result = materialize(
        ALL_ASSETS, selection=list(stages), partition_key=partition, instance=instance,
        resources={"storage": storage_for(workspace), "compute": Compute()}, run_config=run_config,
    )
    assert result.success
    return result


def materialize_recording(workspace, recording_dir, instance=None):
    """recording_info for the recording; returns (result, Recording)."""
    instance = instance or DagsterInstance.ephemeral()
    key = register(workspace, recording_dir, instance)
    return materialize_stages(workspace, key, ["recording_info"], instance), workspace.recording(key)


def materialize_partition(workspace, recording_dir, stages=PARTITION_STAGES, paramset="default", instance=None,
                          run_config=None, with_raw=True):
    """recording_info (unless ``with_raw`` is false), then ``stages`` for the recording x paramset."""
    instance = instance or DagsterInstance.ephemeral()
    key = register(workspace, recording_dir, instance, [paramset])
    if with_raw:
        materialize_stages(workspace, key, ["recording_info"], instance)
    result = materialize_stages(workspace, partition_key(key, paramset), stages, instance, run_config) if stages else None
    return result, workspace.partition(key, paramset)


def metadata(result, asset_name: str) -> dict:
    """The materialization metadata of ``asset_name`` as plain values."""
    (event,) = result.asset_materializations_for_node(asset_name)
    return {k: getattr(v, "value", v) for k, v in event.metadata.items()}


def checks(result) -> dict:
    """(asset, check name) -> passed, for every check evaluated in the run."""
    return {(e.asset_key.path[-1], e.check_name): e.passed for e in result.get_asset_check_evaluations()}
