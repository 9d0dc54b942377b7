"""Checks run on a partition's NWB file: nwbinspector (DANDI config), dandi validate, sanity."""

from __future__ import annotations

import collections
import importlib.util
import tempfile
import warnings
from pathlib import Path

import h5py
import numpy as np
from pynwb import NWBHDF5IO

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


def inspect_nwb(path: str | Path, validate_schema: bool = True) -> CheckOutcome:
    """nwbinspector with the DANDI configuration; fails on CRITICAL or violation-level messages.
    ``validate_schema=False`` leaves out its first step, pynwb's schema validation (2 s a file),
    for a file that dandi validate checks too (it runs the same validation)."""
    import nwbinspector

    messages = list(nwbinspector.inspect_nwbfile(nwbfile_path=str(path), config=nwbinspector.load_config("dandi"),
                                                 skip_validate=not validate_schema))
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
    """The checks whose messages a file with no ROIs, or a single frame, is expected to raise
    (read with h5py: building the file's containers would load its namespaces once more)."""
    segmentations, frame_counts = [], []

    def visit(name: str, node) -> None:
        if not isinstance(node, h5py.Group):
            return
        if name.startswith(f"processing/{OPHYS}/ImageSegmentation/") and "id" in node:
            segmentations.append(len(node["id"]))
        if "data" in node and ("timestamps" in node or "starting_time" in node):  # a TimeSeries
            frame_counts.append(len(node["data"]) if node["data"].shape else 1)

    with h5py.File(path, "r") as f:
        f.visititems(visit)
    expected = set()
    if segmentations and not any(segmentations):
        expected |= EMPTY_RESULT_CHECKS
    if 1 in frame_counts:
        expected |= ONE_FRAME_CHECKS
    return expected


def _dandi_validator():
    """dandi's validate function (its module moved into a package in newer releases), or None
    when the dandi client is not installed. In a dandi with neither, one that fails (the check
    fails saying so, rather than being skipped)."""
    if importlib.util.find_spec("dandi") is None:
        return None
    try:
        from dandi.validate._core import validate
    except ImportError:
        try:
            from dandi.validate import validate
        except ImportError as error:
            missing = str(error)

            def validate(*paths):
                raise ImportError(f"this dandi release has no validate function where expected ({missing})")
    return validate


def dandi_validate(nwb_path: str | Path, output_root: str | Path) -> CheckOutcome:
    """What ``dandi validate --min-severity ERROR`` reports on the file at its place in the output
    folder (offline; dandi's own function, in this process: the command would import pynwb and
    its namespaces again, 2-3 s a file).

    dandi validates Dandisets, so the file is linked into a temporary folder with a placeholder
    dandiset.yaml at the same relative path (file naming is part of the validation).
    Skipped when the dandi client is not installed.
    """
    validate = _dandi_validator()
    if validate is None:
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
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pynwb's and hdmf's notes on reading; dandi reports what matters
            try:
                problems = [f"{r.id}: {r.message}" for r in validate(str(staging))
                            if r.severity is not None and r.severity.value >= type(r.severity).ERROR.value]
            except Exception as error:  # dandi itself failed: a failing check, as the command's exit status was
                problems = [f"dandi validate failed: {type(error).__name__}: {error}"[:500]]
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
