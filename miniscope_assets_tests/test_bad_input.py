"""Every kind of bad recording input raises one MiniscopeInputError naming the file and problem."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from miniscope_assets.errors import MiniscopeInputError
from miniscope_assets.io.miniscope_writer import write_v3_recording, write_v4_recording
from miniscope_assets.io.recording import read_recording
from miniscope_assets_tests.conftest import movie


def expect_error(data_root: Path, folder: str, path: Path, *fragments: str) -> None:
    with pytest.raises(MiniscopeInputError) as caught:
        read_recording(data_root, folder)
    error = caught.value
    assert error.path == path, f"error names {error.path}, expected {path}"
    message = str(error)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


@pytest.fixture
def v4(data_root) -> Path:
    return write_v4_recording(data_root / "rec", list(movie(nframes=60)), frames_per_file=25)


def test_missing_metadata_json(data_root, v4):
    (v4 / "metaData.json").unlink()
    expect_error(data_root, "rec", v4 / "metaData.json", "missing")


def test_missing_timestamps_csv(data_root, v4):
    (v4 / "timeStamps.csv").unlink()
    expect_error(data_root, "rec", v4 / "timeStamps.csv", "missing")


def test_empty_folder(data_root):
    (data_root / "empty").mkdir()
    expect_error(data_root, "empty", data_root / "empty", "empty")


def test_folder_that_does_not_exist(data_root):
    expect_error(data_root, "nowhere", data_root / "nowhere", "does not exist")


def test_unreadable_avi(data_root, v4):
    (v4 / "1.avi").write_bytes(b"this is not a video" * 100)
    expect_error(data_root, "rec", v4 / "1.avi", "cannot be opened")


def test_empty_avi(data_root, v4):
    (v4 / "2.avi").write_bytes(b"")
    expect_error(data_root, "rec", v4 / "2.avi", "empty")


def test_truncated_avi(data_root, v4):
    data = (v4 / "1.avi").read_bytes()
    (v4 / "1.avi").write_bytes(data[: len(data) // 2])
    expect_error(data_root, "rec", v4 / "1.avi", "truncated", "declares 25 frames")


def test_malformed_csv_header(data_root, v4):
    (v4 / "timeStamps.csv").write_text("frame,time\n0,0\n")
    expect_error(data_root, "rec", v4 / "timeStamps.csv", "malformed header", "Time Stamp (ms)")


def test_malformed_csv_row(data_root, v4):
    lines = (v4 / "timeStamps.csv").read_text().splitlines()
    lines[5] = "4,not-a-number,0"
    (v4 / "timeStamps.csv").write_text("\n".join(lines))
    expect_error(data_root, "rec", v4 / "timeStamps.csv", "line 6 is malformed")


def test_timestamps_not_increasing(data_root, v4):
    lines = (v4 / "timeStamps.csv").read_text().splitlines()
    lines[11] = "10,100,0"  # frame 10 at 100 ms, frame 9 at 300 ms
    (v4 / "timeStamps.csv").write_text("\n".join(lines))
    expect_error(data_root, "rec", v4 / "timeStamps.csv", "not strictly increasing at frame 10")


def test_invalid_metadata_json(data_root, v4):
    (v4 / "metaData.json").write_text("{ not json")
    expect_error(data_root, "rec", v4 / "metaData.json", "invalid JSON")


def test_bad_frame_rate(data_root, v4):
    meta = json.loads((v4 / "metaData.json").read_text())
    meta["frameRate"] = "fast"
    (v4 / "metaData.json").write_text(json.dumps(meta))
    expect_error(data_root, "rec", v4 / "metaData.json", "'frameRate'")


def test_unknown_acquisition_software(data_root):
    folder = data_root / "other"
    folder.mkdir()
    (folder / "recording_001.avi").write_bytes(b"x")
    expect_error(data_root, "other", folder, "unknown acquisition software", "recording_001.avi")


def test_device_that_is_not_a_miniscope(data_root, v4):
    meta = json.loads((v4 / "metaData.json").read_text())
    meta["deviceType"] = "WebCam-1280x720"
    (v4 / "metaData.json").write_text(json.dumps(meta))
    expect_error(data_root, "rec", v4 / "metaData.json", "unknown acquisition software", "WebCam")


def test_v3_without_timestamp_dat(data_root):
    folder = write_v3_recording(data_root / "v3", list(movie(nframes=30)))
    (folder / "timestamp.dat").unlink()
    expect_error(data_root, "v3", folder / "timestamp.dat", "missing")


def test_v3_malformed_timestamp_dat(data_root):
    folder = write_v3_recording(data_root / "v3", list(movie(nframes=30)))
    (folder / "timestamp.dat").write_text("camNum\tframeNum\tsysClock\tbuffer\n1\t1\tabc\t0\n")
    expect_error(data_root, "v3", folder / "timestamp.dat", "line 2 is malformed")
