"""Engine parameter validation: defaults, unknown keys, types and ranges."""

from __future__ import annotations

import json

import pytest

from miniscope_assets.engine import ENGINE_DEFAULTS, PARAM_SPECS, validate_params
from miniscope_assets.engine.extraction import patch_overlap
from miniscope_assets.errors import ParameterError


def test_defaults_are_complete_valid_and_json_serialisable():
    params = validate_params({})
    assert params == ENGINE_DEFAULTS
    assert set(params) == set(PARAM_SPECS)
    assert json.loads(json.dumps(params)) == params
    assert validate_params(None) == params


def test_user_values_override_defaults_and_are_normalised():
    params = validate_params({"pw_rigid": True, "strides": (32, 40), "max_shift": 12.0, "min_pnr": 5})
    assert params["pw_rigid"] is True
    assert params["strides"] == [32, 40]
    assert params["max_shift"] == 12 and isinstance(params["max_shift"], int)
    assert params["min_pnr"] == 5.0 and isinstance(params["min_pnr"], float)
    assert params["overlaps"] == ENGINE_DEFAULTS["overlaps"]


def test_unknown_keys_are_named():
    with pytest.raises(ParameterError) as error:
        validate_params({"gSig": 3, "max_shift": 5, "rf": 40})
    message = str(error.value)
    assert "gSig" in message and "rf" in message and "max_shift" not in message


@pytest.mark.parametrize(
    "bad, fragment",
    [
        ({"pw_rigid": "yes"}, "pw_rigid"),
        ({"pw_rigid": 1}, "pw_rigid"),
        ({"max_shift": 2.5}, "integer"),
        ({"max_shift": True}, "max_shift"),
        ({"max_shift": 0}, ">= 1"),
        ({"min_corr": 1.5}, "<= 1"),
        ({"neuron_diameter": "10"}, "neuron_diameter"),
        ({"neuron_diameter": float("nan")}, "finite"),
        ({"strides": [48]}, "pair"),
        ({"strides": [48, 4]}, ">= 8"),
        ({"soma_area_range": [3.0, 0.5]}, "soma_area_range"),
        ({"decay_time": 0}, "decay_time"),
        ({"chunk_frames": None}, "chunk_frames"),
        ({"patch_overlap": 2.5}, "integer"),
        ({"patch_overlap": -1}, ">= 0"),
    ],
)
def test_bad_types_and_ranges_are_rejected(bad, fragment):
    with pytest.raises(ParameterError, match=fragment):
        validate_params(bad)


def test_optional_decay_time():
    assert validate_params({"decay_time": None})["decay_time"] is None
    assert validate_params({"decay_time": 0.4})["decay_time"] == 0.4


def test_optional_patch_overlap_is_derived_from_the_neuron_diameter():
    assert validate_params({})["patch_overlap"] is None
    assert validate_params({"patch_overlap": 20.0})["patch_overlap"] == 20
    derived = {**validate_params({}), "neuron_diameter": 10.49}
    assert patch_overlap(derived) == 16  # 1.5 diameters, rounded up
    assert patch_overlap({**derived, "neuron_diameter": 20.0}) == 30
    assert patch_overlap({**derived, "patch_overlap": 0}) == 0  # given, even zero, is used
