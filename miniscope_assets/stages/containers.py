"""The stages that put the curated result into the partition's processed NWB file, one container
group each: motion correction, segmentation, mask classification, fluorescence and activity.

motion_correction writes the file anew (session, subject, device, imaging plane and its own
containers); each later stage appends its containers, or replaces them and every later
stage's when they are already there (nwb/update.py).
"""

from __future__ import annotations

import contextlib
import functools
from collections import Counter
from typing import Callable

import numpy as np
from pynwb import NWBFile

from miniscope_assets.atomic import remove_leftovers
from miniscope_assets.engine.noise import noise_from_differences
from miniscope_assets.nwb import ophys
from miniscope_assets.nwb.raw import build_nwbfile, file_identifier, write_nwbfile
from miniscope_assets.nwb.update import update_stage
from miniscope_assets.results import ProcessingResult
from miniscope_assets.settings import workers_from_env
from miniscope_assets.stages import checks, figures
from miniscope_assets.stages.curation import current_curation, load_curated_result
from miniscope_assets.stages.processing import corrected_movie_of
from miniscope_assets.stages.table import RunOptions, containers_from
from miniscope_assets.stages.workspace import Partition, StageReport


def trace_snr(traces: np.ndarray) -> np.ndarray:
    """Peak (99th percentile above the median) over noise (robust std of all frame differences)."""
    traces = np.asarray(traces, dtype=np.float64)
    noise = noise_from_differences(traces, axis=1, max_pairs=traces.shape[1])
    peak = np.percentile(traces, 99, axis=1) - np.median(traces, axis=1)
    return peak / np.maximum(noise, 1e-12)


def _common_metadata(partition: Partition, removed: list[str]) -> dict:
    """Catalog entries every container stage records."""
    return {
        "paramset": partition.paramset.name,
        "param_hash": partition.paramset.param_hash,
        "recording_fingerprint": partition.recording.record().fingerprint,
        "curation_id": current_curation(partition)["curation_id"],
        "nwb_path": partition.nwb_path(),
        "replaced_containers": ", ".join(removed) or "none",
    }


def _write_containers(
    partition: Partition, stage: str, add: Callable[..., None], with_times: bool = False
) -> tuple[ProcessingResult, dict]:
    """Add ``stage``'s containers to the processed file (replacing them and later stages' ones):
    ``add(nwbfile, result)``, or ``add(nwbfile, result, frame times)`` ``with_times``.

    Returns the curated result and the catalog entries every container stage records.
    """
    result = load_curated_result(partition)
    arguments = (result, partition.recording_info().timestamps) if with_times else (result,)
    nwb_path = partition.nwb_path()
    remove_leftovers(nwb_path.parent)
    removed = update_stage(nwb_path, containers_from(stage), functools.partial(_add, add, arguments))
    return result, _common_metadata(partition, removed)


def _add(add: Callable[..., None], arguments: tuple, nwbfile: NWBFile) -> None:
    add(nwbfile, *arguments)


def motion_correction(partition: Partition, options: RunOptions) -> StageReport:
    """A new processed file: shifts, outliers, summary images and the corrected movie if kept."""
    result = load_curated_result(partition)
    record = partition.recording.record()
    paramset = partition.paramset
    nwb_path = partition.nwb_path()
    remove_leftovers(nwb_path.parent)
    nwbfile = build_nwbfile(
        record,
        record.identity.processed_session_id(paramset.name),
        file_identifier(record.info.recording_dir, record.fingerprint, paramset.name, paramset.param_hash),
        f"Processed with paramset {paramset.name} ({paramset.method}, hash {paramset.param_hash}); "
        f"the raw movie is in {record.identity.raw_nwb().name}",
    )
    keep_movie = paramset.keep_corrected_movie and result.corrected_movie is not None
    existed = nwb_path.is_file()
    movie = corrected_movie_of(partition, result, options.progress) if keep_movie else contextlib.nullcontext()
    with movie as corrected:
        fill = ophys.add_motion_correction(nwbfile, result, record.info.timestamps, corrected, workers_from_env())
        write_nwbfile(nwb_path, nwbfile, fill=fill)
    metadata = _common_metadata(partition, ["whole file"] if existed else [])
    rigid = result.motion_rigid
    if rigid is not None and rigid.x_shifts.size:
        metadata.update(
            x_std_px=float(np.nanstd(rigid.x_shifts)),
            y_std_px=float(np.nanstd(rigid.y_shifts)),
            max_shift_px=float(np.nanmax(np.hypot(rigid.x_shifts, rigid.y_shifts))),
            outlier_frames=int(np.sum(rigid.outlier_frames)) if rigid.outlier_frames is not None else None,
        )
    piecewise = result.motion_piecewise
    engine_notes = result.notes.get("motion", {})
    if "readout" in engine_notes:  # the built-in engine's
        metadata.update(
            row_banding_removed=bool(engine_notes["readout"].get("banded")),
            stuck_pixels_repaired=len(engine_notes["readout"].get("stuck_pixels", [])),
            # flickering pixels a frame, on average, in the inspected frames (any are repaired)
            flickering_pixels_repaired=engine_notes["readout"].get("flickering_per_frame", 0.0),
            unlit_fraction_weighted_out=engine_notes.get("weighted_out_fraction", 0.0),
            glitched_frames_replaced=len(engine_notes.get("glitched_frames", [])),
        )
    metadata.update(
        piecewise_blocks=None if piecewise is None else int(piecewise.block_y.shape[0]),
        corrected_movie_in_nwb=keep_movie,
        summary_images=", ".join(result.summary.as_dict()),
    )
    metadata["summary_png"] = figures.image_png(partition.files.figures_dir / "summary.png",
                                                result.summary.display_image())
    return StageReport(metadata=metadata)


def segmentation(partition: Partition, options: RunOptions) -> StageReport:
    """Masks as a PlaneSegmentation (ROI id = mask id)."""
    result, metadata = _write_containers(partition, "segmentation", ophys.add_segmentation)
    npix = result.mask_npix()
    return StageReport(metadata={
        **metadata,
        "n_masks": result.n_masks,
        "median_npix": float(np.median(npix)) if npix.size else None,
        "mask_ids": f"{int(result.mask_ids.min())}..{int(result.mask_ids.max())}" if result.n_masks else "none",
        "masks_png": figures.masks_on_image(partition.files.figures_dir / "masks.png",
                                             result.summary.display_image(), result.footprints, result.mask_ids),
    })


def mask_classification(partition: Partition, options: RunOptions) -> StageReport:
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


def fluorescence(partition: Partition, options: RunOptions) -> StageReport:
    """Raw and neuropil traces per ROI."""
    result, metadata = _write_containers(partition, "fluorescence", ophys.add_fluorescence, with_times=True)
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


def activity(partition: Partition, options: RunOptions) -> StageReport:
    """dF/F, denoised and deconvolved traces; checks the finished file."""
    result, metadata = _write_containers(partition, "activity", ophys.add_activity, with_times=True)
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
    dandi = checks.dandi_validate(nwb_path, partition.workspace.output_root)
    return StageReport(
        metadata=metadata,
        checks=[
            checks.inspect_nwb(nwb_path, validate_schema=dandi.metadata["skipped"]),  # else dandi validated it
            dandi,
            checks.sanity(nwb_path, info),
        ],
    )
