"""NWB files of a recording: the common part (session, subject, Miniscope device, imaging plane)
and the raw file, holding the raw movie as a OnePhotonSeries written chunk by chunk, compressed,
and read back as a movie (:class:`RawNwbMovie`) by the processing stage.

Array orientation follows the NWB convention used by neuroconv/roiextractors: movies are
stored (frames, width, height) and images (width, height), i.e. x first.
"""

from __future__ import annotations

import collections
import json
import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterable, Iterator

import h5py
import numpy as np
from hdmf.backends.hdf5 import H5DataIO
from isal import isal_zlib
from ndx_miniscope import Miniscope
from pynwb import NWBHDF5IO, NWBFile, TimeSeries
from pynwb.behavior import CompassDirection, SpatialSeries
from pynwb.device import Device
from pynwb.epoch import TimeIntervals
from pynwb.file import Subject
from pynwb.image import ImageSeries
from pynwb.ophys import ImagingPlane, OnePhotonSeries, OpticalChannel

import miniscope_assets
from miniscope_assets.engine.movie import MovieSource
from miniscope_assets.engine.workers import worker_count
from miniscope_assets.errors import MiniscopeInputError, MiniscopeOutputError
from miniscope_assets.io.miniscope_v4 import read_head_orientation, read_timestamps
from miniscope_assets.io.prefetch import prefetch
from miniscope_assets.io.recording import RecordingInfo, RecordingRecord
from miniscope_assets.nwb.update import new_hdf5

RAW_SERIES = "OnePhotonSeries"
RAW_MOVIE = f"acquisition/{RAW_SERIES}/data"
IMAGING_PLANE = "ImagingPlane"
CHUNK_BYTES = 4 * 1024 * 1024
# gzip (deflate, the filter every HDF5 reader has) at level 1: on Miniscope movies (shot noise in
# every pixel) higher levels find little more to take out. The chunks are deflated by ISA-L
# (python-isal) at its level 1, which writes the same zlib streams 5-6 x as fast as zlib's level 1,
# output within 1 % of its size (measured on 4 MiB chunks of simulated and real 200 px frames),
# and inflates them about 2 x as fast.
COMPRESSION = {"compression": "gzip", "compression_opts": 1}
DEFAULT_EXCITATION_NM = 470.0  # Miniscope V3/V4 blue excitation LED
DEFAULT_EMISSION_NM = 525.0  # GCaMP emission peak


