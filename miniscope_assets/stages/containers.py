"""The stages that put the curated result into the partition's NWB file, one container group each:
motion correction, segmentation, mask classification, fluorescence and activity."""

from __future__ import annotations

from collections import Counter
from typing import Callable

import numpy as np
from pynwb import NWBFile

from miniscope_assets.engine.noise import noise_from_differences
from miniscope_assets.io.corrected_movie import open_corrected_movie
from miniscope_assets.nwb import ophys
from miniscope_assets.nwb.update import rewrite_stage
from miniscope_assets.results import ProcessingResult
from miniscope_assets.stages import checks, figures
from miniscope_assets.stages.curation import current_curation, load_curated_result
from miniscope_assets.stages.workspace import Partition, StageReport


def trace_snr(traces: np.ndarray) -> np.ndarray:
    """Peak (99th percentile above the median) over noise (robust std of all frame differences)."""
    traces = np.asarray(traces, dtype=np.float64)
    noise = noise_from_differences(traces, axis=1, max_pairs=traces.shape[1])
    peak = np.percentile(traces, 99, axis=1) - np.median(traces, axis=1)
    return peak / np.maximum(noise, 1e-12)


def _write_containers(
    partition: Partition, stage: str, add: Callable[[NWBFile, ProcessingResult], None]
) -> tuple[ProcessingResult, dict]:
    """Replace ``stage``'s containers in the partition's NWB file with what ``add`` puts there.

    Returns the curated result and the catalog entries every container stage records.
    """
    result = load_curated_result(partition)
    nwb_path = partition.nwb_path()
    removed = rewrite_stage(nwb_path, stage, lambda nwbfile: add(nwbfile, result))
    return result, {
        "paramset": partition.paramset.name,
        "param_hash": partition.paramset.param_hash,
        "curation_id": current_curation(partition)["curation_id"],
        "nwb_path": nwb_path,
        "replaced_containers": ", ".join(removed) or "none",
    }


def _add_motion_correction(nwbfile: NWBFile, result: ProcessingResult) -> None:
    corrected = open_corrected_movie(result.corrected_movie) if result.corrected_movie else None
    ophys.add_motion_correction(nwbfile, result, corrected)


def motion_correction(partition: Partition) -> StageReport:
    """Corrected movie, rigid and piecewise-rigid shifts, outliers and summary images."""
    result, metadata = _write_containers(partition, "motion_correction", _add_motion_correction)
    rigid = result.motion_rigid
    if rigid is not None:
        metadata.update(
            x_std_px=float(np.nanstd(rigid.x_shifts)),
            y_std_px=float(np.nanstd(rigid.y_shifts)),
            max_shift_px=float(np.nanmax(np.hypot(rigid.x_shifts, rigid.y_shifts))),
            outlier_frames=int(np.sum(rigid.outlier_frames)) if rigid.outlier_frames is not None else None,
        )
    piecewise = result.motion_piecewise
    metadata.update(
        piecewise_blocks=None if piecewise is None else int(piecewise.block_y.shape[0]),
        corrected_movie_in_nwb=bool(result.corrected_movie),
        summary_images=", ".join(result.summary.as_dict()),
    )
    metadata["summary_png"] = figures.image_png(partition.files.figures_dir / "summary.png",
                                                result.summary.display_image())
    return StageReport(metadata=metadata)


def segmentation(partition: Partition) -> StageReport:
    """Masks as a PlaneSegmentation (ROI id = mask id)."""
    result, metadata = _write_containers(partition, "segmentation", ophys.add_segmentation)
    npix = result.mask_npix()
    return StageReport(metadata={
        **metadata,
        "n_masks": result.n_masks,
        "median_npix": float(np.median(npix)) if npix.size else None,
        "mask_ids": f"{int(result.mask_ids.min())}..{int(result.mask_ids.max())}" if result.n_masks else "none",
        "masks_png": figures.masks_on_image(partition.files.figures_dir / "masks.png",
                                             result.summary.display_image(), result),
    })


def mask_classification(partition: Partition) -> StageReport:
    """Mask type and confidence per ROI."""
    result, metadata = _write_containers(partition, "mask_classification", ophys.add_mask_classification)
    counts = Counter(result.mask_types.tolist())
    confidence = result.mask_confidence
    return StageReport(metadata={
        **metadata,
        "classification_method": ophys.classification_method(result),
        "n_soma": counts.get("soma", 0),
        "mask_type_counts": ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "none",
        "mean_confidence": float(np.nanmean(confidence)) if np.any(np.isfinite(confidence)) else None,
    })


def fluorescence(partition: Partition) -> StageReport:
    """Raw and neuropil traces per ROI."""
    result, metadata = _write_containers(partition, "fluorescence", ophys.add_fluorescence)
    snr = trace_snr(result.fluorescence) if result.n_masks else np.array([])
    fps = partition.recording_info().fps
    return StageReport(metadata={
        **metadata,
        "n_traces": result.n_masks,
        "median_snr": float(np.median(snr)) if snr.size else None,
        "min_snr": float(np.min(snr)) if snr.size else None,
        "has_neuropil": result.neuropil is not None,
        "traces_png": figures.traces_plot(partition.files.figures_dir / "fluorescence.png",
                                          result.fluorescence, result.mask_ids, fps),
    })


def activity(partition: Partition) -> StageReport:
    """dF/F, denoised and deconvolved traces; checks the finished file."""
    result, metadata = _write_containers(partition, "activity", ophys.add_activity)
    nwb_path = metadata["nwb_path"]
    info = partition.recording_info()
    if result.dff is not None and result.n_masks:
        metadata.update(dff_min=float(np.min(result.dff)), dff_max=float(np.max(result.dff)),
                        median_peak_dff=float(np.median(np.max(result.dff, axis=1))))
        metadata["dff_png"] = figures.traces_plot(partition.files.figures_dir / "dff.png",
                                                  result.dff, result.mask_ids, info.fps)
    if result.spikes is not None and result.n_masks:
        active = (result.spikes > 0.05 * result.spikes.max(axis=1, keepdims=True)).sum(axis=1)
        metadata["median_event_rate_hz"] = float(np.median(active) / info.recording_duration)
    return StageReport(
        metadata=metadata,
        checks=[
            checks.inspect_nwb(nwb_path),
            checks.dandi_validate(nwb_path, partition.workspace.output_root),
            checks.sanity(nwb_path),
        ],
    )
