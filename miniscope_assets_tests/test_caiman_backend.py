"""The CaImAn trigger: availability check, the not-installed error, dispatch into CaImAn."""

from __future__ import annotations

import os
import sys
import warnings

import numpy as np
import pytest

from miniscope_assets import caiman_backend
from miniscope_assets.caiman_backend import (
    CaimanNotInstalledError,
    caiman_available,
    caiman_params_dict,
    run_caiman,
)
from miniscope_assets.errors import MiniscopeInputError, ParameterError
from miniscope_assets.io.caiman_mmap import open_caiman_mmap
from miniscope_assets.io.caiman_results import CaimanResultsWarning, load_caiman_results
from miniscope_assets_tests import caiman_fixtures as fx


def _forget_caiman() -> None:
    for name in [n for n in sys.modules if n == "caiman" or n.startswith("caiman.")]:
        del sys.modules[name]


@pytest.fixture
def no_caiman(monkeypatch, tmp_path):
    """Whatever is installed, make 'caiman' unimportable for this test."""
    _forget_caiman()
    monkeypatch.setitem(sys.modules, "caiman", None)  # import caiman -> ImportError
    yield
    _forget_caiman()


@pytest.fixture
def fake_caiman(monkeypatch, tmp_path):
    root = fx.install_fake_caiman(tmp_path / "fake_site")
    _forget_caiman()
    monkeypatch.syspath_prepend(str(root))
    import caiman

    yield caiman
    _forget_caiman()


@pytest.fixture
def avis(tmp_path):
    paths = []
    for i in range(2):
        path = tmp_path / "rec" / f"{i}.avi"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"RIFF")
        paths.append(path)
    return paths


def test_not_installed_error_message(no_caiman, avis, tmp_path):
    assert caiman_available() is False
    with pytest.raises(CaimanNotInstalledError) as info:
        run_caiman(avis, {}, 20.0, tmp_path / "out")
    message = str(info.value)
    assert "CaImAn is not installed" in message
    assert "conda install -c conda-forge caiman" in message
    assert "caimanmanager install" in message
    assert "PyPI package named `caiman` is an unrelated project" in message
    assert "processing_method: builtin" in message and "method: builtin" in message
    assert not (tmp_path / "out").exists()


def test_unrelated_package_named_caiman_is_not_caiman(monkeypatch, tmp_path):
    _forget_caiman()
    monkeypatch.syspath_prepend(str(fx.install_unrelated_caiman(tmp_path / "site")))
    try:
        assert caiman_available() is False
    finally:
        _forget_caiman()


def test_fake_caiman_is_available(fake_caiman):
    assert caiman_available() is True


