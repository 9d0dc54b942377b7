"""The stage table: every stage declared once, in order.

Each row names the stage (and its asset), the element-miniscope table it stands for, whether it
is partitioned by recording or by recording x paramset, the NWB containers it owns in
``processing/ophys`` of the processed file, its checks, its catalog columns and the function
that runs it. The Dagster assets, the NWB updater, the catalog and the CLI are all derived
from this table.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

from miniscope_assets.atomic import remove_leftovers
from miniscope_assets.stages.workspace import Progress, StageReport, no_progress

PROCESSING_POOL = "miniscope_processing"


@dataclass(frozen=True)
class RunOptions:
    """How a stage is run: its progress sink and whether stored results may be reused."""

    progress: Progress = no_progress
    force: bool = False


@dataclass(frozen=True)
class Stage:
    name: str
    element_table: str
    summary: str
    per_paramset: bool  # recording x paramset; else by recording alone
    runner: str  # "module:function", called as function(target, RunOptions) -> StageReport
    nwb: str | None = None  # "raw" or "processed": the file the stage writes
    containers: tuple[tuple[str, ...], ...] = ()  # (data interface,) or (data interface, series)
    checks: tuple[tuple[str, str], ...] = ()  # (check name, description)
    catalog: tuple[tuple[str, str], ...] = ()  # (metadata key, column title)
    pool: str | None = None  # the heavy stage: limited by this Dagster pool, takes run config
    # {force: true}, and runs where the compute resource says (here or on Slurm)

    def run(self, target, options: RunOptions = RunOptions()) -> StageReport:
        """Run the stage on a Recording or Partition, after removing crashed writers' leftovers
        from its work folder."""
        module, function = self.runner.split(":")
        stage_function: Callable = getattr(importlib.import_module(module), function)
        remove_leftovers(target.files.work_dir, recursive=True)
        return stage_function(target, options)


_NWBINSPECTOR = ("nwbinspector", "nwbinspector (DANDI config): no CRITICAL or violation-level message")
_CONTAINERS = "miniscope_assets.stages.containers"

STAGES: tuple[Stage, ...] = (
    Stage(
        "recording_info", "RecordingInfo", "Recording metadata and the raw movie in the recording's raw NWB file",
        per_paramset=False, runner="miniscope_assets.stages.recording_info:run", nwb="raw",
        checks=(_NWBINSPECTOR,),
        catalog=(("nframes", "frames"), ("fps", "fps")),
    ),
    Stage(
        "processing", "Processing", "Runs the paramset's method (task_mode trigger) or loads its results (load)",
        per_paramset=True, runner="miniscope_assets.stages.processing:run", pool=PROCESSING_POOL,
        catalog=(("method", "method"),),
    ),
    Stage(
        "curation", "Curation", 'A curation round: automatic "no curation", or the partition\'s curation file',
        per_paramset=True, runner="miniscope_assets.stages.curation:run", catalog=(("curation_id", "curation"),),
    ),
    Stage(
        "motion_correction", "MotionCorrection", "Rigid and piecewise-rigid shifts, outlier frames, summary images",
        per_paramset=True, runner=f"{_CONTAINERS}:motion_correction", nwb="processed",
        containers=(("MotionCorrected",), ("RigidMotionShifts",), ("MotionOutlierFrames",), ("ReplacedFrames",),
                    ("PiecewiseRigidMotion",), ("SummaryImages",)),
        catalog=(("max_shift_px", "max shift px"),),
    ),
    Stage(
        "segmentation", "Segmentation", "Masks (image and pixel masks) in a PlaneSegmentation",
        per_paramset=True, runner=f"{_CONTAINERS}:segmentation", nwb="processed",
        containers=(("ImageSegmentation",),), catalog=(("n_masks", "masks"),),
    ),
    Stage(
        "mask_classification", "MaskClassification", "Mask type and confidence per mask",
        per_paramset=True, runner=f"{_CONTAINERS}:mask_classification", nwb="processed",
        containers=(("MaskClassification",),), catalog=(("n_soma", "cells"),),
    ),
    Stage(
        "fluorescence", "Fluorescence", "Raw fluorescence and neuropil traces per mask",
        per_paramset=True, runner=f"{_CONTAINERS}:fluorescence", nwb="processed",
        containers=(("Fluorescence", "RoiResponseSeries"), ("Fluorescence", "Neuropil")),
        catalog=(("median_snr", "median SNR"),),
    ),
    Stage(
        "activity", "Activity", "dF/F and deconvolved activity (OASIS); checks the finished processed file",
        per_paramset=True, runner=f"{_CONTAINERS}:activity", nwb="processed",
        containers=(("Fluorescence", "Denoised"), ("Fluorescence", "Deconvolved"), ("DfOverF",)),
        checks=(_NWBINSPECTOR, ("dandi_validate", "dandi validate, offline"),
                ("sanity", "finite traces, masks in the field of view, increasing times")),
        catalog=(("dff_max", "max dF/F"), ("nwb_path", "NWB file")),
    ),
)
# By subject x paramset, after every session's last stage (not part of the per-recording chain).
CROSS_SESSION = Stage(
    "cross_session_registration", "(none: element-miniscope has no cross-session table)",
    "The subject's processed sessions aligned and their cells matched: subject-level cell ids",
    per_paramset=True, runner="miniscope_assets.stages.cross_session:run", nwb="cross-session",
    checks=(_NWBINSPECTOR,),
)
STAGE_NAMES = [stage.name for stage in STAGES]
FINAL_STAGE = STAGES[-1].name


def containers_from(name: str) -> list[tuple[str, ...]]:
    """Containers replaced when stage ``name`` is rewritten: its own and every later stage's."""
    start = STAGE_NAMES.index(name)
    return [path for later in STAGES[start:] for path in later.containers]


def stages_from(name: str) -> list[Stage]:
    """Stage ``name`` and every later stage."""
    return list(STAGES[STAGE_NAMES.index(name):])


def stage_named(name: str) -> Stage:
    """The stage row called ``name``."""
    return STAGES[STAGE_NAMES.index(name)]
