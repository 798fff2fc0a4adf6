"""What `vlmzoo.compare` asks of whatever runs its (task, model, seed) runs: one small interface, with the
local worker pool (executors/local.py) and a Ray cluster (executors/ray_cluster.py) behind it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Hashable, Iterable, Iterator, Protocol


@dataclass(frozen=True)
class Job:
    """One run: `run` names it (compare uses (task, model, seed)), `label` says it to the user, and the
    executor calls fn(*args) somewhere and hands back what it returns."""
    run: Hashable
    label: str
    args: tuple


class Executor(Protocol):
    """Runs jobs and yields (job, result) as each finishes, in whatever order they finish, so the caller
    can store each result at once (that is what makes `resume` work after an interruption).
    An exception from a run propagates from the iterator (noted with the run where the executor can)."""

    # Torch threads each run uses (None: torch's default), passed to the run by the caller.
    threads: int | None
    # Whether output the runs print (their per-step progress bars) reaches the user's terminal.
    shows_run_output: bool

    def describe(self) -> str:
        """One line for the report: where the runs ran and with how many threads each."""
        ...

    def peak_memory_note(self) -> str:
        """What the table's peak RSS column measures under this executor."""
        ...

    def run(self, fn: Callable[..., Any], jobs: Iterable[Job]) -> Iterator[tuple[Job, Any]]:
        ...


class MissingExtraError(ImportError):
    """An optional dependency is absent; the message names the pip extra that brings it."""

