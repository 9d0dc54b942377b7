"""Processing stage: run the paramset's method (task_mode trigger) or load existing results (load).

Like element-miniscope's input-hash file, a triggered run records a hash of its inputs
(recording files, method, effective params, engine version); re-materializing with the same
inputs reuses the stored results unless forced. Results are produced in a fresh folder that
replaces the previous one only when complete. The built-in engine's motion correction is
shared by the recording's paramsets with the same motion parameters: the shifts are estimated
once and kept under the recording's work folder; the corrected movie is kept only
while a stage reads it or another paramset sharing it has still to run, and written again
from the shifts when needed; so is the binned copy source extraction reads (one per
``max_init_frames`` and ``chunk_frames``), written by the first paramset that reads it. The raw
movie is read from the raw NWB file the recording_info stage wrote (:func:`raw_movie`), so the
AVIs are decoded once per recording. Beside the shifts, the
neuron size and summary images are kept per set of ``SUMMARY_PARAMS``, so paramsets that differ
only in later parameters (seed thresholds, classification, traces) compute them once. Stored
paths are relative to their root.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, NamedTuple

import miniscope_assets
from miniscope_assets.atomic import atomic_directory, atomic_path, remove_leftovers, scratch_path, write_text_atomic
from miniscope_assets.engine.movie import MovieSource
from miniscope_assets.errors import MiniscopeInputError, ParameterError
from miniscope_assets.io.paramsets import ParamSet
from miniscope_assets.io.recording import RecordingInfo
from miniscope_assets.io.results_file import (
    load_motion_correction,
    load_movie_summary,
    load_results,
    save_motion_correction,
    save_movie_summary,
    save_results,
)
from miniscope_assets.io.user_metadata import results_dir_from_recording
from miniscope_assets.results import ProcessingResult
from miniscope_assets.settings import workers_from_env
from miniscope_assets.stages.table import RunOptions
from miniscope_assets.stages.workspace import Partition, Progress, StageReport

BUILTIN_RESULTS = "results.h5"
MOTION_RECORD = "motion.h5"
BINNED_PREFIX = "binned-"  # binned copies of a motion folder's corrected movie, by their BINNING_PARAMS

if TYPE_CHECKING:
    from miniscope_assets.engine.binning import BinnedMovie
    from miniscope_assets.engine.motion import MotionCorrection


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


def _root(partition: Partition, name: str) -> Path:
    """The folder a stored results path is relative to: the work root ("work") or the data root."""
    workspace = partition.workspace
    return workspace.work_root if name == "work" else workspace.data_root


def load_processing_result(partition: Partition) -> ProcessingResult:
    """The result the processing stage produced or loaded for this partition."""
    record_path = partition.files.processing_record
    if not record_path.is_file():
        raise MiniscopeInputError(record_path, "missing: materialize processing for this partition first")
    record = json.loads(record_path.read_text())
    return _load(record["results_kind"], _root(partition, record["results_root"]) / record["results_path"])


def _processing_record(partition: Partition) -> dict:
    """What the processing stage recorded for this partition (empty before its first run)."""
    path = partition.files.processing_record
    return json.loads(path.read_text()) if path.is_file() else {}


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def motion_folder(partition: Partition, params: dict) -> Path:
    """The recording's motion-correction cache for these motion parameters (shared by paramsets)."""
    from miniscope_assets.engine.params import MOTION_PARAMS

    recording = partition.recording
    return recording.files.motion_dir(_digest({
        "fingerprint": recording.record().fingerprint, "engine_version": miniscope_assets.__version__,
        "params": {name: params[name] for name in MOTION_PARAMS}}))


