"""Curation stage: the automatic "no curation" round, or a lab's curation file applied.

Curation file (``<work>/<recording key>/<paramset>/curation.yaml``; `miniscope-assets curate`
writes it)::

    reject: [3, 7]        # mask ids removed
    accept: [1, 2, 5]     # optional: keep only these ids (applied before reject)
    merge: [[4, 5]]       # groups of ids merged into one new mask each
    note: "merged a split soma"

Merging masks k with footprints a_k and traces F_k gives the footprint a = sum_k m_k a_k
(m_k = mean of F_k), scaled to the members' largest weight, and the trace that a explains best,
F = sum_k (a . a_k) F_k / (a . a); neuropil is combined with the same weights. Merged masks get
new ids after the largest existing id; dF/F and OASIS activity are recomputed for them with the
built-in engine's trace functions. Every curation round gets the next curation_id; re-running
with an unchanged curation and processing keeps the id.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import scipy.sparse
import yaml

from miniscope_assets.atomic import write_text_atomic
from miniscope_assets.errors import MiniscopeInputError
from miniscope_assets.io.results_file import load_results, save_results
from miniscope_assets.io.text import load_yaml
from miniscope_assets.results import ProcessingResult
from miniscope_assets.stages.processing import load_processing_result
from miniscope_assets.stages.table import RunOptions
from miniscope_assets.stages.workspace import Partition, StageReport

_FIELDS = {"reject", "accept", "merge", "note"}


@dataclass(frozen=True)
class CurationRequest:
    reject: list[int] = field(default_factory=list)
    accept: list[int] | None = None
    merge: list[list[int]] = field(default_factory=list)
    note: str = ""

    @property
    def is_empty(self) -> bool:
        return not self.reject and self.accept is None and not self.merge


def _id_list(path: Path, name: str, value) -> list[int]:
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise MiniscopeInputError(path, f"'{name}' should be a list of mask ids (integers), got {value!r}")
    return list(value)


def read_curation_file(path: Path) -> CurationRequest:
    """Parse and check a curation file."""
    document = load_yaml(path) or {}
    if not isinstance(document, dict):
        raise MiniscopeInputError(path, "expected a mapping with reject / accept / merge / note")
    unknown = sorted(set(document) - _FIELDS)
    if unknown:
        raise MiniscopeInputError(path, f"unknown field(s) {', '.join(unknown)}; allowed: accept, merge, note, reject")
    merge = document.get("merge") or []
    if not isinstance(merge, list):
        raise MiniscopeInputError(path, "'merge' should be a list of id lists")
    groups = [_id_list(path, "merge", group) for group in merge]
    return CurationRequest(
        reject=_id_list(path, "reject", document.get("reject") or []),
        accept=None if document.get("accept") is None else _id_list(path, "accept", document["accept"]),
        merge=groups,
        note=str(document.get("note") or ""),
    )


def check_curation(partition: Partition, request: CurationRequest) -> None:
    """Refuse a request that does not fit the partition's processing result (before it is saved)."""
    result = load_processing_result(partition)
    _check_ids(partition.files.curation_input, request, {int(i) for i in result.mask_ids})


def write_curation_file(path: Path, request: CurationRequest) -> Path:
    """Write a curation file (atomically)."""
    document = {"reject": request.reject, "merge": request.merge, "note": request.note}
    if request.accept is not None:
        document["accept"] = request.accept
    write_text_atomic(path, yaml.safe_dump(document, sort_keys=False))
    return path


def _check_ids(path: Path, request: CurationRequest, known: set[int]) -> None:
    mentioned = set(request.reject) | set(request.accept or []) | {i for g in request.merge for i in g}
    missing = sorted(mentioned - known)
    if missing:
        has = f"ids {min(known)}..{max(known)}" if known else "no masks"
        raise MiniscopeInputError(path, f"unknown mask id(s) {missing}; the result has {has}")
    seen: set[int] = set()
    for group in request.merge:
        if len(group) < 2:
            raise MiniscopeInputError(path, f"merge group {group} needs at least two ids")
        if seen & set(group) or set(group) & set(request.reject):
            raise MiniscopeInputError(path, f"merge group {group} repeats an id that is merged or rejected elsewhere")
        seen |= set(group)


def _merge_group(result: ProcessingResult, positions: list[int]) -> dict:
    """Footprint and traces of one merged mask (see the module docstring)."""
    footprints = result.footprints.tocsc()[:, positions]
    means = np.maximum(result.fluorescence[positions].mean(axis=1), 1e-6)
    combined = footprints @ scipy.sparse.diags(means)
    merged = np.asarray(combined.sum(axis=1)).ravel()
    merged *= footprints.max() / merged.max()
    overlap = footprints.T @ merged  # a . a_k
    weights = overlap / float(merged @ merged)
    traces = {"fluorescence": weights @ result.fluorescence[positions]}
    if result.neuropil is not None:
        traces["neuropil"] = (overlap / overlap.sum()) @ result.neuropil[positions]
    return {"footprint": merged, **traces}


def _trace_params(result: ProcessingResult) -> dict:
    """dF/F and deconvolution settings: the result's own for the built-in engine, else defaults."""
    from miniscope_assets.engine import validate_params

    return validate_params(result.params if result.method == "builtin" else {})


