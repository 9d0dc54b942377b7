"""Row banding: offsets of whole sensor rows that change from frame to frame, as the readout of
wireless Miniscopes leaves them. In a real recording (mio's test data) the row-median profile of
a frame is 3.3 counts rough from row to row against 0.8 for the column profile; offsets that size
are as large as calcium transients: in a simulated movie, banding of 5 counts lost 8 of 40 cells
and pulled the registration along the rows.

A frame's row offsets are its row-median profile minus that profile's running median over
``_WINDOW`` rows: the brain's image changes slowly from row to row, and a cell covers too little
of a row to move its median. They are removed, before motion correction, only from movies that
show banding (:func:`detect_row_banding`), so a movie without it is processed as it is.
"""

from __future__ import annotations

import numpy as np
import scipy.ndimage

from miniscope_assets.engine.movie import MovieSource

_WINDOW = 15  # rows (columns) of the running median a profile's fine part is measured from
_RATIO = 3.0  # row profiles this many times as rough as column profiles: banding
_MIN_ROUGHNESS = 0.5  # counts: rougher row profiles than this, at least
_FRAMES_CHECKED = 50  # frames, spread over the first _FRAMES_SPAN, that decide
_FRAMES_SPAN = 200


def _fine(profiles: np.ndarray) -> np.ndarray:
    """(n, length) profiles minus their running median along the length."""
    return profiles - scipy.ndimage.median_filter(profiles, size=(1, _WINDOW), mode="nearest")


def row_offsets(frames: np.ndarray) -> np.ndarray:
    """(n, rows) offset of every row of every frame of a (n, height, width) stack."""
    return _fine(np.median(frames, axis=2).astype(np.float32))


def detect_row_banding(movie: MovieSource, chunk_frames: int) -> dict:
    """Whether ``movie`` shows row banding, from frames spread over its start: ``banded`` and the
    median roughness (standard deviation of the profiles' fine parts, counts) of the row and of
    the column profiles."""
    stop = min(movie.nframes, _FRAMES_SPAN)
    step = max(1, stop // _FRAMES_CHECKED)
    rows, columns = [], []
    for first, frames in movie.iter_chunks(chunk_frames, 0, stop):
        picked = np.asarray(frames[(-first) % step :: step], np.float32)
        if len(picked):
            rows.append(row_offsets(picked).std(axis=1))
            columns.append(_fine(np.median(picked, axis=1)).std(axis=1))
    if not rows or min(movie.frame_shape) < _WINDOW:
        return {"banded": False}
    row, column = float(np.median(np.concatenate(rows))), float(np.median(np.concatenate(columns)))
    return {"banded": row > max(_RATIO * column, _MIN_ROUGHNESS), "row_roughness": round(row, 3),
            "column_roughness": round(column, 3)}


class WithoutRowBanding:
    """``movie`` with every frame's :func:`row_offsets` subtracted (integers rounded and clipped
    to the movie's type); readable anywhere where ``movie`` is."""

    def __init__(self, movie: MovieSource):
        self.movie = movie
        self.nframes, self.frame_shape, self.dtype = movie.nframes, movie.frame_shape, np.dtype(movie.dtype)

    def _clean(self, frames: np.ndarray) -> np.ndarray:
        cleaned = np.asarray(frames, np.float32) - row_offsets(frames)[:, :, None]
        if self.dtype.kind in "ui":
            info = np.iinfo(self.dtype)
            np.clip(np.rint(cleaned, out=cleaned), info.min, info.max, out=cleaned)
        return cleaned.astype(self.dtype)

    def iter_chunks(self, chunk_frames: int, start: int = 0, stop: int | None = None):
        for first, frames in self.movie.iter_chunks(chunk_frames, start, stop):
            yield first, self._clean(frames)

    def readable_anywhere(self, start: int, stop: int) -> bool:
        return hasattr(self.movie, "readable_anywhere") and self.movie.readable_anywhere(start, stop)

    def read_frames(self, first: int, stop: int) -> np.ndarray:
        return self._clean(self.movie.read_frames(first, stop))
