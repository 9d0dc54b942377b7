"""Miniscope-DAQ-V4 (Miniscope-DAQ-QT-Software) files: metaData.json and timeStamps.csv.

Layouts handled:
- flat: ``metaData.json``, ``timeStamps.csv``, ``0.avi, 1.avi, ...`` in one folder;
- per-device: a session folder holding a session-level ``metaData.json`` (recordingStartTime,
  lists of ``miniscopes`` / ``cameras``) and one subfolder per device with its own
  ``metaData.json`` (deviceName, deviceType, ROI, frameRate, gain, led0, ...).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone, tzinfo
from pathlib import Path

import numpy as np

from miniscope_assets.errors import MiniscopeInputError
from miniscope_assets.io.text import finite_number, read_text

METADATA_FILE = "metaData.json"
TIMESTAMPS_FILE = "timeStamps.csv"
MOVIE_PATTERN = re.compile(r"^(\d+)\.avi$", re.IGNORECASE)  # group: the file number
TIMESTAMP_COLUMNS = ("Frame Number", "Time Stamp (ms)", "Buffer Index")
DAQ_FRAME_COLUMN = "DAQ Frame Number"  # DAQ-QT software v2.0.0 on
USER_CONFIG_FILE = "UserConfigFile.json"  # the DAQ-QT user configuration, at the top of the data directory
HEAD_ORIENTATION_FILE = "headOrientation.csv"  # BNO055 of a Miniscope_V4_BNO: quaternion per frame
HEAD_ORIENTATION_COLUMNS = ("Time Stamp (ms)", "qw", "qx", "qy", "qz")
# Analog gain of each gain setting, per deviceType, from the acquisition software's device table
# (Miniscope-DAQ-QT-Software deviceConfigs/videoDevices.json: controlSettings.gain).
_V4_GAINS = {"low": 1.0, "medium": 2.0, "high": 3.5}
GAIN_SETTINGS = {
    "Miniscope_V4": _V4_GAINS,
    "Miniscope_V4_BNO": _V4_GAINS,
    "Miniscope_V4_2C_Manual": _V4_GAINS,
    "Miniscope_V3": {"low": 1.0, "medium": 2.0, "high": 4.0},
    "Siminiscope_1024X768": {"1x": 1.0, "8x": 8.0, "16x": 16.0, "32x": 32.0},
}
_START_TIME_FIELDS = ("year", "month", "day", "hour", "minute", "second")
MAX_EPOCH_MS = 253402300800000.0  # 10000-01-01: beyond it no datetime exists
FPS_RANGE = (0.1, 1000.0)  # frame rates outside it are typing errors, not cameras
MAX_FRAME_SIDE = 16384  # px


def read_json(path: Path) -> dict:
    """Parse a JSON object, naming the file on any problem."""
    try:
        value = json.loads(read_text(path))
    except json.JSONDecodeError as error:
        raise MiniscopeInputError(path, f"invalid JSON at line {error.lineno}: {error.msg}") from None
    except RecursionError:
        raise MiniscopeInputError(path, "JSON nested too deeply") from None
    if not isinstance(value, dict):
        raise MiniscopeInputError(path, "expected a JSON object at the top level")
    return value


def is_device_metadata(metadata: dict) -> bool:
    """Device-level metaData.json files describe a camera: they carry ROI and frameRate."""
    return "ROI" in metadata or "frameRate" in metadata


def find_device_folders(session_folder: Path) -> list[Path]:
    """The Miniscope device subfolders of a per-device V4 session folder (named in the session's
    ``miniscopes`` list, else by a Miniscope deviceType)."""
    session = read_json(session_folder / METADATA_FILE)
    names = session.get("miniscopes")
    candidates = []
    for sub in sorted(p for p in session_folder.iterdir() if p.is_dir()):
        meta_path = sub / METADATA_FILE
        if not meta_path.is_file():
            continue
        if isinstance(names, list):
            if sub.name in names or sub.name.replace("_", " ") in names:
                candidates.append(sub)
        elif str(read_json(meta_path).get("deviceType", "")).lower().startswith("miniscope"):
            candidates.append(sub)
    if not candidates:
        raise MiniscopeInputError(
            session_folder, "V4 session folder has no Miniscope device subfolder with a metaData.json"
        )
    return candidates


def find_device_folder(session_folder: Path) -> Path:
    """The single Miniscope device subfolder of a per-device V4 session folder."""
    candidates = find_device_folders(session_folder)
    if len(candidates) > 1:
        listed = ", ".join(c.name for c in candidates)
        raise MiniscopeInputError(
            session_folder,
            f"several Miniscope devices ({listed}); point the recording at one device folder",
        )
    return candidates[0]


@dataclass(frozen=True)
class V4Metadata:
    """Device settings from a device-level metaData.json."""

    device_name: str
    device_type: str | None
    px_height: int | None
    px_width: int | None
    fps: float
    gain: float | None
    gain_setting: str | None
    led_power: float | None
    ewl: float | None
    compression: str | None
    frames_per_file: int | None
    raw: dict


def _number(path: Path, key: str, value, low: float | None = None, integer: bool = False) -> float | None:
    return None if value is None else finite_number(path, key, value, low=low, integer=integer)


def parse_frame_rate(path: Path, value) -> float:
    """frameRate is written as "30FPS" by the DAQ software; plain numbers are accepted too."""
    text = value if isinstance(value, (int, float)) else re.sub(r"\s*fps\s*$", "", str(value).strip(), flags=re.I)
    return finite_number(path, "frameRate", text, *FPS_RANGE)


def _side(path: Path, key: str, value) -> int | None:
    return None if value is None else finite_number(path, key, value, 1, MAX_FRAME_SIDE, integer=True)


def parse_gain(path: Path, value, device_type: str | None) -> tuple[float | None, str | None]:
    """Return (analog gain factor, the setting as written). A named setting maps through the
    device type's table; for a device type the table does not know, the factor is unknown (None)."""
    if value is None:
        return None, None
    if isinstance(value, str) and not value.strip().replace(".", "", 1).isdigit():
        table = GAIN_SETTINGS.get(str(device_type or "Miniscope_V4"))
        if table is None:
            return None, value
        if value.strip().lower() not in table:
            raise MiniscopeInputError(path, f"'gain' {value!r} is not a setting of {device_type} "
                                      f"({', '.join(k.capitalize() for k in table)})")
        return table[value.strip().lower()], value
    return _number(path, "gain", value, low=0), str(value)


