"""Specifications of `compare(executor="ray")`, on a Ray cluster started here with two 1-CPU workers: the same
results as the local worker pool to the digit, a run whose worker process is killed retried, `vlmzoo compare
--executor ray --resume` skipping the runs already stored (by either executor) on a Ray it starts itself, and a
clear error naming the extra when Ray is absent."""
import importlib
import os
import shutil
import signal
import sys
from pathlib import Path

import pandas as pd
import pytest
import ray

from vlmzoo.cli import main
from vlmzoo.study.executors import MissingExtraError, RayCluster
from vlmzoo.study.executors.ray_cluster import local_runtime_env
from vlmzoo.study.run_store import run_path
from vlmzoo.training.train import FINAL_LOSS

compare_module = importlib.import_module("vlmzoo.study.compare")
REAL_TRAIN_AND_EVALUATE = compare_module.train_and_evaluate  # as imported here: a Ray worker sees this one too
PRESET = "llava-1.5-micro"
MARKERS = "VLMZOO_TEST_KILL_MARKERS"  # the folder where train_or_die_once counts each run's attempts
# What decides a run's answers; wall times and memory differ between any two runs.
SAME = ["task", "model", "seed", "family", "params_total", "params_trainable", "visual_tokens_per_image",
        "train_gflops", "steps", "accuracy", FINAL_LOSS]


def start_ray(markers: Path) -> None:
    """Ray on this machine with 2 CPUs (two 1-CPU runs at once, each in its own worker process), unless a
    test left it running."""
    if not ray.is_initialized():
        runtime_env = local_runtime_env()  # workers import vlmzoo and this test module from where pytest does
        runtime_env["env_vars"][MARKERS] = str(markers)
        ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 * 2**20, runtime_env=runtime_env)


@pytest.fixture(scope="module")
def markers(tmp_path_factory):
    yield tmp_path_factory.mktemp("attempts")
    ray.shutdown()


@pytest.fixture
def cluster(markers):
    start_ray(markers)
    return markers


# The study the CLI line below runs too: `--n-train 32 --n-test 16 --budget 3 --batch-size 4 --curve-points 2`.
TASK_SIZES = {"n_train": 32, "n_test": 16}
CLI_STUDY = ["compare", PRESET, "--n-train", "32", "--n-test", "16", "--budget", "3", "--batch-size", "4",
             "--curve-points", "2", "--threads", "1"]


def small_compare(out, **kwargs):
    return compare_module.compare([PRESET], task="shapes", task_sizes=TASK_SIZES, budget="3", batch_size=4,
                                  curve_points=2, out=out, threads=1, progress=False, print_table=False, **kwargs)


@pytest.fixture(scope="module")
def local_and_ray(markers, tmp_path_factory):
    """Two seeds of the micro LLaVA, once on the local pool (two 1-thread processes), once as Ray tasks."""
    start_ray(markers)
    local = small_compare(tmp_path_factory.mktemp("local"), seeds=2, workers=2)
    on_ray = small_compare(tmp_path_factory.mktemp("ray"), seeds=2, executor="ray")
    return local, on_ray


def train_or_die_once(name, config, task, budget, seed, *rest):
    """train_and_evaluate, but the worker process kills itself (SIGKILL, as the OOM killer would) on a run's
    first attempt; the attempts are counted in a file per run."""
    marker = Path(os.environ[MARKERS]) / f"{name}-seed-{seed}"
    attempts = int(marker.read_text()) + 1 if marker.exists() else 1
    marker.write_text(str(attempts))
    if attempts == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return REAL_TRAIN_AND_EVALUATE(name, config, task, budget, seed, *rest)


def test_ray_gives_the_local_pools_results_to_the_digit(local_and_ray):
    local, on_ray = local_and_ray
    print("\nlocal pool vs Ray (same runs):\n"
          + pd.concat({"local": local.table[SAME], "ray": on_ray.table[["accuracy", FINAL_LOSS]]}, axis=1)
          .to_string())
    assert list(on_ray.table["seed"]) == [0, 1]
    pd.testing.assert_frame_equal(on_ray.table[SAME], local.table[SAME], check_exact=True)
    pd.testing.assert_frame_equal(on_ray.points, local.points, check_exact=True)  # learning curves
    assert on_ray.table.attrs["loss_curves"] == local.table.attrs["loss_curves"]
    assert "Ray worker process" in on_ray.table.attrs["peak_memory"]
    assert (on_ray.table["peak_rss_mib"] > 0).all()


