"""Processed ophys containers of each stage, built from a ProcessingResult.

They go into the processed file of a recording x paramset (no raw movie; every series carries
the recording's real frame times). Layout in ``processing/ophys`` (x-first orientation, see
nwb/raw.py):

- motion_correction: ``RigidMotionShifts`` (x/y per frame; the mean block shift for
  piecewise-only results), ``MotionOutlierFrames`` (1 = outlier), ``ReplacedFrames`` (1 = a
  glitched frame the built-in engine replaced by interpolation; only where there are any),
  ``PiecewiseRigidMotion`` (one
  row per block: bounds, per-frame x/y shifts, their std), ``SummaryImages`` and, when the
  paramset keeps it, ``MotionCorrected`` (the corrected movie, compressed).
- segmentation: ``ImageSegmentation/PlaneSegmentation``: image_mask (ROI, x, y; compressed) and
  pixel_mask (x, y, weight), ROI id = mask id, centre and npix columns.
- mask_classification: ``MaskClassification`` table: roi (region of the PlaneSegmentation),
  mask_type, confidence.
- fluorescence: ``Fluorescence/RoiResponseSeries`` (raw) and ``Fluorescence/Neuropil``.
- activity: ``Fluorescence/Denoised``, ``Fluorescence/Deconvolved`` (OASIS) and
  ``DfOverF/RoiResponseSeries`` (the names roiextractors reads).
"""

from __future__ import annotations

import numpy as np
from hdmf.backends.hdf5 import H5DataIO
from hdmf.common import DynamicTable, DynamicTableRegion, VectorData, VectorIndex
from hdmf.data_utils import GenericDataChunkIterator
from pynwb import NWBFile, TimeSeries
from pynwb.base import Images
from pynwb.image import GrayscaleImage
from pynwb.ophys import (
    DfOverF,
    Fluorescence,
    ImageSegmentation,
    OnePhotonSeries,
    PlaneSegmentation,
)

from miniscope_assets.engine.movie import MovieSource
from miniscope_assets.nwb.raw import COMPRESSION, IMAGING_PLANE, MovieFill, movie_dataset_io, movie_filler, timing
from miniscope_assets.nwb.update import OPHYS, ophys_module
from miniscope_assets.results import ProcessingResult

CORRECTED_SERIES = "MotionCorrected"
PIXEL_MASK_DTYPE = np.dtype([("x", np.uint32), ("y", np.uint32), ("weight", np.float32)])
SUMMARY_DESCRIPTIONS = {
    "reference": "Template the frames were registered to",
    "mean": "Mean of the motion-corrected frames",
    "max_projection": "Maximum of the motion-corrected frames",
    "correlation": "Local correlation image (each pixel with its neighbours)",
    "peak_to_noise": "Peak-to-noise ratio image",
}


def _shift_series(result: ProcessingResult, times: np.ndarray) -> TimeSeries:
    """Rigid x/y shifts per frame; for piecewise-only results the mean shift of the blocks."""
    if result.motion_rigid is not None:
        x, y = result.motion_rigid.x_shifts, result.motion_rigid.y_shifts
        description = "Rigid shifts applied to register each frame: columns x (right), y (down)"
    else:
        x = result.motion_piecewise.x_shifts.mean(axis=1)
        y = result.motion_piecewise.y_shifts.mean(axis=1)
        description = "Mean piecewise-rigid block shift per frame (no rigid pass): columns x, y"
    return TimeSeries(
        name="RigidMotionShifts",
        description=description,
        data=np.stack([x, y], axis=1).astype(np.float32),
        unit="pixels",
        **timing(times),
    )


