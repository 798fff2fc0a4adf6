"""Does `vlmzoo compare --executor ray` give the local pool's answers? The same study on both executors (local
pool of `--cores` 1-thread processes; Ray started here with `--cores` CPUs, one 1-CPU task per run), printed
side by side per run, with each executor's wall time (interleaved in that order; compare them on one machine).

    python bench/compare_ray.py --steps 60 --seeds 2

The runs are the first two models of compare's default set (compare.default_configs()).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))

import pandas as pd  # noqa: E402

from vlmzoo.study.compare import compare, default_configs  # noqa: E402
from vlmzoo.study.executors import RayCluster  # noqa: E402
from vlmzoo.study.executors.ray_cluster import import_ray, local_runtime_env  # noqa: E402
from vlmzoo.training.train import FINAL_LOSS  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60, help="optimizer steps per run (batches of 32)")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--n-train", type=int, default=1000)
    parser.add_argument("--n-test", type=int, default=200)
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    ray = import_ray()
    configs = default_configs()[:2]
    study = dict(task="shapes", task_sizes={"n_train": args.n_train, "n_test": args.n_test}, budget=args.steps,
                 seeds=args.seeds, threads=1, progress=False, print_table=False)
    print(f"{len(configs)} models x {args.seeds} seeds, {args.steps} steps each; ray {ray.__version__}; "
          f"load before: {os.getloadavg()}", flush=True)
    started = time.perf_counter()
    local = compare(configs, workers=args.cores, **study).table
    local_wall = time.perf_counter() - started
    ray.init(num_cpus=args.cores, include_dashboard=False, runtime_env=local_runtime_env())
    started = time.perf_counter()
    on_ray = compare(configs, executor=RayCluster(threads=1), **study).table
    ray_wall = time.perf_counter() - started
    ray.shutdown()
    keys = ["model", "seed", "steps"]
    side = local[keys].copy()
    for column in ("accuracy", FINAL_LOSS):
        side[f"{column} local"], side[f"{column} ray"] = local[column], on_ray[column]
    pd.set_option("display.width", 200)
    print(side.to_string(index=False, float_format=lambda v: f"{v:.6f}"))
    same = (local[["accuracy", FINAL_LOSS]].to_numpy() == on_ray[["accuracy", FINAL_LOSS]].to_numpy()).all()
    print(f"identical to the digit: {bool(same)}; wall: local pool {local_wall:.1f} s, Ray {ray_wall:.1f} s "
          f"(ratio {ray_wall / local_wall:.2f}; Ray's includes its workers' start, not ray.init); "
          f"load after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
