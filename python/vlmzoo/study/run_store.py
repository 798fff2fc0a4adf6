"""Finished (model, seed) runs of a comparison, one JSON file each under out/runs/, written atomically:
`compare(..., resume=True)` reuses a run whose key (everything that decides its result) matches."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from vlmzoo.storage.atomic import atomic_write_text

RUNS_FOLDER = "runs"


def _plain(value: Any) -> Any:
    """JSON's view of a value (tuples become lists), so a key read back compares equal."""
    return json.loads(json.dumps(value, default=str))


def run_key(**parts: Any) -> dict[str, Any]:
    return _plain(parts)


def run_path(out: str | Path, task: str, model: str, seed: int) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in model)
    return Path(out) / RUNS_FOLDER / task / safe / f"seed-{seed}.json"


def load_run(path: Path, key: Mapping[str, Any]) -> dict[str, Any] | None:
    """The stored result at `path` when its key equals `key`; None when absent, unreadable or made
    under other settings (then the run is trained again and the file replaced)."""
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(stored, dict) or stored.get("key") != _plain(dict(key)):
        return None
    return stored.get("result")


def save_run(path: Path, key: Mapping[str, Any], result: Mapping[str, Any]) -> None:
    stored = {"key": _plain(dict(key)), "result": _plain({k: v for k, v in result.items() if k != "model"})}
    atomic_write_text(path, json.dumps(stored))
