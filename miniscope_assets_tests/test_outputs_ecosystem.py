"""Outputs of 2 sessions x 2 devices x 2 paramsets, read by the ecosystem: `dandi organize` keeps
every file name, roiextractors reads the raw and the processed files back, the raw movie is
decoded for ingest and written once whatever the number of paramsets, and processed files hold
no raw movie."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from dagster import DagsterInstance

from miniscope_assets.example import simulated_frames
from miniscope_assets.io import avi
from miniscope_assets.io.miniscope_writer import write_v4_recording
from miniscope_assets.io.recording import read_recording
from miniscope_assets.nwb.raw import RawNwbMovie
from miniscope_assets.orchestration.partitions import partition_key
from miniscope_assets.simulation import Simulation, SimulationConfig
from miniscope_assets.stages.processing import load_processing_result
from miniscope_assets.stages.workspace import Workspace
from miniscope_assets_tests.conftest import write_user_metadata
from miniscope_assets_tests.dagster_helpers import PARTITION_STAGES, materialize_stages, register

pytestmark = pytest.mark.slow
PARAMSETS = [
    {"name": "default", "method": "builtin", "params": {}},
    {"name": "strict_pnr", "method": "builtin", "params": {"min_pnr": 10.0}},
]
DEVICES = ["Miniscope", "Miniscope_2"]


def write_session(data_root: Path, session: str, start: datetime, seed: int) -> list[str]:
    """A V4 session with two Miniscopes (per-device layout); returns the device folders."""
    folder = data_root / "mouse-7" / session
    for offset, device in enumerate(DEVICES):
        simulation = Simulation(SimulationConfig(height=64, width=64, nframes=200, n_neurons=6, fps=20.0,
                                                 seed=seed + offset))
        write_v4_recording(folder, simulated_frames(simulation), fps=20.0, frames_per_file=100, start_time=start,
                           per_device_layout=True, device_name=device)
    meta = json.loads((folder / "metaData.json").read_text())
    (folder / "metaData.json").write_text(json.dumps({**meta, "miniscopes": DEVICES}))
    return [f"mouse-7/{session}/{device}" for device in DEVICES]


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    """Every recording ingested and processed with both paramsets; counts the passes over the raw
    movie per step, decoding the AVIs (``avi``) or reading the raw NWB file's copy (``nwb``)."""
    root = tmp_path_factory.mktemp("ecosystem")
    workspace = Workspace(root / "data", root / "nwb", root / "work", root / "data" / "paramsets.yaml")
    write_user_metadata(workspace.data_root / "mouse-7")
    workspace.paramsets_file.write_text(yaml.safe_dump({"paramsets": PARAMSETS}))
    recordings = write_session(workspace.data_root, "day1", datetime(2024, 5, 17, 10, 30, tzinfo=timezone.utc), 1)
    recordings += write_session(workspace.data_root, "day2", datetime(2024, 5, 18, 9, 0, tzinfo=timezone.utc), 5)
    reads = []  # [step, {source: chunk iterations}]
    originals = {"avi": avi.AviMovie.iter_chunks, "nwb": RawNwbMovie.iter_chunks}

    def counting(source):
        def iter_chunks(self, chunk_frames, start=0, stop=None):
            reads[-1][1][source] += 1
            return originals[source](self, chunk_frames, start, stop)
        return iter_chunks

    avi.AviMovie.iter_chunks, RawNwbMovie.iter_chunks = counting("avi"), counting("nwb")
    instance = DagsterInstance.ephemeral()
    try:
        keys = []
        for recording in recordings:
            key = register(workspace, recording, instance, [p["name"] for p in PARAMSETS])
            reads.append([(key, "recording_info"), {"avi": 0, "nwb": 0}])
            materialize_stages(workspace, key, ["recording_info"], instance)
            for paramset in PARAMSETS:
                reads.append([(key, paramset["name"]), {"avi": 0, "nwb": 0}])
                materialize_stages(workspace, partition_key(key, paramset["name"]), PARTITION_STAGES, instance)
            keys.append(key)
    finally:
        avi.AviMovie.iter_chunks, RawNwbMovie.iter_chunks = originals["avi"], originals["nwb"]
    return workspace, keys, dict((step, count) for step, count in reads)


