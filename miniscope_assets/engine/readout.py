"""Sensor readout artefacts repaired before motion correction: stuck pixels, flickering pixels,
corrupted rows and row banding (the last two come with the readout of wireless Miniscopes; mio's
real test recording has both); and glitched frames, told here and replaced by motion correction.

- **Stuck pixels**: a pixel that holds one value through the inspected frames while its
  neighbours' median differs from it by more than ``_CORRUPT_FACTOR`` typical row differences
  (a hot pixel stuck at 255, a dead one at 0) takes the median of its eight neighbours. Left in,
  such static points hold the registration to the sensor (on a simulated movie with 40 of them
  in 200 x 200 px: 0.10 -> 0.29 px RMS) and, moving over the corrected movie, make sources.
- **Flickering pixels**: single pixels that jump, in one frame, more than ``_IMPULSE_FACTOR``
  typical row differences away from the median of their 3 x 3 neighbourhood (no image the
  optics form has a one-pixel feature that sharp): pixels flashing to saturation at random
  places, or a sensor's blinking pixels (mio's real 200 px stream has about 40 a frame, +15
  counts). Left in, each flash is a brief point of "activity" that the soma-scale filter turns
  into a seed (on a simulated movie one flash in ten frames made 21 false masks for 40 cells).
  Where the inspected frames hold any (besides stuck pixels), every frame's take the median of
  their neighbourhood; clean movies of both simulators have none at this threshold.

- **Corrupted rows**: a transmission error replaces a block of rows of a frame with a pattern
  or random values (8 of the real recording's 60 frames), or with one value (a dropout filled
  with zeros). Left in, every such block is a burst of "activity" that seeds sources: on a
  simulated movie with a block of random values in 2 % of the frames the engine found 917
  masks for 40 cells, with zeros 183. A row is corrupted where the mean absolute
  difference between its neighbouring pixels exceeds ``_CORRUPT_FACTOR`` times the typical
  row's (measured on the movie's first frames; real rows differ by their noise, random values
  by a third of the range), or where it holds one value that is more than ``_CORRUPT_FACTOR``
  typical differences from the row's usual level (the median over the inspected frames of
  its mean: a row of unlit sensor that reads 0 throughout is not corrupted; a frame more than
  half of whose rows are such is a blank or saturated frame, left whole to the glitched-frames
  rule below); it takes the same row of the frame before (the first frame's, and rows
  corrupted in the frame before too, are interpolated between the frame's good rows).
- **Row banding**: offsets of whole rows changing from frame to frame. In the real recording
  the row-median profile of a frame is 3.3 counts rough from row to row against 0.8 for the
  column profile; offsets that size are as large as calcium transients: in a simulated movie,
  banding of 5 counts lost 8 of 40 cells and pulled the registration along the rows. A frame's
  row offsets are its row-median profile minus that profile's running median over ``_WINDOW``
  rows (the brain's image changes slowly from row to row, and a cell covers too little of a row
  to move its median); removed only from movies that show banding.

:func:`inspect_readout` measures a movie's first frames; :class:`RepairedReadout` reads the
movie with the repairs it calls for. A movie with none of these artefacts reads as it is.

- **Glitched frames**: whole frames far brighter or darker than the frames around them (a
  blank or saturated frame from a dropout, a flash of light reaching the sensor, a stimulation
  light pulse). :func:`glitched_frames` finds them from every frame's mean level, once the
  whole movie has been read; motion correction replaces them in the corrected movie (see
  :mod:`~miniscope_assets.engine.motion`). A frame is glitched whose level departs from the
  running median of ``_GLITCH_WINDOW`` frames by more than ``_GLITCH_SIGMAS`` robust standard
  deviations of such departures and by more than ``_GLITCH_FRACTION`` of the level: the
  brain's own activity moves the level slowly and by a few percent at most (minisim's strong
  neuropil: 3 % at most).
"""

from __future__ import annotations

import cv2
import numpy as np
import scipy.ndimage

from miniscope_assets.engine.movie import MovieSource
from miniscope_assets.engine.noise import MAD_TO_SIGMA