def read_device_metadata(path: Path) -> V4Metadata:
    """Read the device settings the DAQ software writes to metaData.json."""
    meta = read_json(path)
    if "frameRate" not in meta:
        raise MiniscopeInputError(path, "missing 'frameRate' (not a Miniscope device metaData.json)")
    roi = meta.get("ROI") or {}
    if not isinstance(roi, dict):
        raise MiniscopeInputError(path, f"'ROI' should be an object with height/width, got {roi!r}")
    gain, gain_setting = parse_gain(path, meta.get("gain"), meta.get("deviceType"))
    return V4Metadata(
        device_name=device_name(path, meta),
        device_type=_text(path, "deviceType", meta.get("deviceType")),
        px_height=_side(path, "ROI.height", roi.get("height")),
        px_width=_side(path, "ROI.width", roi.get("width")),
        fps=parse_frame_rate(path, meta["frameRate"]),
        gain=gain,
        gain_setting=gain_setting,
        led_power=_number(path, "led0", meta.get("led0"), low=0),
        ewl=_number(path, "ewl", meta.get("ewl")),
        compression=_text(path, "compression", meta.get("compression")),
        frames_per_file=_number(path, "framesPerFile", meta.get("framesPerFile"), low=1, integer=True),
        raw=meta,
    )


