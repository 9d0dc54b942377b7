"""Recording identity and output ownership: no two recordings ever share an output file."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from miniscope_assets.errors import MiniscopeInputError
from miniscope_assets.io.miniscope_writer import write_v4_recording
from miniscope_assets.io.recording import FILE_TIME_SOURCE, RecordingInfo
from miniscope_assets.io.user_metadata import UserMetadata
from miniscope_assets.layout import RecordingIdentity, dandi_label
from miniscope_assets.stages.workspace import Workspace, recording_identity
from miniscope_assets_tests.conftest import movie, write_user_metadata

START = datetime(2024, 5, 17, 10, 30, tzinfo=timezone.utc)


def info(recording_dir: str, device: str, start: datetime | None, animal: str | None = None) -> RecordingInfo:
    """RecordingInfo as the readers give it (only the fields identity uses matter here)."""
    return RecordingInfo(
        recording_dir=recording_dir, acquisition_software="Miniscope-DAQ-V4", nchannels=1, nframes=1,
        px_height=4, px_width=4, fps=30.0, led_power=None, timestamps=np.zeros(1),
        recording_datetime=start or START, recording_duration=0.03, files=[], frames_per_file=[],
        cross_check={}, start_time_source="recordingStartTime" if start else f"{FILE_TIME_SOURCE} of 0.avi",
        device={"name": device}, session={"animal_name": animal},
    )


def test_identity_sources_and_fallbacks():
    user = UserMetadata(subject={"subject_id": "mouse_7"}, session={"session_id": "day 1"})
    assert recording_identity(info("a/b/Miniscope", "Miniscope", START), user) == RecordingIdentity(
        "mouse-7", "day-1", "Miniscope")
    assert recording_identity(info("m1/2024_05_17/10_30_00/Miniscope", "Miniscope", START), UserMetadata()) == (
        RecordingIdentity("m1", "20240517T103000", "Miniscope"))
    # no start time in the metadata: the session comes from the folder names, never from file times
    assert recording_identity(info("m1/2024_05_17/10_30_00/Miniscope", "Miniscope", None), UserMetadata()) == (
        RecordingIdentity("m1", "2024-05-17-10-30-00", "Miniscope"))
    assert recording_identity(info("rec", "Miniscope", None, animal="A.1"), UserMetadata()) == (
        RecordingIdentity("A-1", "rec", "Miniscope"))


def test_file_names_follow_dandi_rules():
    identity = RecordingIdentity("mouse 7", "2024.05.17", "Mini_scope")
    assert identity.raw_nwb().as_posix() == "sub-mouse-7/sub-mouse-7_ses-2024-05-17-Mini-scope_ophys.nwb"
    assert identity.processed_nwb("lab_v1.2").name == "sub-mouse-7_ses-2024-05-17-Mini-scope-lab-v1-2_ophys.nwb"
    assert dandi_label("a_b.c d/e") == "a-b-c-d-e"


def test_two_devices_of_one_session_and_two_copied_sessions_are_distinct(workspace, data_root):
    write_user_metadata(data_root / "mouse-7")
    for session in ("s1", "s2"):  # copies: same start time in the metadata would collide; folders differ
        for device in ("Miniscope", "Miniscope2"):
            write_v4_recording(data_root / "mouse-7" / session, list(movie(nframes=10)), per_device_layout=True,
                               device_name=device, start_time=START + timedelta(hours=int(session[1])))
    keys = [workspace.register(d, workspace.read(d).identity)
            for s in ("s1", "s2") for d in (f"mouse-7/{s}/Miniscope", f"mouse-7/{s}/Miniscope2")]
    outputs = [set(workspace.registry.entry(k)["outputs"]) for k in keys]
    assert len(set(keys)) == 4 and not any(a & b for i, a in enumerate(outputs) for b in outputs[i + 1:])


def test_a_copy_of_a_recording_is_refused_naming_both_folders(workspace, data_root):
    write_user_metadata(data_root / "mouse-7")
    for copy in ("original", "copy"):
        write_v4_recording(data_root / "mouse-7" / copy, list(movie(nframes=10)), per_device_layout=True)
    workspace.register("mouse-7/original/Miniscope", workspace.read("mouse-7/original/Miniscope").identity)
    with pytest.raises(MiniscopeInputError) as caught:
        workspace.register("mouse-7/copy/Miniscope", workspace.read("mouse-7/copy/Miniscope").identity)
    assert str(caught.value).startswith("mouse-7/copy/Miniscope: has the same subject mouse-7, session "
                                        "20240517T103000, device Miniscope as mouse-7/original/Miniscope")


def test_a_session_folder_and_its_device_folder_are_one_recording(workspace, data_root):
    write_v4_recording(data_root / "m" / "s1", list(movie(nframes=10)), per_device_layout=True)
    assert workspace.recording_dirs("m/s1") == workspace.recording_dirs("m/s1/Miniscope") == ["m/s1/Miniscope"]


NAME = st.text(alphabet=st.sampled_from("ab_-. 1é/"), min_size=1, max_size=6).filter(
    lambda s: s.strip("/ .") and all(part.strip() not in ("", ".", "..") for part in s.split("/")))


@st.composite
def folder_trees(draw):
    """Recordings of several subjects, sessions and devices, with awkward names and metadata gaps."""
    recordings = []
    for subject in draw(st.lists(NAME, min_size=1, max_size=3, unique=True)):
        subject_id = draw(st.one_of(st.none(), NAME))
        for session in draw(st.lists(NAME, min_size=1, max_size=3, unique=True)):
            start = draw(st.one_of(st.none(), st.integers(0, 3).map(lambda h: START + timedelta(hours=h))))
            session_id = draw(st.one_of(st.none(), NAME))
            for device in draw(st.lists(NAME, min_size=1, max_size=2, unique=True)):
                folder = f"{subject}/{session}/{device}".replace(" ", "_")
                user = UserMetadata(subject={"subject_id": subject_id} if subject_id else {},
                                    session={"session_id": session_id} if session_id else {})
                recordings.append((folder, info(folder, device, start), user))
    return recordings


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tree=folder_trees(), paramsets=st.lists(st.sampled_from(["default", "a_b", "a.c", "x-1"]), min_size=1,
                                               max_size=3, unique=True))
def test_no_two_partitions_share_an_output_path(tmp_path_factory, tree, paramsets):
    import yaml

    root = tmp_path_factory.mktemp("tree")
    workspace = Workspace(root / "data", root / "nwb", root / "work", root / "paramsets.yaml")
    entries = [{"name": name, "method": "builtin", "params": {"min_pnr": 5.0 + i}} for i, name in enumerate(paramsets)]
    workspace.paramsets_file.write_text(yaml.safe_dump({"paramsets": entries}))
    owners: dict[str, str] = {}
    for folder, recording_info, user in tree:
        identity = recording_identity(recording_info, user)
        outputs = workspace.outputs(identity)
        assert len(set(outputs)) == len(outputs)  # raw and processed names never coincide
        try:
            workspace.register(folder, identity)
        except MiniscopeInputError as error:  # refused: it names the folder owning the outputs
            others = {owners[o] for o in outputs if o in owners}
            same = [f for f, i, u in tree if f in owners.values() and recording_identity(i, u) == identity]
            assert others or same, str(error)
            assert str(error).startswith(folder) and any(f in str(error) for f in others | set(same))
            continue
        for output in outputs:
            assert owners.setdefault(output, folder) == folder
