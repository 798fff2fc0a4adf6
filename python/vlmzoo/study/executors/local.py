"""The local executor: runs on this machine, in this process or in a pool of fresh Python processes (one per
run, so each run's peak RSS is its own), `workers` at a time."""
from __future__ import annotations

import os
import pickle
import subprocess
import sys
import tempfile
import traceback
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from vlmzoo.study.executors.base import Job

# Two 1-thread worker processes beat one 2-thread process on 2 cores: bench/compare_workers.py on an idle
# machine (2026-12-05, the default set's first two models, 200 steps each, 2 interleaved rounds): 28.2 s vs
# 34.8 s wall (0.81x); under load ~24 from other jobs (10 steps of the tiny preset) 295 s vs 881 s.
DEFAULT_WORKERS = min(2, os.cpu_count() or 1)


class LocalPool:
    """workers: runs at once, each in its own process with `threads` torch threads (default: the CPU cores
    shared out); None: DEFAULT_WORKERS (1 without isolate). isolate: one fresh Python process per run (its
    peak RSS is its own; works from a script without a main guard); workers > 1 needs it."""

    shows_run_output = True

    def __init__(self, workers: int | None = None, threads: int | None = None, isolate: bool = True):
        workers = (DEFAULT_WORKERS if isolate else 1) if workers is None else workers
        if workers < 1 or (workers > 1 and not isolate):
            raise ValueError(f"workers must be >= 1 and needs isolate=True when > 1, got workers={workers}")
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        if threads is None and workers > 1:
            threads = max(1, (os.cpu_count() or 1) // workers)
        self.workers, self.threads, self.isolate = workers, threads, isolate

    def describe(self) -> str:
        where = "local worker process" + ("es" if self.workers > 1 else "") if self.isolate else "this process"
        return f"{self.workers} {where} (torch threads per worker: {self.threads or 'default'})"

    def peak_memory_note(self) -> str:
        return "resident high-water mark (VmHWM) of the process that trained the model" + (
            " (one fresh process per run)" if self.isolate else " (shared process: a running maximum)")

    def run(self, fn: Callable[..., Any], jobs: Iterable[Job]) -> Iterator[tuple[Job, Any]]:
        jobs = list(jobs)
        if not self.isolate:
            for job in jobs:
                yield job, fn(*job.args)
        elif self.workers == 1:
            for job in jobs:
                yield job, run_isolated(fn, job)
        else:
            with ThreadPoolExecutor(max_workers=self.workers) as pool:  # threads only wait on the processes
                futures = {pool.submit(run_isolated, fn, job): job for job in jobs}
                for future in as_completed(futures):
                    yield futures[future], future.result()


def _isolated_worker(request: str, response: str) -> None:
    """Entry point of the fresh interpreter `run_isolated` starts: unpickle, run, pickle the outcome."""
    fn, args = pickle.loads(Path(request).read_bytes())
    try:
        outcome: dict[str, Any] = {"result": fn(*args), "error": None}
    except BaseException as error:  # noqa: BLE001  (handed to the parent, which re-raises it)
        outcome = {"result": None, "error": error, "traceback": traceback.format_exc()}
    try:
        payload = pickle.dumps(outcome)
    except Exception:  # an exception that does not pickle travels as its text
        payload = pickle.dumps({"result": None, "error": RuntimeError(outcome.get("traceback")), "traceback": ""})
    Path(response).write_bytes(payload)


def run_isolated(fn: Callable[..., Any], job: Job) -> Any:
    """fn(*job.args) in a fresh Python process, so its peak RSS is its own. fn travels by name (pickle), so it
    is a module-level function the child can import.

    A plain subprocess, not multiprocessing: multiprocessing's spawn re-imports the caller's main
    script in the child, which re-runs a top-level `compare(...)` without an
    `if __name__ == "__main__":` guard and breaks the pool. This child imports only vlmzoo (and fn's module)."""
    with tempfile.TemporaryDirectory(prefix="vlmzoo-compare-") as tmp:
        request, response = Path(tmp) / "request.pkl", Path(tmp) / "response.pkl"
        request.write_bytes(pickle.dumps((fn, job.args)))
        code = ("import sys; from vlmzoo.study.executors.local import _isolated_worker; "
                "_isolated_worker(sys.argv[1], sys.argv[2])")
        process = subprocess.run([sys.executable, "-c", code, str(request), str(response)], env=child_environment())
        if not response.is_file():
            raise RuntimeError(f"compare: the process training {job.label} exited with code {process.returncode} "
                               "before returning a result (killed for memory?)")
        outcome = pickle.loads(response.read_bytes())
    if outcome["error"] is not None:
        error = outcome["error"]
        if outcome.get("traceback"):
            error.add_note(f"in the process training {job.label}:\n{outcome['traceback']}")
        raise error
    return outcome["result"]


def child_environment() -> dict[str, str]:
    """This process's environment, with PYTHONPATH such that a child finds vlmzoo (and anything the caller
    imported) where this process does."""
    path = [p for p in sys.path if p] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])
    return {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
