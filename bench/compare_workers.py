"""Is `vlmzoo compare` faster with models in parallel worker processes? Two 1-thread workers versus
one 2-thread worker (the default on 2 cores), the same runs, rounds interleaved so that changing load
from other processes hits both; prints wall times, their ratio, CPU seconds and the load average.

    python bench/compare_workers.py --steps 200 --rounds 2

The runs are the first two models of compare's default set (compare.default_configs()).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))

from vlmzoo.study.compare import compare, default_configs  # noqa: E402
from vlmzoo.data import make_task  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="optimizer steps per run (batches of 32)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    task = make_task("shapes", seed=0, n_train=2000, n_val=0, n_test=48)
    configs = default_configs()[:2]
    settings = [(1, args.cores), (args.cores, 1)]  # (workers, threads per worker)
    times: dict[tuple[int, int], list[float]] = {s: [] for s in settings}
    print(f"{len(configs)} runs of {args.steps} steps each, {args.rounds} rounds; load before: {os.getloadavg()}")
    for r in range(args.rounds):
        for workers, threads in settings:
            load, started = os.getloadavg()[0], time.perf_counter()
            table, _ = compare(configs, task=task, budget=args.steps, seeds=1, workers=workers, threads=threads,
                               curve_points=0, progress=False, print_table=False)
            wall = time.perf_counter() - started
            times[(workers, threads)].append(wall)
            print(f"round {r}: {workers} worker(s) x {threads} thread(s): {wall:7.1f} s wall, "
                  f"{table['cpu_time_s'].sum():7.1f} CPU s, load {load:.1f} -> {os.getloadavg()[0]:.1f}", flush=True)
    serial, parallel = (sum(times[s]) for s in settings)
    print(f"total: 1x{args.cores} {serial:.1f} s, {args.cores}x1 {parallel:.1f} s; "
          f"parallel / serial = {parallel / serial:.2f} (below 1: parallel workers are faster)")


if __name__ == "__main__":
    main()