_CORRUPT_FACTOR = 5.0  # times the typical row's neighbour difference: a corrupted row
_WINDOW = 15  # rows (columns) of the running median a profile's fine part is measured from
_BANDING_RATIO = 3.0  # row profiles this many times as rough as column profiles: banding
_MIN_ROUGHNESS = 0.5  # counts: rougher row profiles than this, at least
_FRAMES_CHECKED = 50  # frames, spread over the first _FRAMES_SPAN, that are inspected
_FRAMES_SPAN = 200
_MIN_FRAMES_STILL = 10  # inspected frames a pixel must hold its value through to be stuck
_MAX_STUCK = 1000  # more stuck pixels than this: the movie is left as it is (not a sensor's few defects)
_GLITCH_WINDOW = 11  # frames of the running median a frame's level is compared with
_GLITCH_SIGMAS = 10.0  # robust standard deviations of the departures from it: a glitched frame's, at least
_GLITCH_FRACTION = 0.1  # and this fraction of the level
_IMPULSE_FACTOR = 8.0  # times the typical row's neighbour difference from the 3 x 3 median: a flickering pixel


def _fine(profiles: np.ndarray) -> np.ndarray:
    """(n, length) profiles minus their running median along the length."""
    return profiles - scipy.ndimage.median_filter(profiles, size=(1, _WINDOW), mode="nearest")


def row_offsets(frames: np.ndarray) -> np.ndarray:
    """(n, rows) offset of every row of every frame of a (n, height, width) stack."""
    return _fine(np.median(frames, axis=2).astype(np.float32))


def row_differences(frame: np.ndarray) -> np.ndarray:
    """(rows,) mean absolute difference between horizontally neighbouring pixels of each row."""
    image = frame if frame.dtype in (np.uint8, np.uint16) else np.asarray(frame, np.float32)  # absdiff's types
    return cv2.reduce(cv2.absdiff(image[:, 1:], image[:, :-1]), 1, cv2.REDUCE_AVG, dtype=cv2.CV_32F).ravel()


