"""recording_info materialized through Dagster writes an NWB file that reads back exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pynwb import NWBHDF5IO

from miniscope_assets.io.recording import read_recording
from miniscope_assets_tests.conftest import movie
from miniscope_assets_tests.dagster_helpers import checks, materialize_recording, metadata


def read_back(path: Path):
    with NWBHDF5IO(str(path), mode="r") as io:
        nwbfile = io.read()
        series = nwbfile.acquisition["OnePhotonSeries"]
        return {
            "frames": series.data[:].transpose(0, 2, 1),  # stored (frames, width, height)
            "timestamps": series.timestamps[:],
            "start": nwbfile.session_start_time,
            "subject": nwbfile.subject.subject_id if nwbfile.subject else None,
            "device": nwbfile.devices,
            "rate": nwbfile.imaging_planes["ImagingPlane"].imaging_rate,
            "compression": series.data.compression,
            "chunks": series.data.chunks,
        }


@pytest.mark.parametrize("fixture_name", ["v4_recording", "v3_recording"])
def test_recording_info_round_trip(request, workspace, fixture_name):
    recording_dir = request.getfixturevalue(fixture_name)
    result, recording = materialize_recording(workspace, recording_dir)
    info = read_recording(workspace.data_root, recording_dir)
    meta = metadata(result, "recording_info")
    nwb_path = Path(meta["raw_nwb_path"])
    assert nwb_path == recording.raw_nwb_path() and nwb_path.is_relative_to(workspace.output_root)
    assert nwb_path.name.startswith("sub-mouse-7_ses-") and nwb_path.name.endswith("-Miniscope_ophys.nwb")
    back = read_back(nwb_path)
    expected = movie() if fixture_name == "v4_recording" else movie(seed=3)
    assert back["frames"].shape == expected.shape
    for index in range(expected.shape[0]):  # frame by frame
        np.testing.assert_array_equal(back["frames"][index], expected[index])
    np.testing.assert_array_equal(back["timestamps"], info.timestamps)
    assert back["start"] == info.recording_datetime and back["start"].tzinfo is not None
    assert back["subject"] == "mouse-7"
    assert back["compression"] == "gzip" and back["chunks"][1:] == (56, 40)
    assert back["rate"] == pytest.approx(info.measured_fps)  # measured from the timestamps
    for key in ("nframes", "fps", "px_height", "px_width", "duration_s", "file_count",
                "acquisition_software", "frame_timestamp_check", "frame_rate_check"):
        assert key in meta
    assert (meta["nframes"], meta["file_count"], meta["frame_timestamp_check"], meta["frame_rate_check"]) == (
        120, 3, "ok", "ok")
    assert meta["acquisition_software"] == info.acquisition_software
    assert checks(result) == {("recording_info", "nwbinspector"): True}


def test_nwbinspector_check_fails_without_a_subject(workspace, data_root):
    from miniscope_assets.io.miniscope_writer import write_v4_recording

    write_v4_recording(data_root / "anon", list(movie()), frames_per_file=60)
    result, _ = materialize_recording(workspace, "anon")
    assert checks(result) == {("recording_info", "nwbinspector"): False}
    (evaluation,) = result.get_asset_check_evaluations()
    assert "subject" in evaluation.description.lower()
    path = Path(metadata(result, "recording_info")["raw_nwb_path"])
    assert path.relative_to(workspace.output_root).as_posix() == (
        "sub-unknown/sub-unknown_ses-20240517T103000-Miniscope_ophys.nwb"
    )


def test_the_dandi_check_fails_on_an_unknown_subject_and_passes_with_one(workspace, data_root, v4_recording):
    from miniscope_assets.io.miniscope_writer import write_v4_recording
    from miniscope_assets.stages.checks import dandi_validate

    write_v4_recording(data_root / "anon", list(movie()), frames_per_file=60)
    outcomes = {}
    for recording in ("anon", v4_recording):
        result, _ = materialize_recording(workspace, recording)
        outcomes[recording] = dandi_validate(metadata(result, "recording_info")["raw_nwb_path"], workspace.output_root)
    assert outcomes[v4_recording].passed, outcomes[v4_recording].description
    assert not outcomes["anon"].passed
    assert outcomes["anon"].description.startswith("dandi validate: NWBI.check_subject_")
    assert "Subject species is missing" in outcomes["anon"].metadata["errors"]


def test_dandi_failing_itself_is_a_failing_check_not_a_crash(workspace, v4_recording, monkeypatch):
    from miniscope_assets.stages import checks as nwb_checks

    def broken(*paths):
        raise RuntimeError("schema download refused")

    monkeypatch.setattr(nwb_checks, "_dandi_validator", lambda: broken)
    result, _ = materialize_recording(workspace, v4_recording)
    outcome = nwb_checks.dandi_validate(metadata(result, "recording_info")["raw_nwb_path"], workspace.output_root)
    assert not outcome.passed
    assert outcome.description == "dandi validate: dandi validate failed: RuntimeError: schema download refused"


def test_a_dandi_without_its_validate_function_fails_the_check_instead_of_skipping_it(monkeypatch):
    import sys
    import types

    from miniscope_assets.stages import checks as nwb_checks

    monkeypatch.setitem(sys.modules, "dandi.validate._core", None)  # import raises ImportError
    monkeypatch.setitem(sys.modules, "dandi.validate", types.ModuleType("dandi.validate"))
    validate = nwb_checks._dandi_validator()
    assert validate is not None
    with pytest.raises(ImportError, match="no validate function where expected"):
        validate("folder")


def test_rematerializing_rewrites_the_file_in_place(workspace, v4_recording):
    first, _ = materialize_recording(workspace, v4_recording)
    path = Path(metadata(first, "recording_info")["raw_nwb_path"])
    inode = path.stat().st_ino
    second, _ = materialize_recording(workspace, v4_recording)
    assert Path(metadata(second, "recording_info")["raw_nwb_path"]) == path
    assert path.stat().st_ino != inode  # a new file renamed into place
    assert not list(path.parent.glob(".*partial*"))  # no temporary left behind


def test_exactly_regular_timestamps_are_stored_as_rate(workspace, data_root):
    from miniscope_assets.io.miniscope_writer import write_v4_recording

    write_v4_recording(data_root / "regular", list(movie()), timestamps_ms=np.arange(120) * 50.0)
    result, _ = materialize_recording(workspace, "regular")
    with NWBHDF5IO(metadata(result, "recording_info")["raw_nwb_path"], mode="r") as io:
        series = io.read().acquisition["OnePhotonSeries"]
        assert series.timestamps is None and series.rate == 20.0 and series.starting_time == 0.0
        np.testing.assert_allclose(series.get_timestamps(), np.arange(120) * 0.05, rtol=0, atol=1e-12)


def test_changed_subject_metadata_moves_the_outputs(workspace, data_root, v4_recording):
    import yaml

    first, recording = materialize_recording(workspace, v4_recording)
    old = Path(metadata(first, "recording_info")["raw_nwb_path"])
    subject = yaml.safe_load((data_root / "mouse-7" / "subject.yaml").read_text())
    (data_root / "mouse-7" / "subject.yaml").write_text(yaml.safe_dump({**subject, "subject_id": "mouse-8"}))
    second, _ = materialize_recording(workspace, v4_recording)
    new = Path(metadata(second, "recording_info")["raw_nwb_path"])
    assert new.parent.name == "sub-mouse-8" and new.is_file() and not old.exists()
    assert metadata(second, "recording_info")["removed_outdated_files"].startswith(old.relative_to(workspace.output_root).as_posix())
