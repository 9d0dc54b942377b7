"""Processed ophys containers of each stage, built from a ProcessingResult.

Layout in ``processing/ophys`` (x-first orientation, see nwb/raw.py):

- motion_correction: ``MotionCorrection/CorrectedImageStack`` (corrected OnePhotonSeries linked
  to the raw series, ``xy_translation`` = rigid x/y shifts) or, without a corrected movie,
  ``RigidMotionShifts``; ``MotionOutlierFrames`` (1 = outlier); ``PiecewiseRigidMotion``
  (one row per block: bounds, per-frame x/y shifts, their std); ``SummaryImages``.
- segmentation: ``ImageSegmentation/PlaneSegmentation``: pixel_mask (x, y, weight), ROI id =
  mask id, centre and npix columns.
- mask_classification: ``MaskClassification`` table: roi (region of the PlaneSegmentation),
  mask_type, confidence.
- fluorescence: ``Fluorescence/RoiResponseSeries`` (raw) and ``Fluorescence/Neuropil``.
- activity: ``Fluorescence/Denoised``, ``Fluorescence/Deconvolved`` (OASIS) and
  ``DfOverF/DfOverF``.
"""

from __future__ import annotations

import numpy as np
from hdmf.common import DynamicTable
from pynwb import NWBFile, TimeSeries
from pynwb.base import Images
from pynwb.image import GrayscaleImage
from pynwb.ophys import (
    CorrectedImageStack,
    DfOverF,
    Fluorescence,
    ImageSegmentation,
    MotionCorrection,
    OnePhotonSeries,
    PlaneSegmentation,
)

from miniscope_assets.engine.movie import MovieSource
from miniscope_assets.nwb.raw import IMAGING_PLANE, RAW_SERIES, movie_data_io, timing_of
from miniscope_assets.nwb.update import ophys_module
from miniscope_assets.results import ProcessingResult

SUMMARY_DESCRIPTIONS = {
    "reference": "Template the frames were registered to",
    "mean": "Mean of the motion-corrected frames",
    "max_projection": "Maximum of the motion-corrected frames",
    "correlation": "Local correlation image (each pixel with its neighbours)",
    "peak_to_noise": "Peak-to-noise ratio image",
}


def _raw(nwbfile: NWBFile) -> OnePhotonSeries:
    return nwbfile.acquisition[RAW_SERIES]


def _shift_series(name: str, nwbfile: NWBFile, result: ProcessingResult) -> TimeSeries:
    """Rigid x/y shifts per frame; for piecewise-only results the mean shift of the blocks."""
    if result.motion_rigid is not None:
        x, y = result.motion_rigid.x_shifts, result.motion_rigid.y_shifts
        description = "Rigid shifts applied to register each frame: columns x (right), y (down)"
    else:
        x = result.motion_piecewise.x_shifts.mean(axis=1)
        y = result.motion_piecewise.y_shifts.mean(axis=1)
        description = "Mean piecewise-rigid block shift per frame (no rigid pass): columns x, y"
    return TimeSeries(
        name=name,
        description=description,
        data=np.stack([x, y], axis=1).astype(np.float32),
        unit="pixels",
        **timing_of(_raw(nwbfile)),
    )


def add_motion_correction(nwbfile: NWBFile, result: ProcessingResult, corrected: MovieSource | None) -> None:
    """Corrected movie and rigid shifts, piecewise-rigid blocks, outliers and summary images."""
    module = ophys_module(nwbfile)
    raw = _raw(nwbfile)
    if result.motion_rigid is not None or result.motion_piecewise is not None:
        if corrected is not None:
            corrected_series = OnePhotonSeries(
                name="corrected",
                description=f"Motion-corrected movie ({result.method}), stored (frames, width, height)",
                data=movie_data_io(corrected),
                imaging_plane=nwbfile.imaging_planes[IMAGING_PLANE],
                unit="n.a.",
                **timing_of(raw),
            )
            stack = CorrectedImageStack(
                corrected=corrected_series,
                original=raw,
                xy_translation=_shift_series("xy_translation", nwbfile, result),
            )
            module.add(MotionCorrection(name="MotionCorrection", corrected_image_stacks=[stack]))
        else:
            module.add(_shift_series("RigidMotionShifts", nwbfile, result))
    outliers = _outlier_frames(result)
    if outliers is not None:
        module.add(
            TimeSeries(
                name="MotionOutlierFrames",
                description="1 where the frame's shift was an outlier (already corrected), else 0",
                data=outliers.astype(np.uint8),
                unit="n.a.",
                **timing_of(raw),
            )
        )
    if result.motion_piecewise is not None:
        module.add(_piecewise_table(result))
    images = [
        GrayscaleImage(name=name, data=np.asarray(image, dtype=np.float32).T, description=SUMMARY_DESCRIPTIONS[name])
        for name, image in result.summary.as_dict().items()
    ]
    module.add(Images(name="SummaryImages", images=images, description="Summary images of the corrected movie"))


def _outlier_frames(result: ProcessingResult) -> np.ndarray | None:
    masks = [m.outlier_frames for m in (result.motion_rigid, result.motion_piecewise) if m is not None]
    masks = [np.asarray(m, dtype=bool) for m in masks if m is not None]
    return np.logical_or.reduce(masks) if masks else None