def test_the_raw_movie_is_written_once_and_processed_files_hold_none(outputs):
    workspace, keys, reads = outputs
    files = sorted(p.relative_to(workspace.output_root).as_posix() for p in workspace.output_root.rglob("*.nwb"))
    assert len(files) == 4 + 4 * 2  # one raw file per recording, one processed file per recording x paramset
    for key in keys:
        recording = workspace.recording(key)
        with h5py.File(recording.raw_nwb_path(), "r") as f:
            assert f["acquisition/OnePhotonSeries/data"].shape == (200, 64, 64)
        for paramset in PARAMSETS:
            with h5py.File(workspace.partition(key, paramset["name"]).nwb_path(), "r") as f:
                names = []
                f.visit(names.append)
                assert not any(n.startswith("acquisition/") for n in names)
                assert not any(f[n].ndim == 3 and f[n].shape[0] == 200 for n in names if isinstance(f[n], h5py.Dataset))
        # the AVIs are decoded once, for ingest; motion correction reads the raw NWB file's copy
        # once for its three passes (template, shifts, corrected movie: the frames are kept
        # meanwhile); the second paramset reuses the shifts and the corrected movie the first one
        # kept for it (no pass), which is removed once it has run; both paramsets measure the
        # neuron size and summary images the same way: computed once, kept beside the shifts
        assert reads[(key, "recording_info")] == {"avi": 1, "nwb": 0}
        assert reads[(key, "default")] == {"avi": 0, "nwb": 1} and reads[(key, "strict_pnr")] == {"avi": 0, "nwb": 0}
        (motion,) = (workspace.work_root / key / "motion").iterdir()
        kept = sorted(p.name for p in motion.iterdir())
        assert len(kept) == 4 and kept[0] == ".lock" and kept[2] == "motion.h5", kept
        assert re.fullmatch(r"\.summary-[0-9a-f]{16}\.lock", kept[1]) and kept[3] == kept[1][1:-5] + ".h5"


def test_dandi_organize_keeps_every_name(outputs, tmp_path):
    workspace, _, _ = outputs
    dandi = shutil.which("dandi", path=str(Path(sys.executable).parent))
    if dandi is None:
        pytest.skip("the dandi client is not installed (pip install 'miniscope-assets[test]')")
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    ours = {}
    for index, path in enumerate(sorted(workspace.output_root.rglob("*.nwb"))):
        os.symlink(path, incoming / f"file{index}.nwb")
        ours[f"file{index}.nwb"] = path.relative_to(workspace.output_root).as_posix()
    dandiset = tmp_path / "dandiset"
    dandiset.mkdir()
    (dandiset / "dandiset.yaml").write_text("identifier: DANDI:000000\nname: test\ndescription: test\n")
    completed = subprocess.run([dandi, "organize", "-f", "dry", "-d", str(dandiset), str(incoming)],
                               capture_output=True, text=True, timeout=600, env={**os.environ, "DANDI_NO_ET": "1"})
    assert completed.returncode == 0, completed.stderr
    moves = dict(re.findall(r"(\S+\.nwb) -> (\S+\.nwb)", completed.stdout + completed.stderr))
    assert {Path(source).name: target for source, target in moves.items()} == ours


def test_roiextractors_reads_raw_and_processed_files(outputs):
    roiextractors = pytest.importorskip("roiextractors")
    workspace, keys, _ = outputs
    key = keys[0]
    recording = workspace.recording(key)
    info = read_recording(workspace.data_root, recording.folder)
    imaging = roiextractors.NwbImagingExtractor(recording.raw_nwb_path(), optical_series_name="OnePhotonSeries")
    frames = imaging.get_series()
    expected = info.movie(workspace.data_root)
    for first, chunk in expected.iter_chunks(50):
        for index, frame in enumerate(chunk):  # frame by frame
            np.testing.assert_array_equal(frames[first + index], frame)
    np.testing.assert_allclose(imaging.get_timestamps(), info.timestamps)
    for paramset in PARAMSETS:
        partition = workspace.partition(key, paramset["name"])
        result = load_processing_result(partition)
        segmentation = roiextractors.NwbSegmentationExtractor(partition.nwb_path())
        assert segmentation.get_roi_ids() == result.mask_ids.tolist()
        masks = segmentation.get_roi_image_masks()  # (height, width, ROI)
        expected_masks = result.footprints.toarray().reshape(*result.frame_shape, -1)
        np.testing.assert_allclose(masks, expected_masks, rtol=1e-6)
        np.testing.assert_allclose(segmentation.get_traces(name="raw"), result.fluorescence.T, rtol=1e-6)
        np.testing.assert_allclose(segmentation.get_traces(name="dff"), result.dff.T, rtol=1e-6)
        np.testing.assert_allclose(segmentation.get_traces(name="deconvolved"), result.spikes.T, rtol=1e-6)
        np.testing.assert_allclose(segmentation.get_timestamps(), info.timestamps)
        assert segmentation.get_sampling_frequency() in (None, pytest.approx(20.0))
