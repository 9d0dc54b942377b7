"""Recording folders built from the real files in ../shared/data/real (real metadata, a real
in-vivo AVI, timestamp files in the real formats): start times from every session-file layout,
device-specific gain, dropped frames from the DAQ frame counter; each written to NWB that
nwbinspector accepts and roiextractors reads back equal to the AVI."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
import yaml
from pynwb import NWBHDF5IO

from miniscope_assets.errors import MiniscopeInputError
from miniscope_assets.io import miniscope_v4 as v4
from miniscope_assets.io.avi import probe_avi
from miniscope_assets.stages.checks import inspect_nwb
from miniscope_assets_tests.conftest import SUBJECT, write_user_metadata
from miniscope_assets_tests.dagster_helpers import materialize_recording, metadata

REAL = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "real"
AVI = REAL / "mio" / "wireless_corrupted.avi"  # 60 in-vivo frames, 200x200
COPIES = 4  # the movie as four files (240 frames: more frames than pixels a side, as real recordings)
FRAMES = 60 * COPIES
CAILAB_SESSION = REAL / "metadata" / "cailab_Ca_EEG2-1_2021_10_14_10_11_24_session_metaData.json"
CAILAB_DEVICE = REAL / "metadata" / "cailab_Ca_EEG2-1_2021_10_14_10_11_24_Miniscope_metaData.json"
CURRENT_SESSION = REAL / "metadata" / "C6-J588_Disc5_15_03_28_session_metaData.json"


@pytest.fixture(autouse=True)
def real_files():
    for path in (AVI, CAILAB_SESSION, CAILAB_DEVICE, CURRENT_SESSION):
        if not path.is_file():
            pytest.skip(f"real file {path} is absent (../shared/data/real)")


def timestamps_csv(nframes: int, daq_frames=None, interval_ms: float = 33.3) -> str:
    """timeStamps.csv as the DAQ-QT software writes it (3 columns; 4 from v2.0.0 on)."""
    columns = list(v4.TIMESTAMP_COLUMNS) + ([v4.DAQ_FRAME_COLUMN] if daq_frames is not None else [])
    rows = [",".join(columns)]
    for i in range(nframes):
        row = [str(i), str(int(round(i * interval_ms))), str(i % 5)]
        rows.append(",".join(row + ([str(daq_frames[i])] if daq_frames is not None else [])))
    return "\n".join(rows) + "\n"


def session_folder(root: Path, session_meta: Path, device_meta: Path | dict, timestamps: str) -> Path:
    """<root>/<session>/metaData.json + Miniscope/{metaData.json, timeStamps.csv, 0.avi}."""
    device = root / "Miniscope"
    device.mkdir(parents=True)
    shutil.copy(session_meta, root / "metaData.json")
    meta = device_meta if isinstance(device_meta, dict) else json.loads(device_meta.read_text())
    if "framesPerFile" in meta:  # the copies of the 60-frame AVI stand in for full-length files
        meta = {**meta, "framesPerFile": FRAMES // COPIES}
    (device / "metaData.json").write_text(json.dumps(meta))
    for index in range(COPIES):
        shutil.copy(AVI, device / f"{index}.avi")
    (device / "timeStamps.csv").write_text(timestamps)
    return device


def read_movie(device: Path, name: str = "{}.avi", first: int = 0) -> np.ndarray:
    from miniscope_assets.io.avi import AviMovie

    files = [probe_avi(device / name.format(first + index)) for index in range(COPIES)]
    return np.concatenate([frames for _, frames in AviMovie(files).iter_chunks(30)])


def check_nwb(nwb_path: Path, device: Path, name: str = "{}.avi", first: int = 0) -> None:
    """nwbinspector (DANDI) clean, and roiextractors reads the movie equal to the AVI frames."""
    roiextractors = pytest.importorskip("roiextractors")
    outcome = inspect_nwb(nwb_path)
    assert outcome.passed, outcome.metadata["messages"]
    frames = roiextractors.NwbImagingExtractor(nwb_path, optical_series_name="OnePhotonSeries").get_series()
    np.testing.assert_array_equal(frames, read_movie(device, name, first))


def test_older_flat_session_file_gives_the_start_time(workspace, data_root):
    write_user_metadata(data_root, subject={**SUBJECT, "subject_id": "Ca_EEG2-1"})
    device = session_folder(data_root / "Ca_EEG2" / "2021_10_14" / "10_11_24", CAILAB_SESSION, CAILAB_DEVICE,
                            timestamps_csv(FRAMES))
    result, recording = materialize_recording(workspace, device.relative_to(data_root).as_posix())
    meta = metadata(result, "recording_info")
    check_nwb(recording.raw_nwb_path(), device)
    start = datetime(2021, 10, 14, 14, 11, 24, 779000, tzinfo=timezone.utc)  # msecSinceEpoch, UTC
    assert datetime.fromisoformat(meta["recording_datetime"]) == start
    assert meta["start_time_source"] == "top-level msecSinceEpoch (UTC) in Ca_EEG2/2021_10_14/10_11_24/metaData.json"
    assert (meta["subject"], meta["session"], meta["device"]) == ("Ca-EEG2-1", "20211014T141124", "Miniscope")
    assert meta["gain"] == 3.5 and meta["fps"] == 30.0 and meta["fps_measured"] == pytest.approx(30.03, abs=0.01)
    with NWBHDF5IO(str(recording.raw_nwb_path()), "r") as io:
        nwbfile = io.read()
        assert nwbfile.session_start_time == start
        device_description = nwbfile.devices["Miniscope"].description
        assert '"ewl": 70' in device_description and '"deviceType": "Miniscope_V4_BNO"' in device_description
        assert nwbfile.devices["Miniscope"].deviceType == "Miniscope_V4_BNO"


def test_calendar_fields_are_read_in_the_stated_time_zone(workspace, data_root):
    session = json.loads(CAILAB_SESSION.read_text())
    del session["msecSinceEpoch"]  # only the acquisition PC's calendar fields remain
    (data_root / "session.json").write_text(json.dumps(session))
    write_user_metadata(data_root, subject=SUBJECT, session={"timezone": "America/New_York"})
    device = session_folder(data_root / "s", data_root / "session.json", CAILAB_DEVICE, timestamps_csv(FRAMES))
    record = workspace.read(device.relative_to(data_root).as_posix())
    assert record.info.recording_datetime.isoformat() == "2021-10-14T10:11:24.779000-04:00"
    assert record.info.start_time_source == ("top-level calendar fields (local time in America/New_York) "
                                             "in s/metaData.json")
    assert record.identity.session == "20211014T101124"
    (data_root / "session.yaml").write_text(yaml.safe_dump({"timezone": "Mars/Olympus_Mons"}))
    with pytest.raises(MiniscopeInputError, match="'timezone' 'Mars/Olympus_Mons' is not an IANA time zone"):
        workspace.read(device.relative_to(data_root).as_posix())


def test_current_session_file_and_device_specific_gain(workspace, data_root):
    write_user_metadata(data_root)
    device_meta = {**json.loads(CAILAB_DEVICE.read_text()), "gain": "High", "deviceType": "Miniscope_V3"}
    device = session_folder(data_root / "C6-J588_Disc5" / "15_03_28", CURRENT_SESSION, device_meta,
                            timestamps_csv(FRAMES))
    result, recording = materialize_recording(workspace, device.relative_to(data_root).as_posix())
    meta = metadata(result, "recording_info")
    assert datetime.fromisoformat(meta["recording_datetime"]) == datetime(2021, 10, 7, 22, 3, 28, 635000,
                                                                         tzinfo=timezone.utc)
    assert meta["start_time_source"].startswith("recordingStartTime msecSinceEpoch (UTC) in ")
    assert meta["gain"] == 4.0  # "High" on a Miniscope_V3 (3.5 on a V4)
    check_nwb(recording.raw_nwb_path(), device)
    bno = {**device_meta, "deviceType": "Miniscope_V4_BNO"}
    assert v4.parse_gain(device / "metaData.json", "High", bno["deviceType"]) == (3.5, "High")
    assert v4.parse_gain(device / "metaData.json", "High", "SomeNewScope") == (None, "High")  # unknown: no guess
    with pytest.raises(MiniscopeInputError, match="'gain' 'Ultra' is not a setting of Miniscope_V3"):
        v4.parse_gain(device / "metaData.json", "Ultra", "Miniscope_V3")


def test_dropped_frames_from_the_daq_frame_counter(workspace, data_root):
    write_user_metadata(data_root)
    daq = list(range(100, 100 + FRAMES))
    daq[20:] = [n + 3 for n in daq[20:]]  # 3 frames lost after frame 19
    daq[40] = -1  # a failed read: not a loss
    device = session_folder(data_root / "m" / "s1", CURRENT_SESSION, CAILAB_DEVICE, timestamps_csv(FRAMES, daq))
    result, recording = materialize_recording(workspace, device.relative_to(data_root).as_posix())
    meta = metadata(result, "recording_info")
    assert (meta["dropped_frames"], meta["dropped_frame_gaps"]) == (3, 1)
    with NWBHDF5IO(str(recording.raw_nwb_path()), "r") as io:
        nwbfile = io.read()
        table = nwbfile.intervals["DroppedFrames"].to_dataframe()
        assert table["frames_lost"].tolist() == [3] and table["evidence"].tolist() == ["DAQ Frame Number jump"]
        times = nwbfile.acquisition["OnePhotonSeries"].get_timestamps()[:]
        assert (table["start_time"][0], table["stop_time"][0]) == (times[19], times[20])  # true times kept
    check_nwb(recording.raw_nwb_path(), device)


def test_timestamp_gaps_count_as_dropped_frames_without_the_counter(tmp_path):
    from miniscope_assets.io.recording import find_dropped_frames

    times = np.r_[np.arange(10) * 0.05, 0.45 + 0.30 + np.arange(10) * 0.05]  # 0.3 s gap: 5 frames lost
    (gap,) = find_dropped_frames(times, None)
    assert gap["frames_lost"] == 5 and gap["evidence"] == "timestamp gap"
    assert find_dropped_frames(np.arange(50) * 0.05 + np.tile([0, 0.004], 25), None) == []  # jitter is no gap


def test_behaviour_camera_and_head_orientation(workspace, data_root):
    write_user_metadata(data_root)
    session = data_root / "C6-J588_Disc5" / "15_03_28"
    device = session_folder(session, CURRENT_SESSION, CAILAB_DEVICE, timestamps_csv(FRAMES))
    angle = np.linspace(0, np.pi / 2, FRAMES)  # the head turns 90 degrees about z
    rows = ["Time Stamp (ms),qw,qx,qy,qz"] + [f"{int(round(i * 33.3))},{np.cos(a / 2)},0,0,{np.sin(a / 2)}"
                                              for i, a in enumerate(angle)]
    (device / "headOrientation.csv").write_text("\n".join(rows) + "\n")
    camera = session / "BehavCam_2"  # the session file lists "BehavCam 2"
    camera.mkdir()
    shutil.copy(REAL / "mio" / "stream_daq_test_output_200px.avi", camera / "0.avi")
    (camera / "metaData.json").write_text(json.dumps({"deviceName": "BehavCam 2", "deviceType": "WebCam-320x240",
                                                      "frameRate": "30FPS", "compression": "MJPG"}))
    (camera / "timeStamps.csv").write_text(timestamps_csv(100, interval_ms=33.0))  # 94 frames in the AVI
    result, recording = materialize_recording(workspace, device.relative_to(data_root).as_posix())
    meta = metadata(result, "recording_info")
    assert meta["behaviour_cameras"] == "BehavCam 2" and meta["head_orientation"] is True
    nwb_path = recording.raw_nwb_path()
    with NWBHDF5IO(str(nwb_path), "r") as io:
        nwbfile = io.read()
        video = nwbfile.acquisition["BehaviorVideoBehavCam2"]
        (external,) = video.external_file[:]
        assert (nwb_path.parent / external).resolve() == (camera / "0.avi").resolve() and not Path(external).is_absolute()
        assert video.rate == pytest.approx(1000 / 33) and video.device.name == "BehavCam2"  # regular: a rate
        assert "(94 frames in 1 AVI file(s)); 100 timestamp rows, the first 94 used" in video.description
        behavior = nwbfile.processing["behavior"]
        np.testing.assert_allclose(behavior["HeadOrientationQuaternion"].data[:, 3], np.sin(angle / 2))
        yaw = behavior["CompassDirection"]["HeadDirection"].data[:, 0]
        np.testing.assert_allclose(yaw, angle, atol=1e-9)
        np.testing.assert_allclose(behavior["CompassDirection"]["HeadDirection"].get_timestamps()[:],
                                   nwbfile.acquisition["OnePhotonSeries"].get_timestamps()[:], atol=1e-3)
    check_nwb(nwb_path, device)
    # a camera file arriving later changes the recording's fingerprint: it is processed again
    before = workspace.read(device.relative_to(data_root).as_posix()).fingerprint
    shutil.copy(REAL / "mio" / "stream_daq_test_output_200px.avi", camera / "1.avi")
    assert workspace.read(device.relative_to(data_root).as_posix()).fingerprint != before


def test_user_config_file_names_the_levels_and_two_miniscopes_are_two_recordings(workspace, data_root):
    config = {"directoryStructure": ["researcherName", "experimentName", "animalName", "date", "time"],
              "devices": {"miniscopes": {"HPC miniscope1": {}, "ACC miniscope2": {}}, "cameras": {"BehavCam 2": {}}}}
    (data_root / "UserConfigFile.json").write_text(json.dumps(config))
    session = data_root / "jane" / "fear" / "mouse_A" / "2021_10_07" / "15_03_28"
    devices = []
    for name in ("HPC_miniscope1", "ACC_miniscope2"):
        device = session / name
        device.mkdir(parents=True)
        (device / "metaData.json").write_text(json.dumps({**json.loads(CAILAB_DEVICE.read_text()),
                                                          "deviceName": name.replace("_", " "),
                                                          "framesPerFile": FRAMES // COPIES}))
        for index in range(COPIES):
            shutil.copy(AVI, device / f"{index}.avi")
        (device / "timeStamps.csv").write_text(timestamps_csv(FRAMES))
        devices.append(device.relative_to(data_root).as_posix())
    session_meta = {**json.loads(CURRENT_SESSION.read_text()), "miniscopes": ["HPC miniscope1", "ACC miniscope2"]}
    (session / "metaData.json").write_text(json.dumps(session_meta))
    camera = session / "BehavCam_2"
    camera.mkdir()
    shutil.copy(REAL / "mio" / "stream_daq_test_output_200px.avi", camera / "0.avi")
    (camera / "metaData.json").write_text(json.dumps({"deviceName": "BehavCam 2", "deviceType": "WebCam-320x240"}))
    (camera / "timeStamps.csv").write_text(timestamps_csv(94))
    assert workspace.recording_dirs(session.relative_to(data_root)) == sorted(devices)
    records = [workspace.read(d) for d in devices]
    assert [r.identity.subject for r in records] == ["mouse-A", "mouse-A"]  # the animalName level
    assert [r.identity.device for r in records] == ["HPC-miniscope1", "ACC-miniscope2"]
    assert records[0].info.session["experiment_name"] == "fear" and records[0].info.session["researcher_name"] == "jane"
    assert [[c["name"] for c in r.info.behaviour_cameras] for r in records] == [["BehavCam 2"], ["BehavCam 2"]]
    keys = [workspace.register(d, r.identity) for d, r in zip(devices, records)]
    assert len(set(keys)) == 2 and records[0].identity.raw_nwb() != records[1].identity.raw_nwb()
    write_user_metadata(data_root / "jane" / "fear" / "mouse_A", subject={**SUBJECT, "subject_id": "mouse_A"})
    for device in devices:  # each Miniscope its own raw file, with the session's behaviour camera
        _, recording = materialize_recording(workspace, device)
        assert recording.raw_nwb_path().parent.name == "sub-mouse-A"
        check_nwb(recording.raw_nwb_path(), data_root / device)
    (data_root / "UserConfigFile.json").write_text(json.dumps({**config, "directoryStructure": ["date", "time"]}))
    with pytest.raises(MiniscopeInputError, match="'directoryStructure' has 2 levels"):
        workspace.read(devices[0])


def test_v3_folder_from_the_real_movie(workspace, data_root):
    """Miniscope-DAQ-V3 (which neuroconv refuses): msCam*.avi, timestamp.dat with a behaviour
    camera's rows interleaved, settings_and_notes.dat; start time from the folder names."""
    write_user_metadata(data_root)
    folder = data_root / "6_10_2020" / "H13_M41_S35"
    folder.mkdir(parents=True)
    for index in range(COPIES):
        shutil.copy(AVI, folder / f"msCam{index + 1}.avi")
    rows = [(7 + round(i * 1000 / 20), 1, i + 1) for i in range(FRAMES)]
    rows += [(3 + round(i * 1000 / 30), 0, i + 1) for i in range(FRAMES + 100)]
    lines = ["camNum\tframeNum\tsysClock\tbuffer"] + [f"{cam}\t{frame}\t{clock}\t0" for clock, cam, frame in sorted(rows)]
    (folder / "timestamp.dat").write_text("\n".join(lines) + "\n")
    (folder / "settings_and_notes.dat").write_text("animal\texcitation\tmsCamExposure\trecordLength\nm1\t30\t255\t0\n")
    result, recording = materialize_recording(workspace, "6_10_2020/H13_M41_S35")
    meta = metadata(result, "recording_info")
    assert meta["acquisition_software"] == "Miniscope-DAQ-V3" and meta["nframes"] == FRAMES
    assert meta["start_time_source"] == "folder names <M_D_YYYY>/H<h>_M<m>_S<s> (local time)"
    assert meta["dropped_frames"] == 0 and meta["fps"] == pytest.approx(20.0, rel=0.01)
    check_nwb(recording.raw_nwb_path(), folder, "msCam{}.avi", first=1)
