"""Recording partition keys: safe characters, unique, reversible through the registry."""

from __future__ import annotations

import re

import pytest

from miniscope_assets.errors import MiniscopeInputError
from miniscope_assets.registry import RecordingRegistry, sanitize_key


def test_keys_are_safe_and_readable():
    assert sanitize_key("mouse 1/2024_05_17/10:30:00/Miniscope") == "mouse_1--2024_05_17--10_30_00--Miniscope"
    assert re.fullmatch(r"[A-Za-z0-9_.-]+", sanitize_key("a|b,c/ü"))


def test_registry_is_unique_and_reversible(tmp_path):
    registry = RecordingRegistry(tmp_path / "recordings.json")
    first = registry.register("mouse 1/s1")
    second = registry.register("mouse_1/s1")  # sanitizes to the same text
    assert first != second
    assert registry.register("mouse 1/s1") == first  # stable
    assert registry.folder(first) == "mouse 1/s1" and registry.folder(second) == "mouse_1/s1"
    assert RecordingRegistry(tmp_path / "recordings.json").items() == {first: "mouse 1/s1", second: "mouse_1/s1"}


def test_unknown_key(tmp_path):
    with pytest.raises(MiniscopeInputError, match="no recording registered under partition key 'nope'"):
        RecordingRegistry(tmp_path / "recordings.json").folder("nope")
