"""Checks run on a partition's NWB file: nwbinspector (DANDI config), dandi validate, sanity."""

from __future__ import annotations

import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from pynwb import NWBHDF5IO, TimeSeries

from miniscope_assets.io.recording import RecordingInfo
from miniscope_assets.nwb.update import OPHYS
from miniscope_assets.stages.workspace import CheckOutcome

FAILING_IMPORTANCE = {"CRITICAL", "BEST_PRACTICE_VIOLATION", "ERROR"}
# What nwbinspector says about a result with no ROIs (empty tables and series, and its own checks
# failing on empty columns) and about a one-frame recording (time is not the longest axis):
# expected there, so it does not fail the check.
EMPTY_RESULT_CHECKS = {"check_empty_table", "check_time_series_data_is_not_empty", "check_column_binary_capability",
                       "check_table_values_for_dict", "check_col_not_nan"}
ONE_FRAME_CHECKS = {"check_data_orientation"}


def _describe(message) -> str:
    return f"{message.importance.name} {message.check_function_name} at {message.location}: {message.message}"


def inspect_nwb(path: str | Path) -> CheckOutcome:
    """nwbinspector with the DANDI configuration; fails on CRITICAL or violation-level messages."""
    import nwbinspector

    messages = list(nwbinspector.inspect_nwbfile(nwbfile_path=str(path), config=nwbinspector.load_config("dandi")))
    counts = collections.Counter(m.importance.name for m in messages)
    expected = _expected_checks(path)
    failing = [m for m in messages if m.importance.name in FAILING_IMPORTANCE
               and not any(check in m.check_function_name for check in expected)]  # errors quote the check
    listed = [_describe(m) for m in messages]
    return CheckOutcome(
        name="nwbinspector",
        passed=not failing,
        description=(
            "nwbinspector (DANDI config): no CRITICAL or violation-level messages"
            if not failing
            else f"nwbinspector found {len(failing)} CRITICAL/violation message(s); first: {_describe(failing[0])}"
        ),
        metadata={"messages_by_importance": dict(counts), "messages": "\n".join(listed[:20]) or "none"},
    )


def _expected_checks(path: str | Path) -> set[str]:
    """The checks whose messages a file with no ROIs, or a single frame, is expected to raise."""
    expected = set()
    with NWBHDF5IO(str(path), mode="r") as io:
        nwbfile = io.read()
        module = nwbfile.processing.get(OPHYS)
        if module is not None and "ImageSegmentation" in module.data_interfaces:
            if all(len(plane) == 0 for plane in module["ImageSegmentation"].plane_segmentations.values()):
                expected |= EMPTY_RESULT_CHECKS
        if any(isinstance(item, TimeSeries) and len(item.data) == 1 for item in nwbfile.objects.values()):
            expected |= ONE_FRAME_CHECKS
    return expected


def dandi_validate(nwb_path: str | Path, output_root: str | Path) -> CheckOutcome:
    """``dandi validate`` (offline) on the file at its place in the output folder.

    dandi validates Dandisets, so the file is linked into a temporary folder with a placeholder
    dandiset.yaml at the same relative path (file naming is part of the validation).
    Skipped when the dandi client is not installed.
    """
    dandi = shutil.which("dandi", path=str(Path(sys.executable).parent)) or shutil.which("dandi")
    if dandi is None:
        return CheckOutcome(
            name="dandi_validate",
            passed=True,
            description="skipped: the dandi client is not installed (pip install 'miniscope-assets[dandi]')",
            metadata={"skipped": True},
        )
    nwb_path = Path(nwb_path).resolve()
    relative = nwb_path.relative_to(Path(output_root).resolve())
    with tempfile.TemporaryDirectory(prefix="dandi-validate-") as staging:
        staging = Path(staging)
        (staging / "dandiset.yaml").write_text(
            "identifier: DANDI:000000\nname: miniscope-assets staging\ndescription: offline validation\n"
        )
        (staging / relative).parent.mkdir(parents=True, exist_ok=True)
        (staging / relative).symlink_to(nwb_path)
        completed = subprocess.run(
            [dandi, "validate", "--format", "json", "--min-severity", "ERROR", str(staging)],
            capture_output=True, text=True, timeout=600, env={**os.environ, "DANDI_NO_ET": "1"},
        )
    try:
        problems = [f"{r.get('id')}: {r.get('message')}" for r in json.loads(completed.stdout or "[]")]
    except json.JSONDecodeError:
        problems = [f"dandi validate exited {completed.returncode}: {completed.stderr.strip()[-500:]}"]
    if completed.returncode != 0 and not problems:
        problems = [f"dandi validate exited {completed.returncode}: {completed.stderr.strip()[-500:]}"]
    return CheckOutcome(
        name="dandi_validate",
        passed=not problems,
        description="dandi validate: no errors" if not problems else f"dandi validate: {problems[0]}",
        metadata={"skipped": False, "errors": "\n".join(problems[:20]) or "none"},
    )


def sanity(path: str | Path, info: RecordingInfo) -> CheckOutcome:
    """In the processed file: series times strictly increasing and equal to the recording's
    frame times, every ROI trace finite, every mask inside the field of view."""
    problems = []
    with NWBHDF5IO(str(path), mode="r") as io:
        nwbfile = io.read()
        module = nwbfile.processing[OPHYS] if OPHYS in nwbfile.processing else None
        series = []
        if module is not None:
            for container_name in ("Fluorescence", "DfOverF"):
                if container_name in module.data_interfaces:
                    series += [(f"{container_name}/{name}", s)
                               for name, s in module[container_name].roi_response_series.items()]
        for name, item in series:
            times = np.asarray(item.get_timestamps())
            if np.any(np.diff(times) <= 0):
                problems.append(f"{name}: times are not strictly increasing")
            elif times.shape != info.timestamps.shape or not np.allclose(times, info.timestamps, atol=1e-6):
                problems.append(f"{name}: times differ from the recording's frame times")
            if not np.all(np.isfinite(item.data[:])):
                problems.append(f"{name} has non-finite values")
        if module is not None and "ImageSegmentation" in module.data_interfaces:
            plane = module["ImageSegmentation"]["PlaneSegmentation"]
            pixels = np.asarray(plane["pixel_mask"].target.data[:].tolist()).reshape(-1, 3)
            width, height = info.px_width, info.px_height
            if pixels.size and (
                pixels[:, 0].min() < 0 or pixels[:, 1].min() < 0
                or pixels[:, 0].max() >= width or pixels[:, 1].max() >= height
            ):
                problems.append(f"a mask has pixels outside the {width}x{height} field of view")
    return CheckOutcome(
        name="sanity",
        passed=not problems,
        description="times increasing, traces finite, masks inside the FOV" if not problems else "; ".join(problems),
        metadata={"problems": len(problems)},
    )
