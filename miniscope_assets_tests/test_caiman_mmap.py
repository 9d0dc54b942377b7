"""CaImAn .mmap movies read as a chunked MovieSource."""

from __future__ import annotations

import numpy as np
import pytest

from miniscope_assets.engine.movie import MovieSource
from miniscope_assets.errors import MiniscopeInputError
from miniscope_assets.io.caiman_mmap import open_caiman_mmap, parse_caiman_mmap_name
from miniscope_assets_tests import caiman_fixtures as fx


def _movie(t=7, h=5, w=8):
    return np.arange(t * h * w, dtype=np.float32).reshape(t, h, w) * 0.5


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("trailing", [False, True])
def test_reads_frames_in_both_orders_and_name_styles(tmp_path, order, trailing):
    movie = _movie()
    path = fx.write_caiman_mmap(tmp_path, movie, order=order, trailing_underscore=trailing)
    source = open_caiman_mmap(path)
    typed: MovieSource = source  # the protocol is static; check its members are there
    assert all(hasattr(typed, member) for member in ("nframes", "frame_shape", "dtype", "iter_chunks"))
    assert (source.nframes, source.frame_shape, source.dtype) == (7, (5, 8), np.float32)
    chunks = list(source.iter_chunks(3))
    assert [first for first, _ in chunks] == [0, 3, 6]
    np.testing.assert_array_equal(np.concatenate([c for _, c in chunks]), movie)
    np.testing.assert_array_equal(source.read(2, 5), movie[2:5])


def test_chunk_window(tmp_path):
    movie = _movie()
    source = open_caiman_mmap(fx.write_caiman_mmap(tmp_path, movie))
    chunks = list(source.iter_chunks(2, start=1, stop=6))
    assert [first for first, _ in chunks] == [1, 3, 5]
    np.testing.assert_array_equal(np.concatenate([c for _, c in chunks]), movie[1:6])


def test_pixel_layout_is_fortran_within_a_frame(tmp_path):
    movie = np.zeros((1, 3, 4), dtype=np.float32)
    movie[0, 0, 1] = 1.0  # row 0, column 1 -> CaImAn pixel index 0 + 1 * 3 = 3
    path = fx.write_caiman_mmap(tmp_path, movie, order="C")
    raw = np.fromfile(path, dtype=np.float32)
    assert raw.tolist().index(1.0) == 3
    np.testing.assert_array_equal(open_caiman_mmap(path).read(0, 1), movie)


def test_name_parsing():
    layout = parse_caiman_mmap_name("Yr_d1_600_d2_608_d3_1_order_C_frames_3000_.mmap")
    assert (layout.d1, layout.d2, layout.d3, layout.order, layout.frames) == (600, 608, 1, "C", 3000)
    assert parse_caiman_mmap_name("movie.mmap") is None


def test_bad_name_missing_file_and_wrong_size(tmp_path):
    with pytest.raises(MiniscopeInputError, match="does not exist"):
        open_caiman_mmap(tmp_path / "x_d1_2_d2_2_d3_1_order_C_frames_1.mmap")
    odd = tmp_path / "movie.mmap"
    odd.write_bytes(b"\0" * 16)
    with pytest.raises(MiniscopeInputError, match="not a CaImAn memmap name"):
        open_caiman_mmap(odd)
    short = tmp_path / "x_d1_2_d2_2_d3_1_order_C_frames_3.mmap"
    short.write_bytes(b"\0" * 16)
    with pytest.raises(MiniscopeInputError, match="file size 16 bytes does not match the name.*48 bytes"):
        open_caiman_mmap(short)
    volume = tmp_path / "x_d1_2_d2_2_d3_2_order_C_frames_1.mmap"
    volume.write_bytes(b"\0" * 32)
    with pytest.raises(MiniscopeInputError, match="volumetric"):
        open_caiman_mmap(volume)
