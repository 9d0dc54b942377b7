"""The asset graph: one asset per element-miniscope table, partitioned recording x paramset.

RecordingInfo -> Processing -> Curation -> MotionCorrection -> Segmentation ->
MaskClassification -> Fluorescence -> Activity. Each asset calls its stage in
miniscope_assets.stages and reports the stage's metadata and checks; the stages write the NWB
file themselves (nothing passes through IO managers).
"""

from dagster import AssetCheckSpec, AssetExecutionContext, Config, asset

from miniscope_assets.orchestration.partitions import recording_x_paramset, split_partition_key
from miniscope_assets.orchestration.reporting import ProgressLogger, to_materialize_result
from miniscope_assets.orchestration.resources import MiniscopeStorage
from miniscope_assets.stages import containers, curation as curation_stage, processing as processing_stage
from miniscope_assets.stages import recording_info as recording_info_stage
from miniscope_assets.stages.workspace import Partition

GROUP = "miniscope"
PROCESSING_POOL = "miniscope_processing"
COMMON = {"partitions_def": recording_x_paramset, "group_name": GROUP}


def _partition(context: AssetExecutionContext, storage: MiniscopeStorage) -> Partition:
    recording_key, paramset = split_partition_key(context.partition_key)
    return storage.workspace().partition(recording_key, paramset)


@asset(**COMMON, kinds={"nwb"}, check_specs=[AssetCheckSpec("nwbinspector", asset="recording_info")])
def recording_info(context: AssetExecutionContext, storage: MiniscopeStorage):
    """Recording metadata (element-miniscope RecordingInfo) and the raw movie in the NWB file."""
    report = recording_info_stage.run(_partition(context, storage), ProgressLogger(context.log))
    return to_materialize_result(report)


class ProcessingConfig(Config):
    force: bool = False  # recompute even when the inputs are unchanged


@asset(**COMMON, deps=[recording_info], pool=PROCESSING_POOL)
def processing(context: AssetExecutionContext, config: ProcessingConfig, storage: MiniscopeStorage):
    """Runs the paramset's method (task_mode trigger) or loads existing results (load)."""
    report = processing_stage.run(_partition(context, storage), config.force, ProgressLogger(context.log))
    return to_materialize_result(report)


@asset(**COMMON, deps=[processing])
def curation(context: AssetExecutionContext, storage: MiniscopeStorage):
    """A curation round: automatic "no curation", or the partition's curation file applied."""
    return to_materialize_result(curation_stage.run(_partition(context, storage)))


@asset(**COMMON, deps=[curation], kinds={"nwb"})
def motion_correction(context: AssetExecutionContext, storage: MiniscopeStorage):
    """Rigid and piecewise-rigid shifts, corrected movie and summary images."""
    return to_materialize_result(containers.motion_correction(_partition(context, storage)))


@asset(**COMMON, deps=[motion_correction], kinds={"nwb"})
def segmentation(context: AssetExecutionContext, storage: MiniscopeStorage):
    """Masks (pixels and weights) in a PlaneSegmentation."""
    return to_materialize_result(containers.segmentation(_partition(context, storage)))


@asset(**COMMON, deps=[segmentation], kinds={"nwb"})
def mask_classification(context: AssetExecutionContext, storage: MiniscopeStorage):
    """Mask type and confidence per mask."""
    return to_materialize_result(containers.mask_classification(_partition(context, storage)))


@asset(**COMMON, deps=[mask_classification], kinds={"nwb"})
def fluorescence(context: AssetExecutionContext, storage: MiniscopeStorage):
    """Raw fluorescence and neuropil traces per mask."""
    return to_materialize_result(containers.fluorescence(_partition(context, storage)))


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
    return to_materialize_result(containers.activity(_partition(context, storage)))


ALL_ASSETS = [
    recording_info, processing, curation, motion_correction,
    segmentation, mask_classification, fluorescence, activity,
]
