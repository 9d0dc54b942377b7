"""Read a partition's processed NWB containers back and compare them with a ProcessingResult."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pynwb import NWBHDF5IO

TRACES = {"raw": "fluorescence", "neuropil": "neuropil", "denoised": "denoised", "spikes": "spikes", "dff": "dff"}


def read_ophys(path: Path) -> dict:
    """Everything the chain puts into processing/ophys, as arrays (traces are (frames, ROIs))."""
    with NWBHDF5IO(str(path), mode="r") as io:
        module = io.read().processing["ophys"]
        plane = module["ImageSegmentation"]["PlaneSegmentation"]
        fluorescence = module["Fluorescence"]
        content = {
            "interfaces": sorted(module.data_interfaces),
            "series": sorted(fluorescence.roi_response_series),
            "images": sorted(module["SummaryImages"].images),
            "mean_image": module["SummaryImages"]["mean"].data[:],
            "ids": plane.id[:],
            "pixel_masks": [np.asarray(plane["pixel_mask"][i].tolist()) for i in range(len(plane))],
            "types": module["MaskClassification"].to_dataframe()["mask_type"].tolist(),
            "xy": module["RigidMotionShifts"].data[:],
            "corrected": module["MotionCorrected"].data[:] if "MotionCorrected" in module.data_interfaces else None,
            "rois_in_series": len(fluorescence["RoiResponseSeries"].rois.data[:]),
            "times": np.asarray(fluorescence["RoiResponseSeries"].get_timestamps()),
            "dff": module["DfOverF"]["RoiResponseSeries"].data[:],
        }
        for name in ("raw", "neuropil", "denoised", "spikes"):
            series = {"raw": "RoiResponseSeries", "neuropil": "Neuropil", "denoised": "Denoised",
                      "spikes": "Deconvolved"}[name]
            content[name] = fluorescence[series].data[:]
        if "PiecewiseRigidMotion" in module.data_interfaces:
            content["blocks"] = module["PiecewiseRigidMotion"].to_dataframe()
        return content


def assert_matches(content: dict, result) -> None:
    """Masks, classification and traces in the NWB file equal the result exactly."""
    np.testing.assert_array_equal(content["ids"], result.mask_ids)
    for index, pixel_mask in enumerate(content["pixel_masks"]):
        xpix, ypix, weights = result.mask_pixels(index)
        np.testing.assert_array_equal(pixel_mask[:, 0], xpix)
        np.testing.assert_array_equal(pixel_mask[:, 1], ypix)
        np.testing.assert_array_equal(pixel_mask[:, 2].astype(np.float32), weights)
    for name, field in TRACES.items():
        np.testing.assert_array_equal(content[name], getattr(result, field).T.astype(np.float32), err_msg=name)
    assert content["types"] == list(result.mask_types)
    assert content["rois_in_series"] == result.n_masks
