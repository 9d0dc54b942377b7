"""The processed NWB file: appended stage by stage, replaced without stale containers, valid with
zero ROIs, never half-written; leftovers removed, the user's umask kept, a full disk one clear error."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import h5py
import numpy as np
import pytest
from pynwb import NWBHDF5IO

from miniscope_assets.atomic import atomic_path, remove_leftovers, translated_write_errors, write_text_atomic
from miniscope_assets.errors import MiniscopeOutputError
from miniscope_assets.io.miniscope_writer import write_v4_recording
from miniscope_assets.nwb import ophys
from miniscope_assets.nwb.raw import build_nwbfile, write_nwbfile, write_raw_nwb
from miniscope_assets.nwb.update import update_stage
from miniscope_assets.stages.checks import inspect_nwb
from miniscope_assets.stages.table import containers_from
from miniscope_assets_tests.conftest import H, T, W, movie, small_result, tmpfs, write_user_metadata

STAGES = [("segmentation", ophys.add_segmentation, False), ("mask_classification", ophys.add_mask_classification, False),
          ("fluorescence", ophys.add_fluorescence, True), ("activity", ophys.add_activity, True)]


@pytest.fixture
def record(workspace, data_root):
    write_user_metadata(data_root / "mouse-7")
    write_v4_recording(data_root / "mouse-7" / "s1", list(movie(nframes=T, height=H, width=W)), per_device_layout=True)
    return workspace.read("mouse-7/s1/Miniscope")


def new_file(path: Path, record, result) -> Path:
    nwbfile = build_nwbfile(record, record.identity.processed_session_id("default"), "test-id", "test")
    ophys.add_motion_correction(nwbfile, result, record.info.timestamps, None)
    return write_nwbfile(path, nwbfile)


def add_stages(path: Path, record, result, stages=STAGES) -> list[list[str]]:
    removed = []
    for name, add, with_times in stages:
        arguments = (result, record.info.timestamps) if with_times else (result,)
        removed.append(update_stage(path, containers_from(name), lambda nwbfile: add(nwbfile, *arguments)))
    return removed


def interfaces(path: Path) -> list[str]:
    with NWBHDF5IO(str(path), "r") as io:
        module = io.read().processing["ophys"]
        return sorted(f"{n}/{s}" if hasattr(c, "roi_response_series") else n
                      for n, c in module.data_interfaces.items()
                      for s in (getattr(c, "roi_response_series", None) or [None]))


def test_stages_append_then_a_rerun_replaces_its_own_and_later_containers(tmp_path, record):
    result = small_result()
    path = new_file(tmp_path / "p.nwb", record, result)
    assert add_stages(path, record, result) == [[], [], [], []]  # nothing there yet: appended
    full = interfaces(path)
    assert full == ["DfOverF/RoiResponseSeries", "Fluorescence/Deconvolved", "Fluorescence/Denoised",
                    "Fluorescence/Neuropil", "Fluorescence/RoiResponseSeries", "ImageSegmentation",
                    "MaskClassification", "RigidMotionShifts" if result.motion_rigid else "SummaryImages",
                    "SummaryImages"][: len(full)]
    size = path.stat().st_size
    fewer = result.select(np.array([0, 2]))
    (removed,) = add_stages(path, record, fewer, STAGES[:1])
    assert removed == ["ImageSegmentation", "MaskClassification", "Fluorescence/RoiResponseSeries",
                       "Fluorescence/Neuropil", "Fluorescence/Denoised", "Fluorescence/Deconvolved", "DfOverF"]
    assert interfaces(path) == ["ImageSegmentation", "SummaryImages"]
    assert path.stat().st_size < size  # exported: no stale bytes
    add_stages(path, record, fewer, STAGES[1:])
    with NWBHDF5IO(str(path), "r") as io:
        module = io.read().processing["ophys"]
        plane = module["ImageSegmentation"]["PlaneSegmentation"]
        np.testing.assert_array_equal(plane.id[:], [10, 12])
        assert plane["image_mask"].data.shape == (2, W, H) and plane["image_mask"].data.compression == "gzip"
        np.testing.assert_allclose(plane["image_mask"].data[1].T.ravel(), fewer.footprints[:, 1].toarray().ravel())
        np.testing.assert_array_equal(module["Fluorescence"]["RoiResponseSeries"].data[:], fewer.fluorescence.T)
        np.testing.assert_allclose(module["Fluorescence"]["RoiResponseSeries"].get_timestamps(), record.info.timestamps)
    assert not inspect_nwb(path).metadata["messages_by_importance"].get("CRITICAL")


def test_frames_the_engine_replaced_are_flagged(tmp_path, record):
    result = small_result()
    result.notes["motion"] = {"glitched_frames": [2, 5]}
    path = new_file(tmp_path / "p.nwb", record, result)
    with NWBHDF5IO(str(path), "r") as io:
        flags = io.read().processing["ophys"]["ReplacedFrames"]
        assert np.flatnonzero(flags.data[:]).tolist() == [2, 5] and len(flags.data) == T
        np.testing.assert_allclose(flags.get_timestamps(), record.info.timestamps)
    assert not inspect_nwb(path).metadata["messages_by_importance"].get("CRITICAL")
    assert "ReplacedFrames" not in interfaces(new_file(tmp_path / "clean.nwb", record, small_result()))


def test_zero_rois_give_valid_empty_containers(tmp_path, record):
    empty = small_result().select(np.array([], dtype=np.int64))
    path = new_file(tmp_path / "p.nwb", record, empty)
    add_stages(path, record, empty)
    with NWBHDF5IO(str(path), "r") as io:
        module = io.read().processing["ophys"]
        assert len(module["ImageSegmentation"]["PlaneSegmentation"]) == 0
        assert len(module["MaskClassification"]) == 0
        assert module["Fluorescence"]["RoiResponseSeries"].data.shape == (T, 0)
    outcome = inspect_nwb(path)
    assert not outcome.metadata["messages_by_importance"].get("CRITICAL"), outcome.metadata["messages"]


def test_a_failing_stage_leaves_the_file_as_it_was(tmp_path, record):
    result = small_result()
    path = new_file(tmp_path / "out" / "p.nwb", record, result)
    before, inode = path.read_bytes(), path.stat().st_ino

    def broken(nwbfile):
        ophys.add_segmentation(nwbfile, result)
        raise RuntimeError("killed half-way")

    with pytest.raises(RuntimeError, match="killed half-way"):
        update_stage(path, containers_from("segmentation"), broken)
    assert path.read_bytes() == before and path.stat().st_ino == inode
    assert [p.name for p in path.parent.iterdir()] == ["p.nwb"]


def test_leftovers_of_dead_writers_are_removed(tmp_path):
    from miniscope_assets.atomic import _HOST

    dead = 4_000_000  # above pid_max: no process has it
    leftover_file = tmp_path / f".p.partial-{_HOST}-{dead}-abc.nwb"
    leftover_dir = tmp_path / "sub" / f".processing.partial-{_HOST}-{dead}-xyz"
    ours = tmp_path / f".q.partial-{_HOST}-{os.getpid()}-def.nwb"
    elsewhere = tmp_path / f".r.partial-otherhost-{dead}-ghi.nwb"
    leftover_dir.mkdir(parents=True)
    for path in (leftover_file, ours, elsewhere, leftover_dir / "results.h5"):
        path.write_bytes(b"half")
    assert remove_leftovers(tmp_path) == [leftover_file]
    assert remove_leftovers(tmp_path, recursive=True) == [leftover_dir]
    assert ours.exists() and elsewhere.exists()  # a write under way, and another host's, are left alone


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_outputs_get_the_users_umask(tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        write_text_atomic(tmp_path / "out.json", "{}")
    finally:
        os.umask(previous)
    assert (tmp_path / "out.json").stat().st_mode & 0o777 == mode


def test_full_disk_is_one_clear_error(tmp_path):
    with pytest.raises(MiniscopeOutputError, match="out.nwb: no space left on the device"):
        with translated_write_errors(tmp_path / "out.nwb"):
            raise OSError(errno.ENOSPC, "No space left on device")


def test_full_filesystem_under_the_output_root(tmp_path, workspace, record):
    with tmpfs(tmp_path / "small", "size=256k") as mount:
        target = mount / "sub-mouse-7" / "raw.nwb"
        with pytest.raises(MiniscopeOutputError, match=f"{target}: no space left on the device"):
            write_raw_nwb(target, record, record.info.movie(workspace.data_root), workspace.data_root)
        assert not [p for p in mount.rglob("*") if p.is_file()]  # no partial file left


def test_a_crash_while_writing_leaves_no_output(tmp_path):
    with pytest.raises(KeyError):
        with atomic_path(tmp_path / "x.h5") as temporary:
            with h5py.File(temporary, "w") as f:
                f["a"] = np.zeros(10)
            raise KeyError("crash")
    assert list(tmp_path.iterdir()) == []