def _text(path: Path, key: str, value) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise MiniscopeInputError(path, f"'{key}' should be text, got {value!r}")


def device_name(path: Path, meta: dict) -> str:
    """The device's name (``deviceName``, else its folder's name): it names the device in file
    names and NWB objects, so it must not hold a path separator or control characters."""
    name = _text(path, "deviceName", meta.get("deviceName")) or path.parent.name
    if any(char in name for char in "/\\") or not name.isprintable() or not name.strip():
        raise MiniscopeInputError(path, f"'deviceName' {name!r} is not usable as a name (no '/', '\\' "
                                  "or control characters)")
    return name.strip()


def parse_start_time(path: Path, meta: dict, zone: tzinfo | None = None) -> tuple[datetime, str] | None:
    """The recording start as a timezone-aware datetime and where it came from, or None.

    Layouts: the ``recordingStartTime`` object (current DAQ-QT software) or the same fields at
    the top level (older DAQ-QT session files). ``msecSinceEpoch`` is UTC and exact, so it is
    preferred; the calendar fields (``year`` ... ``msec``) are the acquisition PC's local time,
    read in ``zone`` (session.yaml ``timezone``), else in this machine's time zone.
    """
    start = meta.get("recordingStartTime")
    where = "recordingStartTime"
    if start is None:
        if "msecSinceEpoch" not in meta and not all(key in meta for key in _START_TIME_FIELDS):
            return None
        start, where = meta, "top-level"
    if not isinstance(start, dict):
        raise MiniscopeInputError(path, f"'recordingStartTime' should be an object, got {start!r}")
    if start.get("msecSinceEpoch") is not None:
        msec = _number(path, f"{where} msecSinceEpoch", start["msecSinceEpoch"])
        if not -MAX_EPOCH_MS < msec < MAX_EPOCH_MS:
            raise MiniscopeInputError(path, f"'{where} msecSinceEpoch' is out of range: {start['msecSinceEpoch']!r}")
        moment = datetime.fromtimestamp(0, timezone.utc) + timedelta(milliseconds=msec)
        return (moment if zone is None else moment.astimezone(zone)), f"{where} msecSinceEpoch (UTC)"
    missing = [key for key in _START_TIME_FIELDS if key not in start]
    if missing:
        raise MiniscopeInputError(path, f"'{where}' start time lacks {', '.join(missing)}")
    try:
        local = datetime(
            *(int(start[key]) for key in _START_TIME_FIELDS),
            microsecond=int(start.get("msec", 0)) * 1000,
        )
    except (TypeError, ValueError, OverflowError) as error:
        raise MiniscopeInputError(path, f"'{where}' start time is not a valid date: {error}") from error
    if zone is None:
        return local.astimezone(), f"{where} calendar fields (acquisition PC local time, read in this machine's zone)"
    return local.replace(tzinfo=zone), f"{where} calendar fields (local time in {zone})"


@contextlib.contextmanager
def _csv_rows(path: Path, required: tuple[str, ...]):
    """(header, iterator of (line number, non-empty row)) of a CSV file whose header has ``required``."""
    with io.StringIO(read_text(path), newline="") as handle:
        reader = csv.reader(handle)
        header = [column.strip() for column in next(reader, [])]
        missing = [column for column in required if column not in header]
        if missing:
            raise MiniscopeInputError(
                path, f"malformed header {header!r}: missing column(s) {', '.join(repr(m) for m in missing)}"
            )
        yield header, ((number, row) for number, row in enumerate(reader, start=2)
                       if row and any(cell.strip() for cell in row))


