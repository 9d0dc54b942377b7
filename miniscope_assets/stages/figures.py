"""PNG figures for the catalog, drawn with OpenCV (no plotting library needed)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from miniscope_assets.atomic import atomic_path

MIN_SIDE = 512
THUMBNAIL_SIDE = 320
THUMBNAIL_BYTES = 40_000  # one figure per materialization: small for the event log and the UI
COLORS = [(80, 220, 80), (80, 180, 255), (255, 160, 60), (220, 90, 220), (60, 220, 220), (90, 90, 255)]


def _to_uint8(image: np.ndarray) -> np.ndarray:
    low, high = np.nanpercentile(image, [1, 99.5])
    scaled = (np.nan_to_num(image, nan=low) - low) / max(high - low, 1e-9)
    return (np.clip(scaled, 0, 1) * 255).astype(np.uint8)


def _write_png(path: Path, image: np.ndarray) -> Path:
    with atomic_path(path) as temporary:
        if not cv2.imwrite(str(temporary), image):
            raise OSError(f"{path}: OpenCV could not write the PNG")
    return path


def _canvas(image: np.ndarray) -> tuple[np.ndarray, int]:
    """The image as gray BGR, enlarged by an integer factor to at least MIN_SIDE pixels."""
    scale = max(1, int(np.ceil(MIN_SIDE / max(image.shape))))
    canvas = cv2.cvtColor(_to_uint8(image), cv2.COLOR_GRAY2BGR)
    return cv2.resize(canvas, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST), scale


def image_png(path: Path, image: np.ndarray) -> Path:
    """A summary image as a contrast-stretched gray PNG."""
    return _write_png(path, _canvas(image)[0])


def masks_on_image(path: Path, image: np.ndarray, footprints, ids: np.ndarray) -> Path:
    """The image in gray with every mask's outline (at 30% of its peak weight) and id; masks
    with the same id share a colour."""
    canvas, scale = _canvas(image)
    height, width = image.shape
    footprints = footprints.tocsc()
    for index, mask_id in enumerate(ids):
        column = footprints[:, index].toarray().reshape(height, width)
        binary = (column >= 0.3 * column.max()).astype(np.uint8)
        binary = cv2.resize(binary, (width * scale, height * scale), interpolation=cv2.INTER_NEAREST)
        contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        color = COLORS[int(mask_id) % len(COLORS)]
        cv2.drawContours(canvas, contours, -1, color, 1)
        if contours:
            x, y, _, _ = cv2.boundingRect(max(contours, key=cv2.contourArea))
            cv2.putText(canvas, str(int(mask_id)), (x, max(y - 2, 8)), cv2.FONT_HERSHEY_SIMPLEX, 0.35, color, 1)
    return _write_png(path, canvas)


def traces_plot(path: Path, traces: np.ndarray, ids: np.ndarray, fps: float, count: int = 8) -> Path:
    """The first ``count`` traces, each scaled to its own row, with ids and a time scale bar."""
    count = min(count, traces.shape[0])
    width, row, margin = 1000, 70, 50
    canvas = np.full((max(count, 1) * row + 30, width + margin + 10, 3), 255, np.uint8)
    for position in range(count):
        trace = np.asarray(traces[position], dtype=np.float64)
        x = margin + np.linspace(0, width, trace.size)
        low, high = np.nanmin(trace), np.nanmax(trace)
        y = position * row + row - 8 - (trace - low) / max(high - low, 1e-9) * (row - 16)
        points = np.stack([x, y], axis=1).astype(np.int32).reshape(-1, 1, 2)
        cv2.polylines(canvas, [points], False, COLORS[position % len(COLORS)], 1, cv2.LINE_AA)
        cv2.putText(canvas, str(int(ids[position])), (5, position * row + row // 2),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
    seconds = max(traces.shape[1] / fps, 1e-9)
    bar_seconds = max([s for s in (0.1, 0.5, 1, 5, 10, 30, 60, 300) if s <= seconds / 4] or [seconds / 4])
    bar = int(width * bar_seconds / seconds)
    y = canvas.shape[0] - 12
    cv2.line(canvas, (margin, y), (margin + bar, y), (0, 0, 0), 2)
    cv2.putText(canvas, f"{bar_seconds:g} s", (margin + bar + 6, y + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
    return _write_png(path, canvas)


def thumbnail(path: Path, side: int = THUMBNAIL_SIDE) -> tuple[str, bytes]:
    """(MIME type, bytes) of ``path`` shrunk to at most ``side`` pixels and THUMBNAIL_BYTES: the
    smaller of PNG and JPEG, the side halved until it fits."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise OSError(f"{path}: not a readable image")
    while True:
        scale = min(1.0, side / max(image.shape[:2]))
        small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else image
        encoded = min((("image/png", cv2.imencode(".png", small)[1]),
                       ("image/jpeg", cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 80])[1])),
                      key=lambda pair: pair[1].size)
        if encoded[1].size <= THUMBNAIL_BYTES or side <= 50:
            return encoded[0], encoded[1].tobytes()
        side //= 2