def _activity(merged: dict, result: ProcessingResult, params: dict, fps: float) -> dict:
    """All trace fields of a merged mask; dF/F and OASIS recomputed where the result has them."""
    from miniscope_assets.engine.traces import compute_dff, deconvolve_traces

    fluorescence = merged["fluorescence"][None, :]
    neuropil = merged.get("neuropil")
    traces = {"fluorescence": fluorescence, "neuropil": neuropil}
    background = np.zeros_like(fluorescence) if neuropil is None else neuropil[None, :]
    traces["dff"] = None if result.dff is None else compute_dff(fluorescence, background, fps, params)
    if result.denoised is not None or result.spikes is not None:
        denoised, spikes = deconvolve_traces(fluorescence, fps, params)
        traces["denoised"] = None if result.denoised is None else denoised
        traces["spikes"] = None if result.spikes is None else spikes
    else:
        traces["denoised"] = traces["spikes"] = None
    return traces


def apply_curation(result: ProcessingResult, request: CurationRequest, source: Path, fps: float) -> ProcessingResult:
    """The curated result: accepted, not rejected masks, then one new mask per merge group."""
    if request.is_empty:
        return result
    position = {int(mask_id): i for i, mask_id in enumerate(result.mask_ids)}
    _check_ids(source, request, set(position))
    merged_ids = {i for group in request.merge for i in group}
    keep = [
        i for mask_id, i in position.items()
        if mask_id not in request.reject and mask_id not in merged_ids
        and (request.accept is None or mask_id in request.accept)
    ]
    curated = result.select(np.asarray(keep, dtype=np.int64))
    if not request.merge:
        return curated
    next_id = int(result.mask_ids.max()) + 1
    params = _trace_params(result)
    columns, new = [], {name: [] for name in ProcessingResult.TRACE_FIELDS}
    types, confidence = [], []
    for group in request.merge:
        positions = [position[i] for i in group]
        merged = _merge_group(result, positions)
        columns.append(merged["footprint"])
        for name, value in _activity(merged, result, params, fps).items():
            new[name].append(None if value is None else np.asarray(value, dtype=np.float32).reshape(-1))
        member_types = [result.mask_types[p] for p in positions]
        types.append("soma" if "soma" in member_types else member_types[0])
        member_confidence = result.mask_confidence[positions]
        confidence.append(float(np.nanmax(member_confidence)) if np.isfinite(member_confidence).any() else np.nan)
    traces = {
        name: None if getattr(curated, name) is None or new[name][0] is None
        else np.vstack([getattr(curated, name), np.stack(new[name])])
        for name in ProcessingResult.TRACE_FIELDS
    }
    footprints = scipy.sparse.hstack(
        [curated.footprints, scipy.sparse.csc_matrix(np.stack(columns, axis=1))]
    ).tocsc()
    footprints.eliminate_zeros()
    return dataclasses.replace(
        curated,
        mask_ids=np.concatenate([curated.mask_ids, np.arange(next_id, next_id + len(request.merge))]),
        footprints=footprints,
        mask_types=np.concatenate([curated.mask_types, np.asarray(types, dtype=object)]),
        mask_confidence=np.concatenate([curated.mask_confidence, np.asarray(confidence)]),
        **traces,
    )


def _curation_hash(request: CurationRequest | None, processing_record: str) -> str:
    payload = {"request": None if request is None else dataclasses.asdict(request), "processing": processing_record}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def current_curation(partition: Partition) -> dict:
    """The latest curation round's log entry."""
    log_path = partition.files.curation_log
    if not log_path.is_file():
        raise MiniscopeInputError(log_path, "missing: materialize curation for this partition first")
    return json.loads(log_path.read_text())[-1]


def load_curated_result(partition: Partition) -> ProcessingResult:
    """The latest curated result, which every later stage reads."""
    return load_results(partition.files.curated_results(current_curation(partition)["curation_id"]))


def run(partition: Partition, options: RunOptions) -> StageReport:
    """Apply the partition's curation file (if any) to the processing result; log the round."""
    files = partition.files
    request = read_curation_file(files.curation_input) if files.curation_input.is_file() else None
    digest = _curation_hash(request, files.processing_record.read_text())
    log = json.loads(files.curation_log.read_text()) if files.curation_log.is_file() else []
    if log and log[-1]["curation_hash"] == digest and files.curated_results(log[-1]["curation_id"]).is_file():
        entry = log[-1]
    else:
        result = load_processing_result(partition)
        info = partition.recording_info()
        curated = result if request is None else apply_curation(result, request, files.curation_input, info.fps)
        entry = {
            "curation_id": log[-1]["curation_id"] + 1 if log else 0,
            "curation_hash": digest,
            "curation_time": datetime.now(timezone.utc).isoformat(),
            "manual_curation": request is not None,
            "curation_note": request.note if request else "automatic: no curation",
            "curation_file": files.curation_input.name if request else None,
            "n_masks_before": result.n_masks,
            "n_masks_after": curated.n_masks,
            "rejected_ids": sorted(set(request.reject)) if request else [],
            "merged_groups": request.merge if request else [],
        }
        save_results(curated, files.curated_results(entry["curation_id"]))
        write_text_atomic(files.curation_log, json.dumps(log + [entry], indent=1))
    return StageReport(
        metadata={
            "curation_id": entry["curation_id"],
            "manual_curation": entry["manual_curation"],
            "curation_note": entry["curation_note"],
            "curation_time": entry["curation_time"],
            "n_masks_before": entry["n_masks_before"],
            "n_masks_after": entry["n_masks_after"],
            "n_rejected": len(entry["rejected_ids"]),
            "n_merged_groups": len(entry["merged_groups"]),
            "curation_file": None if entry["curation_file"] is None else files.work_dir / entry["curation_file"],
        }
    )
