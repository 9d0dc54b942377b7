"""Benchmark: the built-in engine on a simulated recording, per stage and end to end.

Generates a simulated 1-photon recording (default 600x600 px x 3000 frames, 150 neurons, streamed
from the simulator into --workdir/movie.h5 once, uint8), then, per --workers value, runs
run_engine in a fresh child process: every stage timed by the engine, with its CPU time (this
process and its workers, from the stage's start to the next one's, as the engine's progress
reports them) and its peak memory (the summed proportional set size of this process and its
workers, sampled every 100 ms).

Prints per stage and for the whole run wall time, frames/s, CPU/wall and peak memory, the time
to read the movie once (the floor) and the run's multiple of it, the scaling between the fewest
and most workers, the peak next to the raw movie's in-memory size, and the accuracy against the
ground truth (miniscope_assets.simulation.evaluate).
--minian [PYTHON] also runs minian on the same movie (benchmarks/minian_runner.py, in an
interpreter where minian is installed; it is not a dependency) and prints its figures.

    python benchmarks/bench_engine.py [--size 600] [--frames 3000] [--neurons 150] [--workers 1 2] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import scipy.sparse

from miniscope_assets.engine.workers import parcel_files, worker_count
from miniscope_assets.results import ProcessingResult, RigidMotion, SummaryImages
from miniscope_assets.simulation import Simulation, SimulationConfig, evaluate

FPS = 20.0


def config(args) -> SimulationConfig:
    return SimulationConfig(height=args.size, width=args.size, nframes=args.frames, n_neurons=args.neurons,
                            fps=FPS, seed=args.seed, nonrigid_amplitude=args.nonrigid)


def ensure_movie(args) -> Path:
    """Write the simulated movie to HDF5 once (in a child process, so its memory is not counted)."""
    path = args.workdir / f"movie_{args.size}px_{args.frames}f_{args.neurons}n_seed{args.seed}_nr{args.nonrigid:g}.h5"
    if not path.is_file():
        print(f"generating {args.size}x{args.size} px x {args.frames} frames, {args.neurons} neurons -> {path}", flush=True)
        started = time.perf_counter()
        run_child(write_simulated_movie, config(args), path)
        print(f"  generated in {time.perf_counter() - started:.1f} s", flush=True)
    return path


def write_simulated_movie(simulation_config: SimulationConfig, path: Path) -> dict:
    """Child: render the project simulator's movie into ``path`` (HDF5 dataset ``movie``, uint8)."""
    from miniscope_assets.atomic import atomic_path
    from miniscope_assets.engine.h5movie import create_frame_file

    simulation = Simulation(simulation_config)
    with atomic_path(path) as temporary:
        movie = create_frame_file(temporary, "movie", simulation.nframes, simulation.frame_shape, np.uint8)
        for first, frames in simulation.iter_chunks(100):
            movie.write(first, frames)
    return {}


class RssSampler:
    """Peak memory per named phase of this process and its worker processes (the sum of their
    proportional set sizes, so pages shared after fork count once, plus the files in shared
    memory that carry chunks between them, whose pages no process's PSS holds), sampled in a
    thread."""

    def __init__(self, interval: float = 0.1):
        self.interval = interval
        self.phase = "setup"
        self.peaks: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def current_mib() -> float:
        total_kib = 0
        for pid in _process_tree(os.getpid()):
            try:
                for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                    if line.startswith("Pss:"):
                        total_kib += int(line.split()[1])
            except OSError:  # the worker ended meanwhile
                pass
        return total_kib / 1024 + _parcel_bytes() / 2**20

    def _run(self) -> None:
        while not self._stop.is_set():
            rss = self.current_mib()
            self.peaks[self.phase] = max(self.peaks.get(self.phase, 0.0), rss)
            time.sleep(self.interval)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def enter(self, phase: str) -> None:
        rss = self.current_mib()
        self.peaks[self.phase] = max(self.peaks.get(self.phase, 0.0), rss)
        self.phase = phase
        self.peaks[phase] = max(self.peaks.get(phase, 0.0), rss)


def _parcel_bytes() -> int:
    """Bytes of the engine workers' parcels now in shared memory (see engine/workers.py)."""
    total = 0
    for path in parcel_files():
        try:
            total += os.stat(path).st_size
        except OSError:  # read and removed meanwhile
            pass
    return total


