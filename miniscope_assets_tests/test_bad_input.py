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


def edit_metadata(folder: Path, **changes) -> None:
    meta = json.loads((folder / "metaData.json").read_text())
    meta.update(changes)
    (folder / "metaData.json").write_text(json.dumps(meta))


def edit_line(path: Path, line: int, text: str) -> None:
    lines = path.read_text().splitlines()
    lines[line - 1] = text
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("value, fragment", [
    ("NaN", "'frameRate' should be a finite number"),
    ("inf", "'frameRate' should be a finite number"),
    ("1e-300FPS", "'frameRate' is '1e-300', outside the range 0.1 to 1000"),
    ("-30FPS", "outside the range"),
])
def test_frame_rate_must_be_a_real_rate(data_root, v4, value, fragment):
    edit_metadata(v4, frameRate=value)
    expect_error(data_root, "rec", v4 / "metaData.json", fragment)


@pytest.mark.parametrize("changes, fragment", [
    ({"ROI": {"height": "Infinity", "width": 600}}, "'ROI.height' should be a finite number"),
    ({"ROI": {"height": 1e9, "width": 600}}, "'ROI.height' is 1000000000.0, outside the range 1 to 16384"),
    ({"led0": "NaN"}, "'led0' should be a finite number"),
    ({"led0": -3}, "'led0' is -3, should be at least 0"),
    ({"gain": "inf"}, "'gain' 'inf' is not a setting of Miniscope_V4_BNO (Low, Medium, High)"),
    ({"gain": -2}, "'gain' is -2, should be at least 0"),
    ({"framesPerFile": 2.5}, "'framesPerFile' should be a whole number"),
    ({"deviceName": "scope/left"}, "'deviceName' 'scope/left' is not usable as a name"),
    ({"deviceName": "scope\u0007"}, "is not usable as a name"),
    ({"deviceName": ["a"]}, "'deviceName' should be text"),
    ({"recordingStartTime": {"msecSinceEpoch": 1e20}}, "'recordingStartTime msecSinceEpoch' is out of range"),
    ({"recordingStartTime": {"msecSinceEpoch": "NaN"}}, "should be a finite number"),
    ({"recordingStartTime": {"year": 2024, "month": 13, "day": 1, "hour": 0, "minute": 0, "second": 0}},
     "start time is not a valid date"),
])
def test_metadata_numbers_and_names_are_checked(data_root, v4, changes, fragment):
    edit_metadata(v4, **changes)
    expect_error(data_root, "rec", v4 / "metaData.json", fragment)


@pytest.mark.parametrize("text, fragment", [
    ("7,nan,0", "line 9: time stamp 'nan' is not a finite number"),
    ("7,inf,0", "line 9: time stamp 'inf' is not a finite number"),
    ("7,-inf,0", "line 9: time stamp '-inf' is not a finite number"),
])
def test_timestamps_must_be_finite(data_root, v4, text, fragment):
    edit_line(v4 / "timeStamps.csv", 9, text)
    expect_error(data_root, "rec", v4 / "timeStamps.csv", fragment)


def test_v3_clock_must_be_finite(data_root):
    folder = write_v3_recording(data_root / "v3", list(movie(nframes=30)))
    edit_line(folder / "timestamp.dat", 6, "1\t5\tnan\t0")
    expect_error(data_root, "v3", folder / "timestamp.dat", "line 6: sysClock 'nan' is not a finite number")


@pytest.mark.parametrize("name", ["metaData.json", "timeStamps.csv"])
def test_text_that_is_not_utf8_is_named(data_root, v4, name):
    path = v4 / name
    text = path.read_text()
    if name == "metaData.json":
        text = text.replace('"Miniscope"', '"Caf\u00e9 scope"', 1)
    else:
        text = text.replace("Buffer Index", "Buffer Index Caf\u00e9", 1)
    path.write_bytes(text.encode("cp1252"))
    expect_error(data_root, "rec", path, "byte 0xe9 is not UTF-8 text")


def test_a_byte_order_mark_is_accepted(data_root, v4):
    path = v4 / "metaData.json"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert read_recording(data_root, "rec").nframes == 60


@pytest.mark.parametrize("names, missing", [
    (["0.avi", "1.avi", "3.avi"], "2.avi"),
    (["1.avi", "2.avi"], "0.avi"),
])
def test_a_gap_in_the_file_numbering_is_an_error(data_root, names, missing):
    folder = write_v4_recording(data_root / "rec", list(movie(nframes=100)), frames_per_file=25)
    for index in range(4):
        if f"{index}.avi" not in names:
            (folder / f"{index}.avi").unlink()
    expect_error(data_root, "rec", folder, "numbering has a gap", f"{missing} is missing")


def test_the_same_file_number_twice_is_an_error(data_root, v4):
    (v4 / "01.avi").write_bytes((v4 / "1.avi").read_bytes())
    expect_error(data_root, "rec", v4, "file number 1 is used by several files (01.avi, 1.avi)")


def test_v3_numbering_gap(data_root):
    folder = write_v3_recording(data_root / "v3", list(movie(nframes=90)), frames_per_file=30)
    (folder / "msCam2.avi").unlink()
    expect_error(data_root, "v3", folder, "msCam2.avi is missing")


def test_a_short_file_before_the_last_is_an_error(data_root):
    folder = write_v4_recording(data_root / "rec", list(movie(nframes=60)), frames_per_file=25)
    edit_metadata(folder, framesPerFile=30)
    expect_error(data_root, "rec", folder / "0.avi", "holds 25 frames but metaData.json states framesPerFile 30")


def test_a_symlinked_movie_outside_the_data_root_is_read_under_its_own_name(data_root, v4, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (v4 / "1.avi").rename(elsewhere / "1.avi")
    (v4 / "1.avi").symlink_to(elsewhere / "1.avi")
    info = read_recording(data_root, "rec")
    assert info.files == ["rec/0.avi", "rec/1.avi", "rec/2.avi"] and info.nframes == 60


def test_files_of_different_frame_sizes_are_an_error(data_root, v4):
    from miniscope_assets.io.avi import write_avi

    write_avi(v4 / "1.avi", list(movie(nframes=25, height=30, width=40)), fps=30)
    expect_error(data_root, "rec", v4, "AVI files differ in frame size", "1.avi: 30x40")
