"""The asset graph, built from the stage table (miniscope_assets.stages.table).

``raw_recording`` is the recording folder itself, an external asset partitioned by recording:
the sensor (and the CLI) observe it with the folder's content fingerprint as its data
version, so the UI shows ``recording_info`` as stale when the files change (and the later assets
once ``recording_info`` has run again).
``recording_info`` (by recording) writes the raw NWB file; every later stage is partitioned by
recording x paramset and depends on its recording through a partition mapping. Each asset runs
its stage and reports the stage's metadata, checks and runtime; the stages write the NWB files
themselves (nothing passes through IO managers).
``cross_session_registration`` (by subject x paramset) registers every processed session of a
subject; it depends on ``activity`` of all partitions (the edge the UI shows), and the sensor
requests it whenever the set of a subject's processed sessions, or one of them, changes.
"""


import time
import warnings

from dagster import (
    AllPartitionMapping,
    AssetCheckSpec,
    AssetDep,
    AssetExecutionContext,
    AssetSpec,
    Config,
    MaterializeResult,
    PreviewWarning,
    asset,
)

from miniscope_assets.orchestration.partitions import (
    recording_partitions,
    recording_x_paramset,
    split_partition_key,
    split_subject_key,
    subject_x_paramset,
    to_recording,
)
from miniscope_assets.orchestration.reporting import to_materialize_result
from miniscope_assets.orchestration.resources import MiniscopeStorage
from miniscope_assets.orchestration.slurm import Compute
from miniscope_assets.stages.table import CROSS_SESSION, STAGES, RunOptions, Stage
from miniscope_assets.stages.workspace import ProgressLogger

GROUP = "miniscope"

raw_recording = AssetSpec(
    "raw_recording",
    partitions_def=recording_partitions,
    group_name=GROUP,
    description="A recording folder on disk (AVIs, timestamps, metadata); data version = content fingerprint",
)


class StageConfig(Config):
    force: bool = False  # recompute even when the inputs are unchanged


def _materialize(stage: Stage, context: AssetExecutionContext, storage: MiniscopeStorage,
                 compute: Compute | None = None, force: bool = False) -> MaterializeResult:
    """Run ``stage`` on the context's partition, here or as a Slurm job (``compute``), and
    report it with its wall time."""
    workspace = storage.workspace()
    started = time.perf_counter()
    if compute is not None and compute.on_slurm:
        recording, paramset = split_partition_key(context.partition_key)
        extras = {**storage.model_dump(), "stage": stage.name, "recording": recording, "paramset": paramset,
                  "force": force}
        report, job_metadata = compute.run_job(context, workspace.work_root, extras,
                                               workspace.paramset(paramset).job_resources)
        report.metadata.update(job_metadata)
    else:
        if stage is CROSS_SESSION:
            target = workspace.subject(*split_subject_key(context.partition_key))
        elif stage.per_paramset:
            target = workspace.partition(*split_partition_key(context.partition_key))
        else:
            target = workspace.recording(context.partition_key)
        report = stage.run(target, RunOptions(progress=ProgressLogger(context.log), force=force))
    report.metadata["runtime_s"] = round(time.perf_counter() - started, 3)
    return to_materialize_result(report)


def build_asset(stage: Stage, upstream):
    """The Dagster asset of one stage row."""
    if stage is CROSS_SESSION:
        partitions_def, deps = subject_x_paramset, [AssetDep(upstream, partition_mapping=AllPartitionMapping())]
    elif stage.per_paramset:
        partitions_def = recording_x_paramset
        mapping = to_recording if upstream.key.path[-1] == "recording_info" else None
        deps = [AssetDep(upstream, partition_mapping=mapping)]
    else:
        partitions_def, deps = recording_partitions, [upstream]
    with warnings.catch_warnings():  # partitioned check specs are marked preview in Dagster 1.13
        warnings.simplefilter("ignore", PreviewWarning)
        check_specs = [AssetCheckSpec(name, asset=stage.name, description=text, partitions_def=partitions_def)
                       for name, text in stage.checks]
    decorator = asset(
        name=stage.name,
        partitions_def=partitions_def,
        group_name=GROUP,
        deps=deps,
        pool=stage.pool,
        kinds={"nwb"} if stage.nwb else None,
        description=f"{stage.summary} (element-miniscope {stage.element_table})",
        check_specs=check_specs,
    )
    if stage.pool:  # the heavy stage: forceable, and run where the compute resource says
        def heavy_stage(context: AssetExecutionContext, config: StageConfig, storage: MiniscopeStorage,
                        compute: Compute):
            return _materialize(stage, context, storage, compute, config.force)

        return decorator(heavy_stage)

    def light_stage(context: AssetExecutionContext, storage: MiniscopeStorage):
        return _materialize(stage, context, storage)

    return decorator(light_stage)


def build_assets() -> list:
    """One asset per stage, each depending on the one before (the first on raw_recording)."""
    assets, upstream = [], raw_recording
    for stage in STAGES:
        upstream = build_asset(stage, upstream)
        assets.append(upstream)
    return assets


STAGE_ASSETS = build_assets()
RECORDING_ASSETS = [a for a, s in zip(STAGE_ASSETS, STAGES) if not s.per_paramset]
PARTITION_ASSETS = [a for a, s in zip(STAGE_ASSETS, STAGES) if s.per_paramset]
cross_session_registration = build_asset(CROSS_SESSION, STAGE_ASSETS[-1])
