"""Write recording folders in the layouts the Miniscope DAQ software produces.

Used to generate the bundled example, test fixtures and benchmark inputs.
"""

from __future__ import annotations

import itertools
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

import numpy as np

from miniscope_assets.atomic import write_text_atomic
from miniscope_assets.io import miniscope_v3 as v3
from miniscope_assets.io import miniscope_v4 as v4
from miniscope_assets.io.avi import write_avi


def _write_movie_files(folder: Path, frames: Iterable[np.ndarray], fps: float, frames_per_file: int,
                       name_for_index, codec: str) -> tuple[int, tuple[int, int]]:
    """Split frames into AVI files of ``frames_per_file``; return (frame count, frame shape)."""
    iterator = iter(frames)
    total, shape, index = 0, None, 0
    while True:
        block = list(itertools.islice(iterator, frames_per_file))
        if not block:
            break
        shape = block[0].shape
        write_avi(folder / name_for_index(index), block, fps, codec=codec)
        total += len(block)
        index += 1
    if total == 0:
        raise ValueError(f"{folder}: no frames to write")
    return total, shape


def write_v4_recording(
    folder: str | Path,
    frames: Iterable[np.ndarray],
    fps: float = 30.0,
    frames_per_file: int = 1000,
    start_time: datetime | None = None,
    per_device_layout: bool = False,
    device_name: str = "Miniscope",
    gain: str | float = "Low",
    led0: int = 12,
    animal_name: str = "",
    timestamps_ms: np.ndarray | None = None,
    daq_frame_numbers: np.ndarray | None = None,
) -> Path:
    """Write a Miniscope-DAQ-V4 recording; return the folder holding the AVIs.

    ``per_device_layout`` writes the newer layout: session ``metaData.json`` in ``folder`` and
    the device files in ``folder/<device_name>``. Times default to round(i * 1000 / fps) ms.
    """
    folder = Path(folder)
    device_folder = folder / device_name if per_device_layout else folder
    device_folder.mkdir(parents=True, exist_ok=True)
    nframes, (height, width) = _write_movie_files(
        device_folder, frames, fps, frames_per_file, lambda i: f"{i}.avi", codec="FFV1"
    )
    start_time = start_time or datetime(2024, 5, 17, 10, 30, 0, tzinfo=timezone.utc)
    start = {
        "year": start_time.year, "month": start_time.month, "day": start_time.day,
        "hour": start_time.hour, "minute": start_time.minute, "second": start_time.second,
        "msec": start_time.microsecond // 1000,
        "msecSinceEpoch": int(round(start_time.timestamp() * 1000)),
    }
    device_meta = {
        "ROI": {"height": height, "leftEdge": 0, "topEdge": 0, "width": width},
        "compression": "FFV1",
        "deviceDirectory": str(device_folder),
        "deviceID": 0,
        "deviceName": device_name,
        "deviceType": "Miniscope_V4_BNO",
        "ewl": 0,
        "frameRate": f"{fps:g}FPS",
        "framesPerFile": frames_per_file,
        "gain": gain,
        "led0": led0,
    }
    session_meta = {
        "animalName": animal_name,
        "baseDirectory": str(folder),
        "cameras": [],
        "experimentName": "",
        "miniscopes": [device_name],
        "recordingStartTime": start,
        "researcherName": "",
    }
    if per_device_layout:
        write_text_atomic(folder / v4.METADATA_FILE, json.dumps(session_meta, indent=4))
    else:
        device_meta["recordingStartTime"] = start
    write_text_atomic(device_folder / v4.METADATA_FILE, json.dumps(device_meta, indent=4))
    if timestamps_ms is None:
        timestamps_ms = np.round(np.arange(nframes) * 1000.0 / fps)
    if daq_frame_numbers is None:
        rows = [",".join(v4.TIMESTAMP_COLUMNS)]
        rows += [f"{i},{t:g},{i % 8}" for i, t in enumerate(np.asarray(timestamps_ms))]
    else:  # DAQ-QT v2.0.0 on: the hardware frame counter as a 4th column
        rows = [",".join((*v4.TIMESTAMP_COLUMNS, v4.DAQ_FRAME_COLUMN))]
        rows += [f"{i},{t:g},{i % 8},{n}" for i, (t, n) in enumerate(zip(np.asarray(timestamps_ms), daq_frame_numbers))]
    write_text_atomic(device_folder / v4.TIMESTAMPS_FILE, "\n".join(rows) + "\n")
    return device_folder


def write_v3_recording(
    folder: str | Path,
    frames: Iterable[np.ndarray],
    fps: float = 20.0,
    frames_per_file: int = 1000,
    imaging_camera: int = 1,
    behavior_frames: int = 0,
    excitation: int = 30,
) -> Path:
    """Write a Miniscope-DAQ-V3 recording (msCam*.avi, timestamp.dat, settings_and_notes.dat).

    ``behavior_frames`` > 0 interleaves rows of a behaviour camera (camNum 0 when the
    imaging camera is 1, else 1) in timestamp.dat, as the legacy software does.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    nframes, _ = _write_movie_files(
        folder, frames, fps, frames_per_file, lambda i: f"msCam{i + 1}.avi", codec="GREY"
    )
    behavior_camera = 0 if imaging_camera != 0 else 1
    jitter = np.random.default_rng(nframes).integers(-2, 3, nframes)  # the PC clock is not regular
    jitter[0] = 0
    rows = []
    for i in range(nframes):
        rows.append((round(1000 * i / fps) + 7 + int(jitter[i]), imaging_camera, i + 1))
    for i in range(behavior_frames):
        rows.append((round(1000 * i / 30.0) + 3, behavior_camera, i + 1))
    rows.sort()
    lines = ["\t".join(v3.TIMESTAMP_COLUMNS)]
    lines += [f"{cam}\t{frame}\t{clock}\t0" for clock, cam, frame in rows]
    write_text_atomic(folder / v3.TIMESTAMP_FILE, "\n".join(lines) + "\n")
    settings = "animal\texcitation\tmsCamExposure\trecordLength\nmouse1\t" f"{excitation}\t255\t0\n"
    write_text_atomic(folder / v3.SETTINGS_FILE, settings)
    return folder
