"""Worker processes for the engine's independent pieces of work (frame chunks, patches).

``ordered_map(function, items, state, n_workers)`` yields ``function(state, item)`` for every item,
in order. With one worker it runs in this process; with more, in a pool of forked processes that
inherit ``state`` (templates, parameters: never pickled) and receive each item by pipe. The
arrays of an item or a result (a chunk of frames, its registered copy) do not go through the
pipe, which moves about 150 MB/s at the cost of both processes' time: they are written to a
file in shared memory, read back once and the file removed (:class:`_Parcel`); and
``map_chunks`` lets each worker read its own chunk of a movie that any process can read (a
file, memory inherited by fork), so those frames pass through no other process. Either way the
numeric libraries (BLAS, OpenCV) run single-threaded meanwhile, so ``n_workers`` is the number of
cores used and every piece of work gives the same bits whatever the worker count. At most
``2 x n_workers`` items are in flight, so a lazily read movie stays streamed and memory flat.
"""

from __future__ import annotations

import collections
import contextlib
import multiprocessing
import os
import pickle
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

import cv2
import numpy as np
import threadpoolctl

from miniscope_assets.engine.movie import MovieSource
from miniscope_assets.errors import ParameterError

_state: Any = None  # a worker process's inherited state
_SHARE_ABOVE = 1 << 20  # bytes of arrays from which an item or result travels as a file, not by pipe
PARCEL_PREFIX = "miniscope-parcel-"  # names of those files


def available_cores() -> int:
    """Cores this process may run on: its CPU affinity (a taskset, a cgroup), and at most the
    Slurm job's CPUs per task where Slurm does not bind the job to them."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    allocated = os.environ.get("SLURM_CPUS_PER_TASK", "")
    return min(cores, int(allocated)) if allocated.isdigit() and int(allocated) > 0 else cores


def worker_count(requested: int | None) -> int:
    """``requested`` checked (a positive integer), or every available core if None or 0."""
    if requested is None or requested == 0:
        return available_cores()
    if isinstance(requested, bool) or not isinstance(requested, int) or requested < 0:
        raise ParameterError(f"n_workers must be a positive integer (0 or null: all cores), got {requested!r}")
    return requested


def map_chunks(function: Callable[[Any, Any], Any], movie: MovieSource, chunk_frames: int, state: Any,
               n_workers: int | None, spans: Iterable[tuple[int, int]] | None = None) -> Iterator:
    """``function(state, (first, frames))`` for every chunk of ``chunk_frames`` frames of the
    movie's ``spans`` ([start, stop) frame ranges; default the whole movie), in order, in
    ``n_workers`` processes. Where the movie can be read by any process
    (``movie.readable_anywhere``), a worker reads its own chunk (``movie.read_frames``): the
    frames pass through no other process; else they are read here, in order, and sent."""
    spans = [(0, movie.nframes)] if spans is None else [(start, min(stop, movie.nframes)) for start, stop in spans]
    if all(hasattr(movie, "readable_anywhere") and movie.readable_anywhere(*span) for span in spans):
        ranges = ((first, min(first + chunk_frames, stop)) for start, stop in spans
                  for first in range(start, stop, chunk_frames))
        return ordered_map(_read_and_call, ranges, (function, movie, state), n_workers)
    chunks = (chunk for start, stop in spans for chunk in movie.iter_chunks(chunk_frames, start, stop))
    return ordered_map(function, chunks, state, n_workers)


def _read_and_call(bundle, frame_range: tuple[int, int]) -> Any:
    """``function(state, (first, frames))`` of a range of frames read here (see :func:`map_chunks`)."""
    function, movie, state = bundle
    first, stop = frame_range
    return function(state, (first, movie.read_frames(first, stop)))


def ordered_map(function: Callable[[Any, Any], Any], items: Iterable, state: Any, n_workers: int | None) -> Iterator:
    """``function(state, item)`` for every item, in order, in ``n_workers`` processes (None or 0:
    every core; see module docstring)."""
    n_workers = worker_count(n_workers)
    with _single_threaded_libraries():
        if n_workers == 1:
            for item in items:
                yield function(state, item)
            return
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(n_workers, mp_context=context, initializer=_install, initargs=(state,)) as pool:
            pending: collections.deque = collections.deque()  # (future, its item's parcel)
            try:
                for item in items:
                    parcel = _Parcel.wrap(item)
                    pending.append((pool.submit(_call, function, parcel), parcel))
                    if len(pending) >= 2 * n_workers:
                        yield pending.popleft()[0].result().unwrap()
                while pending:
                    yield pending.popleft()[0].result().unwrap()
            finally:
                for future, parcel in pending:
                    future.cancel()
                    parcel.discard()
                    if not future.cancelled() and future.exception() is None:
                        future.result().discard()


@contextlib.contextmanager
def _single_threaded_libraries():
    """BLAS and OpenCV on one thread while the work runs: ``n_workers`` processes use that many
    cores, and a piece of work gives the same bits in any of them (a multi-threaded BLAS sums in
    another order). Workers are forked with the setting: set inside a forked child, OpenCV can hang."""
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        with threadpoolctl.threadpool_limits(1):
            yield
    finally:
        cv2.setNumThreads(threads)


def _install(state: Any) -> None:
    """A worker's start: the state it works with."""
    global _state
    _state = state


