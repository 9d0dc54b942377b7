"""Benchmark: one recording x one or two paramsets through every asset, as `miniscope-assets run` does it.

Generates a V4 recording once (default 600x600 px x 3000 frames of simulated 1-photon data, FFV1
AVIs; the same as bench_ingest.py) and, in a child process, runs the whole chain for two paramsets
that share their motion parameters (default, and a stricter seed threshold; with ``--paramsets 1``
the default alone, as a lab processing each session once) through the Dagster
jobs against a fresh SQLite instance. Prints, per asset and partition: wall time, bytes the
process wrote (/proc/self/io), CPU/wall (with the engine's worker processes) and peak RSS so
far; then the time to decode the AVIs once (the
floor), the chain's wall time and its multiple of the floor, CPU/wall, the share of the container
stages after processing, and the bytes on disk (NWB files, intermediates) over the AVI bytes.

    python benchmarks/bench_chain.py [--size 600] [--frames 3000] [--paramsets 2] [--workers N]
                                     [--workdir /tmp/bench_chain]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_engine import cpu_seconds, read_floor  # noqa: E402
from bench_ingest import ensure_recording, peak_rss_mib  # noqa: E402

PARAMSETS = [
    {"name": "default", "method": "builtin", "description": "built-in engine, defaults"},
    {"name": "strict", "method": "builtin", "description": "higher seed threshold", "params": {"min_pnr": 12.0}},
]


def written_bytes() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def decode_floor(data_root: Path, folder: str) -> float:
    """Seconds to decode every frame of the recording's AVIs once."""
    from miniscope_assets.io.recording import read_recording

    return read_floor(read_recording(data_root, folder).movie(data_root))


def run_chain(workdir: Path, folder: str, workers: int, queue) -> None:
    """Child process: the CLI's run with every stage timed and its writes counted; the engine in
    ``workers`` processes."""
    os.environ["MINISCOPE_WORKERS"] = str(workers)
    from miniscope_assets import settings
    from miniscope_assets.cli import run_recordings
    from miniscope_assets.stages import table

    rows = []
    original = table.Stage.run

    def measured(stage, target, options=table.RunOptions()):
        started, cpu, written = time.perf_counter(), cpu_seconds(), written_bytes()
        report = original(stage, target, options)
        label = getattr(getattr(target, "paramset", None), "name", "-")
        rows.append((stage.name, label, time.perf_counter() - started, cpu_seconds() - cpu,
                     written_bytes() - written, peak_rss_mib()))
        return report

    table.Stage.run = measured
    current = settings.from_env({"MINISCOPE_WORK_FOLDER": str(workdir), "MINISCOPE_DATA_ROOT": str(workdir / "data"),
                                 "DAGSTER_HOME": str(workdir / "dagster_home")})
    started, cpu = time.perf_counter(), cpu_seconds()
    run_recordings(current, folder, None)
    queue.put({"rows": rows, "wall": time.perf_counter() - started, "cpu": cpu_seconds() - cpu,
               "peak_mib": peak_rss_mib()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=600)
    parser.add_argument("--frames", type=int, default=3000)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bench_chain"))
    parser.add_argument("--workers", type=int, default=0, help="engine worker processes (0: every core)")
    parser.add_argument("--paramsets", type=int, choices=(1, 2), default=2, help="paramsets run (default first)")
    args = parser.parse_args()
    data_root = args.workdir / "data"
    folder = ensure_recording(data_root, args.size, args.frames)
    for name in ("nwb", "processing", "dagster_home"):  # a fresh run every time; the recording is kept
        shutil.rmtree(args.workdir / name, ignore_errors=True)
    (data_root / "paramsets.yaml").write_text(yaml.safe_dump({"paramsets": PARAMSETS[: args.paramsets]}, sort_keys=False))
    floor = decode_floor(data_root, folder)
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=run_chain, args=(args.workdir, folder, args.workers, queue))
    process.start()
    outcome = queue.get()
    process.join()
    frames = args.frames
    print(f"recording        {frames} frames of {args.size}x{args.size} px, {args.paramsets} paramset(s), {os.cpu_count()} cores, "
          f"MINISCOPE_WORKERS={args.workers}")
    print(f"{'asset':<20} {'paramset':<9} {'wall s':>8} {'CPU/wall':>9} {'written MB':>11} {'peak RSS MiB':>13}")
    for name, paramset, wall, cpu, written, peak in outcome["rows"]:
        print(f"{name:<20} {paramset:<9} {wall:8.1f} {cpu / max(wall, 1e-9):9.2f} {written / 1e6:11.1f} {peak:13.0f}")
    wall = outcome["wall"]
    containers = sum(r[2] for r in outcome["rows"] if r[0] not in ("recording_info", "processing", "curation"))
    avi = sum(p.stat().st_size for p in (data_root / folder).glob("*.avi"))
    nwb, work = folder_bytes(args.workdir / "nwb"), folder_bytes(args.workdir / "processing")
    print(f"decode floor     {floor:.1f} s ({frames / floor:.0f} frames/s)")
    print(f"whole chain      {wall:.1f} s = {frames / wall:.1f} frames/s = {wall / floor:.1f} x the floor; "
          f"CPU/wall {outcome['cpu'] / wall:.2f}; peak RSS {outcome['peak_mib']:.0f} MiB (the run's process; "
          f"bench_engine.py measures the engine's workers too)")
    print(f"container stages {containers:.1f} s = {100 * containers / wall:.1f}% of the chain")
    print(f"bytes written    {sum(r[4] for r in outcome['rows']) / 1e6:.0f} MB by the stages")
    print(f"on disk          AVIs {avi / 1e6:.0f} MB; NWB files {nwb / 1e6:.0f} MB ({nwb / avi:.2f} x); "
          f"intermediates {work / 1e6:.0f} MB; all outputs {(nwb + work) / avi:.2f} x the AVIs")


if __name__ == "__main__":
    main()
