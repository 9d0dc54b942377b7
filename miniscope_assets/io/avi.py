"""AVI movies: probing, chunked reading across files (PyAV), and writing (OpenCV).

Frames are decoded to their true 8-bit grey values whatever the codec: grey pixel formats
are taken as stored; RGB and palettised formats (raw DIB, HFYU, FFV1 colour) go through BGR
to grey with ITU-R BT.601 luma weights, which is exact when R = G = B; YUV formats (MJPG,
XVID, HFYU 4:2:2) give their luma, rescaled from limited range where the stream says so.
Formats with more than 8 bits per sample are refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import av
import av.logging
import cv2
import numpy as np

from miniscope_assets.atomic import atomic_path
from miniscope_assets.errors import MiniscopeInputError


@dataclass(frozen=True)
class AviInfo:
    """What the AVI container says about one file, verified to be decodable to its end."""

    path: Path
    nframes: int
    height: int
    width: int
    fps: float
    fourcc: str
    pixel_format: str = "gray"


def _grey_converter(path: Path, pixel_format: av.VideoFormat) -> Callable[[av.VideoFrame], np.ndarray]:
    """How frames of ``pixel_format`` become (height, width) uint8 grey values."""
    if any(component.bits > 8 for component in pixel_format.components):
        raise MiniscopeInputError(path, f"pixel format {pixel_format.name} has samples of more than 8 bits; "
                                  "only 8-bit movies are supported")
    if pixel_format.name == "gray":
        return lambda frame: frame.to_ndarray()
    if pixel_format.is_rgb or pixel_format.has_palette:
        return lambda frame: cv2.cvtColor(frame.to_ndarray(format="bgr24"), cv2.COLOR_BGR2GRAY)
    return lambda frame: frame.to_ndarray(format="gray")


def _hear_decoder_errors() -> None:
    """Have FFmpeg pass its error messages to PyAV (which by default drops every message), so a
    decoder's report of a damaged frame can be caught (:meth:`_Decoder.frames`)."""
    level = av.logging.get_level()
    if level is None or level < av.logging.ERROR:
        av.logging.set_level(av.logging.ERROR)