def _call(function: Callable[[Any, Any], Any], parcel: "_Parcel") -> "_Parcel":
    return _Parcel.wrap(function(_state, parcel.unwrap()))


@dataclass(frozen=True)
class _Parcel:
    """An object pickled with its arrays out of band: in a file in shared memory (``/dev/shm``,
    else the temporary folder) if they hold ``_SHARE_ABOVE`` bytes or more, else (or if that
    file cannot be written, e.g. a container's /dev/shm is full) beside the pickle, in the
    parcel itself. The file is removed by whoever unwraps the parcel (or discards it)."""

    pickled: bytes
    path: str | None = None  # the file holding the arrays, back to back
    sizes: tuple[int, ...] = ()  # their sizes in the file
    inline: tuple[bytearray, ...] = ()  # or the arrays themselves

    @classmethod
    def wrap(cls, value: Any) -> "_Parcel":
        buffers: list[pickle.PickleBuffer] = []
        pickled = pickle.dumps(value, protocol=5, buffer_callback=buffers.append)
        arrays = [buffer.raw() for buffer in buffers]
        sizes = tuple(array.nbytes for array in arrays)
        path = _shared_file(arrays) if sum(sizes) >= _SHARE_ABOVE else None
        if path is None:
            return cls(pickled, inline=tuple(bytearray(array) for array in arrays))
        return cls(pickled, path, sizes)

    def unwrap(self) -> Any:
        if self.path is None:
            return pickle.loads(self.pickled, buffers=self.inline)
        try:
            with open(self.path, "rb", buffering=0) as f:
                buffers = [_read_exactly(f, size) for size in self.sizes]
        finally:
            os.unlink(self.path)
        return pickle.loads(self.pickled, buffers=buffers)

    def discard(self) -> None:
        """Remove the parcel's file if it is still there (its work was cancelled or failed)."""
        if self.path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)


def _shared_file(arrays: list[memoryview]) -> str | None:
    """A new file in :func:`shared_folder` holding ``arrays`` back to back, or None if it cannot
    be written (shared memory full)."""
    try:
        descriptor, path = tempfile.mkstemp(prefix=PARCEL_PREFIX, dir=shared_folder())
    except OSError:
        return None
    try:
        with os.fdopen(descriptor, "wb", buffering=0) as f:
            for array in arrays:
                _write_all(f, array)
    except OSError:
        os.unlink(path)
        return None
    except BaseException:
        os.unlink(path)
        raise
    return path


def shared_folder() -> str:
    """Where parcels are written: ``/dev/shm`` (memory), else the temporary folder."""
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else tempfile.gettempdir()


def parcel_files() -> list[str]:
    """Paths of the parcel files now in :func:`shared_folder` (of every engine run on this machine)."""
    folder = shared_folder()
    return [os.path.join(folder, name) for name in os.listdir(folder) if name.startswith(PARCEL_PREFIX)]


def _write_all(f, data: memoryview) -> None:
    data = data.cast("B")
    while data.nbytes:
        data = data[f.write(data):]


def _read_exactly(f, size: int) -> np.ndarray:
    buffer = np.empty(size, np.uint8)
    view, done = memoryview(buffer), 0
    while done < size:
        count = f.readinto(view[done:])
        if not count:
            raise EOFError(f"{f.name}: the worker's data ended after {done} of {size} bytes")
        done += count
    return buffer