def add_motion_correction(
    nwbfile: NWBFile, result: ProcessingResult, times: np.ndarray, corrected: MovieSource | None,
    n_threads: int | None = None,
) -> MovieFill | None:
    """Shifts, piecewise-rigid blocks, outliers, summary images and (optionally) the corrected
    movie, allocated empty: returns the ``fill`` that writes it (nwb.raw.write_nwbfile), with
    ``n_threads`` compressing."""
    module = ophys_module(nwbfile)
    if result.motion_rigid is not None or result.motion_piecewise is not None:
        module.add(_shift_series(result, times))
    if corrected is not None:
        module.add(OnePhotonSeries(
            name=CORRECTED_SERIES,
            description=f"Motion-corrected movie ({result.method}), stored (frames, width, height)",
            data=movie_dataset_io(corrected),
            imaging_plane=nwbfile.imaging_planes[IMAGING_PLANE],
            unit="n.a.",
            **timing(times),
        ))
    outliers = _outlier_frames(result)
    if outliers is not None:
        module.add(_frame_flags("MotionOutlierFrames", "1 where the frame's shift was an outlier (already corrected), "
                                "else 0", outliers, times))
    replaced = result.notes.get("motion", {}).get("glitched_frames", [])
    if replaced:
        flags = np.zeros(len(times), bool)
        flags[np.asarray(replaced, np.int64)] = True
        module.add(_frame_flags(
            "ReplacedFrames", "1 where the frame was far brighter or darker than those around it (a blank, "
            "saturated or flashed frame) and was replaced by interpolation between its neighbours before every "
            "later stage, else 0: exclude these frames' values from analysis", flags, times))
    if result.motion_piecewise is not None:
        module.add(_piecewise_table(result))
    images = [
        GrayscaleImage(name=name, data=np.asarray(image, dtype=np.float32).T, description=SUMMARY_DESCRIPTIONS[name])
        for name, image in result.summary.as_dict().items()
    ]
    module.add(Images(name="SummaryImages", images=images, description="Summary images of the corrected movie"))
    if corrected is None:
        return None
    return movie_filler(f"processing/{OPHYS}/{CORRECTED_SERIES}/data", corrected, n_threads)


def _frame_flags(name: str, description: str, flags: np.ndarray, times: np.ndarray) -> TimeSeries:
    """A per-frame 0/1 series of ``flags``."""
    return TimeSeries(name=name, description=description, data=np.asarray(flags, np.uint8), unit="n.a.",
                      **timing(times))


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


class _ImageMasks(GenericDataChunkIterator):
    """Dense (ROI, x, y) image masks produced ROI by ROI from the sparse footprints."""

    def __init__(self, result: ProcessingResult):
        self.footprints = result.footprints.tocsc()
        self.height, self.width = result.frame_shape
        super().__init__(chunk_shape=(1, self.width, self.height), buffer_shape=(1, self.width, self.height))

    def _get_data(self, selection: tuple[slice, ...]) -> np.ndarray:
        rois = range(*selection[0].indices(self.footprints.shape[1]))
        masks = np.zeros((len(rois), self.width, self.height), dtype=np.float32)
        for out, roi in enumerate(rois):
            column = self.footprints.getcol(roi).toarray().reshape(self.height, self.width)
            masks[out] = column.T
        return masks[(slice(None), *selection[1:])]

    def _get_maxshape(self) -> tuple[int, int, int]:
        return (self.footprints.shape[1], self.width, self.height)

    def _get_dtype(self) -> np.dtype:
        return np.dtype(np.float32)


def add_segmentation(nwbfile: NWBFile, result: ProcessingResult) -> None:
    """Masks as image masks (ROI, x, y) and pixel masks (x, y, weight); ROI id = mask id."""
    pixels = [result.mask_pixels(i) for i in range(result.n_masks)]
    pixel_table = np.zeros(sum(len(x) for x, _, _ in pixels), dtype=PIXEL_MASK_DTYPE)
    if pixels:
        for field, part in zip(("x", "y", "weight"), zip(*pixels)):
            pixel_table[field] = np.concatenate(part)
    pixel_mask = VectorData(name="pixel_mask", description="Mask pixels as (x, y, weight)", data=pixel_table)
    columns = [
        pixel_mask,
        VectorIndex(name="pixel_mask_index", target=pixel_mask,
                    data=np.cumsum([len(x) for x, _, _ in pixels], dtype=np.int64)),
    ]
    if result.n_masks:
        columns.append(VectorData(name="image_mask", description="Mask weights over the field of view, (ROI, x, y)",
                                  data=H5DataIO(_ImageMasks(result), **COMPRESSION)))
    centers = result.mask_centers().astype(np.float64) if result.n_masks else np.zeros((0, 2))
    columns += [
        VectorData(name="center_x", description="Weighted centroid x (column), pixels", data=centers[:, 0]),
        VectorData(name="center_y", description="Weighted centroid y (row), pixels", data=centers[:, 1]),
        VectorData(name="npix", description="Number of pixels in the mask", data=result.mask_npix()),
    ]
    plane = PlaneSegmentation(
        name="PlaneSegmentation",
        description=f"Masks from {result.method} ({result.n_masks} ROIs); ROI id = mask id",
        imaging_plane=nwbfile.imaging_planes[IMAGING_PLANE],
        id=np.asarray(result.mask_ids, dtype=np.int64),
        columns=columns,
        colnames=[c.name for c in columns if not isinstance(c, VectorIndex)],
    )
    ophys_module(nwbfile).add(ImageSegmentation(name="ImageSegmentation", plane_segmentations=[plane]))


