"""Worker processes for the engine's independent pieces of work (frame chunks, patches).

``ordered_map(function, items, state, n_workers)`` yields ``function(state, item)`` for every item,
in order. With one worker it runs in this process; with more, in a pool of forked processes that
inherit ``state`` (templates, parameters: never pickled) and receive each item by pipe. Either
way the numeric libraries (BLAS, OpenCV) run single-threaded meanwhile, so ``n_workers`` is the
number of cores used and every piece of work gives the same bits whatever the worker count. At most
``2 x n_workers`` items are in flight, so a lazily read movie stays streamed and memory flat.
"""

from __future__ import annotations

import collections
import contextlib
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable, Iterable, Iterator

import cv2
import threadpoolctl

from miniscope_assets.errors import ParameterError

_state: Any = None  # a worker process's inherited state


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
            pending: collections.deque = collections.deque()
            try:
                for item in items:
                    pending.append(pool.submit(_call, function, item))
                    if len(pending) >= 2 * n_workers:
                        yield pending.popleft().result()
                while pending:
                    yield pending.popleft().result()
            finally:
                for future in pending:
                    future.cancel()


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


def _call(function: Callable[[Any, Any], Any], item: Any) -> Any:
    return function(_state, item)
