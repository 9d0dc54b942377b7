"""Processing stage: run the paramset's method (task_mode trigger) or load existing results (load).

Like element-miniscope's input-hash file, a triggered run records a hash of its inputs
(recording files, method, effective params, engine version); re-materializing with the same
inputs reuses the stored results unless forced. Results are produced in a fresh folder that
replaces the previous one only when complete.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import miniscope_assets
from miniscope_assets.errors import MiniscopeInputError
from miniscope_assets.io.atomic import write_text_atomic
from miniscope_assets.io.paramsets import ParamSet
from miniscope_assets.io.recording import RecordingInfo
from miniscope_assets.io.results_file import load_results, save_results
from miniscope_assets.io.user_metadata import results_dir_from_recording
from miniscope_assets.results import ProcessingResult
from miniscope_assets.stages.workspace import Partition, Progress, StageReport, no_progress

BUILTIN_RESULTS = "results.h5"


def validate_paramset(paramset: ParamSet) -> dict:
    """Effective params: the built-in engine's validated params with defaults; CaImAn's as given."""
    if paramset.method == "builtin":
        from miniscope_assets.engine import validate_params

        return validate_params(paramset.params)
    return dict(paramset.params)


def input_hash(info: RecordingInfo, data_root: Path, paramset: ParamSet, params: dict) -> str:
    """Hash of everything a triggered run depends on."""
    files = []
    for name in info.files:
        stat = (data_root / name).stat()
        files.append([name, stat.st_size, stat.st_mtime_ns])
    engine_version = miniscope_assets.__version__ if paramset.method == "builtin" else "caiman"
    payload = {
        "recording_dir": info.recording_dir, "files": files, "nframes": info.nframes,
        "method": paramset.method, "params": params, "engine_version": engine_version,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def results_dir_for_load(partition: Partition) -> Path:
    """Folder of existing results: the paramset's results_dir or the recording's processing_results.yaml."""
    workspace, paramset = partition.workspace, partition.paramset
    if paramset.results_dir:
        return workspace.data_root / paramset.results_dir.format(recording=partition.recording_dir)
    from_recording = results_dir_from_recording(workspace.data_root, partition.recording_dir, paramset.name)
    if from_recording is None:
        raise MiniscopeInputError(
            workspace.paramsets_file or "<paramsets>",
            f"paramset {paramset.name!r} has task_mode load but no results_dir, and "
            f"{partition.recording_dir}/processing_results.yaml names no folder for it",
        )
    return from_recording


def _load(kind: str, path: Path) -> ProcessingResult:
    if kind == "caiman":
        from miniscope_assets.io.caiman_results import load_caiman_results

        return load_caiman_results(path)
    result = load_results(path)
    if result.corrected_movie and not Path(result.corrected_movie).is_absolute():
        result.corrected_movie = str(path.parent / result.corrected_movie)
    return result


def load_processing_result(partition: Partition) -> ProcessingResult:
    """The result the processing stage produced or loaded for this partition."""
    record_path = partition.files.processing_record
    if not record_path.is_file():
        raise MiniscopeInputError(record_path, "missing: materialize processing for this partition first")
    record = json.loads(record_path.read_text())
    return _load(record["results_kind"], Path(record["results_path"]))


def _trigger(partition: Partition, info: RecordingInfo, params: dict, progress: Progress) -> tuple[str, Path]:
    """Run the method into a fresh folder, then swap it in; return (kind, results path)."""
    files = partition.files
    files.work_dir.mkdir(parents=True, exist_ok=True)
    fresh = Path(tempfile.mkdtemp(prefix="processing.partial-", dir=files.work_dir))
    try:
        if partition.paramset.method == "builtin":
            from miniscope_assets.engine import run_engine

            movie = info.movie(partition.workspace.data_root)
            result = run_engine(movie, params, fresh, info.fps, progress=progress)
            save_results(result, fresh / BUILTIN_RESULTS)
            kind, name = "builtin", BUILTIN_RESULTS
        else:
            from miniscope_assets.caiman_backend import run_caiman

            avi_paths = [partition.workspace.data_root / f for f in info.files]
            run_caiman(avi_paths, params, info.fps, fresh)
            kind, name = "caiman", ""
        if files.processing_dir.exists():
            shutil.rmtree(files.processing_dir)
        fresh.rename(files.processing_dir)
    finally:
        if fresh.exists():
            shutil.rmtree(fresh)
    return kind, files.processing_dir / name if name else files.processing_dir


def run(partition: Partition, force: bool = False, progress: Progress = no_progress) -> StageReport:
    """Trigger or load processing results and record what was done."""
    paramset = partition.paramset
    info = partition.recording_info()
    params = validate_paramset(paramset)
    files = partition.files
    started = time.perf_counter()
    reused = False
    previous = json.loads(files.processing_record.read_text()) if files.processing_record.is_file() else {}
    if paramset.task_mode == "load":
        results_dir = results_dir_for_load(partition)
        if paramset.method == "builtin":
            kind, path = "builtin", results_dir / BUILTIN_RESULTS if results_dir.is_dir() else results_dir
        else:
            kind, path = "caiman", results_dir
        digest = None
    else:
        digest = input_hash(info, partition.workspace.data_root, paramset, params)
        reusable = (
            previous.get("input_hash") == digest
            and previous.get("task_mode") == "trigger"
            and Path(previous.get("results_path", "/nonexistent")).exists()
        )
        if reusable and not force:
            kind, path, reused = previous["results_kind"], Path(previous["results_path"]), True
        else:
            kind, path = _trigger(partition, info, params, progress)
    result = _load(kind, path)
    if result.nframes != info.nframes or result.frame_shape != (info.px_height, info.px_width):
        raise MiniscopeInputError(
            path,
            f"results are for {result.nframes} frames of {result.frame_shape}, but the recording has "
            f"{info.nframes} frames of {(info.px_height, info.px_width)}",
        )
    runtime = time.perf_counter() - started
    record = {
        "input_hash": digest,
        "method": paramset.method,
        "task_mode": paramset.task_mode,
        "results_kind": kind,
        "results_path": str(path),
        "package_version": result.package_version,
        "processing_time": result.creation_time.isoformat(),
        "runtime_s": previous["runtime_s"] if reused else runtime,
        "recorded_at": datetime.now(timezone.utc).isoformat(),
    }
    write_text_atomic(files.processing_record, json.dumps(record, indent=1))
    return StageReport(
        metadata={
            "paramset": paramset.name,
            "param_hash": paramset.param_hash,
            "method": paramset.method,
            "task_mode": paramset.task_mode,
            "package_version": result.package_version,
            "processing_time": record["processing_time"],
            "compute_runtime_s": round(record["runtime_s"], 2),
            "input_hash": digest,
            "reused_existing_results": reused,
            "n_masks": result.n_masks,
            "results_path": path,
        }
    )
