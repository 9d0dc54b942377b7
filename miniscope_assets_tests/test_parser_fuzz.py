"""Property-based tests of the parsers of lab files: whatever the bytes, the result is a valid
value or one MiniscopeInputError naming the file, never another exception (bounded in time)."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import numpy as np
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from miniscope_assets.errors import MiniscopeInputError
from miniscope_assets.io import miniscope_v3 as v3
from miniscope_assets.io import miniscope_v4 as v4
from miniscope_assets.io.paramsets import load_paramsets

BOUNDED = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

cells = st.one_of(
    st.integers(-10**20, 10**20).map(str), st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["", "nan", "inf", "-inf", "1e400", "0x10", " 3 ", "1,5", "—"]),
    st.text(max_size=6),
)
json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-10**25, 10**25), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12), st.sampled_from(["30FPS", "Low", "High", "1e-300FPS", "NaN", "/", "x/y"]),
)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)


def check(path: Path, data: bytes, parse) -> None:
    path.write_bytes(data)
    try:
        parse(path)
    except MiniscopeInputError as error:
        assert error.path == path and str(error).startswith(str(path))


def csv_text(header, rows, separator=","):
    return "\n".join([separator.join(header)] + [separator.join(row) for row in rows]).encode()


@BOUNDED
@given(header=st.lists(st.sampled_from(list(v4.TIMESTAMP_COLUMNS) + [v4.DAQ_FRAME_COLUMN, "x", ""]), max_size=5),
       rows=st.lists(st.lists(cells, max_size=5), max_size=8), noise=st.binary(max_size=40), raw=st.booleans())
def test_v4_timestamps(header, rows, noise, raw):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / v4.TIMESTAMPS_FILE
        check(path, noise if raw else csv_text(header, rows), _timestamps_are_valid)


def _timestamps_are_valid(path: Path) -> None:
    times, daq = v4.read_timestamps(path)
    assert times.ndim == 1 and times.size >= 1 and np.all(np.isfinite(times))
    assert daq is None or daq.shape == times.shape


@BOUNDED
@given(meta=st.dictionaries(st.sampled_from(["frameRate", "ROI", "gain", "led0", "ewl", "deviceName", "deviceType",
                                             "framesPerFile", "compression", "recordingStartTime",
                                             "msecSinceEpoch", "year", "month", "day", "hour", "minute", "second"]),
                            json_values, max_size=8),
       roi=st.dictionaries(st.sampled_from(["height", "width", "x"]), json_scalars, max_size=3),
       noise=st.binary(max_size=40), raw=st.booleans())
def test_v4_device_metadata(meta, roi, noise, raw):
    if "ROI" in meta and roi:
        meta["ROI"] = roi
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / v4.METADATA_FILE
        check(path, noise if raw else json.dumps(meta).encode(), _metadata_is_valid)


def _metadata_is_valid(path: Path) -> None:
    device = v4.read_device_metadata(path)
    assert math.isfinite(device.fps) and 0 < device.fps <= 1000
    assert "/" not in device.device_name and device.device_name
    for value in (device.gain, device.led_power, device.ewl):
        assert value is None or math.isfinite(value)
    start = v4.parse_start_time(path, device.raw)
    assert start is None or start[0].tzinfo is not None


@BOUNDED
@given(header=st.lists(st.sampled_from(list(v3.TIMESTAMP_COLUMNS) + ["x"]), max_size=5),
       rows=st.lists(st.lists(cells, max_size=5), max_size=8), noise=st.binary(max_size=40), raw=st.booleans())
def test_v3_timestamps(header, rows, noise, raw):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / v3.TIMESTAMP_FILE
        check(path, noise if raw else csv_text(header, rows, "\t"), _v3_is_valid)


def _v3_is_valid(path: Path) -> None:
    stamps = v3.read_timestamp_dat(path)
    assert stamps.by_camera and all(np.all(np.isfinite(v)) for v in stamps.by_camera.values())


entries = st.dictionaries(
    st.sampled_from(["name", "method", "task_mode", "description", "params", "results_dir", "keep_corrected_movie",
                     "other"]),
    st.one_of(json_values, st.sampled_from(["builtin", "caiman", "trigger", "load", "default", "{recording}",
                                            "{x}", "a/b", ".hidden"]),
              st.dictionaries(st.sampled_from(["min_snr", "neuron_diameter", "chunk_frames", "gSig", "strides"]),
                              json_values, max_size=3), st.dates()),
    max_size=7)


@BOUNDED
@given(document=st.one_of(st.fixed_dictionaries({"paramsets": st.lists(entries, max_size=3)}), json_values),
       noise=st.binary(max_size=60), raw=st.booleans())
def test_paramset_loader(document, noise, raw):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "paramsets.yaml"
        check(path, noise if raw else yaml.safe_dump(document).encode(), load_paramsets)