def inspect_readout(movie: MovieSource, chunk_frames: int) -> dict:
    """What the readout of ``movie`` needs, from frames spread over its start: ``row_difference``
    (the typical row's neighbour difference, the scale corrupted rows, stuck and flickering
    pixels are told by; None if the frames are too narrow), ``row_levels`` (every row's usual
    mean, where there is a ``row_difference``), ``stuck_pixels`` ([row, column]
    pairs), ``flickering_per_frame`` (flickering pixels in an inspected frame, on average),
    ``banded`` and the median roughness (standard deviation of the profiles' fine parts) of the
    row and the column profiles of the frames' good rows."""
    stop = min(movie.nframes, _FRAMES_SPAN)
    step = max(1, stop // _FRAMES_CHECKED)
    picked = [np.asarray(frames[(-first) % step :: step], np.float32)
              for first, frames in movie.iter_chunks(chunk_frames, 0, stop)]
    picked = [frames for frames in picked if len(frames)]
    height, width = movie.frame_shape
    findings = {"row_difference": None, "banded": False, "stuck_pixels": [], "flickering_per_frame": 0.0}
    if not picked or width < 2:
        return findings
    frames = np.concatenate(picked)
    typical = float(np.median([row_differences(frame) for frame in frames]))  # 0 for noiseless synthetic frames
    if typical > 0:
        findings.update(row_difference=round(typical, 4), stuck_pixels=_stuck_pixels(frames, typical),
                        row_levels=np.round(np.median(frames.mean(axis=2), axis=0).astype(np.float64), 3).tolist())
    row_levels = np.asarray(findings.get("row_levels", []))
    good = frames if typical <= 0 else np.stack([
        _repair_rows(frame, corrupted_rows(frame, findings["row_difference"], row_levels)) for frame in frames])
    if typical > 0 and min(height, width) >= 3:
        stuck = np.zeros(movie.frame_shape, bool)
        stuck[tuple(_stuck_array(findings).T)] = True
        findings["flickering_per_frame"] = round(float(np.mean(
            [np.count_nonzero(_flickering(frame, findings["row_difference"])[0] & ~stuck) for frame in good])), 3)
    if height < _WINDOW or width < _WINDOW:
        return findings
    row = float(np.median(row_offsets(good).std(axis=1)))
    column = float(np.median(_fine(np.median(good, axis=1)).std(axis=1)))
    findings.update(banded=row > max(_BANDING_RATIO * column, _MIN_ROUGHNESS), row_roughness=round(row, 3),
                    column_roughness=round(column, 3))
    return findings


def glitched_frames(levels: np.ndarray) -> np.ndarray:
    """Which frames are glitched (see module docstring), from every frame's mean level."""
    levels = np.asarray(levels, np.float64)
    if len(levels) < 3:
        return np.zeros(len(levels), bool)
    baseline = scipy.ndimage.median_filter(levels, size=_GLITCH_WINDOW, mode="mirror")  # an end frame counted once
    departure = np.abs(levels - baseline)
    scale = MAD_TO_SIGMA * np.median(departure)
    return departure > np.maximum(_GLITCH_SIGMAS * scale, _GLITCH_FRACTION * np.abs(baseline))


def _stuck_pixels(frames: np.ndarray, typical: float) -> list[list[int]]:
    """[row, column] of the pixels stuck through ``frames`` (see module docstring)."""
    if len(frames) < _MIN_FRAMES_STILL or min(frames.shape[1:]) < 3:
        return []
    still = frames.max(axis=0) == frames.min(axis=0)
    stuck = still & (np.abs(frames[0] - cv2.medianBlur(frames[0], 3)) > _CORRUPT_FACTOR * typical)
    rows, columns = np.nonzero(stuck)
    return [] if len(rows) > _MAX_STUCK else [[int(y), int(x)] for y, x in zip(rows, columns)]


def corrupted_rows(frame: np.ndarray, typical: float | None, row_levels: np.ndarray) -> np.ndarray:
    """(rows,) which rows of ``frame`` are corrupted (see module docstring), by the typical row
    difference and the rows' usual levels of :func:`inspect_readout` (none if ``typical`` is
    None; no level test if ``row_levels`` is empty, as in findings of older runs)."""
    if typical is None:
        return np.zeros(len(frame), bool)
    differences = row_differences(frame)
    corrupted = differences > _CORRUPT_FACTOR * typical
    if len(row_levels):  # rows of one value far from their usual level
        away = np.abs(frame[:, 0] - row_levels) > _CORRUPT_FACTOR * typical
        flat = (differences == 0) & away
        if flat.sum() <= len(frame) // 2:  # a blank or saturated frame is left whole to glitched_frames
            corrupted |= flat
    return corrupted


def _stuck_array(findings: dict) -> np.ndarray:
    """The stuck pixels of :func:`inspect_readout`'s ``findings`` as (n, 2) [row, column]."""
    return np.asarray(findings.get("stuck_pixels", []), np.int64).reshape(-1, 2)


def _flickering(frame: np.ndarray, typical: float) -> tuple[np.ndarray, np.ndarray]:
    """(the flickering pixels of a float32 frame, the median of every pixel's 3 x 3 neighbourhood)."""
    median = cv2.medianBlur(frame, 3)
    return np.abs(frame - median) > _IMPULSE_FACTOR * typical, median


def _repair_rows(frame: np.ndarray, corrupted: np.ndarray) -> np.ndarray:
    """``frame`` (float32) with the ``corrupted`` rows interpolated between the good ones."""
    if not corrupted.any():
        return frame
    good = np.flatnonzero(~corrupted)
    repaired = frame.copy()
    if not len(good):
        repaired[:] = np.median(frame)
        return repaired
    bad = np.flatnonzero(corrupted)
    below = np.clip(np.searchsorted(good, bad), 1, len(good) - 1) if len(good) > 1 else np.zeros(len(bad), int)
    above = below - 1 if len(good) > 1 else below
    lower, upper = good[above], good[below]
    weight = np.where(upper > lower, (bad - lower) / np.maximum(upper - lower, 1), 0.0).clip(0, 1)[:, None]
    repaired[bad] = (1 - weight) * frame[lower] + weight * frame[upper]
    return repaired


class RepairedReadout:
    """``movie`` with the repairs :func:`inspect_readout`'s ``findings`` call for: a corrupted
    row takes the same row of the frame before as read (rows corrupted there too, and the first
    frame's, are interpolated between the frame's good rows), stuck pixels take their
    neighbours' median, flickering pixels (if the movie has any) their neighbourhood's, then,
    if the movie is banded, the row offsets are subtracted; integers
    rounded and clipped to the movie's type. Frames needing none of this are passed through as
    they are. A frame reads the same however the movie is read (in any chunks, by any process
    where ``movie`` is readable anywhere)."""

    def __init__(self, movie: MovieSource, findings: dict):
        self.movie, self.findings = movie, findings
        self.nframes, self.frame_shape, self.dtype = movie.nframes, movie.frame_shape, np.dtype(movie.dtype)
        self._typical, self._row_levels = findings["row_difference"], np.asarray(findings.get("row_levels", []))
        stuck = _stuck_array(findings)
        self._stuck = tuple(stuck.T)
        around = np.array([(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx])  # (8, 2)
        height, width = movie.frame_shape
        self._neighbours = (np.clip(stuck[:, 0, None] + around[:, 0], 0, height - 1),
                            np.clip(stuck[:, 1, None] + around[:, 1], 0, width - 1))  # each (stuck, 8)

    def _corrupted(self, frame: np.ndarray) -> np.ndarray:
        return corrupted_rows(frame, self._typical, self._row_levels)

    def _repair(self, first: int, frames: np.ndarray, before: np.ndarray | None = None) -> np.ndarray:
        """Frames ``first``... repaired; ``before``: frame ``first - 1`` as read, if at hand."""
        banded, stuck = self.findings["banded"], len(self._stuck[0]) > 0
        flickering = self.findings.get("flickering_per_frame", 0.0) > 0
        if self._typical is None and not banded:
            return frames
        corrupted = [self._corrupted(frame) for frame in frames]
        if not banded and not stuck and not flickering and not any(rows.any() for rows in corrupted):
            return frames
        repaired = np.array(frames, np.float32)  # a copy: ``frames`` may be the source's own
        for i, rows in enumerate(corrupted):
            if not rows.any():
                continue
            if i > 0:
                previous, unusable = np.asarray(frames[i - 1], np.float32), corrupted[i - 1]
            else:
                previous = before if before is not None or first == 0 else self._frame(first - 1)
                unusable = np.ones_like(rows) if previous is None else self._corrupted(previous)
                previous = None if previous is None else np.asarray(previous, np.float32)
            taken = rows & ~unusable
            if taken.any():
                repaired[i, taken] = previous[taken]
            repaired[i] = _repair_rows(repaired[i], rows & unusable)
        if stuck:
            repaired[(slice(None), *self._stuck)] = np.median(repaired[(slice(None), *self._neighbours)], axis=2)
        if flickering:
            for frame in repaired:
                flagged, median = _flickering(frame, self._typical)
                frame[flagged] = median[flagged]
        if banded:
            repaired -= row_offsets(repaired)[:, :, None]
        if self.dtype.kind in "ui":
            info = np.iinfo(self.dtype)
            np.clip(np.rint(repaired, out=repaired), info.min, info.max, out=repaired)
        return repaired.astype(self.dtype)

    def _frame(self, index: int) -> np.ndarray:
        """Frame ``index`` of ``movie`` as read."""
        if self.readable_anywhere(index, index + 1):
            return self.movie.read_frames(index, index + 1)[0]
        return next(iter(self.movie.iter_chunks(1, index, index + 1)))[1][0]

    def iter_chunks(self, chunk_frames: int, start: int = 0, stop: int | None = None):
        before = None  # the frame before the chunk, as read
        for first, frames in self.movie.iter_chunks(chunk_frames, start, stop):
            yield first, self._repair(first, frames, before)
            before = frames[-1]

    def readable_anywhere(self, start: int, stop: int) -> bool:
        return hasattr(self.movie, "readable_anywhere") and self.movie.readable_anywhere(start, stop)

    def read_frames(self, first: int, stop: int) -> np.ndarray:
        return self._repair(first, self.movie.read_frames(first, stop))
