"""Engine parameters: defaults, documentation and validation (see docs/engine.md)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from miniscope_assets.errors import ParameterError


@dataclass(frozen=True)
class ParamSpec:
    """One engine parameter: default, kind, allowed range and a one-line meaning with unit."""

    default: Any
    kind: str  # "bool", "int", "float", "optional_int", "optional_float", "int_pair" or "float_pair"
    minimum: float | None = None
    maximum: float | None = None
    doc: str = ""


PARAM_SPECS: dict[str, ParamSpec] = {
    # streaming
    "chunk_frames": ParamSpec(100, "int", 1, 10_000, "frames read from a movie at a time (bounds memory)"),
    # motion correction
    "motion_correction": ParamSpec(True, "bool", doc="register frames; if false, shifts are zero"),
    "pw_rigid": ParamSpec(False, "bool", doc="corrected movie uses piecewise-rigid (non-rigid) shifts"),
    "max_shift": ParamSpec(20, "int", 1, 1000, "largest rigid shift searched, px"),
    "strides": ParamSpec([48, 48], "int_pair", 8, 4096, "piecewise-rigid block stride (rows, columns), px"),
    "overlaps": ParamSpec([24, 24], "int_pair", 0, 4096, "extra block size beyond the stride (rows, columns), px"),
    "max_deviation_rigid": ParamSpec(3, "int", 0, 1000, "largest block shift deviation from the rigid shift, px"),
    "motion_lowpass_sigma": ParamSpec(1.5, "float", 0, 50, "Gaussian noise smoothing before registration, px"),
    "motion_highpass_sigma": ParamSpec(8.0, "float", 1, 200, "Gaussian background scale removed before registration, px"),
    "template_frames": ParamSpec(200, "int", 1, 100_000, "first frames averaged into the template"),
    "template_iterations": ParamSpec(3, "int", 1, 20, "register-and-average rounds refining the template"),
    "upsample_factor": ParamSpec(20, "int", 1, 100, "sub-pixel precision of shifts is 1/upsample_factor px"),
    "outlier_threshold": ParamSpec(3.0, "float", 0, None, "shift deviation from the running median flagging an outlier frame, px"),
    "outlier_window": ParamSpec(9, "int", 3, 10_000, "running-median window for outlier detection, frames"),
    "outlier_quality_ratio": ParamSpec(0.7, "float", 0, 1, "a frame beyond outlier_threshold is an outlier only if "
                                       "its registration quality is below this fraction of its neighbours'"),
    # source extraction
    "neuron_diameter": ParamSpec(None, "optional_float", 3, 100, "soma diameter at half maximum, px "
                                 "(null: measured on the data)"),
    "min_corr": ParamSpec(0.8, "float", 0, 1, "seed threshold on the local correlation image"),
    "min_pnr": ParamSpec(5.0, "float", 0, None, "seed threshold on the peak-to-noise ratio image"),
    "ring_radius_factor": ParamSpec(1.2, "float", 0.5, 5, "background ring inner radius, in neuron diameters"),
    "patch_size": ParamSpec(80, "int", 16, 4096, "core size of the square patches used to find sources, px"),
    "patch_overlap": ParamSpec(None, "optional_int", 0, 4096, "margin added around every patch core, px (null: "
                               "1.5 neuron diameters, the farthest a kept source's footprint reaches beyond the core)"),
    "max_init_frames": ParamSpec(1000, "int", 50, 1_000_000, "most frames of the temporally binned movie used to "
                                 "find sources: a longer movie keeps this many of its bins, spread evenly over it"),
    "binned_frame_rate": ParamSpec(10.0, "optional_float", 0.01, 1000, "frame rate the movie source extraction reads "
                                   "is averaged down to, Hz: bins of round(fps / binned_frame_rate) frames (null: "
                                   "bins of ceil(frames / max_init_frames) frames, all kept)"),
    "refine_iterations": ParamSpec(2, "int", 0, 20, "spatial/temporal/background refinement rounds per patch"),
    "merge_threshold": ParamSpec(0.8, "float", 0, 1, "trace correlation above which overlapping sources merge"),
    "min_snr": ParamSpec(6.0, "float", 0, None, "sources whose trace never rises this many noise units above its "
                         "median of the second before, or whose touching neighbours' traces leave no peak SNR "
                         "this high unexplained, are rejected"),
    # classification
    "soma_area_range": ParamSpec([0.3, 3.0], "float_pair", 0, None, "soma area range, in expected soma areas"),
    "max_soma_elongation": ParamSpec(2.0, "float", 1, None, "largest major/minor axis ratio of a soma"),
    # traces
    "dff_window": ParamSpec(30.0, "float", 0.1, 86_400, "running-baseline window for dF/F, s"),
    "dff_percentile": ParamSpec(8.0, "float", 0, 100, "running-baseline percentile for dF/F"),
    "decay_time": ParamSpec(None, "optional_float", 0.01, 100, "calcium decay time for deconvolution, s (null: estimate per trace)"),
    "rise_time": ParamSpec(0.0, "optional_float", 0, 10, "calcium rise time for deconvolution, s: 0 = AR(1), decay "
                           "only; a value = AR(2) with this rise (needs decay_time); null = AR(2), rise and decay "
                           "estimated per trace (needs decay_time null)"),
}

ENGINE_DEFAULTS: dict[str, Any] = {name: spec.default for name, spec in PARAM_SPECS.items()}
# The parameters motion correction depends on: runs that agree on these share one corrected movie.
MOTION_PARAMS = (
    "motion_correction", "pw_rigid", "max_shift", "strides", "overlaps", "max_deviation_rigid",
    "motion_lowpass_sigma", "motion_highpass_sigma", "template_frames", "template_iterations",
    "upsample_factor", "outlier_threshold", "outlier_window", "outlier_quality_ratio",
)
# With the motion parameters (and the movie's frame rate), what the binned copy of the corrected
# movie depends on: runs that agree on both share one.
BINNING_PARAMS = ("max_init_frames", "binned_frame_rate", "chunk_frames")
# With the motion parameters, what the neuron size and the summary images depend on: runs that
# agree on both share them.
SUMMARY_PARAMS = (*BINNING_PARAMS, "neuron_diameter")


def validate_params(user_params: dict | None) -> dict:
    """Defaults merged with ``user_params``; raise ParameterError on unknown keys, bad types or ranges."""
    user_params = dict(user_params or {})
    unknown = sorted(set(user_params) - set(PARAM_SPECS))
    if unknown:
        raise ParameterError(f"unknown engine parameter(s): {', '.join(unknown)}")
    params = {}
    for name, spec in PARAM_SPECS.items():
        value = user_params.get(name, spec.default)
        params[name] = _check(name, value, spec)
    low, high = params["soma_area_range"]
    if not 0 < low < high:
        raise ParameterError(f"soma_area_range must be [low, high] with 0 < low < high, got {[low, high]}")
    _check_kinetics(params["rise_time"], params["decay_time"])
    return params


def _check_kinetics(rise: float | None, decay: float | None) -> None:
    """The indicator model OASIS can fit: AR(1) with decay given or estimated; AR(2) with both
    times given, or both estimated."""
    if rise is None and decay is not None:
        raise ParameterError("rise_time null estimates rise and decay together: set decay_time to null too, "
                             "or give rise_time")
    if rise and decay is None:
        raise ParameterError(f"rise_time {rise} needs decay_time (OASIS fits a given rise only with a given decay); "
                             "or set rise_time to null to estimate both")
    if rise and rise >= decay:
        raise ParameterError(f"rise_time {rise} must be shorter than decay_time {decay}")


def _check(name: str, value: Any, spec: ParamSpec) -> Any:
    """``value`` checked against ``spec`` and normalised (pairs as lists, ints as int)."""
    if spec.kind == "bool":
        if not isinstance(value, bool):
            raise ParameterError(f"{name} must be true or false, got {value!r}")
        return value
    if spec.kind.startswith("optional_") and value is None:
        return None
    if spec.kind in ("int_pair", "float_pair"):
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            raise ParameterError(f"{name} must be a pair of numbers, got {value!r}")
        return [_check_number(name, v, spec.kind.removesuffix("_pair"), spec) for v in value]
    return _check_number(name, value, spec.kind.removeprefix("optional_"), spec)


def _check_number(name: str, value: Any, kind: str, spec: ParamSpec) -> int | float:
    """A finite int or float within the spec's range."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ParameterError(f"{name} must be a number, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ParameterError(f"{name} must be finite, got {value!r}")
    if kind == "int" and isinstance(value, float) and not value.is_integer():
        raise ParameterError(f"{name} must be an integer, got {value!r}")
    if spec.minimum is not None and value < spec.minimum:
        raise ParameterError(f"{name} must be >= {spec.minimum}, got {value!r}")
    if spec.maximum is not None and value > spec.maximum:
        raise ParameterError(f"{name} must be <= {spec.maximum}, got {value!r}")
    return int(value) if kind == "int" else float(value)