def _piecewise_table(result: ProcessingResult) -> DynamicTable:
    motion = result.motion_piecewise
    table = DynamicTable(
        name="PiecewiseRigidMotion",
        description=(
            "Piecewise-rigid registration blocks, one row per block; bounds are [start, end) pixels; "
            f"block_height={motion.block_height}, block_width={motion.block_width}, "
            f"block_count_y={motion.block_count_y}, block_count_x={motion.block_count_x}; "
            "x_shifts/y_shifts hold one shift per frame"
        ),
    )
    for name, description in (
        ("y_start", "first row of the block"),
        ("y_end", "row after the last row of the block"),
        ("x_start", "first column of the block"),
        ("x_end", "column after the last column of the block"),
        ("x_shifts", "x shift of the block in every frame (pixels)"),
        ("y_shifts", "y shift of the block in every frame (pixels)"),
        ("x_std", "standard deviation of the block's x shifts (pixels)"),
        ("y_std", "standard deviation of the block's y shifts (pixels)"),
    ):
        table.add_column(name=name, description=description)
    for block in range(motion.block_y.shape[0]):
        x_shifts = motion.x_shifts[:, block].astype(np.float32)
        y_shifts = motion.y_shifts[:, block].astype(np.float32)
        table.add_row(
            id=block,
            y_start=int(motion.block_y[block, 0]),
            y_end=int(motion.block_y[block, 1]),
            x_start=int(motion.block_x[block, 0]),
            x_end=int(motion.block_x[block, 1]),
            x_shifts=x_shifts,
            y_shifts=y_shifts,
            x_std=float(np.nanstd(x_shifts)),
            y_std=float(np.nanstd(y_shifts)),
        )
    return table


def _plane_segmentation(nwbfile: NWBFile) -> PlaneSegmentation:
    return ophys_module(nwbfile)["ImageSegmentation"]["PlaneSegmentation"]


def add_segmentation(nwbfile: NWBFile, result: ProcessingResult) -> None:
    """Masks as pixel masks (x, y, weight) with the result's mask ids as ROI ids."""
    segmentation = ImageSegmentation(name="ImageSegmentation")
    plane = segmentation.create_plane_segmentation(
        name="PlaneSegmentation",
        description=f"Masks from {result.method} ({result.n_masks} ROIs); ROI id = mask id",
        imaging_plane=nwbfile.imaging_planes[IMAGING_PLANE],
    )
    plane.add_column(name="center_x", description="Weighted centroid x (column), pixels")
    plane.add_column(name="center_y", description="Weighted centroid y (row), pixels")
    plane.add_column(name="npix", description="Number of pixels in the mask")
    centers = result.mask_centers()
    npix = result.mask_npix()
    for index, mask_id in enumerate(result.mask_ids):
        xpix, ypix, weights = result.mask_pixels(index)
        plane.add_roi(
            id=int(mask_id),
            pixel_mask=list(zip(xpix.tolist(), ypix.tolist(), weights.tolist())),
            center_x=float(centers[index, 0]),
            center_y=float(centers[index, 1]),
            npix=int(npix[index]),
        )
    ophys_module(nwbfile).add(segmentation)


def classification_method(result: ProcessingResult) -> str:
    """What assigned the mask types."""
    return f"{result.method} classifier"


def add_mask_classification(nwbfile: NWBFile, result: ProcessingResult) -> None:
    """Mask type and confidence per ROI, in a table referencing the PlaneSegmentation."""
    plane = _plane_segmentation(nwbfile)
    table = DynamicTable(
        name="MaskClassification",
        description=f"Mask types from the {classification_method(result)}; confidence in [0, 1], "
        "NaN where the method gives none",
    )
    table.add_column(name="roi", description="ROI in PlaneSegmentation", table=plane)
    table.add_column(name="mask_type", description="soma, axon, dendrite, neuropil, artefact or unknown")
    table.add_column(name="confidence", description="Confidence of the mask type")
    for index in range(result.n_masks):
        table.add_row(
            roi=index,
            mask_type=str(result.mask_types[index]),
            confidence=float(result.mask_confidence[index]),
        )
    ophys_module(nwbfile).add(table)


def _add_series(nwbfile: NWBFile, container, name: str, traces: np.ndarray, description: str) -> None:
    plane = _plane_segmentation(nwbfile)
    rois = plane.create_roi_table_region(region=list(range(len(plane))), description="all ROIs")
    container.create_roi_response_series(
        name=name,
        data=np.ascontiguousarray(np.asarray(traces, dtype=np.float32).T),
        rois=rois,
        unit="n.a.",
        **timing_of(_raw(nwbfile)),
        description=description,
    )


def _fluorescence_container(nwbfile: NWBFile) -> Fluorescence:
    module = ophys_module(nwbfile)
    if "Fluorescence" not in module.data_interfaces:
        module.add(Fluorescence(name="Fluorescence"))
    return module["Fluorescence"]


def add_fluorescence(nwbfile: NWBFile, result: ProcessingResult) -> None:
    """Raw fluorescence per ROI and its neuropil/background trace, (frames, ROIs)."""
    container = _fluorescence_container(nwbfile)
    _add_series(nwbfile, container, "RoiResponseSeries", result.fluorescence,
                f"Raw (demixed) fluorescence per ROI from {result.method}")
    if result.neuropil is not None:
        _add_series(nwbfile, container, "Neuropil", result.neuropil,
                    "Background (neuropil) fluorescence under each ROI, weighted by the mask")


def add_activity(nwbfile: NWBFile, result: ProcessingResult) -> None:
    """Denoised and deconvolved activity (OASIS) and dF/F."""
    container = _fluorescence_container(nwbfile)
    if result.denoised is not None:
        _add_series(nwbfile, container, "Denoised", result.denoised, "Denoised calcium trace (OASIS)")
    if result.spikes is not None:
        _add_series(nwbfile, container, "Deconvolved", result.spikes, "Deconvolved activity (OASIS spikes)")
    if result.dff is not None:
        dff = DfOverF(name="DfOverF")
        ophys_module(nwbfile).add(dff)
        _add_series(nwbfile, dff, "DfOverF", result.dff, "dF/F per ROI (see docs/engine.md for the baseline)")
