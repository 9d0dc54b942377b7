"""Movies decode to the grey values that were written, whatever the codec (docs/bad_input.md).

Every file here is a real AVI written by OpenCV, by PyAV (FFmpeg) or, for uncompressed DIB
frames in both row orders, by hand.
"""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from miniscope_assets.errors import MiniscopeInputError
from miniscope_assets.io.avi import AviMovie, probe_avi
from miniscope_assets_tests.conftest import movie
from miniscope_assets_tests.dib_avi import write_dib_avi


def frames_with_every_level() -> np.ndarray:
    """The test movie, with the first rows of frame 0 holding every grey level 0..255."""
    frames = np.array(movie(nframes=12))
    frames[0, :5, :52] = np.resize(np.arange(256, dtype=np.uint8), (5, 52))
    return frames


def opencv_avi(path: Path, frames: np.ndarray, fourcc: str, colour: bool = False) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 20, frames.shape[:0:-1], isColor=colour)
    assert writer.isOpened(), f"OpenCV cannot write {fourcc} here"
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR) if colour else frame)
    writer.release()
    return path


def pyav_avi(path: Path, frames: np.ndarray, codec: str, pixel_format: str, source_format: str = "gray") -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=20)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], pixel_format
        for frame in frames:
            picture = frame if source_format == "gray" else np.ascontiguousarray(np.repeat(frame[:, :, None], 3, 2))
            video = av.VideoFrame.from_ndarray(picture, format=source_format).reformat(format=pixel_format)
            container.mux(stream.encode(video))
        container.mux(stream.encode())
    return path


def decode(path: Path) -> np.ndarray:
    return np.stack(list(AviMovie([probe_avi(path)]).iter_frames()))


LOSSLESS = {
    "FFV1 grey (OpenCV, as Miniscope V4 writes)": lambda p, f: opencv_avi(p, f, "FFV1"),
    "FFV1 colour (OpenCV)": lambda p, f: opencv_avi(p, f, "FFV1", colour=True),
    "GREY raw (OpenCV)": lambda p, f: opencv_avi(p, f, "GREY"),
    "Y800 raw (OpenCV)": lambda p, f: opencv_avi(p, f, "Y800"),
    "HFYU colour (OpenCV)": lambda p, f: opencv_avi(p, f, "HFYU", colour=True),
    "HFYU rgb24 (FFmpeg)": lambda p, f: pyav_avi(p, f, "huffyuv", "rgb24", "rgb24"),
    "FFVHuff grey (FFmpeg)": lambda p, f: pyav_avi(p, f, "ffvhuff", "gray"),
    "raw grey (FFmpeg)": lambda p, f: pyav_avi(p, f, "rawvideo", "gray"),
    "raw bgr24 (FFmpeg)": lambda p, f: pyav_avi(p, f, "rawvideo", "bgr24", "rgb24"),
    "DIB 8-bit bottom-up": lambda p, f: write_dib_avi(p, f, bits=8, bottom_up=True),
    "DIB 8-bit top-down": lambda p, f: write_dib_avi(p, f, bits=8, bottom_up=False),
    "DIB 24-bit bottom-up": lambda p, f: write_dib_avi(p, f, bits=24, bottom_up=True),
    "DIB 24-bit top-down": lambda p, f: write_dib_avi(p, f, bits=24, bottom_up=False),
}


@pytest.mark.parametrize("case", sorted(LOSSLESS))
def test_lossless_codecs_decode_exactly(tmp_path, case):
    frames = frames_with_every_level()
    path = LOSSLESS[case](tmp_path / "0.avi", frames)
    decoded = decode(path)
    assert decoded.dtype == np.uint8 and decoded.shape == frames.shape
    np.testing.assert_array_equal(decoded, frames)


def test_limited_range_yuv_is_rescaled_to_within_one_level(tmp_path):
    """HFYU from OpenCV stores grey as limited-range YUV 4:2:2 (16..235): 256 levels in 220 steps,
    so one level is the best any decoder can do; the old reader returned 0.86 v + 16."""
    frames = frames_with_every_level()
    decoded = decode(opencv_avi(tmp_path / "0.avi", frames, "HFYU"))
    assert np.abs(decoded.astype(int) - frames).max() <= 1


