"""RecordingInfo stage: read the recording and write its raw NWB file (once per recording,
whatever the number of paramsets)."""

from __future__ import annotations

from miniscope_assets.atomic import remove_leftovers
from miniscope_assets.nwb.raw import write_raw_nwb
from miniscope_assets.settings import workers_from_env
from miniscope_assets.stages.checks import inspect_nwb
from miniscope_assets.stages.table import RunOptions
from miniscope_assets.stages.workspace import Recording, StageReport


def run(recording: Recording, options: RunOptions) -> StageReport:
    """Read the recording folder, write the raw NWB file and store what was read."""
    workspace = recording.workspace
    record = workspace.read(recording.folder)
    info = record.info
    previous = recording.record().identity if recording.files.record.is_file() else record.identity
    workspace.register(recording.folder, record.identity)  # refuses an identity another folder owns
    moved = []
    if previous != record.identity:  # the lab's metadata changed the names: the old files are outdated
        for old in workspace.outputs(previous):
            if (workspace.output_root / old).is_file():
                (workspace.output_root / old).unlink()
                moved.append(old)
    nwb_path = recording.raw_nwb_path()
    remove_leftovers(nwb_path.parent)
    write_raw_nwb(
        nwb_path, record, info.movie(workspace.data_root), workspace.data_root,
        progress=lambda fraction: options.progress("raw movie to NWB", fraction), n_threads=workers_from_env(),
    )
    recording.save_record(record)
    return StageReport(
        metadata={
            "recording_dir": info.recording_dir,
            "subject": record.identity.subject,
            "session": record.identity.session,
            "device": record.identity.device,
            "acquisition_software": info.acquisition_software,
            "nframes": info.nframes,
            "fps": info.fps,
            "fps_measured": None if info.measured_fps is None else round(info.measured_fps, 4),
            "dropped_frames": sum(gap["frames_lost"] for gap in info.dropped_frames),
            "dropped_frame_gaps": len(info.dropped_frames),
            "longest_gap_s": max((round(g["stop_time"] - g["start_time"], 4) for g in info.dropped_frames),
                                 default=None),
            "px_height": info.px_height,
            "px_width": info.px_width,
            "duration_s": round(info.recording_duration, 3),
            "file_count": len(info.files),
            "recording_datetime": info.recording_datetime.isoformat(),
            "start_time_source": info.start_time_source,
            "frame_timestamp_check": info.cross_check["status"],
            "frame_rate_check": info.cross_check.get("frame_rate", "ok"),
            "frames_in_avi": info.cross_check["avi_frames"],
            "timestamp_rows": info.cross_check["timestamp_rows"],
            "gain": info.gain,
            "behaviour_cameras": ", ".join(camera["name"] for camera in info.behaviour_cameras) or "none",
            "head_orientation": info.head_orientation is not None,
            "led_power": info.led_power,
            "subject_file": record.user.subject_file,
            "recording_fingerprint": record.fingerprint,
            "raw_nwb_path": nwb_path,
            "raw_nwb_size_mb": round(nwb_path.stat().st_size / 1e6, 2),
            "removed_outdated_files": ", ".join(moved) or "none",
        },
        checks=[inspect_nwb(nwb_path)],
        data_version=record.fingerprint,
    )
