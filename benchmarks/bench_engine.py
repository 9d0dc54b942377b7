"""Benchmark: the built-in engine on a simulated recording, per stage and end to end.

Generates a simulated 1-photon recording (default 600x600 px x 3000 frames, 150 neurons, streamed
from the simulator into --workdir/movie.h5 once, uint8), then, each in a fresh child process:

1. the stages one after the other (motion correction, summary images, source extraction, traces,
   classification), each timed, with its peak RSS sampled every 20 ms from /proc/self/status;
2. run_engine end to end.

Prints frames/s, wall time and peak RSS per stage and overall next to the raw movie's in-memory
size, and the accuracy against the ground truth (miniscope_assets.simulation.evaluate).
--minian [PYTHON] also runs minian on the same movie (benchmarks/minian_runner.py, in an
interpreter where minian is installed; it is not a dependency) and prints its figures.

    python benchmarks/bench_engine.py [--size 600] [--frames 3000] [--neurons 150] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import scipy.sparse

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
        run_child(_write_movie, args, path)
        print(f"  generated in {time.perf_counter() - started:.1f} s", flush=True)
    return path


def _write_movie(args, path: Path) -> dict:
    from miniscope_assets.engine.h5movie import create_movie_dataset, open_for_streaming_write
    from miniscope_assets.io.atomic import atomic_path

    simulation = Simulation(config(args))
    with atomic_path(path) as temporary:
        with open_for_streaming_write(temporary, simulation.frame_shape, np.uint8) as f:
            data = create_movie_dataset(f, "movie", simulation.nframes, simulation.frame_shape, np.uint8)
            for first, frames in simulation.iter_chunks(100):
                data[first : first + len(frames)] = frames
    return {}


class RssSampler:
    """Peak resident memory per named phase, sampled from /proc/self/status in a thread."""

    def __init__(self, interval: float = 0.02):
        self.interval = interval
        self.phase = "setup"
        self.peaks: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def current_mib() -> float:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

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


def peak_rss_mib() -> float:
    """This process's peak RSS (VmHWM; ru_maxrss as a fallback)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _stages(args, movie_path: Path) -> dict:
    """Child: every stage on its own, timed and memory-sampled."""
    from miniscope_assets.engine import (
        classify_sources, compute_summary_images, correct_motion, extract_sources, extract_traces, validate_params,
    )
    from miniscope_assets.engine.pipeline import CORRECTED_MOVIE, assemble_result
    from miniscope_assets.io.corrected_movie import H5Movie

    params = validate_params(json.loads(args.params))
    work_dir = args.workdir / "stages"
    work_dir.mkdir(parents=True, exist_ok=True)
    movie = H5Movie(movie_path, "movie")
    timings: dict[str, float] = {}
    with RssSampler() as sampler:
        def timed(name, function, *a):
            sampler.enter(name)
            started = time.perf_counter()
            value = function(*a)
            timings[name] = time.perf_counter() - started
            sampler.enter("idle")
            return value

        motion = timed("motion_correction", correct_motion, movie, params, work_dir / CORRECTED_MOVIE)
        corrected = H5Movie(work_dir / CORRECTED_MOVIE)
        summary = timed("summary_images", compute_summary_images, corrected, params, motion.reference)
        sources = timed("source_extraction", extract_sources, corrected, params, work_dir, motion.border)
        traces = timed("traces", extract_traces, corrected, sources, params, FPS)
        classification = timed("classification", classify_sources, sources.footprints, movie.frame_shape,
                               traces.snr, summary.correlation, params)
    result = assemble_result(movie, params, FPS, motion, summary, sources, traces, classification, timings)
    figures = evaluate(result, Simulation(config(args)))
    figures.pop("trace_corr", None)
    return {"seconds": timings, "peak_mib": sampler.peaks, "process_peak_mib": peak_rss_mib(),
            "accuracy": figures, "notes": result.notes}


def _end_to_end(args, movie_path: Path) -> dict:
    """Child: run_engine as the pipeline calls it."""
    from miniscope_assets.engine import run_engine
    from miniscope_assets.io.corrected_movie import H5Movie

    started = time.perf_counter()
    result = run_engine(H5Movie(movie_path, "movie"), json.loads(args.params), args.workdir / "end_to_end", FPS)
    wall = time.perf_counter() - started
    figures = evaluate(result, Simulation(config(args)))
    figures.pop("trace_corr", None)
    return {"wall": wall, "process_peak_mib": peak_rss_mib(), "accuracy": figures, "masks": result.n_masks}


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
               "--diameter", str(json.loads(args.params).get("neuron_diameter", 10.0)),
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
            "median_iou", "median_trace_corr", "median_spike_corr")
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
    parser.add_argument("--skip-end-to-end", action="store_true", help="only the per-stage run")
    parser.add_argument("--minian", nargs="?", const=sys.executable, metavar="PYTHON",
                        help="also run minian for comparison, with this interpreter (default: this one)")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    movie_path = ensure_movie(args)
    with h5py.File(movie_path, "r") as f:
        raw_mib = f["movie"].size / 2**20
    print(f"movie: {args.size}x{args.size} px x {args.frames} frames ({raw_mib:.0f} MiB as uint8), "
          f"{args.neurons} neurons; params {args.params}", flush=True)

    stages = run_child(_stages, args, movie_path)
    rows = []
    for name, seconds in stages["seconds"].items():
        rows.append((name, f"{seconds:.1f}", f"{args.frames / seconds:.0f}", f"{stages['peak_mib'].get(name, 0):.0f}"))
    total = sum(stages["seconds"].values())
    rows.append(("all stages", f"{total:.1f}", f"{args.frames / total:.0f}", f"{stages['process_peak_mib']:.0f}"))
    print("\nper stage (fresh process):")
    _print_table(rows, ("stage", "wall s", "frames/s", "peak RSS MiB"))
    print(f"  raw movie in memory: {raw_mib:.0f} MiB; process peak / raw = {stages['process_peak_mib'] / raw_mib:.2f}")
    print(f"  notes: {json.dumps({k: stages['notes'][k] for k in ('motion', 'extraction', 'mask_types')})}")
    _print_accuracy(stages["accuracy"])

    if not args.skip_end_to_end:
        end = run_child(_end_to_end, args, movie_path)
        print(f"\nend to end (run_engine, fresh process): {end['wall']:.1f} s, {args.frames / end['wall']:.0f} frames/s, "
              f"peak RSS {end['process_peak_mib']:.0f} MiB ({end['process_peak_mib'] / raw_mib:.2f} x raw movie)")
        _print_accuracy(end["accuracy"])

    if args.minian:
        other = run_minian(args, movie_path)
        if other:
            print(f"\nminian (2 dask workers): {other['wall']:.1f} s, {args.frames / other['wall']:.0f} frames/s, "
                  f"peak RSS of all its processes {other['peak_mib']:.0f} MiB")
            _print_accuracy(other["accuracy"])


if __name__ == "__main__":
    main()
