"""Recording partition keys: safe characters, unique, reversible through the registry."""

from __future__ import annotations

import re

import pytest

from miniscope_assets.errors import MiniscopeInputError
from miniscope_assets.layout import RecordingIdentity
from miniscope_assets.registry import MAX_KEY_LENGTH, RecordingRegistry, readable_key


def test_keys_are_safe_and_readable():
    """subject.device.session: the session, which tells a subject's recordings apart, comes last."""
    key = readable_key(RecordingIdentity(subject="mouse 1", session="20240517T103000", device="Miniscope"))
    assert key == "mouse-1.Miniscope.20240517T103000"
    assert re.fullmatch(r"[A-Za-z0-9_.-]+", readable_key(RecordingIdentity("a|b,c/ü", ".", "x")))


def identity(session: str) -> RecordingIdentity:
    return RecordingIdentity(subject="m1", session=session, device="Miniscope")


def register(registry, folder, session):
    return registry.register(folder, identity(session), [identity(session).raw_nwb().as_posix()])


def test_registry_is_unique_and_reversible(tmp_path):
    registry = RecordingRegistry(tmp_path / "recordings.json")
    first = register(registry, "mouse 1/s1", "a")
    second = register(registry, "mouse_1/s1", "b")
    assert first != second
    assert register(registry, "mouse 1/s1", "a") == first  # stable
    assert registry.folder(first) == "mouse 1/s1" and registry.folder(second) == "mouse_1/s1"
    assert RecordingRegistry(tmp_path / "recordings.json").live() == {first: "mouse 1/s1", second: "mouse_1/s1"}


def test_long_keys_are_shortened_with_a_hash(tmp_path):
    registry = RecordingRegistry(tmp_path / "recordings.json")
    folder = "/".join(["a_very_long_folder_name"] * 12)
    key = register(registry, folder, "-".join(["a-very-long-session-name"] * 6))
    assert len(key) <= MAX_KEY_LENGTH and registry.folder(key) == folder


def test_same_identity_from_two_folders_is_refused_naming_both(tmp_path):
    registry = RecordingRegistry(tmp_path / "recordings.json")
    register(registry, "copy1/s1", "a")
    with pytest.raises(MiniscopeInputError, match=r"copy2/s1: has the same subject m1, session a, device "
                                                  r"Miniscope as copy1/s1"):
        register(registry, "copy2/s1", "a")


def test_retired_recording_resolves_no_more_and_frees_its_outputs(tmp_path):
    registry = RecordingRegistry(tmp_path / "recordings.json")
    old = register(registry, "old_name/s1", "a")
    registry.retire(old)
    with pytest.raises(MiniscopeInputError, match="retired"):
        registry.folder(old)
    new = register(registry, "new_name/s1", "a")  # the renamed folder takes the outputs over
    assert registry.live() == {new: "new_name/s1"}
    assert new != old and new.startswith(old + "-")  # the retired key stays the old folder's history
    again = register(registry, "old_name/s1", "b")  # the old folder comes back: a new generation
    assert again == old and registry.entry(old)["generation"] == 1


def test_unknown_key(tmp_path):
    with pytest.raises(MiniscopeInputError, match="no recording registered under partition key 'nope'"):
        RecordingRegistry(tmp_path / "recordings.json").folder("nope")