def test_run_dispatches_into_caiman_and_output_loads(fake_caiman, avis, tmp_path):
    out = tmp_path / "out"
    returned = run_caiman(avis, {"gSig": [2, 2], "motion": {"strides": (2, 3), "overlaps": (2, 2)},
                                 "min_SNR": 2.5, "rolling_sum": True}, 15.0, out)
    assert returned == out
    calls = [c[0] for c in fake_caiman.CALLS]
    assert calls[:2] == ["setup_cluster", "CNMFParams"]
    for step in ("MotionCorrect", "motion_correct", "save_memmap", "correlation_pnr", "CNMF", "fit",
                 "evaluate_components", "save", "stop_server"):
        assert step in calls, step
    params_call = next(c for c in fake_caiman.CALLS if c[0] == "CNMFParams")[1]
    assert params_call["data"]["fnames"] == [str(p) for p in avis]
    assert params_call["data"]["fr"] == 15.0
    assert params_call["init"]["method_init"] == "corr_pnr"
    assert params_call["init"]["center_psf"] is True and params_call["init"]["nb"] == 0
    assert params_call["init"]["gSig"] == [2, 2]
    assert params_call["motion"]["strides"] == (2, 3)
    assert params_call["quality"]["min_SNR"] == 2.5  # flat key we default: routed to its group
    assert params_call["rolling_sum"] is True  # other flat keys are left to CaImAn's own routing
    mc_call = next(c for c in fake_caiman.CALLS if c[0] == "MotionCorrect")
    assert mc_call[1] == [str(p) for p in avis] and mc_call[2] == "fake-dview"
    assert mc_call[3]["pw_rigid"] is True

    hdf5 = sorted(out.glob("*.hdf5"))
    assert [p.name for p in hdf5] == ["memmap__d1_6_d2_9_d3_1_order_C_frames_10.hdf5"]
    assert not list(out.glob(".*.partial.hdf5"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", CaimanResultsWarning)
        result = load_caiman_results(out)
    assert result.frame_shape == (6, 9) and result.nframes == 10 and result.n_masks == 2
    assert result.corrected_movie == str((out / "memmap__d1_6_d2_9_d3_1_order_C_frames_10.mmap").resolve())
    assert result.mask_types.tolist() == ["soma", "unknown"]
    xpix, ypix, _ = result.mask_pixels(0)  # fake footprint 0: rows 1-2 of column 1
    assert xpix.tolist() == [1, 1] and ypix.tolist() == [1, 2]
    pw = result.motion_piecewise
    assert (pw.block_count_y, pw.block_count_x) == (2, 3)
    np.testing.assert_allclose(pw.y_shifts[3], [0.03 + b for b in range(6)])  # CaImAn x_shifts_els
    np.testing.assert_allclose(result.motion_rigid.y_shifts[:5], [0.1 * t for t in range(5)])
    np.testing.assert_allclose(result.summary.reference, 4.0)  # total_template_els
    assert result.summary.peak_to_noise is not None
    movie = np.concatenate([c for _, c in open_caiman_mmap(result.corrected_movie).iter_chunks(4)])
    np.testing.assert_allclose(result.summary.mean, movie.mean(axis=0), rtol=1e-5)


def test_intermediate_files_go_to_the_output_folder(fake_caiman, avis, tmp_path):
    out = tmp_path / "out"
    run_caiman(avis, {}, 20.0, out)
    assert sorted(p.name for p in out.glob("*_els_*.mmap")) == [
        "0_els__d1_6_d2_9_d3_1_order_F_frames_5_.mmap",
        "1_els__d1_6_d2_9_d3_1_order_F_frames_5_.mmap",
    ]
    assert os.environ.get("CAIMAN_TEMP") != str(out)  # restored after the run


def test_bad_inputs_with_caiman_present(fake_caiman, avis, tmp_path):
    with pytest.raises(MiniscopeInputError, match="AVI file does not exist"):
        run_caiman([tmp_path / "missing.avi"], {}, 20.0, tmp_path / "out")
    with pytest.raises(MiniscopeInputError, match="no AVI files"):
        run_caiman([], {}, 20.0, tmp_path / "out")
    with pytest.raises(ParameterError, match="fps must be a positive number"):
        run_caiman(avis, {}, 0.0, tmp_path / "out")


def test_params_mapping(avis):
    params, run = caiman_params_dict(
        {"init": {"min_pnr": 7}, "merge_thresh": 0.6, "p": 2, "n_processes": 1, "rval_thr": 0.9, "foo": 1},
        avis, 30.0,
    )
    assert run == {"n_processes": 1}
    assert params["init"]["min_pnr"] == 7 and params["init"]["min_corr"] == 0.8
    assert params["merging"]["merge_thr"] == 0.6
    assert params["temporal"]["p"] == 2 and params["preprocess"]["p"] == 2
    assert params["quality"]["rval_thr"] == 0.9
    assert params["foo"] == 1 and "n_processes" not in params
    assert list(params)[-1] == "foo"  # flat CaImAn keys after the groups
    assert params["data"]["fr"] == 30.0
    with pytest.raises(ParameterError, match="method_init is fixed to 'corr_pnr'"):
        caiman_params_dict({"method_init": "greedy_roi"}, avis, 30.0)
    with pytest.raises(ParameterError, match="init.nb is fixed to 0"):
        caiman_params_dict({"init": {"nb": 2}}, avis, 30.0)
    with pytest.raises(ParameterError, match="data.fr is set from the recording"):
        caiman_params_dict({"data": {"fr": 10}}, avis, 30.0)
    with pytest.raises(ParameterError, match="group 'motion' must be a mapping"):
        caiman_params_dict({"motion": 3}, avis, 30.0)


def test_module_does_not_import_caiman_at_import_time():
    source = open(caiman_backend.__file__).read().split("def run_caiman", 1)[0]
    assert "\nimport caiman" not in source and "\nfrom caiman" not in source


@pytest.mark.caiman
def test_real_caiman_run(tmp_path):
    if not caiman_available():
        pytest.skip("real CaImAn (conda-forge) is not installed; `conda install -c conda-forge caiman`")
    import cv2

    avi = tmp_path / "rec" / "0.avi"
    avi.parent.mkdir()
    rng = np.random.default_rng(0)
    height, width, nframes = 64, 80, 200
    yy, xx = np.mgrid[:height, :width]
    cells = [(20, 25), (40, 55), (30, 40)]
    writer = cv2.VideoWriter(str(avi), cv2.VideoWriter_fourcc(*"FFV1"), 20.0, (width, height), isColor=False)
    for t in range(nframes):
        frame = 40 + rng.normal(0, 2, (height, width))
        for i, (cy, cx) in enumerate(cells):
            amplitude = 60 if (t + 25 * i) % 50 < 5 else 0
            frame += amplitude * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 8.0)
        writer.write(np.clip(frame, 0, 255).astype(np.uint8))
    writer.release()
    out = run_caiman([avi], {"n_processes": 1, "rf": None, "min_corr": 0.6, "min_pnr": 5,
                             "motion": {"pw_rigid": False}}, 20.0, tmp_path / "out")
    result = load_caiman_results(out)
    assert result.frame_shape == (height, width) and result.nframes == nframes
    assert result.motion_rigid is not None and result.corrected_movie is not None