def _process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants."""
    tree, pending = [], [pid]
    while pending:
        current = pending.pop()
        tree.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                pending.extend(int(child) for child in (task / "children").read_text().split())
            except OSError:
                pass
    return tree


def cpu_seconds() -> float:
    """CPU time of this process and of its ended worker processes."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def read_floor(movie) -> float:
    """Seconds to read every frame of ``movie`` once: the floor of any pass over it."""
    started = time.perf_counter()
    for _ in movie.iter_chunks(100):
        pass
    return time.perf_counter() - started


def _run(args, movie_path: Path) -> dict:
    """Child: run_engine, each stage timed by the engine, its CPU time and peak memory taken from
    the stage's start to the next one's (as its progress reports them)."""
    from miniscope_assets.engine import run_engine
    from miniscope_assets.engine.h5movie import H5Movie

    movie = H5Movie(movie_path, "movie")
    floor = read_floor(movie)
    cpu: dict[str, float] = {}
    phase = {"stage": "setup", "cpu": cpu_seconds()}
    with RssSampler() as sampler:
        def enter(stage: str) -> None:
            now = cpu_seconds()
            cpu[phase["stage"]] = cpu.get(phase["stage"], 0.0) + now - phase["cpu"]
            phase.update(stage=stage, cpu=now)
            sampler.enter(stage)

        def progress(stage: str, fraction: float) -> None:
            if stage != phase["stage"]:
                enter(stage)

        started, cpu_started = time.perf_counter(), cpu_seconds()
        result = run_engine(movie, json.loads(args.params), args.workdir / "run", FPS, progress=progress,
                            n_workers=args.current_workers)
        wall, total_cpu = time.perf_counter() - started, cpu_seconds() - cpu_started
        enter("idle")
    simulation = Simulation(config(args))
    figures = evaluate(result, simulation)
    soma = evaluate(result.select(np.flatnonzero(result.mask_types == "soma")), simulation)
    figures.update(soma_precision=soma["precision"], soma_recall=soma["recall"], soma_f1=soma["f1"])
    figures.pop("trace_corr", None)
    return {"seconds": result.notes["stage_seconds"], "cpu": cpu, "peak_mib": sampler.peaks, "floor": floor,
            "wall": wall, "total_cpu": total_cpu, "process_peak_mib": max(sampler.peaks.values()),
            "accuracy": figures, "notes": result.notes}


def run_minian(args, movie_path: Path) -> dict | None:
    """minian on the same movie through benchmarks/minian_runner.py in ``args.minian``'s interpreter."""
    check = subprocess.run([args.minian, "-c", "import minian"], capture_output=True, text=True)
    if check.returncode != 0:
        print(f"\nminian: not importable with {args.minian} (install it in a separate environment, "
              f"see benchmarks/minian_runner.py) - skipped")
        return None
    output = args.workdir / "minian_result.npz"
    runner = Path(__file__).with_name("minian_runner.py")
    command = [args.minian, str(runner), str(movie_path), "movie", str(output),
               "--diameter", str(json.loads(args.params).get("neuron_diameter") or 10.0),
               "--workdir", str(args.workdir / "minian")]
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        print(f"\nminian: failed ({completed.stderr.strip().splitlines()[-1:]}) - skipped")
        return None
    data = np.load(output)
    k, frame_shape = data["footprints"].shape[0], tuple(int(v) for v in data["frame_shape"])
    result = ProcessingResult(
        method="minian", package_version="", params={}, creation_time=None, frame_shape=frame_shape,
        nframes=args.frames, summary=SummaryImages(mean=np.zeros(frame_shape)), mask_ids=np.arange(k),
        footprints=scipy.sparse.csc_matrix(data["footprints"].T), mask_types=np.full(k, "soma", object),
        mask_confidence=np.ones(k), fluorescence=data["fluorescence"], spikes=data["spikes"],
        motion_rigid=RigidMotion(x_shifts=data["shifts"][:, 1], y_shifts=data["shifts"][:, 0]),
    )
    figures = evaluate(result, Simulation(config(args)))
    figures.pop("trace_corr", None)
    return {"wall": float(data["wall"]), "peak_mib": float(data["peak_rss"]) / 2**20, "accuracy": figures}