def read_timestamps(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Frame times in seconds from timeStamps.csv (Frame Number, Time Stamp (ms), Buffer Index)
    and, from DAQ software v2.0.0 on, the hardware counter ``DAQ Frame Number`` (-1 where the
    read failed), else None."""
    with _csv_rows(path, TIMESTAMP_COLUMNS[:2]) as (header, rows):
        frame_column = header.index(TIMESTAMP_COLUMNS[0])
        time_column = header.index(TIMESTAMP_COLUMNS[1])
        daq_column = header.index(DAQ_FRAME_COLUMN) if DAQ_FRAME_COLUMN in header else None
        times_ms, daq_frames = [], []
        for line_number, row in rows:
            try:
                frame = int(row[frame_column])
                times_ms.append(float(row[time_column]))
                if daq_column is not None:
                    daq_frames.append(int(row[daq_column]))
            except (IndexError, ValueError):
                raise MiniscopeInputError(path, f"line {line_number} is malformed: {row!r}") from None
            if not np.isfinite(times_ms[-1]):
                raise MiniscopeInputError(path, f"line {line_number}: time stamp {row[time_column]!r} is not a "
                                          "finite number")
            if frame != len(times_ms) - 1:
                raise MiniscopeInputError(
                    path, f"line {line_number}: frame number {frame}, expected {len(times_ms) - 1}"
                )
    if not times_ms:
        raise MiniscopeInputError(path, "no timestamp rows")
    return (np.asarray(times_ms, dtype=np.float64) / 1000.0,
            None if daq_column is None else np.asarray(daq_frames, dtype=np.int64))


def read_head_orientation(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Times (s, the movie's clock) and unit quaternions (qw, qx, qy, qz) from headOrientation.csv."""
    with _csv_rows(path, HEAD_ORIENTATION_COLUMNS) as (header, rows):
        columns = [header.index(column) for column in HEAD_ORIENTATION_COLUMNS]
        values = []
        for line_number, row in rows:
            try:
                values.append([float(row[column]) for column in columns])
            except (IndexError, ValueError):
                raise MiniscopeInputError(path, f"line {line_number} is malformed: {row!r}") from None
            if not np.all(np.isfinite(values[-1])):
                raise MiniscopeInputError(path, f"line {line_number} has a value that is not a finite number: {row!r}")
    if not values:
        raise MiniscopeInputError(path, "no head-orientation rows")
    table = np.asarray(values)
    times = table[:, 0] / 1000.0
    bad = np.flatnonzero(np.diff(times) < 0)
    if bad.size:
        raise MiniscopeInputError(path, f"time stamps go back at line {int(bad[0]) + 3}")
    return times, table[:, 1:]


def camera_folders(session_folder: Path) -> list[Path]:
    """Behaviour-camera device folders of a per-device V4 session (a metaData.json whose
    deviceType is not a Miniscope, with its timestamps and numbered AVIs)."""
    cameras = []
    for sub in sorted(p for p in session_folder.iterdir() if p.is_dir()):
        meta_path = sub / METADATA_FILE
        if not (meta_path.is_file() and (sub / TIMESTAMPS_FILE).is_file()):
            continue
        if any(MOVIE_PATTERN.match(p.name) for p in sub.iterdir()):
            device_type = str(read_json(meta_path).get("deviceType", ""))
            if not device_type.lower().startswith("miniscope"):
                cameras.append(sub)
    return cameras


def directory_levels(config_path: Path, session_folder: Path) -> dict[str, str]:
    """What each folder between a UserConfigFile.json and a session folder stands for, from the
    config's ``directoryStructure`` (e.g. researcherName/experimentName/animalName/date/time)."""
    config = read_json(config_path)
    levels = config.get("directoryStructure")
    if not isinstance(levels, list) or not all(isinstance(level, str) for level in levels):
        raise MiniscopeInputError(config_path, f"'directoryStructure' should be a list of names, got {levels!r}")
    parts = session_folder.resolve().relative_to(config_path.parent.resolve()).parts
    if len(parts) != len(levels):
        raise MiniscopeInputError(
            config_path, f"'directoryStructure' has {len(levels)} levels ({'/'.join(levels)}) but the session "
            f"folder {'/'.join(parts)} has {len(parts)}")
    return dict(zip(levels, parts))