@pytest.mark.parametrize("fourcc", ["MJPG", "XVID"])
def test_lossy_codecs_keep_the_grey_scale(tmp_path, fourcc):
    """Lossy codecs lose detail but not the scale: no gain or offset (the old reader returned
    0.79 v + 22.5 for XVID). Tolerance, on a movie with noise sigma 4 grey levels: mean absolute
    error <= 3 levels, fitted gain within 3% of 1, offset within 2 levels."""
    frames = np.array(movie(nframes=12))
    decoded = decode(opencv_avi(tmp_path / "0.avi", frames, fourcc)).astype(float)
    gain, offset = np.polyfit(frames.ravel(), decoded.ravel(), 1)
    assert np.abs(decoded - frames).mean() <= 3
    assert abs(gain - 1) <= 0.03 and abs(offset) <= 2


def test_colour_movies_become_luma(tmp_path):
    rng = np.random.default_rng(3)
    colour = rng.integers(0, 256, (4, 24, 32, 3), dtype=np.uint8)
    path = tmp_path / "0.avi"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=20)
        stream.width, stream.height, stream.pix_fmt = 32, 24, "bgr0"
        for frame in colour:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="bgr24").reformat(format="bgr0")))
        container.mux(stream.encode())
    expected = np.stack([cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) for frame in colour])
    np.testing.assert_array_equal(decode(path), expected)


def test_more_than_eight_bits_is_refused(tmp_path):
    path = tmp_path / "0.avi"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=20)
        stream.width, stream.height, stream.pix_fmt = 32, 24, "gray16le"
        frame = av.VideoFrame.from_ndarray(np.full((24, 32), 1000, np.uint16), format="gray16le")
        container.mux(stream.encode(frame))
        container.mux(stream.encode())
    with pytest.raises(MiniscopeInputError, match="pixel format gray16le has samples of more than 8 bits"):
        probe_avi(path)


def test_an_avi_without_video_is_refused(tmp_path):
    path = tmp_path / "0.avi"
    with av.open(str(path), "w", format="avi") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        samples = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        samples.sample_rate = 8000
        container.mux(stream.encode(samples))
        container.mux(stream.encode())
    with pytest.raises(MiniscopeInputError, match="holds no video stream"):
        probe_avi(path)


def test_a_header_without_the_frame_count_is_counted(tmp_path):
    """Some writers leave dwTotalFrames and dwLength at 0; the frames are counted from the packets."""
    frames = frames_with_every_level()
    path = write_dib_avi(tmp_path / "0.avi", frames)
    data = bytearray(path.read_bytes())
    for chunk, offset in ((b"avih", 16), (b"strh", 32)):
        start = data.find(chunk) + 8 + offset
        data[start:start + 4] = bytes(4)
    path.write_bytes(bytes(data))
    assert probe_avi(path).nframes == len(frames)
    np.testing.assert_array_equal(decode(path), frames)


def damage_frame(path: Path, frame: int) -> None:
    """Overwrite 8 bytes in the middle of one frame's data chunk (``00dc``) of an AVI."""
    data = bytearray(path.read_bytes())
    start = data.index(b"movi")
    for _ in range(frame + 1):
        start = data.index(b"00dc", start + 1)
    size = int.from_bytes(data[start + 4 : start + 8], "little")
    middle = start + 8 + size // 2
    data[middle : middle + 8] = bytes(255 - b for b in data[middle : middle + 8])
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("fourcc", ["FFV1", "MJPG", "XVID"])
def test_a_damaged_frame_is_refused(tmp_path, fourcc):
    """A frame whose data the decoder finds damaged (FFV1's slice checksum, a broken JPEG or MPEG-4
    bitstream) is refused, naming the file and the frame, instead of being read with the pixels
    the decoder fills in; the frames before it are read as written."""
    frames = np.array(movie(nframes=12))
    path = opencv_avi(tmp_path / "0.avi", frames, fourcc)
    clean = decode(path)
    damage_frame(path, 7)
    read = []
    damaged = r"corrupt AVI: frame 7 is damaged \(the decoder reports: .+\)"
    with pytest.raises(MiniscopeInputError, match=damaged) as error:
        read.extend(AviMovie([probe_avi(path)]).iter_frames())
    assert error.value.path == path
    np.testing.assert_array_equal(np.array(read), clean[:7])
