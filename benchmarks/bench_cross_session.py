"""Benchmark: cross-session registration accuracy and time for 2, 5 and 10 sessions.

Simulates sessions of one population of ~300 cells (miniscope_assets.simulation.simulate_sessions:
field of view shifted up to 20 px and rotated up to 5 degrees between sessions, optionally
deformed smoothly by up to --deformation px, each cell active in a session with probability
0.85), registers them with the engine and prints, per session count and deformation: precision
and recall of the matched ROI pairs over all session pairs (truth: cells active in both), the
largest alignment error, wall and CPU time, and the process's peak RSS.

    python benchmarks/bench_cross_session.py [--cells 300] [--size 300] [--sessions 2 5 10]
                                             [--deformation 0 3] [--seed 0]
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np

from miniscope_assets.engine.cross_session import register_sessions
from miniscope_assets.simulation import alignment_error_px, registration_accuracy, simulate_sessions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=300)
    parser.add_argument("--size", type=int, default=300)
    parser.add_argument("--sessions", type=int, nargs="+", default=[2, 5, 10])
    parser.add_argument("--deformation", type=float, nargs="+", default=[0.0, 3.0])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"{'deform px':>9} {'sessions':>8} {'cells/session':>13} {'precision':>9} {'recall':>7} "
          f"{'align err px':>12} {'wall s':>7} {'CPU/wall':>8} {'peak RSS MiB':>12}")
    for deformation, count in ((d, n) for d in args.deformation for n in args.sessions):
        sessions = simulate_sessions(count, n_cells=args.cells, size=args.size, deformation=deformation,
                                     seed=args.seed)
        wall, cpu = time.perf_counter(), time.process_time()
        registration = register_sessions([s.cells for s in sessions])
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        precision, recall = registration_accuracy(sessions, registration)
        per_session = np.mean([len(s.cells.roi_ids) for s in sessions])
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"{deformation:>9.0f} {count:>8} {per_session:>13.0f} {precision:>9.4f} {recall:>7.4f} "
              f"{alignment_error_px(sessions, registration):>12.2f} {wall:>7.2f} {cpu / wall:>8.2f} {rss:>12.0f}")


if __name__ == "__main__":
    main()
