"""Benchmark: raw Miniscope movie -> NWB (OnePhotonSeries, chunked + gzip), speed and peak memory.

Generates a V4 recording (default 600x600 px x 3000 frames, simulated 1-photon data) once into
--workdir, then runs the recording_info stage (read AVIs, write NWB) in a child process and
prints frames/s, wall time and that process's peak RSS next to the movie's in-memory size.

    python benchmarks/bench_ingest.py [--size 600] [--frames 3000] [--workdir /tmp/bench_ingest]
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import time
from pathlib import Path

from miniscope_assets.example import simulated_frames
from miniscope_assets.io.miniscope_writer import write_v4_recording
from miniscope_assets.nwb.raw import COMPRESSION
from miniscope_assets.simulation import Simulation, SimulationConfig
from miniscope_assets.stages import recording_info
from miniscope_assets.stages.table import RunOptions
from miniscope_assets.stages.workspace import Workspace


def ensure_recording(data_root: Path, size: int, frames: int) -> str:
    folder = f"bench_{size}px_{frames}f"
    if not (data_root / folder / "timeStamps.csv").is_file():
        print(f"generating {size}x{size} px x {frames} frames under {data_root / folder} ...", flush=True)
        started = time.perf_counter()
        simulation = Simulation(SimulationConfig(height=size, width=size, nframes=frames,
                                                 n_neurons=max(10, size * size // 2400), fps=20.0))
        write_v4_recording(data_root / folder, simulated_frames(simulation), fps=20.0, frames_per_file=1000)
        print(f"  generated in {time.perf_counter() - started:.1f} s", flush=True)
    return folder


def ingest(workspace: Workspace, folder: str, queue) -> None:
    """Child process: register and ingest, then report timings and peak RSS."""
    key = workspace.register(folder, workspace.read(folder).identity)
    started = time.perf_counter()
    report = recording_info.run(workspace.recording(key), RunOptions())
    wall = time.perf_counter() - started
    queue.put({"wall": wall, "peak_mib": peak_rss_mib(), "metadata": report.metadata})


def peak_rss_mib() -> float:
    """This process's peak RSS. VmHWM is reset by exec; ru_maxrss would carry over the parent's
    peak from before the spawn (generating the movie)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=600)
    parser.add_argument("--frames", type=int, default=3000)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bench_ingest"))
    args = parser.parse_args()
    workspace = Workspace(args.workdir / "data", args.workdir / "nwb", args.workdir / "work",
                          args.workdir / "paramsets.yaml")
    folder = ensure_recording(workspace.data_root, args.size, args.frames)
    queue = multiprocessing.get_context("spawn").Queue()
    process = multiprocessing.get_context("spawn").Process(target=ingest, args=(workspace, folder, queue))
    process.start()
    outcome = queue.get()
    process.join()
    meta = outcome["metadata"]
    nframes, height, width = meta["nframes"], meta["px_height"], meta["px_width"]
    movie_mib = nframes * height * width / 2**20
    avi_mib = sum(p.stat().st_size for p in (workspace.data_root / folder).glob("*.avi")) / 2**20
    print(f"movie            {nframes} frames of {height}x{width} px (uint8)")
    print(f"wall time        {outcome['wall']:.1f} s (read AVIs, write NWB, run nwbinspector)")
    print(f"throughput       {nframes / outcome['wall']:.0f} frames/s")
    print(f"peak RSS         {outcome['peak_mib']:.0f} MiB  (movie in memory: {movie_mib:.0f} MiB, "
          f"{100 * outcome['peak_mib'] / movie_mib:.0f}%)")
    print(f"AVI input        {avi_mib:.0f} MiB (FFV1)")
    print(f"NWB output       {meta['raw_nwb_size_mb']:.0f} MB ({COMPRESSION['compression']} level {COMPRESSION['compression_opts']}) at {meta['raw_nwb_path']}")


if __name__ == "__main__":
    main()
