"""Read CaImAn's memory-mapped movies (``*.mmap``) as a :class:`MovieSource`, chunk by chunk.

CaImAn (``caiman/mmapping.py``: ``save_memmap`` / ``load_memmap``; the name is built by
``caiman/paths.py: memmap_frames_filename``) stores a movie as one raw, headerless float32 array
of shape ``(d1 * d2 * d3, T)`` -- pixels x frames -- and encodes that shape in the file name::

    <base>_d1_<d1>_d2_<d2>_d3_<d3>_order_<C|F>_frames_<T>.mmap     (newer releases)
    <base>_d1_<d1>_d2_<d2>_d3_<d3>_order_<C|F>_frames_<T>_.mmap    (older releases: trailing "_")

- ``d1`` is the number of image rows (height), ``d2`` the number of columns (width), ``d3`` the
  number of planes (1 for 2-D data; volumes are not supported here).
- ``order`` is the memory order of the (pixels, frames) array: ``C`` = pixel-major (each pixel's
  time series is contiguous; what CNMF reads), ``F`` = frame-major (each frame is contiguous;
  what ``MotionCorrect`` writes).
- The pixel axis is each frame flattened in Fortran order: pixel ``p = row + col * d1``.

A chunk of frames ``[t0, t1)`` is therefore ``Yr[:, t0:t1]``, reshaped per frame in Fortran order to
``(d1, d2)``. With ``order=C`` a chunk is a strided read across the whole file; larger chunks
amortise that.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from miniscope_assets.errors import MiniscopeInputError

MMAP_NAME = re.compile(
    r"_d1_(?P<d1>\d+)_d2_(?P<d2>\d+)_d3_(?P<d3>\d+)_order_(?P<order>[CF])_frames_(?P<frames>\d+)_?\.mmap$"
)
MMAP_DTYPE = np.dtype(np.float32)


@dataclass(frozen=True)
class CaimanMmapLayout:
    """Shape information decoded from a CaImAn ``.mmap`` file name."""

    d1: int  # rows (height)
    d2: int  # columns (width)
    d3: int  # planes
    order: str  # "C" or "F"
    frames: int

    @property
    def n_pixels(self) -> int:
        return self.d1 * self.d2 * self.d3

    @property
    def nbytes(self) -> int:
        return self.n_pixels * self.frames * MMAP_DTYPE.itemsize


def parse_caiman_mmap_name(path: str | Path) -> CaimanMmapLayout | None:
    """Decode the shape from a CaImAn memmap file name, or None if the name does not follow it."""
    match = MMAP_NAME.search(Path(path).name)
    if match is None:
        return None
    return CaimanMmapLayout(
        d1=int(match["d1"]),
        d2=int(match["d2"]),
        d3=int(match["d3"]),
        order=match["order"],
        frames=int(match["frames"]),
    )


class CaimanMmapMovie:
    """A CaImAn ``.mmap`` movie exposed as (frames, height, width) chunks, memory-mapped.

    Nothing is read until :meth:`iter_chunks` / :meth:`read` is called, and then only the frames
    asked for.
    """

    def __init__(self, path: str | Path):
        path = Path(path)
        if not path.is_file():
            raise MiniscopeInputError(path, "CaImAn memory-mapped movie does not exist")
        layout = parse_caiman_mmap_name(path)
        if layout is None:
            raise MiniscopeInputError(
                path,
                "not a CaImAn memmap name: expected "
                "'<base>_d1_<rows>_d2_<cols>_d3_<planes>_order_<C|F>_frames_<T>.mmap'",
            )
        if layout.d3 != 1:
            raise MiniscopeInputError(
                path, f"volumetric CaImAn memmap (d3={layout.d3}) is not supported; expected d3=1"
            )
        size = path.stat().st_size
        if size != layout.nbytes:
            raise MiniscopeInputError(
                path,
                f"file size {size} bytes does not match the name: {layout.d1}x{layout.d2} pixels x "
                f"{layout.frames} frames of float32 = {layout.nbytes} bytes (truncated or renamed?)",
            )
        self.path = path
        self.layout = layout
        self.nframes = layout.frames
        self.frame_shape = (layout.d1, layout.d2)
        self.dtype = MMAP_DTYPE
        self._array: np.memmap | None = None

    def _pixels_by_frames(self) -> np.memmap:
        if self._array is None:
            if self.layout.frames == 0:
                self._array = np.zeros((self.layout.n_pixels, 0), dtype=MMAP_DTYPE)  # type: ignore[assignment]
            else:
                self._array = np.memmap(
                    self.path,
                    mode="r",
                    dtype=MMAP_DTYPE,
                    shape=(self.layout.n_pixels, self.layout.frames),
                    order=self.layout.order,
                )
        return self._array

    def read(self, start: int, stop: int) -> np.ndarray:
        """Frames ``start..stop`` as a new (n, height, width) float32 array."""
        start = max(0, int(start))
        stop = min(self.nframes, int(stop))
        d1, d2 = self.frame_shape
        if stop <= start:
            return np.zeros((0, d1, d2), dtype=MMAP_DTYPE)
        block = np.asarray(self._pixels_by_frames()[:, start:stop])  # (pixels, n)
        # pixel p = row + col * d1 (Fortran order) -> (n, d2, d1) in C order, then swap to (n, d1, d2)
        frames = block.T.reshape(stop - start, d2, d1).transpose(0, 2, 1)
        return np.ascontiguousarray(frames)

    def iter_chunks(
        self, chunk_frames: int, start: int = 0, stop: int | None = None
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (first frame index, frames[n, height, width]) for frames start..stop."""
        if chunk_frames < 1:
            raise ValueError(f"chunk_frames must be >= 1, got {chunk_frames}")
        stop = self.nframes if stop is None else min(stop, self.nframes)
        for first in range(start, stop, chunk_frames):
            yield first, self.read(first, min(first + chunk_frames, stop))

    def close(self) -> None:
        """Drop the memory map (it is reopened on the next read)."""
        self._array = None

    def __repr__(self) -> str:
        return (
            f"CaimanMmapMovie({str(self.path)!r}, frames={self.nframes}, "
            f"shape={self.frame_shape}, order={self.layout.order})"
        )


def open_caiman_mmap(path: str | Path) -> CaimanMmapMovie:
    """Open a CaImAn motion-corrected ``.mmap`` movie as a chunked :class:`MovieSource`."""
    return CaimanMmapMovie(path)
