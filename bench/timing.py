"""What the CPU benchmarks share (ops_cpu.py, linear_cpu.py, the *_vs_transformers.py end-to-end benchmarks): the timing harness (interleaved rounds, the best
round of each candidate, calls per round sized so that a round takes about `min_time`) and the machine and
commit their RESULTS.md headers name."""
from __future__ import annotations

import os
import platform
import subprocess
import time

CLOCK = time.perf_counter  # wall clock; use_thread_clock() switches to the calling thread's CPU time


def use_thread_clock() -> None:
    """Measure the calling thread's CPU time instead of wall time (one thread only: --clock cpu)."""
    global CLOCK
    CLOCK = time.thread_time


def timeit(candidates, rounds, min_time=2e-3, warmup=3):
    """Seconds per call of each candidate: the best of interleaved rounds."""
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    calls = {}
    for name, fn in candidates.items():  # calls per round so that one round takes ~min_time
        start, n = CLOCK(), 0
        while CLOCK() - start < min_time:
            fn()
            n += 1
        calls[name] = max(1, n)
    samples = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, fn in candidates.items():
            start = CLOCK()
            for _ in range(calls[name]):
                fn()
            samples[name].append((CLOCK() - start) / calls[name])
    return {name: min(s) for name, s in samples.items()}


def cpu_model() -> str:
    """The CPU's model name and core count, from /proc/cpuinfo where there is one."""
    model = platform.processor()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} CPUs"


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def report(text: str, results: str | None) -> None:
    """Print a benchmark's table and, when given a RESULTS.md path, append it there."""
    print(text)
    if results:
        with open(results, "a") as f:
            f.write("\n" + text + "\n")