class SharedSummary:
    """run_engine's ``shared_summary`` in a motion folder: the first run with these
    ``SUMMARY_PARAMS`` computes the neuron size and summary images and keeps them; the others
    (waiting on a lock while it computes) read them. ``reused`` says which this run was."""

    def __init__(self, folder: Path, params: dict):
        from miniscope_assets.engine.params import SUMMARY_PARAMS

        self.path = folder / f"summary-{_digest({name: params[name] for name in SUMMARY_PARAMS})[:16]}.h5"
        self.reused = False

    def __call__(self, compute):
        with open(self.path.parent / f".{self.path.stem}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if self.path.is_file():
                self.reused = True
                return load_movie_summary(self.path)
            summary = compute()
            save_movie_summary(summary, self.path)
            return summary


def wanted_by_another_paramset(partition: Partition, folder: Path) -> bool:
    """Whether another built-in paramset of the workspace, triggered, with the same motion
    parameters (so the same motion ``folder``), has not processed this recording with its
    current inputs yet: it would read the corrected movie, which is then kept for it."""
    info = partition.recording_info()
    for other in partition.workspace.paramsets():
        if other.name == partition.paramset.name or other.method != "builtin" or other.task_mode != "trigger":
            continue
        sibling = partition.workspace.partition(partition.recording_key, other.name)
        try:
            params = validate_paramset(other)
        except ParameterError:
            continue  # its own run reports the error
        if motion_folder(sibling, params) != folder:
            continue
        if _processing_record(sibling).get("input_hash") != input_hash(info, partition.workspace.data_root,
                                                                         other, params):
            return True
    return False


class SharedMotion(NamedTuple):
    """What :func:`shared_motion` gives a run."""

    motion: MotionCorrection
    corrected: Path  # the corrected movie
    reused: bool  # whether the shifts were estimated by an earlier run
    binned: BinnedMovie | None  # the binned copy of the corrected movie for the run's params, if asked for


@contextlib.contextmanager
def shared_motion(folder: Path, movie: Callable[[], MovieSource], params: dict, progress: Progress,
                  keep: Callable[[], bool], n_workers: int, binned_fps: float | None = None) -> Iterator[SharedMotion]:
    """Motion correction in ``folder``: estimated once (shifts and reference kept for good), the
    corrected movie written or rewritten from the stored shifts and kept only while in use.
    With ``binned_fps`` (the movie's frame rate), the binned copy of the corrected movie for
    ``params`` too (written by the first run that wants it, read by the others; it lives and
    goes with the corrected movie).

    Yields a SharedMotion. Readers hold a shared lock; the last one out removes the corrected
    movie (and its binned copies) unless ``keep()`` (asked then, when the runs that waited for
    the lock may have finished; kept if it cannot tell). The engine runs in ``n_workers``
    processes.
    """
    from miniscope_assets.engine.binning import open_binned, write_binned
    from miniscope_assets.engine.h5movie import H5Movie
    from miniscope_assets.engine.motion import correct_motion, rewrite_corrected_movie
    from miniscope_assets.engine.movie import DecodedOnce
    from miniscope_assets.engine.params import BINNING_PARAMS
    from miniscope_assets.engine.pipeline import CORRECTED_MOVIE

    corrected, record = folder / CORRECTED_MOVIE, folder / MOTION_RECORD
    binned_name = BINNED_PREFIX + "-".join(str(params[name]) for name in BINNING_PARAMS) + ".h5"
    binned_path = folder / binned_name if binned_fps is not None else None
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        remove_leftovers(folder)
        reused = record.is_file()
        if reused:
            motion = load_motion_correction(record)
            if not corrected.is_file():
                rewrite_corrected_movie(movie(), motion, params, corrected, progress, n_workers)
        else:  # three passes over the movie (template, shifts, corrected movie): decode it once
            with scratch_path(folder / "decoded.raw") as scratch:
                motion = correct_motion(DecodedOnce(movie(), scratch), params, corrected, progress, n_workers)
            save_motion_correction(motion, record)
        binned = None
        if binned_path is not None:
            try:
                binned = open_binned(binned_path) if binned_path.is_file() else None
            except MiniscopeInputError:  # a copy in an earlier version's layout: written again
                binned = None
            if binned is None:
                with atomic_path(binned_path) as temporary:
                    write_binned(H5Movie(corrected), params, binned_fps, temporary, progress)
                binned = open_binned(binned_path)
        fcntl.flock(lock, fcntl.LOCK_SH)
        try:
            yield SharedMotion(motion, corrected, reused, binned)
        finally:
            try:
                keep_movie = keep()
            except MiniscopeInputError:
                keep_movie = True  # the paramsets file became unreadable: the next run decides
            if not keep_movie:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    for binned_copy in folder.glob(f"{BINNED_PREFIX}*.h5"):
                        binned_copy.unlink(missing_ok=True)
                    corrected.unlink(missing_ok=True)
                except BlockingIOError:
                    pass  # another paramset still reads it; it removes the movie when done


@contextlib.contextmanager
def corrected_movie_of(partition: Partition, result: ProcessingResult, progress: Progress):
    """The result's corrected movie (a MovieSource) while in use: a CaImAn memmap as it is, the
    built-in engine's shared one rewritten from its shifts if it was removed."""
    from miniscope_assets.io.corrected_movie import open_corrected_movie

    path = Path(result.corrected_movie)
    if not (path.parent / MOTION_RECORD).is_file():
        yield open_corrected_movie(path)
        return
    params = validate_paramset(partition.paramset)
    with shared_motion(path.parent, lambda: raw_movie(partition), params, progress,
                       keep=lambda: wanted_by_another_paramset(partition, path.parent),
                       n_workers=engine_workers()) as shared:
        yield open_corrected_movie(shared.corrected)


def raw_movie(partition: Partition) -> MovieSource:
    """The recording's raw movie: the raw NWB file's copy (its frames are the AVIs' own,
    losslessly compressed, and threads inflate them several times as fast as the AVIs decode)
    when the file was written from the recording's current files and holds the frames the AVIs
    would give (count, size, type); else the AVIs."""
    from miniscope_assets.nwb.raw import RawNwbMovie, raw_identifier

    record = partition.recording.record()
    avi = record.info.movie(partition.workspace.data_root)
    try:
        nwb = RawNwbMovie(partition.recording.raw_nwb_path(), engine_workers())
    except (OSError, KeyError, ValueError, TypeError):
        return avi  # no raw NWB file (yet), or not one this package wrote
    same = (nwb.identifier, nwb.nframes, tuple(nwb.frame_shape), nwb.dtype) == (
        raw_identifier(record), avi.nframes, tuple(avi.frame_shape), avi.dtype)
    return nwb if same else avi


def engine_workers() -> int:
    """The built-in engine's worker processes: MINISCOPE_WORKERS, or every core this process may use."""
    from miniscope_assets.engine.workers import worker_count

    return worker_count(workers_from_env())


def _trigger(partition: Partition, info: RecordingInfo, params: dict,
             progress: Progress) -> tuple[str, Path, dict[str, bool]]:
    """Run the method into a fresh folder, then swap it in; return (kind, results path, which of
    motion correction and the movie summary an earlier run computed)."""
    files = partition.files
    shared = {}
    with atomic_directory(files.processing_dir) as fresh:
        if partition.paramset.method == "builtin":
            from miniscope_assets.engine import run_engine

            movie = raw_movie(partition)
            folder = motion_folder(partition, params)
            n_workers = engine_workers()
            summary = SharedSummary(folder, params)

            def keep() -> bool:
                return partition.paramset.keep_corrected_movie or wanted_by_another_paramset(partition, folder)

            with shared_motion(folder, lambda: movie, params, progress, keep=keep, n_workers=n_workers,
                               binned_fps=info.fps) as motion:
                result = run_engine(movie, params, fresh, info.fps, progress=progress,
                                    motion=(motion.motion, motion.corrected), n_workers=n_workers,
                                    shared_summary=summary, binned=motion.binned)
            shared = {"motion_correction_shared": motion.reused, "summary_images_shared": summary.reused}
            save_results(result, fresh / BUILTIN_RESULTS)
            kind, name = "builtin", BUILTIN_RESULTS
        else:
            from miniscope_assets.caiman_backend import run_caiman

            avi_paths = [partition.workspace.data_root / f for f in info.files]
            run_caiman(avi_paths, params, info.fps, fresh)
            kind, name = "caiman", ""
    return kind, files.processing_dir / name if name else files.processing_dir, shared


def run(partition: Partition, options: RunOptions) -> StageReport:
    """Trigger or load processing results and record what was done."""
    paramset = partition.paramset
    info = partition.recording_info()
    params = validate_paramset(paramset)
    files = partition.files
    workspace = partition.workspace
    started = time.perf_counter()
    reused = False
    shared = {"motion_correction_shared": False, "summary_images_shared": False}
    previous = _processing_record(partition)
    if paramset.task_mode == "load":
        results_dir = results_dir_for_load(partition)
        if paramset.method == "builtin":
            kind, path = "builtin", results_dir / BUILTIN_RESULTS if results_dir.is_dir() else results_dir
        else:
            kind, path = "caiman", results_dir
        digest, root = None, "data"
    else:
        digest, root = input_hash(info, workspace.data_root, paramset, params), "work"
        previous_path = workspace.work_root / previous.get("results_path", "/nonexistent")
        reusable = (
            previous.get("input_hash") == digest
            and previous.get("task_mode") == "trigger"
            and previous_path.exists()
        )
        if reusable and not options.force:
            kind, path, reused = previous["results_kind"], previous_path, True
        else:
            kind, path, triggered_shared = _trigger(partition, info, params, options.progress)
            shared.update(triggered_shared)
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
        "results_root": root,
        "results_path": os.path.relpath(path, _root(partition, root)),
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
            **shared,
            "n_masks": result.n_masks,
            "results_path": path,
            # worker processes of the built-in engine run that computed the result
            **({"n_workers": result.notes["n_workers"]} if "n_workers" in result.notes else {}),
            # the soma diameter its stages used: the paramset's, or measured on the recording
            **({"neuron_diameter_px": size["diameter_px"], "neuron_diameter_source": size["source"]}
               if (size := result.notes.get("neuron_size")) else {}),
        }
    )
