"""AVI movies through OpenCV: probing, chunked reading across files, and writing."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import cv2
import numpy as np

from miniscope_assets.errors import MiniscopeInputError
from miniscope_assets.io.atomic import atomic_path


def natural_key(path: str | Path) -> tuple:
    """Sort key that orders embedded numbers numerically: 2.avi < 10.avi, msCam2 < msCam10."""
    name = Path(path).name
    return tuple(int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name))


@dataclass(frozen=True)
class AviInfo:
    """What the AVI container says about one file, verified to be decodable to its end."""

    path: Path
    nframes: int
    height: int
    width: int
    fps: float
    fourcc: str


def _open(path: Path) -> cv2.VideoCapture:
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        capture.release()
        raise MiniscopeInputError(path, "cannot be opened as a video (unreadable or not an AVI)")
    capture.set(cv2.CAP_PROP_CONVERT_RGB, 0)
    return capture


def _as_gray(frame: np.ndarray) -> np.ndarray:
    """Miniscope movies are monochrome; colour-converted decodes carry it in every channel."""
    return frame[:, :, 0] if frame.ndim == 3 else frame


def probe_avi(path: str | Path) -> AviInfo:
    """Read an AVI's header and check that its first and last frames decode.

    A file whose declared last frame cannot be decoded is truncated or corrupt.
    """
    path = Path(path)
    if not path.is_file():
        raise MiniscopeInputError(path, "AVI file does not exist")
    if path.stat().st_size == 0:
        raise MiniscopeInputError(path, "AVI file is empty (0 bytes)")
    capture = _open(path)
    try:
        nframes = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        fps = float(capture.get(cv2.CAP_PROP_FPS))
        fourcc_code = int(capture.get(cv2.CAP_PROP_FOURCC))
        fourcc = fourcc_code.to_bytes(4, "little").decode("latin-1").strip("\x00 ") or "raw"
        if nframes <= 0:
            raise MiniscopeInputError(path, "AVI declares no frames")
        ok, first = capture.read()
        if not ok:
            raise MiniscopeInputError(path, "first frame cannot be decoded (corrupt AVI)")
        if nframes > 1:
            capture.set(cv2.CAP_PROP_POS_FRAMES, nframes - 1)
            ok, _ = capture.read()
            if not ok:
                raise MiniscopeInputError(
                    path,
                    f"truncated or corrupt AVI: header declares {nframes} frames "
                    f"but frame {nframes - 1} cannot be decoded",
                )
    finally:
        capture.release()
    height, width = _as_gray(first).shape
    return AviInfo(path, nframes, height, width, fps, fourcc)


class AviMovie:
    """Several AVI files read as one (frames, height, width) movie, chunk by chunk.

    Implements the engine's MovieSource protocol. ``nframes`` may be set lower than the
    files hold (frames beyond it are never read).
    """

    def __init__(self, files: Sequence[AviInfo], nframes: int | None = None):
        if not files:
            raise ValueError("AviMovie needs at least one file")
        shapes = {(f.height, f.width) for f in files}
        if len(shapes) > 1:
            detail = ", ".join(f"{f.path.name}: {f.height}x{f.width}" for f in files)
            raise MiniscopeInputError(files[0].path.parent, f"AVI files differ in frame size ({detail})")
        self.files = list(files)
        self.frame_shape = (files[0].height, files[0].width)
        self._starts = np.cumsum([0] + [f.nframes for f in files])
        total = int(self._starts[-1])
        self.nframes = total if nframes is None else min(nframes, total)
        self.dtype = self._first_frame_dtype()

    def _first_frame_dtype(self) -> np.dtype:
        capture = _open(self.files[0].path)
        try:
            _, frame = capture.read()
        finally:
            capture.release()
        return frame.dtype

    def iter_frames(self, start: int = 0, stop: int | None = None) -> Iterator[np.ndarray]:
        """Yield frames start..stop one at a time, opening each file once."""
        stop = self.nframes if stop is None else min(stop, self.nframes)
        index = start
        while index < stop:
            file_number = int(np.searchsorted(self._starts, index, side="right") - 1)
            info = self.files[file_number]
            local = index - int(self._starts[file_number])
            last_local = min(info.nframes, stop - int(self._starts[file_number]))
            capture = _open(info.path)
            try:
                if local:
                    capture.set(cv2.CAP_PROP_POS_FRAMES, local)
                for position in range(local, last_local):
                    ok, frame = capture.read()
                    if not ok:
                        raise MiniscopeInputError(
                            info.path,
                            f"frame {position} of {info.nframes} cannot be decoded "
                            "(truncated or corrupt AVI)",
                        )
                    frame = _as_gray(frame)
                    if frame.shape != self.frame_shape:
                        raise MiniscopeInputError(
                            info.path, f"frame {position} has shape {frame.shape}, expected {self.frame_shape}"
                        )
                    yield frame
                    index += 1
            finally:
                capture.release()

    def iter_chunks(
        self, chunk_frames: int, start: int = 0, stop: int | None = None
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (first frame index, frames[n, height, width]) in chunks of ``chunk_frames``."""
        stop = self.nframes if stop is None else min(stop, self.nframes)
        buffer = np.empty((chunk_frames, *self.frame_shape), dtype=self.dtype)
        filled, first = 0, start
        for frame in self.iter_frames(start, stop):
            buffer[filled] = frame
            filled += 1
            if filled == chunk_frames:
                yield first, buffer.copy()
                first += filled
                filled = 0
        if filled:
            yield first, buffer[:filled].copy()


def write_avi(path: str | Path, frames: Iterable[np.ndarray], fps: float, codec: str = "FFV1") -> Path:
    """Write monochrome uint8 frames to an AVI (FFV1 is lossless, as Miniscope V4 uses)."""
    path = Path(path)
    writer = None
    with atomic_path(path) as temporary:
        try:
            for frame in frames:
                if writer is None:
                    height, width = frame.shape
                    writer = cv2.VideoWriter(
                        str(temporary), cv2.VideoWriter_fourcc(*codec), fps, (width, height), isColor=False
                    )
                    if not writer.isOpened():
                        raise RuntimeError(f"OpenCV cannot write {codec} AVI files here")
                writer.write(np.ascontiguousarray(frame, dtype=np.uint8))
        finally:
            if writer is not None:
                writer.release()
        if writer is None:
            raise ValueError(f"{path}: no frames to write")
    return path