def _child(function, args, movie_path, queue) -> None:
    try:
        queue.put(function(args, movie_path))
    except BaseException as error:  # report, the parent prints it
        queue.put({"error": f"{type(error).__name__}: {error}"})
        raise


def run_child(function, args, movie_path: Path) -> dict:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_child, args=(function, args, movie_path, queue))
    process.start()
    report = queue.get()
    process.join()
    if "error" in report:
        raise RuntimeError(report["error"])
    return report


def _print_table(rows: list[tuple], header: tuple) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  " + "  ".join(str(v).rjust(w) for v, w in zip(row, widths)))


def _print_accuracy(figures: dict) -> None:
    keys = ("motion_rms_px", "n_true", "n_found", "n_matched", "precision", "recall", "f1",
            "median_iou", "median_trace_corr", "median_spike_corr", "soma_precision", "soma_recall", "soma_f1")
    print("  " + ", ".join(f"{k}={figures[k]:.3f}" if isinstance(figures.get(k), float) else f"{k}={figures.get(k)}"
                           for k in keys if k in figures))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=600, help="frame height and width, px")
    parser.add_argument("--frames", type=int, default=3000)
    parser.add_argument("--neurons", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--nonrigid", type=float, default=0.0, help="simulated non-rigid (shear) amplitude, px")
    parser.add_argument("--params", default="{}", help="engine params as JSON")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bench_engine"))
    parser.add_argument("--workers", type=int, nargs="+", default=[0],
                        help="engine worker processes, one run per value (0: every core), e.g. --workers 1 2")
    parser.add_argument("--minian", nargs="?", const=sys.executable, metavar="PYTHON",
                        help="also run minian for comparison, with this interpreter (default: this one)")
    args = parser.parse_args()
    args.workers = [worker_count(w) for w in args.workers]
    args.workdir.mkdir(parents=True, exist_ok=True)
    movie_path = ensure_movie(args)
    with h5py.File(movie_path, "r") as f:
        raw_mib = f["movie"].size / 2**20
    print(f"movie: {args.size}x{args.size} px x {args.frames} frames ({raw_mib:.0f} MiB as uint8), "
          f"{args.neurons} neurons; params {args.params}", flush=True)

    totals = {}
    for workers in args.workers:
        args.current_workers = workers
        run = run_child(_run, args, movie_path)
        floor = run["floor"]
        rows = []
        for name, seconds in run["seconds"].items():
            rows.append((name, f"{seconds:.1f}", f"{args.frames / seconds:.0f}", f"{run['cpu'][name] / seconds:.2f}",
                         f"{run['peak_mib'].get(name, 0):.0f}"))
        total = run["wall"]
        totals[workers] = total
        rows.append(("run_engine", f"{total:.1f}", f"{args.frames / total:.0f}", f"{run['total_cpu'] / total:.2f}",
                     f"{run['process_peak_mib']:.0f}"))
        print(f"\n{workers} worker(s), run_engine in a fresh process (memory: this process and its workers):")
        _print_table(rows, ("stage", "wall s", "frames/s", "CPU/wall", "peak MiB"))
        print(f"  reading the movie once (the floor): {floor:.1f} s ({args.frames / floor:.0f} frames/s); "
              f"run_engine = {total / floor:.1f} x the floor")
        print(f"  raw movie in memory: {raw_mib:.0f} MiB; peak / raw = {run['process_peak_mib'] / raw_mib:.2f}")
        notes = ("neuron_size", "motion", "extraction", "mask_types")
        print(f"  notes: {json.dumps({k: run['notes'][k] for k in notes})}")
        _print_accuracy(run["accuracy"])
    if len(totals) > 1:
        fewest, most = min(totals), max(totals)
        print(f"\nscaling: {most} workers are {totals[fewest] / totals[most]:.2f} x as fast as {fewest}")

    if args.minian:
        other = run_minian(args, movie_path)
        if other:
            print(f"\nminian (2 dask workers): {other['wall']:.1f} s, {args.frames / other['wall']:.0f} frames/s, "
                  f"peak RSS of all its processes {other['peak_mib']:.0f} MiB")
            _print_accuracy(other["accuracy"])


if __name__ == "__main__":
    main()
