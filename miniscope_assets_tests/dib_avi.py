"""A hand-written RIFF AVI with uncompressed DIB frames (8-bit palettised grey or 24-bit BGR,
bottom-up or top-down), as acquisition and conversion tools write them."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np


def _chunk(fourcc: bytes, payload: bytes) -> bytes:
    return fourcc + struct.pack("<I", len(payload)) + payload + (b"\0" if len(payload) % 2 else b"")


def _list(kind: bytes, payload: bytes) -> bytes:
    return _chunk(b"LIST", kind + payload)


def dib_frame(frame: np.ndarray, bits: int, bottom_up: bool) -> bytes:
    """One frame's bytes: rows padded to 4 bytes, last row first when bottom-up."""
    pixels = frame if bits == 8 else np.repeat(frame[:, :, None], 3, axis=2)
    rows = pixels[::-1] if bottom_up else pixels
    row_bytes = rows.shape[1] * (bits // 8)
    padding = (-row_bytes) % 4
    return b"".join(row.tobytes() + b"\0" * padding for row in np.ascontiguousarray(rows, dtype=np.uint8))


def write_dib_avi(path: Path, frames: np.ndarray, fps: int = 20, bits: int = 8, bottom_up: bool = True) -> Path:
    """Write grey frames (n, height, width) uint8 as an uncompressed DIB AVI."""
    nframes, height, width = frames.shape
    data = [dib_frame(frame, bits, bottom_up) for frame in frames]
    palette = b"".join(bytes((v, v, v, 0)) for v in range(256)) if bits == 8 else b""
    header = struct.pack("<IIIIIIIIII4I", 1_000_000 // fps, 0, 0, 0x10, nframes, 0, 1, len(data[0]),
                         width, height, 0, 0, 0, 0)
    stream_header = struct.pack("<4s4sIHHIIIIIIIIhhhh", b"vids", b"DIB ", 0, 0, 0, 0, 1, fps, 0, nframes,
                                len(data[0]), 0, 0, 0, 0, width, height)
    bitmap = struct.pack("<IiiHHIIiiII", 40, width, height if bottom_up else -height, 1, bits, 0,
                         len(data[0]), 0, 0, 256 if bits == 8 else 0, 0) + palette
    hdrl = _list(b"hdrl", _chunk(b"avih", header)
                 + _list(b"strl", _chunk(b"strh", stream_header) + _chunk(b"strf", bitmap)))
    movi_chunks, index, offset = [], [], 4
    for payload in data:
        chunk = _chunk(b"00db", payload)
        index.append(struct.pack("<4sIII", b"00db", 0x10, offset, len(payload)))
        movi_chunks.append(chunk)
        offset += len(chunk)
    body = hdrl + _list(b"movi", b"".join(movi_chunks)) + _chunk(b"idx1", b"".join(index))
    Path(path).write_bytes(b"RIFF" + struct.pack("<I", 4 + len(body)) + b"AVI " + body)
    return Path(path)
