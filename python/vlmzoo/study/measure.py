"""What a study measures around a training run: the process's peak memory, the steps a learning curve is
measured at, and the folder a kept model is saved to."""
from __future__ import annotations

import json
import resource
from pathlib import Path
from typing import Any

from vlmzoo.families.processing.word import TOKENIZER_FILE


def _peak_rss_mib() -> float:
    """The process's resident-set high-water mark in MiB, C++ allocations included: /proc's VmHWM (of this
    process's own memory map) where there is one. Not ru_maxrss first: Linux carries the parent's high-water
    mark into a child started by fork + exec, so every worker reported the parent's peak (1,352 MiB for
    each model of the default run, measured 2026-12-05, when the parent had pretrained a tower)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux, bytes on macOS


def curve_steps(total_steps: int, points: int) -> list[int]:
    """The steps after which a learning curve is measured: `points` evenly spaced in steps (so in
    training FLOPs, which grow by the same amount every step), the last one the end of training."""
    if points < 1:
        return []
    return sorted({max(1, round(k * total_steps / points)) for k in range(1, points + 1)})


def _save_model(model, task: Any, folder: Path) -> Path:
    """A folder vlmzoo.from_pretrained, AutoProcessor and `vlmzoo generate` read: weights, config, tokenizer."""
    model.save_pretrained(str(folder))
    (folder / TOKENIZER_FILE).write_text(json.dumps(task.tokenizer.to_dict()))
    return folder
