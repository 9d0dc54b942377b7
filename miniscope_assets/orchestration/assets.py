"""The asset graph: one asset per element-miniscope table, partitioned recording x paramset.

Each asset calls its stage in miniscope_assets.stages and reports the stage's metadata and
checks; NWB files are written by the stages themselves (nothing goes through IO managers).
"""

from dagster import AssetCheckSpec, AssetExecutionContext, asset

from miniscope_assets.orchestration.partitions import recording_x_paramset, split_partition_key
from miniscope_assets.orchestration.reporting import ProgressLogger, to_materialize_result
from miniscope_assets.orchestration.resources import MiniscopeStorage
from miniscope_assets.stages import recording_info as recording_info_stage
from miniscope_assets.stages.workspace import Partition

GROUP = "miniscope"


def _partition(context: AssetExecutionContext, storage: MiniscopeStorage) -> Partition:
    recording_key, paramset = split_partition_key(context.partition_key)
    return storage.workspace().partition(recording_key, paramset)


@asset(
    partitions_def=recording_x_paramset,
    group_name=GROUP,
    kinds={"nwb"},
    check_specs=[AssetCheckSpec("nwbinspector", asset="recording_info")],
)
def recording_info(context: AssetExecutionContext, storage: MiniscopeStorage):
    """Recording metadata (element-miniscope RecordingInfo) and the raw movie in the NWB file."""
    report = recording_info_stage.run(_partition(context, storage), ProgressLogger(context.log))
    return to_materialize_result(report)
