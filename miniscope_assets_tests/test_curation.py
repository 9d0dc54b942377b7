"""Applying curation files to a processing result (pure, no Dagster)."""

from __future__ import annotations

import numpy as np
import pytest

from miniscope_assets.errors import MiniscopeInputError
from miniscope_assets.stages.curation import (
    CurationRequest,
    apply_curation,
    read_curation_file,
    write_curation_file,
)
from miniscope_assets_tests.conftest import FPS, small_result


@pytest.fixture
def result():
    return small_result()


def test_reject_and_accept_keep_ids_and_order(result, tmp_path):
    rejected = apply_curation(result, CurationRequest(reject=[11, 13]), tmp_path / "c.yaml", FPS)
    np.testing.assert_array_equal(rejected.mask_ids, [10, 12])
    np.testing.assert_array_equal(rejected.fluorescence, result.fluorescence[[0, 2]])
    assert (rejected.footprints != result.footprints[:, [0, 2]]).nnz == 0
    accepted = apply_curation(result, CurationRequest(accept=[13, 10, 11], reject=[11]), tmp_path / "c.yaml", FPS)
    np.testing.assert_array_equal(accepted.mask_ids, [10, 13])


def test_merge_combines_footprints_and_traces(result, tmp_path):
    curated = apply_curation(result, CurationRequest(merge=[[10, 11]]), tmp_path / "c.yaml", FPS)
    np.testing.assert_array_equal(curated.mask_ids, [12, 13, 14])  # merged mask gets the next id
    a = result.footprints.toarray()
    means = result.fluorescence[:2].mean(axis=1)
    expected = a[:, 0] * means[0] + a[:, 1] * means[1]
    expected *= a[:, :2].max() / expected.max()
    merged = curated.footprints[:, 2].toarray().ravel()
    np.testing.assert_allclose(merged, expected, rtol=1e-5)
    assert set(np.flatnonzero(merged)) == set(np.flatnonzero(a[:, 0])) | set(np.flatnonzero(a[:, 1]))
    weights = (a[:, :2].T @ expected) / (expected @ expected)
    np.testing.assert_allclose(curated.fluorescence[2], weights @ result.fluorescence[:2], rtol=1e-5)
    np.testing.assert_allclose(curated.neuropil[2], 3.0, rtol=1e-6)
    assert curated.mask_types[2] == "soma" and curated.mask_confidence[2] == pytest.approx(0.9)
    assert np.ptp(curated.dff[2]) > 0 and np.all(np.isfinite(curated.spikes[2]))  # recomputed
    curated.validate()


@pytest.mark.parametrize("request_, message", [
    (CurationRequest(reject=[99]), r"unknown mask id\(s\) \[99\]"),
    (CurationRequest(merge=[[10]]), "needs at least two ids"),
    (CurationRequest(merge=[[10, 11], [11, 12]]), "repeats an id"),
    (CurationRequest(merge=[[10, 11]], reject=[11]), "repeats an id"),
])
def test_invalid_requests_name_the_file(result, tmp_path, request_, message):
    with pytest.raises(MiniscopeInputError, match=message) as caught:
        apply_curation(result, request_, tmp_path / "curation.yaml", FPS)
    assert str(tmp_path / "curation.yaml") in str(caught.value)


def test_curation_file_round_trip_and_errors(tmp_path):
    path = write_curation_file(tmp_path / "curation.yaml", CurationRequest(reject=[1], merge=[[2, 3]], note="n"))
    assert read_curation_file(path) == CurationRequest(reject=[1], merge=[[2, 3]], note="n")
    path.write_text("reject: [1, two]\n")
    with pytest.raises(MiniscopeInputError, match="'reject' should be a list of mask ids"):
        read_curation_file(path)
    path.write_text("rejected: [1]\n")
    with pytest.raises(MiniscopeInputError, match="unknown field"):
        read_curation_file(path)
