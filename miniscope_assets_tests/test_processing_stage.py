"""The processing asset's dispatch: CaImAn trigger (fake package) or its absence, load-mode lookup."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from dagster import DagsterInstance, materialize

from miniscope_assets.caiman_backend import CaimanNotInstalledError
from miniscope_assets.errors import MiniscopeInputError
from miniscope_assets.io.miniscope_writer import write_v3_recording
from miniscope_assets.orchestration.partitions import partition_key
from miniscope_assets.orchestration.slurm import Compute
from miniscope_assets.stages import processing as processing_stage
from miniscope_assets.stages.table import RunOptions
from miniscope_assets_tests import caiman_fixtures as fx
from miniscope_assets_tests.conftest import movie
from miniscope_assets_tests.dagster_helpers import ALL_ASSETS, materialize_partition, metadata, storage_for


def paramsets(workspace, *entries):
    workspace.paramsets_file.write_text(yaml.safe_dump({"paramsets": list(entries)}))


@pytest.fixture
def tiny_recording(data_root):
    """Two AVI files of 5 frames of 6x10 px (the fake CaImAn returns 5 frames per file)."""
    write_v3_recording(data_root / "tiny", [frame[:6, :10] for frame in movie(nframes=10)], frames_per_file=5)
    return "tiny"


@pytest.fixture
def fake_caiman(monkeypatch, tmp_path):
    root = fx.install_fake_caiman(tmp_path / "fake_site")
    for source in root.rglob("*.py"):  # OpenCV writes even widths only: make the fake 6x10
        text = source.read_text()
        source.write_text(text.replace("H, W, T_PER_FILE = 6, 9, 5", "H, W, T_PER_FILE = 6, 10, 5"))
    for name in [n for n in sys.modules if n == "caiman" or n.startswith("caiman.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.syspath_prepend(str(root))
    yield
    for name in [n for n in sys.modules if n == "caiman" or n.startswith("caiman.")]:
        del sys.modules[name]


def test_caiman_trigger_dispatches_to_caiman(workspace, tiny_recording, fake_caiman):
    paramsets(workspace, {"name": "cnmfe", "method": "caiman", "task_mode": "trigger",
                          "params": {"gSig": [2, 2]}})
    run, partition = materialize_partition(workspace, tiny_recording, ["processing"], paramset="cnmfe")
    meta = metadata(run, "processing")
    assert (meta["method"], meta["task_mode"], meta["n_masks"]) == ("caiman", "trigger", 2)
    assert partition.files.processing_dir.is_dir() and list(partition.files.processing_dir.glob("*.hdf5"))
    import caiman

    assert [call[0] for call in caiman.CALLS][:2] == ["setup_cluster", "CNMFParams"]
    again, _ = materialize_partition(workspace, tiny_recording, ["processing"], paramset="cnmfe", with_raw=False)
    assert metadata(again, "processing")["reused_existing_results"] is True


def test_caiman_trigger_without_caiman_says_how_to_install(workspace, tiny_recording, monkeypatch):
    monkeypatch.setitem(sys.modules, "caiman", None)
    paramsets(workspace, {"name": "cnmfe", "method": "caiman", "task_mode": "trigger"})
    instance = DagsterInstance.ephemeral()
    materialize_partition(workspace, tiny_recording, [], paramset="cnmfe", instance=instance)
    key = workspace.registry.key_for(tiny_recording)
    with pytest.raises(CaimanNotInstalledError) as caught:
        materialize(ALL_ASSETS, partition_key=partition_key(key, "cnmfe"), instance=instance,
                    resources={"storage": storage_for(workspace), "compute": Compute()}, selection=["processing"])
    message = str(caught.value)
    assert "conda-forge" in message and "builtin" in message and "PyPI" in message


def test_load_mode_needs_a_results_folder(workspace, tiny_recording):
    paramsets(workspace, {"name": "lab", "method": "caiman", "task_mode": "load"})
    _, partition = materialize_partition(workspace, tiny_recording, [], paramset="lab")
    with pytest.raises(MiniscopeInputError, match="task_mode load but no results_dir") as caught:
        processing_stage.run(partition, RunOptions())
    assert str(workspace.paramsets_file) in str(caught.value)


def test_load_mode_from_the_recordings_processing_results_file(workspace, data_root, tiny_recording):
    fx.write_caiman_folder(data_root / "tiny" / "cnmfe_out", fx.make_scenario(height=6, width=10, nframes=10))
    (data_root / "tiny" / "processing_results.yaml").write_text("lab: cnmfe_out\n")
    paramsets(workspace, {"name": "lab", "method": "caiman", "task_mode": "load"})
    run, _ = materialize_partition(workspace, tiny_recording, ["processing"], paramset="lab")
    assert metadata(run, "processing")["results_path"] == str(data_root / "tiny" / "cnmfe_out")


def test_results_for_another_recording_are_refused(workspace, data_root, tiny_recording):
    fx.write_caiman_folder(data_root / "other", fx.make_scenario(height=6, width=10, nframes=12))
    paramsets(workspace, {"name": "lab", "method": "caiman", "task_mode": "load", "results_dir": "other"})
    _, partition = materialize_partition(workspace, tiny_recording, [], paramset="lab")
    with pytest.raises(MiniscopeInputError, match="results are for 12 frames") as caught:
        processing_stage.run(partition, RunOptions())
    assert str(data_root / "other") in str(caught.value)


def test_input_hash_follows_params_and_files(workspace, tiny_recording, data_root):
    _, partition = materialize_partition(workspace, tiny_recording, [])
    info = partition.recording_info()
    paramset = partition.paramset
    params = processing_stage.validate_paramset(paramset)
    first = processing_stage.input_hash(info, data_root, paramset, params)
    assert processing_stage.input_hash(info, data_root, paramset, dict(params)) == first
    assert processing_stage.input_hash(info, data_root, paramset, {**params, "min_pnr": params["min_pnr"] + 1}) != first
    (data_root / info.files[0]).touch()
    import os

    os.utime(data_root / info.files[0], ns=(1, 1))
    assert processing_stage.input_hash(info, data_root, paramset, params) != first
    assert np.isfinite(info.fps)


@pytest.mark.parametrize("workers", [1, 2])
def test_engine_worker_count_comes_from_the_environment_into_the_catalog(workspace, tiny_recording, monkeypatch,
                                                                         workers):
    monkeypatch.setenv("MINISCOPE_WORKERS", str(workers))
    result, _ = materialize_partition(workspace, tiny_recording, ["processing"])
    assert metadata(result, "processing")["n_workers"] == workers


def test_the_neuron_diameter_the_engine_used_is_in_the_catalog(workspace, tiny_recording):
    result, partition = materialize_partition(workspace, tiny_recording, ["processing"])
    catalog = metadata(result, "processing")
    processed = processing_stage.load_processing_result(partition)
    assert catalog["neuron_diameter_px"] == processed.notes["neuron_size"]["diameter_px"]
    assert catalog["neuron_diameter_source"] == processed.notes["neuron_size"]["source"]


def _frames(movie):
    return np.concatenate([frames for _, frames in movie.iter_chunks(3)])


def test_processing_reads_the_raw_nwb_movie_written_from_the_recordings_current_files(workspace, tiny_recording):
    """The AVIs are decoded once per recording: processing reads the raw NWB file's movie (the same
    frames), unless the file is missing or was written from other files (then the AVIs)."""
    import h5py

    from miniscope_assets.nwb.raw import RawNwbMovie

    _, partition = materialize_partition(workspace, tiny_recording, stages=[])
    avi = partition.recording_info().movie(workspace.data_root)
    movie = processing_stage.raw_movie(partition)
    assert isinstance(movie, RawNwbMovie)
    np.testing.assert_array_equal(_frames(movie), _frames(avi))
    raw_nwb = partition.recording.raw_nwb_path()
    with h5py.File(raw_nwb, "r+") as f:  # as if written from the folder's files before they changed
        del f["identifier"]
        f["identifier"] = "written-from-other-files"
    assert not isinstance(processing_stage.raw_movie(partition), RawNwbMovie)
    raw_nwb.unlink()
    movie = processing_stage.raw_movie(partition)
    assert not isinstance(movie, RawNwbMovie)
    np.testing.assert_array_equal(_frames(movie), _frames(avi))


@pytest.mark.parametrize("value", ["two", "-1", "1.5"])
def test_a_bad_worker_count_is_one_clear_error(monkeypatch, value):
    monkeypatch.setenv("MINISCOPE_WORKERS", value)
    with pytest.raises(MiniscopeInputError, match="MINISCOPE_WORKERS"):
        processing_stage.engine_workers()


def test_paramsets_share_motion_correction_and_the_movie_summary(workspace, tiny_recording):
    """Motion correction is shared by equal motion parameters (its corrected movie and binned copy
    kept until the last of them has run); the neuron size and summary images also need equal
    SUMMARY_PARAMS (a different neuron_diameter computes its own)."""
    names = ("default", "strict", "sized")
    paramsets(workspace, {"name": "default", "method": "builtin"},
              {"name": "strict", "method": "builtin", "params": {"min_pnr": 12.0}},
              {"name": "sized", "method": "builtin", "params": {"neuron_diameter": 4.0}})
    instance = DagsterInstance.ephemeral()
    catalogs, results, movie_kept = {}, {}, []
    for name in names:
        result, partition = materialize_partition(workspace, tiny_recording, ["processing"], paramset=name,
                                                  instance=instance, with_raw=name == "default")
        catalogs[name] = metadata(result, "processing")
        results[name] = processing_stage.load_processing_result(partition)
        movie_kept.append(Path(results[name].corrected_movie).is_file())
    # the corrected movie stays while a paramset sharing the motion correction has still to run
    assert movie_kept == [True, True, False]
    assert [catalogs[name]["motion_correction_shared"] for name in names] == [False, True, True]
    assert [catalogs[name]["summary_images_shared"] for name in names] == [False, True, False]
    assert {"neuron_size", "summary_images"} <= set(results["sized"].notes["stage_seconds"])
    assert not {"neuron_size", "summary_images"} & set(results["strict"].notes["stage_seconds"])
    # the binned copy was written once beside the corrected movie and read by all three
    assert not any("binning" in results[name].notes["stage_seconds"] for name in names)
    assert not list(Path(results["default"].corrected_movie).parent.glob(processing_stage.BINNED_PREFIX + "*"))
    assert results["strict"].notes["neuron_size"] == results["default"].notes["neuron_size"]
    assert results["sized"].notes["neuron_size"]["source"] == "paramset"
    for name, image in results["default"].summary.as_dict().items():
        np.testing.assert_array_equal(getattr(results["strict"].summary, name), image, err_msg=name)


@pytest.mark.parametrize("answer, kept", [(False, False), (True, True), ("unreadable", True)])
def test_keeping_the_corrected_movie_is_decided_when_its_last_reader_leaves(tmp_path, answer, kept):
    """keep() is asked on the way out (a paramset that waited for the lock may have finished by
    then); when it cannot tell (the paramsets file became unreadable) the movie is kept."""
    from miniscope_assets.engine import ArrayMovie, validate_params
    from miniscope_assets.stages.workspace import no_progress

    decided = {"answer": "not asked yet"}

    def keep():
        if decided["answer"] == "unreadable":
            raise MiniscopeInputError(tmp_path / "paramsets.yaml", "not valid YAML")
        return decided["answer"]

    frames = ArrayMovie(movie(nframes=12))
    with processing_stage.shared_motion(tmp_path / "motion", lambda: frames, validate_params({}), no_progress,
                                        keep=keep, n_workers=1, binned_fps=10.0) as shared:
        assert shared.corrected.is_file() and not shared.reused
        assert shared.binned.path.is_file() and shared.binned.nframes == 12
        decided["answer"] = answer
    assert shared.corrected.is_file() == kept
    assert shared.binned.path.is_file() == kept  # the binned copy goes with its movie


def test_a_kept_binned_copy_in_an_older_layout_is_written_again(tmp_path):
    """A binned copy kept beside a corrected movie by an earlier version (no list of its bins) is
    not an error: it is written again in the current layout and read."""
    import h5py

    from miniscope_assets.engine import ArrayMovie, validate_params
    from miniscope_assets.engine.binning import BINS
    from miniscope_assets.stages.workspace import no_progress

    frames, params = ArrayMovie(movie(nframes=12)), validate_params({})
    share = dict(keep=lambda: True, n_workers=1, binned_fps=10.0)
    with processing_stage.shared_motion(tmp_path / "motion", lambda: frames, params, no_progress, **share) as first:
        expected = first.binned.read()
    with h5py.File(first.binned.path, "r+") as f:
        del f[BINS]
    with processing_stage.shared_motion(tmp_path / "motion", lambda: frames, params, no_progress, **share) as again:
        assert again.reused
        np.testing.assert_array_equal(again.binned.bins, np.arange(12))
        np.testing.assert_array_equal(again.binned.read(), expected)