def test_ray_writes_the_same_files_as_the_local_pool(local_and_ray):
    local, on_ray = local_and_ray
    local_out, ray_out = Path(local.report).parent, Path(on_ray.report).parent
    for name in ("results.csv", "summary.csv", "learning_curves.csv", "loss_curves.csv", "configs.json",
                 "learning_curves_shapes.png", "report.md"):
        assert (ray_out / name).is_file(), name
    pd.testing.assert_frame_equal(pd.read_csv(ray_out / "results.csv")[SAME],
                                  pd.read_csv(local_out / "results.csv")[SAME], check_exact=True)
    assert sorted(p.relative_to(ray_out) for p in (ray_out / "runs").rglob("*.json")) == \
        sorted(p.relative_to(local_out) for p in (local_out / "runs").rglob("*.json"))
    assert "Ray" in on_ray.report.read_text()


def test_a_run_whose_worker_is_killed_is_retried(local_and_ray, cluster, tmp_path, monkeypatch):
    local, _ = local_and_ray
    monkeypatch.setattr(compare_module, "train_and_evaluate", train_or_die_once)
    retried = small_compare(tmp_path, seeds=[0], executor="ray")
    assert (cluster / f"{PRESET}-seed-0").read_text() == "2"  # killed once, then trained
    pd.testing.assert_frame_equal(retried.table[SAME], local.table[SAME].iloc[:1], check_exact=True)
    assert run_path(tmp_path, "shapes", PRESET, 0).is_file()


def test_a_run_whose_worker_dies_more_often_than_allowed_fails_naming_it(cluster, tmp_path, monkeypatch):
    monkeypatch.setattr(compare_module, "train_and_evaluate", train_or_die_once)
    with pytest.raises(RuntimeError, match=rf"'{PRESET}' seed 7 died 1 time\(s\) \(max_retries=0"):
        small_compare(tmp_path, seeds=[7], executor=RayCluster(threads=1, max_retries=0))
    assert (cluster / f"{PRESET}-seed-7").read_text() == "1"


def test_without_ray_the_executor_is_an_error_naming_the_extra(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(MissingExtraError, match=r"pip install 'vlmzoo\[ray\]'"):
        small_compare(tmp_path, seeds=1, executor="ray")
    assert main(["compare", PRESET, "--executor", "ray", "--out", str(tmp_path), "--quiet"]) == 2
    assert "pip install 'vlmzoo[ray]'" in capsys.readouterr().err


def test_the_executor_arguments_are_checked(tmp_path):
    with pytest.raises(ValueError, match="executor must be one of 'local', 'ray'"):
        small_compare(tmp_path, seeds=1, executor="dask")
    with pytest.raises(ValueError, match="address='auto' needs executor='ray'"):
        small_compare(tmp_path, seeds=1, address="auto")
    with pytest.raises(ValueError, match="isolate=False"):
        small_compare(tmp_path, seeds=1, executor="ray", isolate=False)


def test_the_cli_resumes_on_a_ray_it_starts_itself_training_only_the_runs_not_stored(local_and_ray, tmp_path,
                                                                                      capsys):
    local, _ = local_and_ray
    ray.shutdown()  # no Ray here: without --address, `vlmzoo compare --executor ray` starts one on this machine
    local_out = Path(local.report).parent
    shutil.copytree(local_out / "runs", tmp_path / "runs")
    run_path(tmp_path, "shapes", PRESET, 1).unlink()  # seed 0 is stored (by the local pool), seed 1 is not
    resume = CLI_STUDY + ["--seeds", "2", "--executor", "ray", "--resume", "--out", str(tmp_path)]
    assert main(resume) == 0
    printed = capsys.readouterr().out
    assert "[1/1] 'llava-1.5-micro' seed 1: accuracy" in printed and "1 runs trained, 1 reused" in printed
    assert not ray.is_initialized()  # the Ray it started is shut down
    assert run_path(tmp_path, "shapes", PRESET, 1).is_file()
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "results.csv")[SAME],
                                  pd.read_csv(local_out / "results.csv")[SAME], check_exact=True)
    assert main(resume) == 0  # everything stored: nothing trained, no Ray started
    assert "0 runs trained, 2 reused" in capsys.readouterr().out
    assert not ray.is_initialized()
