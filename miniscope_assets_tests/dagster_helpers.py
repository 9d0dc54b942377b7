"""Materialize partitions in-process on an ephemeral Dagster instance."""

from __future__ import annotations

from dagster import DagsterInstance, materialize

from miniscope_assets.orchestration.partitions import PARAMSET, RECORDING, partition_key
from miniscope_assets.orchestration.resources import MiniscopeStorage
from miniscope_assets.stages.workspace import Workspace


def storage_for(workspace: Workspace) -> MiniscopeStorage:
    return MiniscopeStorage(
        data_root=str(workspace.data_root),
        output_root=str(workspace.output_root),
        work_root=str(workspace.work_root),
        paramsets_file=str(workspace.paramsets_file),
    )


def materialize_partition(workspace, recording_dir, assets, paramset="default", instance=None, run_config=None):
    """Register the recording, add its partitions and materialize ``assets`` for it."""
    instance = instance or DagsterInstance.ephemeral()
    key = workspace.register_recording(recording_dir)
    instance.add_dynamic_partitions(RECORDING, [key])
    instance.add_dynamic_partitions(PARAMSET, [paramset])
    result = materialize(
        assets,
        partition_key=partition_key(key, paramset),
        instance=instance,
        resources={"storage": storage_for(workspace)},
        run_config=run_config,
    )
    assert result.success
    return result, workspace.partition(key, paramset)


def metadata(result, asset_name: str) -> dict:
    """The materialization metadata of ``asset_name`` as plain values."""
    (event,) = result.asset_materializations_for_node(asset_name)
    return {k: getattr(v, "value", v) for k, v in event.metadata.items()}


def checks(result) -> dict:
    """(asset, check name) -> passed, for every check evaluated in the run."""
    return {(e.asset_key.path[-1], e.check_name): e.passed for e in result.get_asset_check_evaluations()}
