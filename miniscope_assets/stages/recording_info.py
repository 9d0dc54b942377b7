"""RecordingInfo stage: read the recording and write the partition's NWB file with the raw movie."""

from __future__ import annotations

import json
from pathlib import Path

from miniscope_assets.io.atomic import write_text_atomic
from miniscope_assets.io.recording import read_recording
from miniscope_assets.io.user_metadata import load_user_metadata
from miniscope_assets.layout import nwb_relative_path
from miniscope_assets.nwb.raw import write_raw_nwb
from miniscope_assets.stages.checks import inspect_nwb
from miniscope_assets.stages.workspace import Partition, Progress, StageReport, no_progress


def run(partition: Partition, progress: Progress = no_progress) -> StageReport:
    """Read the recording folder, write the raw NWB file and the stored RecordingInfo."""
    workspace = partition.workspace
    info = read_recording(workspace.data_root, partition.recording_dir)
    user = load_user_metadata(workspace.data_root, partition.recording_dir)
    if user.session.get("um_per_pixel") is not None:
        info.um_height = float(user.session["um_per_pixel"]) * info.px_height
        info.um_width = float(user.session["um_per_pixel"]) * info.px_width
    subject_id = user.subject.get("subject_id") or info.session.get("animal_name")
    nwb_path = workspace.output_root / nwb_relative_path(
        partition.recording_key,
        partition.paramset.name,
        None if subject_id is None else str(subject_id),
        user.session.get("session_id"),
        info.recording_datetime,
    )
    write_raw_nwb(
        nwb_path,
        info,
        info.movie(workspace.data_root),
        user,
        partition.paramset.name,
        partition.paramset.param_hash,
        progress=lambda fraction: progress("raw movie to NWB", fraction),
    )
    files = partition.files
    previous = json.loads(files.nwb_pointer.read_text())["nwb_path"] if files.nwb_pointer.is_file() else None
    if previous and Path(previous) != nwb_path and Path(previous).is_file():
        Path(previous).unlink()  # the subject or session changed: the file moved
    write_text_atomic(files.recording_info, info.to_json())
    write_text_atomic(files.nwb_pointer, json.dumps({"nwb_path": str(nwb_path)}))
    return StageReport(
        metadata={
            "recording_dir": info.recording_dir,
            "acquisition_software": info.acquisition_software,
            "nframes": info.nframes,
            "fps": info.fps,
            "px_height": info.px_height,
            "px_width": info.px_width,
            "duration_s": round(info.recording_duration, 3),
            "file_count": len(info.files),
            "recording_datetime": info.recording_datetime.isoformat(),
            "start_time_source": info.start_time_source,
            "frame_timestamp_check": info.cross_check["status"],
            "frames_in_avi": info.cross_check["avi_frames"],
            "timestamp_rows": info.cross_check["timestamp_rows"],
            "gain": info.gain,
            "led_power": info.led_power,
            "subject_id": None if subject_id is None else str(subject_id),
            "subject_file": user.subject_file,
            "nwb_path": nwb_path,
            "nwb_size_mb": round(nwb_path.stat().st_size / 1e6, 2),
        },
        checks=[inspect_nwb(nwb_path)],
    )
