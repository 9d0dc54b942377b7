"""Read a Miniscope recording folder (V3 or V4) into a RecordingInfo record.

Frame/timestamp cross-check rule: the movie has ``min(frames in the AVIs, timestamp rows)``
frames; whatever is beyond that on the longer side is dropped and reported in
``cross_check`` (never silently).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone, tzinfo
from pathlib import Path

import numpy as np

from miniscope_assets.errors import MiniscopeInputError
from miniscope_assets.io import miniscope_v3 as v3
from miniscope_assets.io import miniscope_v4 as v4
from miniscope_assets.io.avi import AviInfo, AviMovie, check_frame_sizes, probe_avi
from miniscope_assets.io.text import finite_number
from miniscope_assets.io.user_metadata import UserMetadata, find_upwards
from miniscope_assets.layout import RecordingIdentity

V4_SOFTWARE = "Miniscope-DAQ-V4"
V3_SOFTWARE = "Miniscope-DAQ-V3"
FILE_TIME_SOURCE = "modification time"


@dataclass
class RecordingInfo:
    """Metadata of one recording (element-miniscope's RecordingInfo and its File part)."""

    recording_dir: str  # relative to the data root, posix
    acquisition_software: str
    nchannels: int
    nframes: int
    px_height: int
    px_width: int
    fps: float
    led_power: float | None
    timestamps: np.ndarray  # seconds from the recording start, one per frame
    recording_datetime: datetime  # timezone-aware
    recording_duration: float  # seconds
    files: list[str]  # movie files relative to the data root, in frame order
    frames_per_file: list[int]
    cross_check: dict
    start_time_source: str
    gain: float | None = None
    spatial_downsample: int = 1
    um_height: float | None = None
    um_width: float | None = None
    device: dict = field(default_factory=dict)
    session: dict = field(default_factory=dict)
    dropped_frames: list[dict] = field(default_factory=list)  # gaps: see find_dropped_frames
    head_orientation: str | None = None  # headOrientation.csv, relative to the data root
    behaviour_cameras: list[dict] = field(default_factory=list)  # see _read_camera

    @property
    def measured_fps(self) -> float | None:
        """Frame rate from the timestamps (see :func:`rate_from_timestamps`)."""
        return rate_from_timestamps(self.timestamps, self.dropped_frames)

    @property
    def start_time_from_files(self) -> bool:
        """True when no metadata states the start time (it is a file modification time)."""
        return self.start_time_source.startswith(FILE_TIME_SOURCE)

    def movie(self, data_root: str | Path) -> AviMovie:
        """The raw movie as a chunked MovieSource over the AVI files."""
        root = Path(data_root)
        infos = [probe_avi(root / name) for name in self.files]
        return AviMovie(infos, nframes=self.nframes)

    def to_json(self) -> str:
        record = asdict(self)
        record["timestamps"] = self.timestamps.tolist()
        record["recording_datetime"] = self.recording_datetime.isoformat()
        return json.dumps(record, indent=1)

    @classmethod
    def from_json(cls, text: str) -> "RecordingInfo":
        record = json.loads(text)
        record["timestamps"] = np.asarray(record["timestamps"], dtype=np.float64)
        record["recording_datetime"] = datetime.fromisoformat(record["recording_datetime"])
        return cls(**record)


@dataclass(frozen=True)
class RecordingRecord:
    """What recording_info read: the recording, the lab's metadata, identity and fingerprint."""

    info: RecordingInfo
    user: UserMetadata
    identity: RecordingIdentity
    fingerprint: str

    def to_json(self) -> str:
        return json.dumps({
            "info": json.loads(self.info.to_json()),
            "user": asdict(self.user),
            "identity": asdict(self.identity),
            "fingerprint": self.fingerprint,
        }, indent=1, default=str)

    @classmethod
    def from_json(cls, text: str) -> "RecordingRecord":
        record = json.loads(text)
        return cls(
            info=RecordingInfo.from_json(json.dumps(record["info"])),
            user=UserMetadata(**record["user"]),
            identity=RecordingIdentity(**record["identity"]),
            fingerprint=record["fingerprint"],
        )


GAP_FACTOR = 1.5  # without a DAQ frame counter, a frame interval this many times the median is a gap
RATE_TOLERANCE = 1.25  # a declared frame rate this many times the timestamps' rate or less than 1/it is wrong
RATE_MIN_FRAMES = 11  # frames the timestamps must hold before their rate is trusted over the declared one


def rate_from_timestamps(times: np.ndarray, dropped_frames: list[dict]) -> float | None:
    """Frames per second over the time the timestamps span, the dropped frames counted."""
    span = float(times[-1] - times[0]) if len(times) > 1 else 0.0
    return (len(times) - 1 + sum(g["frames_lost"] for g in dropped_frames)) / span if span > 0 else None


def _reconcile_frame_rate(meta_path: Path, declared: float, times: np.ndarray, dropped_frames: list[dict],
                          cross_check: dict) -> float:
    """The declared frame rate, or the timestamps' where the two differ by more than
    ``RATE_TOLERANCE`` (a mistyped frameRate, or a camera that ran at another rate): the frames
    came when the timestamps say, and the engine's time constants must follow them. The
    disagreement is stated in ``cross_check["frame_rate"]``."""
    measured = rate_from_timestamps(times, dropped_frames)
    if measured is None or len(times) < RATE_MIN_FRAMES:
        return declared
    if 1 / RATE_TOLERANCE <= measured / declared <= RATE_TOLERANCE:
        return declared
    cross_check["frame_rate"] = (f"{meta_path.name} declares frameRate {declared:g} frames/s but the timestamps "
                                 f"hold {measured:.3f} frames/s over {len(times)} frames: the timestamps' rate is used")
    return measured


def find_dropped_frames(times: np.ndarray, daq_frames: np.ndarray | None) -> list[dict]:
    """Gaps where frames were lost between the DAQ and the PC: from jumps of the hardware frame
    counter (``DAQ Frame Number``, rows of failed reads, -1, skipped) when the file has it, else
    from frame intervals longer than ``GAP_FACTOR`` x the median. Each gap: the times of the frames
    before and after it (s, on the movie's clock), the frames lost, and the evidence."""
    gaps = []
    if daq_frames is not None:
        rows = np.flatnonzero(daq_frames >= 0)
        lost = np.diff(daq_frames[rows]) - np.diff(rows)  # rows of failed reads are frames too
        for k in np.flatnonzero(lost > 0):
            gaps.append((rows[k], rows[k + 1], int(lost[k]), "DAQ Frame Number jump"))
    elif len(times) > 2:
        steps = np.diff(times)
        interval = float(np.median(steps))
        for k in np.flatnonzero(steps > GAP_FACTOR * interval):
            gaps.append((k, k + 1, max(1, int(round(steps[k] / interval)) - 1), "timestamp gap"))
    return [{"start_time": float(times[before]), "stop_time": float(times[after]), "frames_lost": lost,
             "evidence": evidence} for before, after, lost, evidence in gaps]


def _cross_check(avi_frames: int, timestamp_rows: int) -> tuple[int, dict]:
    used = min(avi_frames, timestamp_rows)
    if avi_frames == timestamp_rows:
        status = "ok"
    elif avi_frames > timestamp_rows:
        status = f"AVI files hold {avi_frames - used} frame(s) beyond the timestamps: dropped"
    else:
        status = f"timestamps hold {timestamp_rows - used} row(s) beyond the AVI frames: dropped"
    return used, {
        "avi_frames": avi_frames,
        "timestamp_rows": timestamp_rows,
        "frames_used": used,
        "status": status,
        "match": avi_frames == timestamp_rows,
    }


def _check_increasing(path: Path, times: np.ndarray) -> None:
    steps = np.diff(times)
    if np.any(steps <= 0):
        bad = int(np.argmax(steps <= 0)) + 1
        raise MiniscopeInputError(
            path, f"timestamps are not strictly increasing at frame {bad} ({times[bad - 1]} s -> {times[bad]} s)"
        )


def numbered_movies(folder: Path, pattern: re.Pattern, first: int) -> list[Path]:
    """The movie files of ``folder`` whose names match ``pattern`` (one group: the file number),
    in number order. Numbers must run from ``first`` without a gap or a repeat: frames after a
    missing file cannot be placed in time."""
    by_number: dict[int, list[Path]] = {}
    for path in folder.iterdir():
        match = pattern.match(path.name)
        if match:
            by_number.setdefault(int(match.group(1)), []).append(path)
    for number, paths in sorted(by_number.items()):
        if len(paths) > 1:
            names = ", ".join(sorted(p.name for p in paths))
            raise MiniscopeInputError(folder, f"movie file number {number} is used by several files ({names})")
    numbers = sorted(by_number)
    missing = sorted(set(range(first, first + len(numbers))) - set(numbers))
    if missing or (numbers and numbers[0] != first):
        expected = missing[0] if missing else first
        found = ", ".join(by_number[n][0].name for n in numbers[:6]) + (", ..." if len(numbers) > 6 else "")
        example = by_number[numbers[0]][0].name.replace(str(numbers[0]), str(expected), 1)
        raise MiniscopeInputError(
            folder, f"movie file numbering has a gap: {example} is missing (found {found}); the frames after "
            "it cannot be placed in time"
        )
    return [by_number[n][0] for n in numbers]


def _probe_all(paths: list[Path]) -> list[AviInfo]:
    files = [probe_avi(p) for p in paths]
    if files:
        check_frame_sizes(files)
    return files


def _check_file_lengths(meta_path: Path, files: list[AviInfo], frames_per_file: int | None) -> None:
    """With ``framesPerFile`` stated, every file but the last holds exactly that many frames:
    a shorter one would shift the timestamps of every later frame."""
    if frames_per_file is None:
        return
    for info in files[:-1]:
        if info.nframes != frames_per_file:
            raise MiniscopeInputError(
                info.path, f"holds {info.nframes} frames but {meta_path.name} states framesPerFile "
                f"{frames_per_file} and a later file follows: the later frames cannot be placed in time"
            )


def _fallback_start_time(folder: Path, files: list[AviInfo]) -> tuple[datetime, str]:
    moment = datetime.fromtimestamp(min(f.path.stat().st_mtime for f in files), timezone.utc)
    return moment, f"{FILE_TIME_SOURCE} of {files[0].path.name} (no start time in the metadata)"


def _relative(root: Path, path: Path) -> str:
    """``path`` relative to the data root, by name (a symlink inside the root stays inside it)."""
    return Path(os.path.relpath(os.path.abspath(path), os.path.abspath(root))).as_posix()


def detect_software(folder: Path) -> str:
    """Tell which acquisition software wrote ``folder``, or raise naming what is missing."""
    if not folder.is_dir():
        raise MiniscopeInputError(folder, "recording folder does not exist")
    entries = list(folder.iterdir())
    if not entries:
        raise MiniscopeInputError(folder, "recording folder is empty")
    names = {p.name for p in entries}
    if any(v3.MOVIE_PATTERN.match(name) for name in names):
        return V3_SOFTWARE
    numbered_avis = any(v4.MOVIE_PATTERN.match(p.name) for p in entries)
    has_subfolder_metadata = any((p / v4.METADATA_FILE).is_file() for p in entries if p.is_dir())
    if v4.METADATA_FILE in names or v4.TIMESTAMPS_FILE in names or numbered_avis:
        if v4.METADATA_FILE not in names:
            raise MiniscopeInputError(folder / v4.METADATA_FILE, "missing: a Miniscope-DAQ-V4 recording needs it")
        return V4_SOFTWARE
    if has_subfolder_metadata:
        return V4_SOFTWARE
    avis = sorted(name for name in names if name.lower().endswith(".avi"))
    found = f"found {', '.join(avis[:3])}" if avis else "found no AVI files"
    raise MiniscopeInputError(
        folder,
        f"unknown acquisition software: {found}, but neither Miniscope-DAQ-V4 files "
        "(metaData.json, timeStamps.csv, 0.avi...) nor Miniscope-DAQ-V3 files "
        "(msCam1.avi..., timestamp.dat)",
    )


def device_folders(folder: Path) -> list[Path]:
    """The recordings in ``folder``: each Miniscope device subfolder of a V4 session folder
    (a session-level metaData.json), else ``folder`` itself."""
    meta_path = folder / v4.METADATA_FILE
    if detect_software(folder) == V4_SOFTWARE and (
        not meta_path.is_file() or not v4.is_device_metadata(v4.read_json(meta_path))
    ):
        return v4.find_device_folders(folder)
    return [folder]


def read_recording(data_root: str | Path, recording_dir: str | Path, zone: tzinfo | None = None) -> RecordingInfo:
    """Read the recording at ``data_root / recording_dir`` (a session folder with one device
    is read as that device's folder). ``zone``: the acquisition PC's time zone, for start times
    stated as local calendar fields (default: this machine's)."""
    root = Path(data_root)
    folder = root / recording_dir
    software = detect_software(folder)
    if software == V3_SOFTWARE:
        return _read_v3(root, folder, zone)
    return _read_v4(root, folder, zone)


def _read_v4(root: Path, folder: Path, zone: tzinfo | None) -> RecordingInfo:
    meta_path = folder / v4.METADATA_FILE
    session_meta: dict = {}
    session_meta_path = None
    if meta_path.is_file() and not v4.is_device_metadata(v4.read_json(meta_path)):
        session_meta_path, session_meta = meta_path, v4.read_json(meta_path)
        device_folder = v4.find_device_folder(folder)
    else:
        device_folder = folder
        parent_meta = folder.parent / v4.METADATA_FILE
        if parent_meta.is_file() and folder.resolve() != root.resolve():
            candidate = v4.read_json(parent_meta)
            if not v4.is_device_metadata(candidate):
                session_meta_path, session_meta = parent_meta, candidate
    device_meta_path = device_folder / v4.METADATA_FILE
    if not device_meta_path.is_file():
        raise MiniscopeInputError(device_meta_path, "missing: a Miniscope-DAQ-V4 recording needs it")
    device = v4.read_device_metadata(device_meta_path)
    if device.device_type and not str(device.device_type).lower().startswith("miniscope"):
        raise MiniscopeInputError(
            device_meta_path,
            f"unknown acquisition software: deviceType {device.device_type!r} is not a Miniscope",
        )
    timestamps_path = device_folder / v4.TIMESTAMPS_FILE
    if not timestamps_path.is_file():
        raise MiniscopeInputError(timestamps_path, "missing: a Miniscope-DAQ-V4 recording needs it")
    avi_paths = numbered_movies(device_folder, v4.MOVIE_PATTERN, 0)
    if not avi_paths:
        raise MiniscopeInputError(device_folder, "no numbered AVI files (0.avi, 1.avi, ...)")
    files = _probe_all(avi_paths)
    _check_file_lengths(device_meta_path, files, device.frames_per_file)
    times, daq_frames = v4.read_timestamps(timestamps_path)
    nframes, cross_check = _cross_check(sum(f.nframes for f in files), len(times))
    times = times[:nframes]
    daq_frames = None if daq_frames is None else daq_frames[:nframes]
    if times[0] < 0:
        # The DAQ software sometimes writes a negative first time; frames are kept, times shifted.
        cross_check["timestamps_shifted_s"] = float(-times[0])
        times = times - times[0]
    _check_increasing(timestamps_path, times)
    dropped_frames = find_dropped_frames(times, daq_frames)
    fps = _reconcile_frame_rate(device_meta_path, device.fps, times, dropped_frames, cross_check)
    config = find_upwards(root, device_folder.parent, v4.USER_CONFIG_FILE) if session_meta_path else None
    levels = {} if config is None else v4.directory_levels(config, session_meta_path.parent)
    start = start_source = None
    for source_path, source in ((session_meta_path, session_meta), (device_meta_path, device.raw)):
        found = None if source_path is None else v4.parse_start_time(source_path, source, zone)
        if found is not None:
            start, where = found
            start_source = f"{where} in {_relative(root, source_path)}"
            break
    if start is None:
        start, start_source = _fallback_start_time(device_folder, files)
    height, width = files[0].height, files[0].width
    downsample = 1
    if device.px_width and device.px_width % width == 0 and device.px_width // width > 1:
        downsample = device.px_width // width
    return RecordingInfo(
        recording_dir=_relative(root, device_folder),
        acquisition_software=V4_SOFTWARE,
        nchannels=1,
        nframes=nframes,
        px_height=height,
        px_width=width,
        fps=fps,
        gain=device.gain,
        spatial_downsample=downsample,
        led_power=device.led_power,
        timestamps=times,
        recording_datetime=start,
        recording_duration=float(times[-1] - times[0] + 1.0 / fps),
        dropped_frames=dropped_frames,
        head_orientation=_relative(root, head) if (head := device_folder / v4.HEAD_ORIENTATION_FILE).is_file() else None,
        behaviour_cameras=[] if session_meta_path is None else [
            _read_camera(root, camera) for camera in v4.camera_folders(session_meta_path.parent)],
        files=[_relative(root, f.path) for f in files],
        frames_per_file=[f.nframes for f in files],
        cross_check=cross_check,
        start_time_source=start_source,
        device={
            "name": device.device_name,
            "device_type": device.device_type,
            "compression": device.compression or files[0].fourcc,
            "frame_rate": str(device.raw.get("frameRate")),
            "frames_per_file": device.frames_per_file,
            "gain_setting": device.gain_setting,
            "led0": device.led_power,
            "ewl": device.ewl,
            "roi": [device.px_height, device.px_width],
            "metadata": device.raw,
        },
        session={
            "animal_name": session_meta.get("animalName") or levels.get("animalName") or None,
            "experiment_name": session_meta.get("experimentName") or levels.get("experimentName") or None,
            "researcher_name": session_meta.get("researcherName") or levels.get("researcherName") or None,
            "directory_levels": levels,
        },
    )


def _read_camera(root: Path, folder: Path) -> dict:
    """A behaviour camera of the session: name, metadata, movie files (relative to the data
    root) with their frame counts, and its timestamps file."""
    files = _probe_all(numbered_movies(folder, v4.MOVIE_PATTERN, 0))
    meta = v4.read_json(folder / v4.METADATA_FILE)
    return {
        "name": v4.device_name(folder / v4.METADATA_FILE, meta),
        "metadata": meta,
        "files": [_relative(root, f.path) for f in files],
        "frames_per_file": [f.nframes for f in files],
        "timestamps_file": _relative(root, folder / v4.TIMESTAMPS_FILE),
    }


def _read_v3(root: Path, folder: Path, zone: tzinfo | None) -> RecordingInfo:
    timestamps_path = folder / v3.TIMESTAMP_FILE
    if not timestamps_path.is_file():
        raise MiniscopeInputError(timestamps_path, "missing: a Miniscope-DAQ-V3 recording needs it")
    files = _probe_all(numbered_movies(folder, v3.MOVIE_PATTERN, 1))
    movie_frames = sum(f.nframes for f in files)
    stamps = v3.read_timestamp_dat(timestamps_path)
    camera, camera_reason = v3.pick_imaging_camera(timestamps_path, stamps, movie_frames)
    nframes, cross_check = _cross_check(movie_frames, len(stamps.by_camera[camera]))
    times, repaired = v3.clock_to_seconds(stamps.by_camera[camera][:nframes])
    cross_check.update(camera=camera, camera_rule=camera_reason, first_clock_repaired=repaired)
    _check_increasing(timestamps_path, times)
    if nframes < 2:
        raise MiniscopeInputError(timestamps_path, "fewer than two frames: cannot derive a frame rate")
    fps = float(1.0 / np.median(np.diff(times)))
    settings = v3.read_settings(folder / v3.SETTINGS_FILE)
    start = v3.start_time_from_folders(folder, zone)
    if start is not None:
        start_source = "folder names <M_D_YYYY>/H<h>_M<m>_S<s> (local time)"
    else:
        start, start_source = _fallback_start_time(folder, files)

    def setting(name):
        value = settings.get(name)
        return None if value in (None, "") else finite_number(folder / v3.SETTINGS_FILE, name, value)

    return RecordingInfo(
        recording_dir=_relative(root, folder),
        acquisition_software=V3_SOFTWARE,
        nchannels=1,
        nframes=nframes,
        px_height=files[0].height,
        px_width=files[0].width,
        fps=fps,
        gain=setting("gain"),
        led_power=setting("excitation"),
        timestamps=times,
        recording_datetime=start,
        recording_duration=float(times[-1] - times[0] + 1.0 / fps),
        dropped_frames=find_dropped_frames(times, None),
        files=[_relative(root, f.path) for f in files],
        frames_per_file=[f.nframes for f in files],
        cross_check=cross_check,
        start_time_source=start_source,
        device={
            "name": "Miniscope",
            "device_type": "Miniscope_V3",
            "compression": files[0].fourcc,
            "frame_rate": f"{fps:.2f}FPS",
            "avi_header_fps": files[0].fps,
            "excitation": setting("excitation"),
            "msCamExposure": setting("msCamExposure"),
            "metadata": settings,
        },
        session={"animal_name": settings.get("animal") or None},
    )
