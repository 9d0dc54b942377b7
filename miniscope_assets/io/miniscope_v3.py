"""Miniscope-DAQ-V3 (legacy software) files: msCam*.avi, timestamp.dat, settings_and_notes.dat."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, tzinfo
from pathlib import Path

import numpy as np

from miniscope_assets.errors import MiniscopeInputError
from miniscope_assets.io.text import read_text

TIMESTAMP_FILE = "timestamp.dat"
SETTINGS_FILE = "settings_and_notes.dat"
TIMESTAMP_COLUMNS = ("camNum", "frameNum", "sysClock", "buffer")
MOVIE_PATTERN = re.compile(r"^msCam(\d+)\.avi$", re.IGNORECASE)  # group: the file number


@dataclass(frozen=True)
class CameraTimestamps:
    """sysClock (ms) of each frame of every camera in timestamp.dat."""

    by_camera: dict[int, np.ndarray]


def read_timestamp_dat(path: Path) -> CameraTimestamps:
    """Parse the tab-separated timestamp.dat (camNum, frameNum, sysClock, buffer)."""
    lines = read_text(path).splitlines()
    if not lines:
        raise MiniscopeInputError(path, "file is empty")
    header = [column.strip() for column in lines[0].split("\t")]
    missing = [c for c in TIMESTAMP_COLUMNS[:3] if c not in header]
    if missing:
        raise MiniscopeInputError(path, f"malformed header {header!r}: missing {', '.join(missing)}")
    cam_col, clock_col = header.index("camNum"), header.index("sysClock")
    by_camera: dict[int, list[float]] = {}
    for line_number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        cells = line.split("\t")
        try:
            camera = int(cells[cam_col])
            clock = float(cells[clock_col])
        except (IndexError, ValueError):
            raise MiniscopeInputError(path, f"line {line_number} is malformed: {line!r}") from None
        if not np.isfinite(clock):
            raise MiniscopeInputError(path, f"line {line_number}: sysClock {cells[clock_col]!r} is not a finite number")
        by_camera.setdefault(camera, []).append(clock)
    if not by_camera:
        raise MiniscopeInputError(path, "no timestamp rows")
    return CameraTimestamps({cam: np.asarray(v, dtype=np.float64) for cam, v in by_camera.items()})


def pick_imaging_camera(path: Path, stamps: CameraTimestamps, movie_frames: int) -> tuple[int, str]:
    """Choose the camNum of the imaging sensor; return it with the reason.

    Rule: the only camera if there is one; else the camera whose row count equals the
    frames in msCam*.avi; else the one with the closest count (ties: lowest camNum).
    """
    counts = {cam: len(v) for cam, v in stamps.by_camera.items()}
    if len(counts) == 1:
        cam = next(iter(counts))
        return cam, f"only camera in {path.name}"
    exact = sorted(cam for cam, n in counts.items() if n == movie_frames)
    if len(exact) == 1:
        return exact[0], f"row count matches the {movie_frames} msCam frames"
    cam = min(counts, key=lambda c: (abs(counts[c] - movie_frames), c))
    return cam, f"closest row count to the {movie_frames} msCam frames among cameras {sorted(counts)}"


def clock_to_seconds(clock_ms: np.ndarray) -> tuple[np.ndarray, bool]:
    """Convert sysClock to seconds from the first frame.

    The legacy software often writes a stale clock value in the first row; when the first
    value is not below the second, it is replaced by extrapolating one median frame interval
    back from the second (returned flag says so).
    """
    times = clock_ms.astype(np.float64).copy()
    repaired = False
    if times.size > 2 and times[0] >= times[1]:
        times[0] = times[1] - float(np.median(np.diff(times[1:])))
        repaired = True
    return (times - times[0]) / 1000.0, repaired


def read_settings(path: Path) -> dict:
    """First data row of settings_and_notes.dat as a dict (empty if the file is absent). The file
    holds free-text notes typed on the acquisition PC, often not UTF-8: bytes that are not UTF-8
    are replaced by U+FFFD rather than refused (documented fallback)."""
    if not path.is_file():
        return {}
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")
    except OSError as error:
        raise MiniscopeInputError(path, f"cannot be read ({error.strerror})") from None
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) < 2:
        return {}
    header = [c.strip() for c in lines[0].split("\t")]
    values = [c.strip() for c in lines[1].split("\t")]
    return dict(zip(header, values))


_FOLDER_TIME = re.compile(r"H(\d+)_M(\d+)_S(\d+)$")
_FOLDER_DATE = re.compile(r"(\d+)_(\d+)_(\d{4})$")


def start_time_from_folders(folder: Path, zone: tzinfo | None = None) -> datetime | None:
    """The legacy software names folders <M_D_YYYY>/H<h>_M<m>_S<s>: local time, read in
    ``zone`` (else this machine's time zone)."""
    time_match = _FOLDER_TIME.search(folder.name)
    date_match = _FOLDER_DATE.search(folder.parent.name)
    if not (time_match and date_match):
        return None
    month, day, year = (int(v) for v in date_match.groups())
    hour, minute, second = (int(v) for v in time_match.groups())
    try:
        local = datetime(year, month, day, hour, minute, second)
    except ValueError:
        return None
    return local.astimezone() if zone is None else local.replace(tzinfo=zone)
