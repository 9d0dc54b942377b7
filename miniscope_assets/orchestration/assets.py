"""The asset graph: one asset per element-miniscope table, partitioned recording x paramset.

RecordingInfo -> Processing -> Curation -> MotionCorrection -> Segmentation ->
MaskClassification -> Fluorescence -> Activity. Each asset calls its stage in
miniscope_assets.stages and reports the stage's metadata and checks; the stages write the NWB
file themselves (nothing passes through IO managers).
"""

import time
from typing import Callable

from dagster import AssetCheckSpec, AssetExecutionContext, Config, MaterializeResult, asset

from miniscope_assets.orchestration.partitions import recording_x_paramset, split_partition_key
from miniscope_assets.orchestration.reporting import ProgressLogger, to_materialize_result
from miniscope_assets.orchestration.resources import MiniscopeStorage
from miniscope_assets.stages import containers, curation as curation_stage, processing as processing_stage
from miniscope_assets.stages import recording_info as recording_info_stage
from miniscope_assets.stages.workspace import Partition, StageReport

GROUP = "miniscope"
PROCESSING_POOL = "miniscope_processing"
COMMON = {"partitions_def": recording_x_paramset, "group_name": GROUP}


def _materialize(
    context: AssetExecutionContext, storage: MiniscopeStorage, stage: Callable[[Partition], StageReport]
) -> MaterializeResult:
    """Run ``stage`` on the context's partition and report it, with its wall time."""
    recording_key, paramset = split_partition_key(context.partition_key)
    started = time.perf_counter()
    report = stage(storage.workspace().partition(recording_key, paramset))
    report.metadata["runtime_s"] = round(time.perf_counter() - started, 3)
    return to_materialize_result(report)


@asset(**COMMON, kinds={"nwb"}, check_specs=[AssetCheckSpec("nwbinspector", asset="recording_info")])
def recording_info(context: AssetExecutionContext, storage: MiniscopeStorage):
    """Recording metadata (element-miniscope RecordingInfo) and the raw movie in the NWB file."""
    return _materialize(context, storage, lambda p: recording_info_stage.run(p, ProgressLogger(context.log)))


class ProcessingConfig(Config):
    force: bool = False  # recompute even when the inputs are unchanged


@asset(**COMMON, deps=[recording_info], pool=PROCESSING_POOL)
def processing(context: AssetExecutionContext, config: ProcessingConfig, storage: MiniscopeStorage):
    """Runs the paramset's method (task_mode trigger) or loads existing results (load)."""
    progress = ProgressLogger(context.log)
    return _materialize(context, storage, lambda p: processing_stage.run(p, config.force, progress))


@asset(**COMMON, deps=[processing])
def curation(context: AssetExecutionContext, storage: MiniscopeStorage):
    """A curation round: automatic "no curation", or the partition's curation file applied."""
    return _materialize(context, storage, curation_stage.run)


@asset(**COMMON, deps=[curation], kinds={"nwb"})
def motion_correction(context: AssetExecutionContext, storage: MiniscopeStorage):
    """Rigid and piecewise-rigid shifts, corrected movie and summary images."""
    return _materialize(context, storage, containers.motion_correction)


@asset(**COMMON, deps=[motion_correction], kinds={"nwb"})
def segmentation(context: AssetExecutionContext, storage: MiniscopeStorage):
    """Masks (pixels and weights) in a PlaneSegmentation."""
    return _materialize(context, storage, containers.segmentation)


@asset(**COMMON, deps=[segmentation], kinds={"nwb"})
def mask_classification(context: AssetExecutionContext, storage: MiniscopeStorage):
    """Mask type and confidence per mask."""
    return _materialize(context, storage, containers.mask_classification)


@asset(**COMMON, deps=[mask_classification], kinds={"nwb"})
def fluorescence(context: AssetExecutionContext, storage: MiniscopeStorage):
    """Raw fluorescence and neuropil traces per mask."""
    return _materialize(context, storage, containers.fluorescence)


@asset(
    **COMMON,
    deps=[fluorescence],
    kinds={"nwb"},
    check_specs=[
        AssetCheckSpec("nwbinspector", asset="activity", description="nwbinspector (DANDI config) on the final file"),
        AssetCheckSpec("dandi_validate", asset="activity", description="dandi validate, offline"),
        AssetCheckSpec("sanity", asset="activity", description="finite traces, masks in the FOV, increasing times"),
    ],
)
def activity(context: AssetExecutionContext, storage: MiniscopeStorage):
    """dF/F and deconvolved activity (OASIS); checks the finished NWB file."""
    return _materialize(context, storage, containers.activity)


ALL_ASSETS = [
    recording_info, processing, curation, motion_correction,
    segmentation, mask_classification, fluorescence, activity,
]