class _Decoder:
    """One AVI file open for decoding: its video stream, frame count and grey conversion."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.container = av.open(str(path))
        except (av.FFmpegError, UnicodeDecodeError) as error:
            raise MiniscopeInputError(path, f"cannot be opened as a video (unreadable or not an AVI: {error})") from None
        try:
            if not self.container.streams.video:
                raise MiniscopeInputError(path, "holds no video stream")
            self.stream = self.container.streams.video[0]
            context = self.stream.codec_context
            if context.pix_fmt is None or context.width <= 0 or context.height <= 0:
                raise MiniscopeInputError(path, f"video stream has no usable frame size or pixel format ({context.name})")
            self.to_grey = _grey_converter(path, av.VideoFormat(context.pix_fmt))
        except MiniscopeInputError:
            self.container.close()
            raise
        self.pixel_format = context.pix_fmt
        self.nframes = int(self.stream.frames) or self._count_packets()
        self.fourcc = (context.codec_tag or "").strip("\x00 ") or "raw"
        self.fps = float(self.stream.average_rate or 0.0)

    def _count_packets(self) -> int:
        """Frames of a file whose header leaves the count out: its video packets, not decoded."""
        try:
            with av.open(str(self.path)) as container:
                return sum(1 for packet in container.demux(container.streams.video[0]) if packet.size)
        except av.FFmpegError:
            return 0

    def frames(self, first: int = 0) -> Iterator[tuple[int, np.ndarray]]:
        """(frame index, grey frame) from frame ``first`` to the end of the file. A frame the
        decoder reports damaged (an error it logs and conceals, such as FFV1's slice checksums
        failing) is refused, not passed on with the concealed pixels."""
        index = -1
        _hear_decoder_errors()
        try:
            if first:
                self.container.seek(first, backward=True, any_frame=False, stream=self.stream)
            decoded = self.container.decode(self.stream)
            while True:
                with av.logging.Capture() as messages:  # this thread's decoder messages while one frame decodes
                    frame = next(decoded, None)
                if frame is None:
                    break
                damage = [text.strip() for level, _, text in messages if level <= av.logging.ERROR]
                if frame.pts is not None:
                    index = int(frame.pts)
                elif first:
                    raise MiniscopeInputError(self.path, "frames carry no time stamps, so frame "
                                              f"{first} cannot be found")
                else:
                    index += 1
                if index >= first:
                    if damage:
                        raise MiniscopeInputError(
                            self.path, f"corrupt AVI: frame {index} is damaged (the decoder reports: {damage[0]}); it "
                            "would fill the damage in from other frames. Copy the file again from the "
                            "acquisition computer")
                    yield index, self.to_grey(frame)
        except av.FFmpegError as error:
            raise self.undecodable(index + 1, error.strerror or str(error)) from None

    def undecodable(self, index: int, detail: str = "") -> MiniscopeInputError:
        return MiniscopeInputError(self.path, f"truncated or corrupt AVI: header declares {self.nframes} frames "
                                   f"but frame {index} cannot be decoded" + (f" ({detail})" if detail else ""))

    def close(self) -> None:
        self.container.close()


def probe_avi(path: str | Path) -> AviInfo:
    """Read an AVI's header and check that its first and last frames decode.

    A file whose declared last frame cannot be decoded is truncated or corrupt.
    """
    path = Path(path)
    if not path.is_file():
        raise MiniscopeInputError(path, "AVI file does not exist")
    if path.stat().st_size == 0:
        raise MiniscopeInputError(path, "AVI file is empty (0 bytes)")
    decoder = _Decoder(path)
    try:
        if decoder.nframes <= 0:
            raise MiniscopeInputError(path, "AVI declares no frames")
        _, first = next(decoder.frames(), (None, None))
        if first is None:
            raise MiniscopeInputError(path, "first frame cannot be decoded (corrupt AVI)")
        last = decoder.nframes - 1
        if last > 0 and not any(index == last for index, _ in decoder.frames(last)):
            raise decoder.undecodable(last)
    finally:
        decoder.close()
    height, width = first.shape
    return AviInfo(path, decoder.nframes, height, width, decoder.fps, decoder.fourcc, decoder.pixel_format)


def check_frame_sizes(files: Sequence[AviInfo]) -> None:
    """The files of one movie share one frame size."""
    if len({(f.height, f.width) for f in files}) > 1:
        detail = ", ".join(f"{f.path.name}: {f.height}x{f.width}" for f in files)
        raise MiniscopeInputError(files[0].path.parent, f"AVI files differ in frame size ({detail})")


class AviMovie:
    """Several AVI files read as one (frames, height, width) movie, chunk by chunk.

    Implements the engine's MovieSource protocol. ``nframes`` may be set lower than the
    files hold (frames beyond it are never read).
    """

    def __init__(self, files: Sequence[AviInfo], nframes: int | None = None):
        if not files:
            raise ValueError("AviMovie needs at least one file")
        check_frame_sizes(files)
        self.files = list(files)
        self.frame_shape = (files[0].height, files[0].width)
        self._starts = np.cumsum([0] + [f.nframes for f in files])
        total = int(self._starts[-1])
        self.nframes = total if nframes is None else min(nframes, total)
        self.dtype = np.dtype(np.uint8)

    def iter_frames(self, start: int = 0, stop: int | None = None) -> Iterator[np.ndarray]:
        """Yield frames start..stop one at a time, opening each file once."""
        stop = self.nframes if stop is None else min(stop, self.nframes)
        index = start
        while index < stop:
            file_number = int(np.searchsorted(self._starts, index, side="right") - 1)
            info = self.files[file_number]
            local = index - int(self._starts[file_number])
            last_local = min(info.nframes, stop - int(self._starts[file_number]))
            decoder = _Decoder(info.path)
            try:
                for position, frame in decoder.frames(local):
                    if position >= last_local:
                        break
                    if position != local:
                        raise MiniscopeInputError(info.path, f"frame {local} is missing (the next decoded is {position})")
                    if frame.shape != self.frame_shape:
                        raise MiniscopeInputError(
                            info.path, f"frame {position} has shape {frame.shape}, expected {self.frame_shape}"
                        )
                    yield frame
                    local += 1
                    index += 1
                if local < last_local:
                    raise decoder.undecodable(local)
            finally:
                decoder.close()

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
