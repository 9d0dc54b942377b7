"""Readers of Miniscope V4 and V3 folders on real files (OpenCV AVIs, JSON, CSV)."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import numpy as np
import pytest

from miniscope_assets.io import miniscope_v3 as v3
from miniscope_assets.io import miniscope_v4 as v4
from miniscope_assets.io.miniscope_writer import write_v3_recording, write_v4_recording
from miniscope_assets.io.recording import RecordingInfo, numbered_movies, read_recording
from miniscope_assets_tests.conftest import movie


def read_all(info, data_root, chunk=17):
    return np.concatenate([frames for _, frames in info.movie(data_root).iter_chunks(chunk)])


def test_v4_per_device_layout(data_root, v4_recording, v4_frames):
    info = read_recording(data_root, v4_recording)
    assert info.acquisition_software == "Miniscope-DAQ-V4"
    assert (info.nframes, info.px_height, info.px_width, info.nchannels) == (120, 40, 56, 1)
    assert info.fps == 30.0 and info.gain == 1.0 and info.led_power == 12.0
    assert info.files == [f"{v4_recording}/{i}.avi" for i in range(3)]
    assert info.frames_per_file == [50, 50, 20]
    assert info.recording_datetime == datetime(2024, 5, 17, 10, 30, tzinfo=timezone.utc)
    assert info.start_time_source == "recordingStartTime msecSinceEpoch (UTC) in mouse-7/2024_05_17/10_30_00/metaData.json"
    np.testing.assert_array_equal(info.timestamps, np.round(np.arange(120) * 1000 / 30) / 1000)
    assert info.recording_duration == pytest.approx(info.timestamps[-1] + 1 / 30)
    assert info.cross_check["status"] == "ok"
    assert info.session["animal_name"] == "mouse-7"
    np.testing.assert_array_equal(read_all(info, data_root), v4_frames)


def test_v4_session_folder_resolves_to_its_device(data_root, v4_recording):
    session_info = read_recording(data_root, "mouse-7/2024_05_17/10_30_00")
    assert session_info.files == read_recording(data_root, v4_recording).files


def test_v4_flat_layout_with_numeric_frame_rate_and_gain_names(data_root):
    frames = movie(nframes=44)
    folder = write_v4_recording(data_root / "flat", list(frames), fps=20, frames_per_file=4, gain="Medium")
    meta = json.loads((folder / "metaData.json").read_text())
    meta["frameRate"] = 20  # some versions write a number
    (folder / "metaData.json").write_text(json.dumps(meta))
    info = read_recording(data_root, "flat")
    assert info.fps == 20.0 and info.gain == 2.0 and info.device["gain_setting"] == "Medium"
    # 11 files: natural order puts 10.avi after 9.avi
    assert [f.rsplit("/", 1)[1] for f in info.files] == [f"{i}.avi" for i in range(11)]
    np.testing.assert_array_equal(read_all(info, data_root, chunk=5), frames)


def test_movie_files_are_ordered_by_number(tmp_path):
    for name in ["10.avi", "9.avi", "1.avi", "0.avi", "2.avi", "3.avi", "4.avi", "5.avi", "6.avi", "7.avi", "8.avi",
                 "msCam2.avi", "msCam1.avi", "notes.txt"]:
        (tmp_path / name).touch()
    assert [p.name for p in numbered_movies(tmp_path, v4.MOVIE_PATTERN, 0)] == [f"{i}.avi" for i in range(11)]
    assert [p.name for p in numbered_movies(tmp_path, v3.MOVIE_PATTERN, 1)] == ["msCam1.avi", "msCam2.avi"]


def test_chunks_can_start_anywhere(data_root, v4_recording, v4_frames):
    movie_source = read_recording(data_root, v4_recording).movie(data_root)
    chunks = list(movie_source.iter_chunks(30, start=45, stop=105))
    assert [first for first, _ in chunks] == [45, 75]
    np.testing.assert_array_equal(np.concatenate([c for _, c in chunks]), v4_frames[45:105])


@pytest.mark.parametrize("extra_rows", [3, -5])
def test_frame_timestamp_mismatch_is_reported_and_truncated(data_root, extra_rows):
    frames = movie(nframes=60)
    nrows = 60 + extra_rows
    write_v4_recording(data_root / "rec", list(frames), frames_per_file=25,
                       timestamps_ms=np.arange(nrows) * 33.0)
    info = read_recording(data_root, "rec")
    assert info.nframes == min(60, nrows) == len(info.timestamps)
    assert info.cross_check["match"] is False
    assert info.cross_check["avi_frames"] == 60 and info.cross_check["timestamp_rows"] == nrows
    assert "dropped" in info.cross_check["status"]
    np.testing.assert_array_equal(read_all(info, data_root), frames[: info.nframes])


@pytest.mark.parametrize("declared, interval_ms, nframes, used", [
    (0.5, 50.0, 60, 20.0),  # a mistyped frameRate
    (30.0, 50.0, 60, 20.0),  # the camera ran at another rate than stated
    (30.0, 33.4, 60, 30.0),  # within the tolerance: the stated rate stays
    (30.0, 50.0, 8, 30.0),  # too few frames to trust the timestamps' rate
])
def test_a_frame_rate_the_timestamps_contradict_is_replaced_and_reported(data_root, declared, interval_ms, nframes,
                                                                          used):
    write_v4_recording(data_root / "rec", list(movie(nframes=nframes)), fps=declared,
                       timestamps_ms=np.arange(nframes) * interval_ms)
    info = read_recording(data_root, "rec")
    assert info.fps == pytest.approx(used, rel=1e-3)
    assert info.recording_duration == pytest.approx((nframes - 1) * interval_ms / 1000 + 1 / used)
    if used == declared:
        assert "frame_rate" not in info.cross_check
    else:
        assert info.cross_check["frame_rate"] == (
            f"metaData.json declares frameRate {declared:g} frames/s but the timestamps hold 20.000 frames/s "
            f"over {nframes} frames: the timestamps' rate is used")


def test_dropped_frames_count_towards_the_timestamps_rate(data_root):
    """30 frames/s with 10 frames lost in one gap: the rate over the gap is still 30, as stated."""
    times = np.concatenate([np.arange(30), np.arange(40, 70)]) * 1000 / 30
    write_v4_recording(data_root / "rec", list(movie(nframes=60)), fps=30.0, timestamps_ms=times)
    info = read_recording(data_root, "rec")
    assert info.fps == 30.0 and "frame_rate" not in info.cross_check
    assert [gap["frames_lost"] for gap in info.dropped_frames] == [10]


def test_negative_first_timestamp_is_shifted_and_reported(data_root):
    write_v4_recording(data_root / "rec", list(movie(nframes=60)), timestamps_ms=np.arange(60) * 50.0 - 120)
    info = read_recording(data_root, "rec")
    assert info.timestamps[0] == 0.0 and info.cross_check["timestamps_shifted_s"] == pytest.approx(0.12)
    np.testing.assert_allclose(np.diff(info.timestamps), 0.05)


def test_v3_picks_the_imaging_camera_among_interleaved_rows(data_root, v3_recording):
    info = read_recording(data_root, v3_recording)
    assert info.acquisition_software == "Miniscope-DAQ-V3"
    assert info.cross_check["camera"] == 1 and info.cross_check["match"]
    assert info.fps == pytest.approx(20.0, rel=0.01)
    assert info.led_power == 30.0
    assert info.recording_datetime.replace(tzinfo=None) == datetime(2020, 6, 10, 13, 41, 35)
    assert [f.rsplit("/", 1)[1] for f in info.files] == ["msCam1.avi", "msCam2.avi", "msCam3.avi"]
    np.testing.assert_array_equal(read_all(info, data_root), movie(seed=3))
    # timestamps come from the imaging camera's sysClock rows, relative to its first frame
    np.testing.assert_allclose(info.timestamps, np.round(1000 * np.arange(120) / 20) / 1000, atol=0.0021)
    assert len(np.unique(np.round(np.diff(info.timestamps), 6))) > 1


def test_v3_stale_first_clock_is_repaired(data_root):
    folder = write_v3_recording(data_root / "v3", list(movie(nframes=60)))
    lines = (folder / "timestamp.dat").read_text().splitlines()
    cells = lines[1].split("\t")
    cells[2] = "987654321"  # the legacy software's stale first clock value
    lines[1] = "\t".join(cells)
    (folder / "timestamp.dat").write_text("\n".join(lines) + "\n")
    info = read_recording(data_root, "v3")
    assert info.cross_check["first_clock_repaired"] is True
    assert info.timestamps[0] == 0.0 and np.all(np.diff(info.timestamps) > 0)
    assert info.timestamps[1] == pytest.approx(0.05, abs=0.005)


def test_recording_info_json_round_trip(data_root, v4_recording):
    info = read_recording(data_root, v4_recording)
    again = RecordingInfo.from_json(info.to_json())
    np.testing.assert_array_equal(again.timestamps, info.timestamps)
    assert again.recording_datetime == info.recording_datetime
    assert again.files == info.files and again.device == info.device


def test_start_time_from_calendar_fields_or_file_time(data_root):
    folder = write_v4_recording(data_root / "rec", list(movie(nframes=30)))
    meta = json.loads((folder / "metaData.json").read_text())
    del meta["recordingStartTime"]["msecSinceEpoch"]
    (folder / "metaData.json").write_text(json.dumps(meta))
    info = read_recording(data_root, "rec")
    assert info.recording_datetime.tzinfo is not None  # local time of this machine
    assert info.recording_datetime.replace(tzinfo=None) == datetime(2024, 5, 17, 10, 30)
    del meta["recordingStartTime"]
    (folder / "metaData.json").write_text(json.dumps(meta))
    info = read_recording(data_root, "rec")
    assert info.start_time_source.startswith("modification time of 0.avi")
    assert info.recording_datetime.tzinfo is not None