CONFIDENCE_DESCRIPTIONS = {
    "builtin": "Probability that the mask type is right as to being a cell body or not (soma: the soma "
    "probability; other types: one minus it), calibrated on simulated ground truth",
}


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
        id=np.arange(result.n_masks, dtype=np.int64),
        columns=[
            DynamicTableRegion(name="roi", description="ROI in PlaneSegmentation", table=plane,
                               data=np.arange(result.n_masks, dtype=np.int64)),
            VectorData(name="mask_type", description="soma, axon, dendrite, neuropil, artefact or unknown",
                       data=np.asarray([str(t) for t in result.mask_types], dtype=np.str_)),
            VectorData(name="confidence", description=CONFIDENCE_DESCRIPTIONS.get(
                result.method, "Confidence of the mask type"), data=np.asarray(result.mask_confidence, dtype=np.float64)),
        ],
    )
    ophys_module(nwbfile).add(table)


def _add_series(
    nwbfile: NWBFile, container, name: str, traces: np.ndarray, times: np.ndarray, description: str
) -> None:
    plane = _plane_segmentation(nwbfile)
    rois = plane.create_roi_table_region(region=list(range(len(plane))), description="all ROIs")
    data = np.ascontiguousarray(np.asarray(traces, dtype=np.float32).reshape(-1, len(times)).T)
    container.create_roi_response_series(
        name=name,
        data=H5DataIO(data, **COMPRESSION) if data.size else data,
        rois=rois,
        unit="n.a.",
        **timing(times),
        description=description,
    )


def _fluorescence_container(nwbfile: NWBFile) -> Fluorescence:
    module = ophys_module(nwbfile)
    if "Fluorescence" not in module.data_interfaces:
        module.add(Fluorescence(name="Fluorescence"))
    return module["Fluorescence"]


def add_fluorescence(nwbfile: NWBFile, result: ProcessingResult, times: np.ndarray) -> None:
    """Raw fluorescence per ROI and its neuropil/background trace, (frames, ROIs)."""
    container = _fluorescence_container(nwbfile)
    _add_series(nwbfile, container, "RoiResponseSeries", result.fluorescence, times,
                f"Raw (demixed) fluorescence per ROI from {result.method}")
    if result.neuropil is not None:
        _add_series(nwbfile, container, "Neuropil", result.neuropil, times,
                    "Background (neuropil) fluorescence under each ROI, weighted by the mask")


def add_activity(nwbfile: NWBFile, result: ProcessingResult, times: np.ndarray) -> None:
    """Denoised and deconvolved activity (OASIS) and dF/F."""
    container = _fluorescence_container(nwbfile)
    if result.denoised is not None:
        _add_series(nwbfile, container, "Denoised", result.denoised, times, "Denoised calcium trace (OASIS)")
    if result.spikes is not None:
        _add_series(nwbfile, container, "Deconvolved", result.spikes, times, "Deconvolved activity (OASIS spikes)")
    if result.dff is not None:
        dff = DfOverF(name="DfOverF")
        ophys_module(nwbfile).add(dff)
        _add_series(nwbfile, dff, "RoiResponseSeries", result.dff, times,
                    "dF/F per ROI (see docs/engine.md for the baseline)")
