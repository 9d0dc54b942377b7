"""The `miniscope-assets` command line, in-process against a local SQLite Dagster instance."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from miniscope_assets.cli import main
from miniscope_assets.example import simulated_frames
from miniscope_assets.io.miniscope_writer import write_v4_recording
from miniscope_assets.simulation import Simulation, SimulationConfig
from miniscope_assets_tests.conftest import tmpfs, write_user_metadata


@pytest.fixture
def work_folder(tmp_path, monkeypatch):
    """A fresh MINISCOPE_WORK_FOLDER (data, nwb, processing, dagster_home inside)."""
    folder = tmp_path / "miniscope_work"
    for name in ("MINISCOPE_DATA_ROOT", "MINISCOPE_OUTPUT_ROOT", "MINISCOPE_WORK_ROOT",
                 "MINISCOPE_PARAMSETS", "DAGSTER_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MINISCOPE_WORK_FOLDER", str(folder))
    (folder / "data").mkdir(parents=True)
    return folder


def test_paramsets_lists_validates_and_hashes(work_folder, capsys):
    main(["paramsets"])
    out = capsys.readouterr().out
    assert "paramsets from built-in default: all valid" in out and "- default: method=builtin" in out


def test_invalid_paramset_message_names_the_key(work_folder, capsys):
    (work_folder / "data" / "paramsets.yaml").write_text(yaml.safe_dump({"paramsets": [
        {"name": "typo", "method": "builtin", "params": {"gsig": 3}},
    ]}))
    with pytest.raises(SystemExit) as exit_info:
        main(["paramsets"])
    assert str(exit_info.value.code) == (f"error: {work_folder / 'data' / 'paramsets.yaml'}: paramset 'typo': "
                                         "unknown engine parameter(s): gsig")


def test_run_bad_folder_gives_one_clear_error(work_folder):
    (work_folder / "data" / "broken").mkdir()
    (work_folder / "data" / "broken" / "0.avi").write_bytes(b"not a movie")
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "broken"])
    message = str(exit_info.value.code)
    assert message.startswith("error: ") and "broken/metaData.json" in message and "missing" in message


def test_run_curate_and_catalog(work_folder, capsys):
    data = work_folder / "data"
    write_user_metadata(data / "mouse-7")
    simulation = Simulation(SimulationConfig(height=64, width=64, nframes=300, n_neurons=6, seed=3))
    write_v4_recording(data / "mouse-7" / "s1", simulated_frames(simulation), fps=20.0, per_device_layout=True)
    main(["run", "mouse-7/s1/Miniscope"])
    out = capsys.readouterr().out
    nwb_line = [line for line in out.splitlines() if line.startswith("NWB file: ")]
    assert len(nwb_line) == 1 and nwb_line[0].endswith("sub-mouse-7_ses-20240517T103000-Miniscope-default_ophys.nwb")
    assert (work_folder / "dagster_home" / "dagster.yaml").is_file()
    main(["catalog"])
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:4] == ["recording", "paramset", "frames", "fps"]
    row = table[2].split()
    assert row[:4] == ["mouse-7.Miniscope.20240517T103000", "default", "300", "20"] and row[5] == "0"  # curation 0
    masks = int(row[7])
    main(["curate", "mouse-7/s1/Miniscope", "--paramset", "default", "--reject", "0", "--note", "not a cell"])
    capsys.readouterr()
    main(["catalog"])
    row = capsys.readouterr().out.splitlines()[2].split()
    assert row[5] == "1" and int(row[7]) == masks - 1


def test_truncated_avi_is_reported_before_anything_is_written(work_folder):
    from miniscope_assets_tests.conftest import movie

    folder = write_v4_recording(work_folder / "data" / "rec", list(movie()), frames_per_file=50)
    data = (folder / "1.avi").read_bytes()
    (folder / "1.avi").write_bytes(data[: len(data) // 2])
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "rec"])
    message = str(exit_info.value.code)
    assert message.startswith(f"error: {folder / '1.avi'}: truncated or corrupt AVI: header declares 50 frames "
                              "but frame ") and "cannot be decoded" in message and "\n" not in message
    assert not list(work_folder.rglob("*.nwb"))


def test_a_damaged_frame_found_while_ingesting_leaves_no_nwb_file(work_folder):
    """Probing reads a file's first and last frames; a frame damaged between them is found while
    the movie is written to NWB: one line naming the file and the frame, and no NWB file left."""
    from miniscope_assets_tests.conftest import movie
    from miniscope_assets_tests.test_avi_codecs import damage_frame

    folder = write_v4_recording(work_folder / "data" / "rec", list(movie()), frames_per_file=50)
    damage_frame(folder / "1.avi", 20)
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "rec"])
    message = str(exit_info.value.code)
    assert f"{folder / '1.avi'}: corrupt AVI: frame 20 is damaged" in message and "\n" not in message
    assert not list(work_folder.rglob("*.nwb"))


def test_run_error_inside_the_job_is_one_line(work_folder, capfd):
    from dagster import DagsterInstance, DagsterRunStatus

    from miniscope_assets_tests.conftest import movie

    write_v4_recording(work_folder / "data" / "rec", list(movie()), frames_per_file=50)
    (work_folder / "data" / "paramsets.yaml").write_text(yaml.safe_dump({"paramsets": [
        {"name": "old", "method": "caiman", "task_mode": "load", "results_dir": "nowhere"},
    ]}))
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "rec"])
    message = str(exit_info.value.code)
    assert message.startswith(f"error: processing failed: {work_folder / 'data' / 'nowhere'}: CaImAn results "
                              "folder does not exist (full log: ")
    log = Path(message.rsplit("(full log: ", 1)[1].rstrip(")"))
    assert "Stack Trace" in log.read_text() and "STEP_FAILURE processing" in log.read_text()
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Stack Trace" not in err and " ERROR " not in err
    with DagsterInstance.from_config(str(work_folder / "dagster_home")) as instance:
        statuses = [run.status for run in instance.get_runs()]
    assert DagsterRunStatus.FAILURE in statuses and DagsterRunStatus.STARTED not in statuses


def test_bad_engine_parameters_are_refused_before_any_output(work_folder):
    from miniscope_assets_tests.conftest import movie

    write_v4_recording(work_folder / "data" / "rec", list(movie()), frames_per_file=50)
    paramsets = work_folder / "data" / "paramsets.yaml"
    paramsets.write_text(yaml.safe_dump({"paramsets": [
        {"name": "typo", "method": "builtin", "params": {"chunk_frames": 1e300}},
    ]}))
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "rec"])
    assert str(exit_info.value.code) == f"error: {paramsets}: paramset 'typo': chunk_frames must be <= 10000, got 1e+300"
    assert not list(work_folder.rglob("*.nwb")) and not (work_folder / "processing").exists()


def test_misspelt_paramsets_variable_is_an_error(work_folder, monkeypatch):
    monkeypatch.setenv("MINISCOPE_PARAMSETS", str(work_folder / "data" / "paramset.yml"))
    with pytest.raises(SystemExit) as exit_info:
        main(["paramsets"])
    assert str(exit_info.value.code) == (f"error: {work_folder / 'data' / 'paramset.yml'}: named by "
                                         "MINISCOPE_PARAMSETS but is not a file")

def _materialized(work_folder: Path, asset: str, paramset: str) -> dict:
    """The metadata of ``asset`` for the only recording x ``paramset``."""
    from dagster import DagsterInstance

    from miniscope_assets.orchestration.instance import latest_materialization

    with DagsterInstance.from_config(str(work_folder / "dagster_home")) as instance:
        (recording,) = instance.get_dynamic_partitions("recording")
        event = latest_materialization(instance, asset, f"{paramset}|{recording}")
    return {key: getattr(value, "value", value) for key, value in event.metadata.items()}


def _noise(nframes: int) -> list:
    import numpy as np

    rng = np.random.default_rng(4)
    return list(rng.normal(100, 5, (nframes, 48, 48)).clip(0, 255).astype("uint8"))


@pytest.mark.parametrize("nframes", [120, 1])
def test_a_recording_without_cells_gives_valid_empty_outputs(work_folder, nframes):
    """A noise-only (bench) movie, and a one-frame recording: zero sources is an answer."""
    from pynwb import NWBHDF5IO

    from miniscope_assets.stages.checks import inspect_nwb

    write_v4_recording(work_folder / "data" / "rec", _noise(nframes), frames_per_file=50)
    write_user_metadata(work_folder / "data" / "rec")
    main(["run", "rec"])
    (nwb_path,) = (work_folder / "nwb").rglob("*-default_ophys.nwb")
    with NWBHDF5IO(str(nwb_path), "r") as io:
        ophys = io.read().processing["ophys"]
        assert len(ophys["ImageSegmentation"]["PlaneSegmentation"]) == 0
        assert ophys["Fluorescence"]["RoiResponseSeries"].data.shape == (nframes, 0)
    assert inspect_nwb(nwb_path).passed, inspect_nwb(nwb_path).description
    assert _materialized(work_folder, "segmentation", "default")["n_masks"] == 0
    assert _materialized(work_folder, "fluorescence", "default")["n_traces"] == 0


def test_curation_that_accepts_nothing_gives_empty_outputs_and_a_bad_request_leaves_no_file(work_folder, capsys):
    from pynwb import NWBHDF5IO

    frames = simulated_frames(Simulation(SimulationConfig(height=64, width=64, nframes=300, n_neurons=6, seed=2)))
    write_v4_recording(work_folder / "data" / "rec", frames, frames_per_file=100)
    main(["run", "rec"])
    key = "unknown.Miniscope.20240517T103000"  # subject.device.session of a top-level folder
    curation = work_folder / "processing" / key / "default" / "curation.yaml"
    with pytest.raises(SystemExit) as exit_info:
        main(["curate", "rec", "--paramset", "default", "--reject", "999"])
    assert "unknown mask id(s) [999]" in str(exit_info.value.code) and not curation.exists()
    main(["curate", "rec", "--paramset", "default", "--accept", ""])
    assert curation.is_file()
    (nwb_path,) = (work_folder / "nwb").rglob("*-default_ophys.nwb")
    with NWBHDF5IO(str(nwb_path), "r") as io:
        assert len(io.read().processing["ophys"]["ImageSegmentation"]["PlaneSegmentation"]) == 0
    assert _materialized(work_folder, "curation", "default")["n_masks_after"] == 0


def test_a_full_output_disk_is_one_error_line_and_a_failed_run(work_folder, tmp_path):
    """The output root on a 400 KiB tmpfs: the raw file fits, the processed one does not. A separate
    process, so a crash (HDF5 after a failed write can take the interpreter down) is seen."""
    import os
    import subprocess
    import sys

    from dagster import DagsterInstance, DagsterRunStatus

    with tmpfs(tmp_path / "small", "size=400k") as mount:
        write_v4_recording(work_folder / "data" / "rec", _noise(120), frames_per_file=50)
        env = {**os.environ, "MINISCOPE_WORK_FOLDER": str(work_folder), "MINISCOPE_OUTPUT_ROOT": str(mount)}
        run = subprocess.run([sys.executable, "-m", "miniscope_assets.cli", "run", "rec"], env=env,
                             capture_output=True, text=True, timeout=600)
        assert run.returncode == 1, run.stderr[-2000:]
        errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "no space left on the device; free space and run again" in errors[0]
        assert "Traceback" not in run.stderr
        assert not [p for p in mount.rglob("*") if ".partial-" in p.name]
        with DagsterInstance.from_config(str(work_folder / "dagster_home")) as instance:
            statuses = [r.status for r in instance.get_runs()]
        assert DagsterRunStatus.FAILURE in statuses and DagsterRunStatus.STARTED not in statuses


def test_a_read_only_work_root_is_one_clear_error(work_folder, tmp_path, monkeypatch):
    with tmpfs(tmp_path / "readonly", "ro") as mount:
        write_v4_recording(work_folder / "data" / "rec", _noise(30), frames_per_file=50)
        monkeypatch.setenv("MINISCOPE_WORK_ROOT", str(mount))
        with pytest.raises(SystemExit) as exit_info:
            main(["run", "rec"])
        assert str(exit_info.value.code) == f"error: {mount}: cannot be written (Read-only file system)"


def test_run_registers_a_subjects_sessions_and_cells_prints_them(work_folder, capsys):
    frames = list(simulated_frames(Simulation(SimulationConfig(height=64, width=64, nframes=300, n_neurons=6, seed=2))))
    write_user_metadata(work_folder / "data" / "mouse")
    for day in ("day1", "day2"):
        folder = write_v4_recording(work_folder / "data" / "mouse" / day, frames, frames_per_file=100)
        (folder / "session.yaml").write_text(f"session_id: {day}\n")
    main(["run", "mouse/day1"])
    assert "cross-session" not in capsys.readouterr().out  # one session: nothing to register
    main(["run", "mouse/day2"])
    assert "sub-mouse-7_ses-cross-session-default_ophys.nwb" in capsys.readouterr().out
    main(["cells", "mouse-7"])
    out = capsys.readouterr().out
    assert out.startswith("subject mouse-7, paramset default: ") and "mouse-7.Miniscope.day1" in out and "mouse-7.Miniscope.day2" in out
    with pytest.raises(SystemExit) as exit_info:
        main(["cells", "mouse-8"])
    assert "subject 'mouse-8' x paramset 'default' is not registered yet" in str(exit_info.value.code)
