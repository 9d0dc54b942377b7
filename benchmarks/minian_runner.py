"""Run minian's standard pipeline on an HDF5 movie, for bench_engine.py --minian.

minian is not a dependency of miniscope-assets (its pins clash with ours); install it into a
separate environment and pass that interpreter to the benchmark::

    python -m venv /tmp/minian-venv
    /tmp/minian-venv/bin/pip install minian h5py "xarray<2025.2" "pandas<2.3"
    python benchmarks/bench_engine.py --minian /tmp/minian-venv/bin/python

(minian 2.0.2 stores intermediates with zarr 2, which newer xarray no longer opens, and newer
pandas refuses the older xarray.)

This script follows minian's pipeline notebook (preprocessing, motion correction, seed
initialisation, two rounds of CNMF spatial/temporal updates) with its demo parameters scaled to
``--diameter``, on a local dask cluster, and writes footprints, raw traces (YrA: minian's
``compute_trace`` projects the movie on each footprint, so YrA already holds C), denoised C,
spikes S, rigid shifts, wall time and the peak RSS of the whole process tree to an .npz file.

    python benchmarks/minian_runner.py MOVIE.h5 DATASET OUT.npz [--diameter 10] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import threading
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


class TreeRss:
    """Peak summed RSS of this process and its children (dask workers), sampled every 0.2 s."""

    def __init__(self):
        import psutil

        self.process = psutil.Process()
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            total = 0
            for process in [self.process, *self.process.children(recursive=True)]:
                try:
                    total += process.memory_info().rss
                except Exception:  # a worker exiting between listing and reading
                    pass
            self.peak = max(self.peak, total)
            time.sleep(0.2)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def run(movie_path: Path, dataset: str, diameter: float, workdir: Path) -> dict:
    import dask
    import dask.array as da
    import h5py
    import numpy as np
    import xarray as xr
    from dask.distributed import Client, LocalCluster
    from minian.cnmf import compute_trace, get_noise_fft, unit_merge, update_background, update_spatial, update_temporal
    from minian.initialization import initA, initC, ks_refine, pnr_refine, seeds_init, seeds_merge
    from minian.motion_correction import apply_transform, estimate_motion
    from minian.preprocessing import denoise, remove_background
    from minian.utilities import get_optimal_chk, save_minian

    intpath = str(workdir / "intermediate")
    shutil.rmtree(intpath, ignore_errors=True)
    os.environ["MINIAN_INTERMEDIATE"] = intpath
    radius = int(round(diameter))
    dask.config.set({"distributed.worker.memory.terminate": False})
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, memory_limit="6GB", dashboard_address=None)
    client = Client(cluster)
    try:
        with h5py.File(movie_path, "r") as f:
            frames = f[dataset]
            shape = frames.shape
            raw = da.from_array(frames, chunks=(100, -1, -1))
            varr = xr.DataArray(
                raw, dims=("frame", "height", "width"),
                coords={"frame": np.arange(shape[0]), "height": np.arange(shape[1]), "width": np.arange(shape[2])},
                name="varr",
            )
            chk, _ = get_optimal_chk(varr, dtype=float)
            varr = save_minian(varr.chunk({"frame": chk["frame"], "height": -1, "width": -1}), intpath, overwrite=True)
        varr_ref = varr - varr.min("frame").compute()
        varr_ref = denoise(varr_ref, method="median", ksize=7)
        varr_ref = remove_background(varr_ref, method="tophat", wnd=int(1.5 * radius))
        varr_ref = save_minian(varr_ref.rename("varr_ref"), dpath=intpath, overwrite=True)
        motion = estimate_motion(varr_ref, dim="frame")
        motion = save_minian(motion.rename("motion").chunk({"frame": chk["frame"]}), intpath, overwrite=True)
        Y = apply_transform(varr_ref, motion, fill=0)
        Y_fm_chk = save_minian(Y.astype(np.float32).rename("Y_fm_chk"), intpath, overwrite=True)
        Y_hw_chk = save_minian(Y_fm_chk.rename("Y_hw_chk"), intpath, overwrite=True,
                               chunks={"frame": -1, "height": chk["height"], "width": chk["width"]})
        max_proj = save_minian(Y_fm_chk.max("frame").rename("max_proj"), intpath, overwrite=True).compute()
        seeds = seeds_init(Y_fm_chk, wnd_size=1000, method="rolling", stp_size=500, max_wnd=radius + 5, diff_thres=3)
        seeds, _, _ = pnr_refine(Y_hw_chk, seeds, noise_freq=0.06, thres=1)
        seeds = ks_refine(Y_hw_chk, seeds, sig=0.05)
        seeds = seeds[seeds["mask_ks"] & seeds["mask_pnr"]].reset_index(drop=True)
        seeds = seeds_merge(Y_hw_chk, max_proj, seeds, thres_dist=radius, thres_corr=0.8, noise_freq=0.06)
        A = initA(Y_hw_chk, seeds[seeds["mask_mrg"]], thres_corr=0.8, wnd=radius, noise_freq=0.06)
        A = save_minian(A.rename("A_init"), intpath, overwrite=True)
        C = initC(Y_fm_chk, A)
        C = save_minian(C.rename("C_init"), intpath, overwrite=True, chunks={"unit_id": 1, "frame": -1})
        A, C = unit_merge(A, C, thres_corr=0.8)
        A = save_minian(A.rename("A"), intpath, overwrite=True)
        C = save_minian(C.rename("C"), intpath, overwrite=True)
        C_chk = save_minian(C.rename("C_chk"), intpath, overwrite=True, chunks={"unit_id": -1, "frame": chk["frame"]})
        b, f = update_background(Y_fm_chk, A, C_chk)
        f = save_minian(f.rename("f"), intpath, overwrite=True)
        b = save_minian(b.rename("b"), intpath, overwrite=True)
        sn_spatial = save_minian(get_noise_fft(Y_hw_chk, noise_range=(0.06, 0.5)).rename("sn_spatial"),
                                 intpath, overwrite=True)
        min_size = int(np.pi * (radius / 2) ** 2 / 3)
        for round_index, jac_thres in enumerate((0.2, 0.4)):
            A_new, mask, norm_fac = update_spatial(Y_hw_chk, A, C, sn_spatial, dl_wnd=radius, sparse_penal=0.01,
                                                   size_thres=(min_size, None))
            C_new = save_minian((C.sel(unit_id=mask) * norm_fac).rename("C_new"), intpath, overwrite=True)
            C_chk_new = save_minian((C_chk.sel(unit_id=mask) * norm_fac).rename("C_chk_new"), intpath, overwrite=True)
            b_new, f_new = update_background(Y_fm_chk, A_new, C_chk_new)
            A = save_minian(A_new.rename("A"), intpath, overwrite=True, chunks={"unit_id": 1, "height": -1, "width": -1})
            b = save_minian(b_new.rename("b"), intpath, overwrite=True)
            f = save_minian(f_new.chunk({"frame": chk["frame"]}).rename("f"), intpath, overwrite=True)
            C = save_minian(C_new.rename("C"), intpath, overwrite=True)
            C_chk = save_minian(C_chk_new.rename("C_chk"), intpath, overwrite=True)
            YrA = save_minian(compute_trace(Y_fm_chk, A, b, C_chk, f).rename("YrA"), intpath, overwrite=True,
                              chunks={"unit_id": 1, "frame": -1})
            C_new, S_new, b0_new, c0_new, g, mask = update_temporal(
                A, C, YrA=YrA, noise_freq=0.06, sparse_penal=1, p=1, add_lag=20, jac_thres=jac_thres
            )
            C = save_minian(C_new.rename("C").chunk({"unit_id": 1, "frame": -1}), intpath, overwrite=True)
            C_chk = save_minian(C.rename("C_chk"), intpath, overwrite=True,
                                chunks={"unit_id": -1, "frame": chk["frame"]})
            S = save_minian(S_new.rename("S").chunk({"unit_id": 1, "frame": -1}), intpath, overwrite=True)
            A = A.sel(unit_id=C.coords["unit_id"].values)
            YrA = YrA.sel(unit_id=C.coords["unit_id"].values)
            if round_index == 0:
                A, C, [S] = unit_merge(A, C, [S], thres_corr=0.8)
                C_chk = save_minian(C.rename("C_chk"), intpath, overwrite=True,
                                    chunks={"unit_id": -1, "frame": chk["frame"]})
        A = A.compute().transpose("unit_id", "height", "width")
        footprints = A.values.reshape(A.sizes["unit_id"], -1)
        return {
            "footprints": footprints.astype(np.float32),
            "denoised": C.compute().transpose("unit_id", "frame").values.astype(np.float32),
            "fluorescence": YrA.compute().transpose("unit_id", "frame").values.astype(np.float32),
            "spikes": S.compute().transpose("unit_id", "frame").values.astype(np.float32),
            # minian's shifts move frames onto the template: the same convention as ours
            "shifts": motion.compute().transpose("frame", "shift_dim").values.astype(np.float32),
            "frame_shape": np.asarray(shape[1:]),
        }
    finally:
        client.close()
        cluster.close()


def main() -> None:
    import numpy as np

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("movie", type=Path)
    parser.add_argument("dataset")
    parser.add_argument("output", type=Path)
    parser.add_argument("--diameter", type=float, default=10.0)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/minian_work"))
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with TreeRss() as rss:
        arrays = run(args.movie, args.dataset, args.diameter, args.workdir)
    np.savez(args.output, wall=time.perf_counter() - started, peak_rss=rss.peak, **arrays)


if __name__ == "__main__":
    main()
