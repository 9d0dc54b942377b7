"""Engine accuracy on independent ground truth: minisim cases from easy to a 600x600x3000 full field.

    .venv/bin/python benchmarks/bench_accuracy.py [--cases easy moderate ...] [--work DIR]

Each case is rendered by minisim (``miniscope_assets_tests/minisim_cases.py``; seeds from 100,
used nowhere else) in a child process into ``DIR/<case>.h5`` (uint8 movie) and ``<case>.npz``
(truth of the detectable cells), reused on later runs. The engine then runs with default
parameters in a fresh child process on the HDF5 movie, and the table gives per case: the neuron
diameter the engine measured (and the truth's); precision, recall and F1 of all masks and of the
soma class (Hungarian matching of centroids within half the median cell diameter), F1 by
footprint overlap (IoU >= 0.5 of the masks holding 90% of each footprint's weight: the default of
minisim's own scorer, ``minisim.testing.score``), median
correlation of the raw and the denoised traces with the true calcium and of the deconvolved
activity with the true spikes, motion RMS and largest error (px), wall time, CPU/wall and peak memory
of the engine's process and its workers (summed PSS, as in bench_engine.py). A second table gives
the recall by kind of true cell (``kinds_of_cells`` in ``miniscope_assets/simulation.py``): isolated,
close (a neighbour within a third of a diameter) and cut by the frame's edge.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_engine import RssSampler, cpu_seconds, run_child  # noqa: E402
from bench_ingest import peak_rss_mib  # noqa: E402

from miniscope_assets_tests.minisim_cases import MinisimCase, MinisimTruth  # noqa: E402

CASES = {
    "easy": MinisimCase("easy", size=256, seconds=60, density=12_000, motion_um=1.0, seed=100),
    "moderate": MinisimCase("moderate", size=300, seconds=100, density=16_000, motion_um=3.0, seed=101),
    "dense": MinisimCase("dense", size=300, seconds=100, density=30_000, motion_um=3.0, seed=102),
    "dim": MinisimCase("dim", size=300, seconds=100, density=16_000, photons=250, neuropil=0.8, bleaching=1.0,
                       motion_um=3.0, seed=103),
    "hard": MinisimCase("hard", size=300, seconds=100, density=45_000, photons=200, neuropil=1.0, bleaching=1.0,
                        motion_um=6.0, max_shift_um=12.0, seed=104),
    # minisim renders in memory at about 26 bytes per pixel-frame: 1500 frames (14 GB) is the
    # longest full field a 24 GiB machine renders; bench_engine.py measures 3000 frames' speed.
    "full field": MinisimCase("full field", size=600, seconds=75, density=45_000, motion_um=3.0, seed=105),
}


def render_case(case: MinisimCase, stem: Path) -> dict:
    """Child: render ``case`` and store the movie (HDF5) and the truth (npz)."""
    import dataclasses

    import h5py

    from miniscope_assets_tests.minisim_cases import simulate

    started = time.perf_counter()
    movie, truth = simulate(case)
    with h5py.File(stem.with_suffix(".h5.part"), "w") as f:
        f.create_dataset("corrected", data=movie, chunks=(16, *movie.shape[1:]))
    fields = {f.name: getattr(truth, f.name) for f in dataclasses.fields(truth) if f.name != "footprints"}
    footprints = truth.footprints.tocoo()
    partial = stem.parent / f"{stem.name}.part.npz"
    np.savez(partial, **fields, fp_row=footprints.row, fp_col=footprints.col, fp_data=footprints.data,
             fp_shape=footprints.shape)
    partial.rename(stem.with_suffix(".npz"))
    stem.with_suffix(".h5.part").rename(stem.with_suffix(".h5"))
    return {"seconds": time.perf_counter() - started, "peak_rss_mib": peak_rss_mib()}


def load_truth(path: Path) -> MinisimTruth:
    import scipy.sparse

    data = dict(np.load(path))
    footprints = scipy.sparse.csc_matrix((data.pop("fp_data"), (data.pop("fp_row"), data.pop("fp_col"))),
                                         shape=tuple(data.pop("fp_shape")))
    return MinisimTruth(footprints=footprints, frame_shape=tuple(int(v) for v in data.pop("frame_shape")),
                        fps=float(data.pop("fps")), diameter=float(data.pop("diameter")), **data)


def _run_engine(case: MinisimCase, movie_path: Path) -> dict:
    """Child: the engine with default parameters on the stored movie, scored against the truth."""
    import tempfile

    from miniscope_assets.engine import run_engine
    from miniscope_assets.engine.h5movie import H5Movie
    from miniscope_assets.simulation import evaluate

    truth = load_truth(movie_path.with_suffix(".npz"))
    with tempfile.TemporaryDirectory(dir=movie_path.parent) as work_dir, RssSampler() as sampler:
        wall, cpu = time.perf_counter(), cpu_seconds()
        result = run_engine(H5Movie(movie_path, "corrected"), {}, Path(work_dir), case.fps)
        wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
    figures = evaluate(result, truth)
    soma = evaluate(result.select(np.flatnonzero(result.mask_types == "soma")), truth)
    figures.update(soma_precision=soma["precision"], soma_recall=soma["recall"], soma_f1=soma["f1"],
                   wall_s=wall, cpu_per_wall=cpu / wall, peak_mib=max(sampler.peaks.values()), frames=result.nframes,
                   frame_shape=result.frame_shape, diameter_px=result.notes["neuron_size"]["diameter_px"],
                   true_diameter_px=truth.diameter)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument("--work", type=Path, default=Path("benchmarks/_accuracy"),
                        help="folder for the rendered movies (reused)")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.cases:
        case = CASES[name]
        stem = args.work / name.replace(" ", "_")
        if not stem.with_suffix(".h5").exists() or not stem.with_suffix(".npz").exists():
            rendered = run_child(render_case, case, stem)
            print(f"{name}: rendered in {rendered['seconds']:.0f} s (peak {rendered['peak_rss_mib']:.0f} MiB)",
                  flush=True)
        figures = run_child(_run_engine, case, stem.with_suffix(".h5"))
        rows.append((name, figures))
        print(f"{name}: {figures['n_true']} cells, F1 {figures['f1']:.3f}, {figures['wall_s']:.0f} s", flush=True)
    header = ("case", "frames", "cells", "diameter px (true)", "found", "precision", "recall", "F1", "soma P", "soma R",
              "soma F1", "IoU F1", "trace r", "denoised r", "spike r", "motion RMS", "motion max", "wall s", "frames/s", "CPU/wall", "peak MiB")
    table = []
    for name, f in rows:
        table.append((name, f"{f['frames']}x{f['frame_shape'][0]}x{f['frame_shape'][1]}", f["n_true"],
                      f"{f['diameter_px']:.1f} ({f['true_diameter_px']:.1f})", f["n_found"],
                      *(f"{f[k]:.3f}" for k in ("precision", "recall", "f1", "soma_precision", "soma_recall",
                                                "soma_f1", "iou_f1", "median_trace_corr", "median_denoised_corr",
                                                "median_spike_corr")),
                      f"{f['motion_rms_px']:.2f}", f"{f['motion_max_px']:.2f}", f"{f['wall_s']:.0f}",
                      f"{f['frames'] / f['wall_s']:.1f}", f"{f['cpu_per_wall']:.2f}", f"{f['peak_mib']:.0f}"))
    print("\n| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for row in table:
        print("| " + " | ".join(str(v) for v in row) + " |")
    kinds = list(rows[0][1]["recall_by_kind"]) if rows else []
    print("\n| case | " + " | ".join(f"recall {kind} (found/cells)" for kind in kinds) + " |")
    print("|" + "---|" * (len(kinds) + 1))
    for name, f in rows:
        cells = (f"{found / total:.3f} ({found}/{total})" if total else "-"
                 for found, total in f["recall_by_kind"].values())
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    multiprocessing.set_start_method("spawn", force=True)
    main()
