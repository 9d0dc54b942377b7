"""Planning runs (pure, no Dagster): the quiet period, completeness and data versions."""

from __future__ import annotations

import os

import pytest

from miniscope_assets.errors import MiniscopeInputError
from miniscope_assets.io.miniscope_writer import write_v4_recording
from miniscope_assets.stages.discovery import Versions, plan_runs, quiet_period_from_env
from miniscope_assets_tests.conftest import movie

NOTHING = Versions(raw=lambda key: None, processed=lambda key, paramset: (None, None))
KEY = "unknown.Miniscope.20240517T103000"  # a top-level folder: no subject; the start time from metaData.json


def test_a_folder_runs_only_after_the_quiet_period(workspace, data_root):
    folder = write_v4_recording(data_root / "rec", list(movie(nframes=20)))
    plan = plan_runs(workspace, None, NOTHING, now=1000.0, quiet_period=300)
    assert plan.raw_runs == [] and plan.waiting == ["rec: new or changed"]
    plan = plan_runs(workspace, plan.cursor, NOTHING, now=1200.0, quiet_period=300)
    assert plan.raw_runs == [] and plan.waiting == ["rec: unchanged for 200 of 300 s"]
    (folder / ".0.avi.partial").write_bytes(b"x")  # a copy tool's hidden temporary file: a change
    plan = plan_runs(workspace, plan.cursor, NOTHING, now=1400.0, quiet_period=300)
    assert plan.raw_runs == [] and plan.waiting == ["rec: new or changed"]
    (folder / ".0.avi.partial").unlink()
    os.utime(folder / "0.avi")  # touched again
    plan = plan_runs(workspace, plan.cursor, NOTHING, now=1500.0, quiet_period=300)
    assert plan.waiting == ["rec: new or changed"]
    plan = plan_runs(workspace, plan.cursor, NOTHING, now=1800.0, quiet_period=300)
    assert [key for key, _ in plan.raw_runs] == [KEY] and plan.observations[0][0] == KEY


def test_runs_follow_the_data_versions(workspace, data_root):
    write_v4_recording(data_root / "rec", list(movie(nframes=20)))
    first = plan_runs(workspace, None, NOTHING, now=0.0, quiet_period=0)
    plan = plan_runs(workspace, first.cursor, NOTHING, now=1.0, quiet_period=0)
    fingerprint = plan.observations[0][1]
    ingested = Versions(raw=lambda key: fingerprint, processed=lambda key, paramset: (None, None))
    plan = plan_runs(workspace, plan.cursor, ingested, now=2.0, quiet_period=0)
    assert plan.raw_runs == [] and [(k, p) for k, p, _ in plan.processing_runs] == [(KEY, "default")]
    param_hash = workspace.paramset("default").param_hash
    done = Versions(raw=lambda key: fingerprint, processed=lambda key, paramset: (fingerprint, param_hash))
    plan = plan_runs(workspace, plan.cursor, done, now=3.0, quiet_period=0)
    assert plan.raw_runs == [] and plan.processing_runs == [] and plan.observations == []


def test_quiet_period_setting(monkeypatch):
    monkeypatch.setenv("MINISCOPE_QUIET_PERIOD_S", "45")
    assert quiet_period_from_env() == 45.0
    for bad in ("soon", "-1", "nan", "inf"):
        monkeypatch.setenv("MINISCOPE_QUIET_PERIOD_S", bad)
        with pytest.raises(MiniscopeInputError, match="MINISCOPE_QUIET_PERIOD_S"):
            quiet_period_from_env()