def frames_per_chunk(frame_shape: tuple[int, int], itemsize: int, nframes: int) -> int:
    """HDF5 chunk length along time so one chunk holds about CHUNK_BYTES."""
    per_frame = frame_shape[0] * frame_shape[1] * itemsize
    return int(max(1, min(nframes, CHUNK_BYTES // per_frame)))


def movie_dataset_io(movie: MovieSource) -> H5DataIO:
    """An allocated, empty, chunked and gzip-compressed dataset for ``movie`` as (frames, width,
    height); :func:`fill_movie_dataset` writes it once the file exists."""
    height, width = movie.frame_shape
    chunk = frames_per_chunk(movie.frame_shape, np.dtype(movie.dtype).itemsize, movie.nframes)
    return H5DataIO(shape=(movie.nframes, width, height), dtype=np.dtype(movie.dtype),
                    chunks=(chunk, width, height), **COMPRESSION)


def fill_movie_dataset(dataset: h5py.Dataset, movie: MovieSource, n_threads: int,
                       progress: Callable[[float], None] | None = None) -> None:
    """Write ``movie`` into the allocated ``dataset`` chunk by chunk: frames decoded ahead in a
    thread, chunks compressed by ``n_threads`` threads (ISA-L releases the GIL) and written
    directly, in order, so at most ``2 x n_threads`` chunks are in memory."""
    chunk_shape = dataset.chunks

    def compress(first: int, frames: np.ndarray) -> tuple[int, int, bytes]:
        block = np.zeros(chunk_shape, dataset.dtype)  # an edge chunk is stored full size
        block[: len(frames)] = frames.transpose(0, 2, 1)
        return first, len(frames), isal_zlib.compress(block.data, COMPRESSION["compression_opts"])

    def chunks():
        for first, frames in prefetch(movie.iter_chunks(chunk_shape[0])):
            if first + len(frames) > movie.nframes:
                raise MiniscopeOutputError(dataset.name, f"the movie gave more than {movie.nframes} frames")
            yield first, frames

    written = 0
    with ThreadPoolExecutor(max_workers=n_threads) as pool:
        for first, count, compressed in _in_order(pool, compress, chunks(), 2 * n_threads):
            dataset.id.write_direct_chunk((first, 0, 0), compressed)
            written += count
            if progress is not None:
                progress((first + count) / movie.nframes)
    if written != movie.nframes:  # never leave zero-filled chunks for frames the movie lacked
        raise MiniscopeOutputError(dataset.name, f"the movie gave {written} frames, {movie.nframes} expected")


class RawNwbMovie:
    """The raw movie of a file :func:`write_raw_nwb` wrote, as a (frames, height, width)
    MovieSource. Chunks stored with gzip alone (as :func:`fill_movie_dataset` writes them) are
    read whole and decompressed by ``n_threads`` threads (ISA-L releases the GIL; None or 0:
    every core), a few chunks ahead; other layouts are read through h5py. ``identifier``: the
    file's (:func:`raw_identifier` of the recording it was written from)."""

    def __init__(self, path: str | Path, n_threads: int | None = None):
        self.path = Path(path)
        with h5py.File(self.path, "r") as f:
            self.identifier = _identifier(f)
            dataset = f[RAW_MOVIE]
            self.nframes, width, height = dataset.shape
            self.frame_shape, self.dtype = (height, width), dataset.dtype
            self._direct = (dataset.chunks is not None and dataset.chunks[1:] == (width, height)
                            and dataset.compression == "gzip" and not dataset.shuffle and not dataset.fletcher32
                            and dataset.scaleoffset is None)
            # frames per read: a stored chunk, or about CHUNK_BYTES through h5py
            self._read_frames = (dataset.chunks[0] if self._direct
                                 else frames_per_chunk(self.frame_shape, self.dtype.itemsize, self.nframes))
        self._threads = worker_count(n_threads)

    def iter_chunks(self, chunk_frames: int, start: int = 0, stop: int | None = None):
        stop = self.nframes if stop is None else min(stop, self.nframes)
        pieces, count, first = [], 0, start  # frames read but not yet yielded, from ``first`` on
        for stored_first, frames in self._stored_chunks(start, stop):
            pieces.append(frames[max(start - stored_first, 0) : stop - stored_first])
            count += len(pieces[-1])
            while count >= chunk_frames:
                yield first, _take(pieces, chunk_frames)
                first, count = first + chunk_frames, count - chunk_frames
        if count:
            yield first, _take(pieces, count)

    def _stored_chunks(self, start: int, stop: int):
        """(first frame, frames as (n, height, width)) of the reads covering start..stop."""
        size = self._read_frames
        firsts = range(start // size * size, stop, size)
        with h5py.File(self.path, "r") as f, ThreadPoolExecutor(max_workers=self._threads) as pool:
            if _identifier(f) != self.identifier:  # replaced (renamed over) since it was opened
                raise MiniscopeInputError(self.path, f"the raw NWB file was replaced while in use (identifier "
                                                     f"{_identifier(f)}, {self.identifier} when opened)")
            dataset = f[RAW_MOVIE]
            if not self._direct:
                for first in firsts:
                    yield first, np.ascontiguousarray(dataset[first : first + size].transpose(0, 2, 1))
                return
            shape = (size, self.frame_shape[1], self.frame_shape[0])

            def inflate(first: int, filter_mask: int, stored: bytes) -> tuple[int, np.ndarray]:
                raw = stored if filter_mask & 1 else isal_zlib.decompress(stored)  # bit 0 set: gzip was skipped
                block = np.frombuffer(raw, self.dtype).reshape(shape)[: self.nframes - first]
                return first, np.ascontiguousarray(block.transpose(0, 2, 1))

            stored = ((first, *dataset.id.read_direct_chunk((first, 0, 0))) for first in firsts)
            yield from _in_order(pool, inflate, stored, 2 * self._threads)


def _in_order(pool: ThreadPoolExecutor, function: Callable, items: Iterable[tuple], ahead: int) -> Iterator:
    """``function(*item)`` for each of ``items``, run by ``pool`` and yielded in order, at most
    ``ahead`` of them submitted beyond the one being yielded (bounding what is in memory)."""
    pending: collections.deque = collections.deque()
    for item in items:
        pending.append(pool.submit(function, *item))
        if len(pending) > ahead:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def _identifier(f: h5py.File) -> str:
    value = f["identifier"][()]
    return value.decode() if isinstance(value, bytes) else str(value)


def _take(pieces: list[np.ndarray], n: int) -> np.ndarray:
    """The first ``n`` frames of ``pieces`` (removed from it), copied once if they span several."""
    taken = []
    while n:
        piece = pieces[0]
        taken.append(piece[:n])
        if len(piece) > n:
            pieces[0] = piece[n:]
        else:
            pieces.pop(0)
        n -= len(taken[-1])
    return np.concatenate(taken) if len(taken) > 1 else taken[0]


MovieFill = Callable[[h5py.File], None]


def movie_filler(location: str, movie: MovieSource, n_threads: int | None = None,
                 progress: Callable[[float], None] | None = None) -> MovieFill:
    """``fill`` for :func:`write_nwbfile`: ``movie`` into the dataset at ``location`` (allocated by
    :func:`movie_dataset_io`) with ``n_threads`` threads (None or 0: every core)."""
    threads = worker_count(n_threads)
    return lambda f: fill_movie_dataset(f[location], movie, threads, progress)


def file_identifier(*parts: str) -> str:
    """Deterministic identifier of a file from what distinguishes it."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "miniscope-assets:" + ":".join(parts)))


def raw_identifier(record: RecordingRecord) -> str:
    """The raw NWB file's identifier: the recording's folder and fingerprint (its files' state)."""
    return file_identifier(record.info.recording_dir, record.fingerprint)


def build_nwbfile(record: RecordingRecord, session_id: str, identifier: str, purpose: str) -> NWBFile:
    """Session, subject, Miniscope device and imaging plane of a recording (no data yet)."""
    info, user = record.info, record.user
    session = user.session
    experimenter = session.get("experimenter") or info.session.get("researcher_name")
    nwbfile = NWBFile(
        session_description=session.get("session_description")
        or f"UCLA Miniscope recording {info.recording_dir} ({info.acquisition_software})",
        identifier=identifier,
        session_start_time=info.recording_datetime,
        session_id=session_id,
        experimenter=[experimenter] if isinstance(experimenter, str) else experimenter,
        lab=session.get("lab"),
        institution=session.get("institution"),
        experiment_description=session.get("experiment_description"),
        keywords=session.get("keywords"),
        notes=purpose,
        source_script=f"miniscope-assets {miniscope_assets.__version__}",
        source_script_file_name="miniscope_assets",
    )
    subject_id = user.subject.get("subject_id") or info.session.get("animal_name") or record.identity.subject
    subject = {**user.subject, "subject_id": str(subject_id)}
    if "date_of_birth" in subject:
        subject["date_of_birth"] = datetime.fromisoformat(subject["date_of_birth"])
    nwbfile.subject = Subject(**subject)
    device = _device(info)
    nwbfile.add_device(device)
    um_per_pixel = session.get("um_per_pixel")
    optical_channel = OpticalChannel(
        name="OpticalChannel",
        description="Green emission of the calcium indicator",
        emission_lambda=float(session.get("emission_lambda", DEFAULT_EMISSION_NM)),
    )
    plane = ImagingPlane(
        name=IMAGING_PLANE,
        optical_channel=optical_channel,
        description=session.get("imaging_plane_description")
        or f"Field of view of {device.name}, {info.px_height}x{info.px_width} px",
        device=device,
        excitation_lambda=float(session.get("excitation_lambda", DEFAULT_EXCITATION_NM)),
        imaging_rate=float(info.measured_fps or info.fps),
        indicator=str(session.get("indicator", "unknown")),
        location=str(session.get("location", "unknown")),
        grid_spacing=None if um_per_pixel is None else [float(um_per_pixel)] * 2,
        grid_spacing_unit="micrometers",
    )
    nwbfile.add_imaging_plane(plane)
    if info.dropped_frames:
        add_dropped_frames(nwbfile, info.dropped_frames)
    return nwbfile


def add_dropped_frames(nwbfile: NWBFile, gaps: list[dict]) -> None:
    """Gaps in the movie where frames were lost between the DAQ and the PC, as a TimeIntervals
    table (``intervals/DroppedFrames``); the movie keeps its real per-frame timestamps."""
    table = TimeIntervals(name="DroppedFrames", description="Intervals in which frames were lost between the "
                          "Miniscope DAQ and the acquisition PC: start/stop are the times of the frames "
                          "before and after each gap")
    table.add_column(name="frames_lost", description="Number of frames lost in the gap")
    table.add_column(name="evidence", description="'DAQ Frame Number jump' (hardware counter) or 'timestamp "
                     "gap' (interval longer than 1.5 x the median)")
    for gap in gaps:
        table.add_interval(**gap)
    nwbfile.add_time_intervals(table)


def _int_or_none(value) -> int | None:
    return None if value is None else int(value)


def _device(info: RecordingInfo) -> Miniscope:
    fields = info.device
    roi = [v for v in fields.get("roi", []) if v is not None]
    stated = json.dumps(fields.get("metadata") or {}, sort_keys=True, default=str)
    return Miniscope(
        name=str(fields.get("name") or "Miniscope").replace(" ", ""),
        description=f"UCLA Miniscope recorded with {info.acquisition_software}; gain factor "
        f"{info.gain}; frame rate {info.fps:g} Hz used for processing, "
        f"{info.measured_fps or float('nan'):.3f} Hz measured from the timestamps; "
        f"the device metadata as written by the acquisition software: {stated}",
        deviceType=fields.get("device_type"),
        compression=fields.get("compression"),
        frameRate=fields.get("frame_rate"),
        framesPerFile=_int_or_none(fields.get("frames_per_file")),
        gain=None if fields.get("gain_setting") is None else str(fields["gain_setting"]),
        led0=_int_or_none(fields.get("led0")),
        excitation=_int_or_none(fields.get("excitation")),
        msCamExposure=_int_or_none(fields.get("msCamExposure")),
        ROI=roi if len(roi) == 2 else None,
    )


def timing(timestamps: np.ndarray) -> dict:
    """Per-frame timestamps, or starting_time + rate when they are exactly regular
    (NWB best practice; nwbinspector flags regular timestamps)."""
    timestamps = np.asarray(timestamps, dtype=np.float64)
    steps = np.diff(timestamps)
    if steps.size and np.all(np.round(steps - steps[0], 9) == 0):
        return {"starting_time": float(timestamps[0]), "rate": float(1.0 / steps[0])}
    return {"timestamps": timestamps}


def raw_series(nwbfile: NWBFile, info: RecordingInfo, data: H5DataIO) -> OnePhotonSeries:
    """The raw movie series with the recording's real per-frame timestamps."""
    return OnePhotonSeries(
        name=RAW_SERIES,
        description=f"Raw Miniscope movie from {len(info.files)} AVI file(s), stored (frames, width, height)",
        data=data,
        imaging_plane=nwbfile.imaging_planes[IMAGING_PLANE],
        unit="n.a.",
        binning=int(info.spatial_downsample),
        **timing(info.timestamps),
    )


def write_raw_nwb(
    path: str | Path,
    record: RecordingRecord,
    movie: MovieSource,
    data_root: str | Path,
    progress: Callable[[float], None] | None = None,
    n_threads: int | None = None,
) -> Path:
    """Write the recording's raw NWB file atomically (temporary file renamed into place): the
    movie (compressed by ``n_threads`` threads; None or 0: every core), and the session's
    behaviour cameras and head orientation where recorded."""
    identity, info, root = record.identity, record.info, Path(data_root)
    nwbfile = build_nwbfile(
        record, identity.raw_session_id, raw_identifier(record),
        "Raw recording; processed results are in the files of the same session with a paramset suffix",
    )
    nwbfile.add_acquisition(raw_series(nwbfile, info, movie_dataset_io(movie)))
    shift = _clock_shift(info)
    for camera in info.behaviour_cameras:
        add_behaviour_camera(nwbfile, camera, root, Path(path).parent, shift)
    if info.head_orientation is not None:
        times, quaternions = read_head_orientation(root / info.head_orientation)
        add_head_orientation(nwbfile, times + shift, quaternions)
    return write_nwbfile(path, nwbfile, fill=movie_filler(RAW_MOVIE, movie, n_threads, progress))


def _clock_shift(info: RecordingInfo) -> float:
    """Seconds added to the DAQ clock to put it on the movie's time axis (see RecordingInfo)."""
    return float(info.cross_check.get("timestamps_shifted_s", 0.0))


def add_behaviour_camera(nwbfile: NWBFile, camera: dict, data_root: Path, nwb_folder: Path, shift: float) -> None:
    """A behaviour camera as an ImageSeries referencing its AVI files (relative to the NWB file,
    DANDI's convention for behaviour video), with its own timestamps and device."""
    times, _ = read_timestamps(data_root / camera["timestamps_file"])
    frames = sum(camera["frames_per_file"])
    used = min(frames, len(times))
    name = camera["name"].replace(" ", "")
    device = Device(name=name, description="Behaviour camera recorded with Miniscope-DAQ-V4; its metadata as "
                    f"written: {json.dumps(camera['metadata'], sort_keys=True, default=str)}")
    nwbfile.add_device(device)
    nwbfile.add_acquisition(ImageSeries(
        name=f"BehaviorVideo{name}",
        description=f"Behaviour video of {camera['name']} ({frames} frames in {len(camera['files'])} AVI file(s)); "
        f"{len(times)} timestamp rows, the first {used} used",
        external_file=[os.path.relpath(data_root / f, nwb_folder) for f in camera["files"]],
        starting_frame=np.concatenate([[0], np.cumsum(camera["frames_per_file"])[:-1]]).astype(int).tolist(),
        format="external",
        device=device,
        unit="n.a.",
        num_samples=used,
        **timing(times[:used] + shift),
    ))


def quaternion_to_euler(quaternions: np.ndarray) -> np.ndarray:
    """(yaw, pitch, roll) in radians, Z-Y-X convention, of unit quaternions (w, x, y, z)."""
    w, x, y, z = np.asarray(quaternions, dtype=np.float64).T
    roll = np.arctan2(2 * (w * x + y * z), 1 - 2 * (x * x + y * y))
    pitch = np.arcsin(np.clip(2 * (w * y - z * x), -1.0, 1.0))
    yaw = np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))
    return np.stack([yaw, pitch, roll], axis=1)


def add_head_orientation(nwbfile: NWBFile, times: np.ndarray, quaternions: np.ndarray) -> None:
    """headOrientation.csv in ``processing/behavior``: the quaternions as recorded, and the head
    direction as Euler angles in a CompassDirection."""
    module = nwbfile.create_processing_module("behavior", "Head orientation from the Miniscope's BNO055 sensor")
    module.add(TimeSeries(
        name="HeadOrientationQuaternion", data=np.asarray(quaternions, dtype=np.float64), unit="n.a.",
        description="Orientation of the head-mounted Miniscope (BNO055) as unit quaternions, columns qw, qx, qy, qz",
        **timing(times),
    ))
    module.add(CompassDirection(spatial_series=SpatialSeries(
        name="HeadDirection", data=quaternion_to_euler(quaternions), unit="radians",
        reference_frame="BNO055 sensor axes; columns yaw (about z), pitch (about y), roll (about x), Z-Y-X order",
        description="Head direction of the Miniscope's BNO055 sensor as Euler angles from its quaternions",
        **timing(times),
    )))


def write_nwbfile(path: str | Path, nwbfile: NWBFile, fill: MovieFill | None = None) -> Path:
    """Write a new NWB file atomically: built in memory (see nwb.update.new_hdf5) unless
    ``fill(file)`` then writes a movie into datasets allocated empty (a file on disk)."""
    path = Path(path)
    with new_hdf5(path, in_memory=fill is None) as target:
        with NWBHDF5IO(**target, mode="w") as io:
            io.write(nwbfile)
        if fill is not None:
            with h5py.File(target["path"], "r+") as f:
                fill(f)
    return path
