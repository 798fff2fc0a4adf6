"""The Ray executor: each run is one Ray task asking for `threads` CPUs, in a fresh worker process (so its peak
RSS is its own), retried when its worker process or node dies. Ray is optional: `pip install vlmzoo[ray]`."""
from __future__ import annotations

import os
from typing import Any, Callable, Iterable, Iterator, Mapping

from vlmzoo.study.executors.base import Job, MissingExtraError
from vlmzoo.study.executors.local import child_environment

# Ray's own default for tasks: a run whose worker dies (killed, out of memory, node lost) starts again up to
# this many times; an exception raised by the run itself is not retried (it would raise again).
DEFAULT_MAX_RETRIES = 3
_SCALARS = (str, bytes, int, float, bool, type(None))


def import_ray():
    """The `ray` module, or an error naming the extra that installs it."""
    try:
        import ray  # optional and heavy: imported only when a Ray executor is asked for
    except ImportError as error:
        raise MissingExtraError("executor 'ray' needs Ray, an optional dependency: pip install 'vlmzoo[ray]' "
                                f"(Ray could not be imported: {error})") from error
    return ray


class RayCluster:
    """address: a running cluster ("auto", "ray://head:10001", "head:6379"); None connects where RAY_ADDRESS
    says, or starts Ray on this machine (its workers find vlmzoo where this process does). When Ray is already
    initialised here (ray.init by the caller), that connection is used and left open.
    threads: CPUs each run asks Ray for, and its torch threads. max_in_flight: runs submitted at once (None:
    all; Ray runs as many as the cluster has CPUs for). runtime_env: Ray's, for a cluster whose nodes need
    vlmzoo shipped or installed (by default every node has vlmzoo installed, as on this machine)."""

    shows_run_output = False  # the runs' own progress bars stay in the workers' logs; compare reports each end

    def __init__(self, address: str | None = None, threads: int | None = None, max_retries: int = DEFAULT_MAX_RETRIES,
                 max_in_flight: int | None = None, runtime_env: Mapping[str, Any] | None = None):
        self.ray = import_ray()
        threads = 1 if threads is None else threads
        if threads < 1:
            raise ValueError(f"threads (the CPUs each Ray task asks for) must be >= 1, got {threads}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        if max_in_flight is not None and max_in_flight < 1:
            raise ValueError(f"workers (runs in flight on the Ray cluster) must be >= 1, got {max_in_flight}")
        self.address, self.threads, self.max_retries = address, threads, max_retries
        self.max_in_flight, self.runtime_env = max_in_flight, dict(runtime_env) if runtime_env else None

    def describe(self) -> str:
        where = f"the Ray cluster at {self.address}" if self.address else "Ray"
        at_once = f"at most {self.max_in_flight} at once" if self.max_in_flight else "as many at once as its CPUs allow"
        return (f"{where}: one task per run with {self.threads} CPU(s) and torch thread(s), {at_once}; a run whose "
                f"worker dies is retried up to {self.max_retries} times")

    def peak_memory_note(self) -> str:
        return "resident high-water mark (VmHWM) of the Ray worker process that trained the model (one per run)"

    def _connect(self) -> bool:
        """Initialises Ray unless it already is; True when this call did (so run() shuts it down after)."""
        ray = self.ray
        if ray.is_initialized():
            return False
        runtime_env = self.runtime_env
        if runtime_env is None and self.address is None and not os.environ.get("RAY_ADDRESS"):
            runtime_env = local_runtime_env()
        ray.init(address=self.address, runtime_env=runtime_env, include_dashboard=False)
        return True

    def run(self, fn: Callable[..., Any], jobs: Iterable[Job]) -> Iterator[tuple[Job, Any]]:
        ray = self.ray
        waiting = list(jobs)
        if not waiting:
            return
        started_here = self._connect()
        # max_calls=1: a fresh worker process per run, so its peak RSS is its own (as with the local pool).
        remote = ray.remote(num_cpus=self.threads, max_retries=self.max_retries, max_calls=1)(fn)
        stored: dict[int, Any] = {}  # id(argument) -> ObjectRef: the task's data goes to the object store once

        def shared(argument: Any) -> Any:
            if isinstance(argument, _SCALARS):
                return argument
            if id(argument) not in stored:
                stored[id(argument)] = ray.put(argument)
            return stored[id(argument)]

        in_flight: dict[Any, Job] = {}
        try:
            while waiting or in_flight:
                while waiting and (self.max_in_flight is None or len(in_flight) < self.max_in_flight):
                    job = waiting.pop(0)
                    in_flight[remote.remote(*map(shared, job.args))] = job
                ready, _ = ray.wait(list(in_flight), num_returns=1)
                job = in_flight.pop(ready[0])
                yield job, self._result(ready[0], job)
        finally:
            for ref in in_flight:  # an error or an interrupted caller: the other runs are not wanted any more
                ray.cancel(ref, force=True)
            if started_here:
                ray.shutdown()

    def _result(self, ref: Any, job: Job) -> Any:
        ray = self.ray
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as error:  # the run raised: it is also an instance of the run's error
            error.add_note(f"while training {job.label} on Ray")
            raise
        except ray.exceptions.RayError as error:  # its worker or node died once more than max_retries allows
            raise RuntimeError(f"compare: the Ray worker training {job.label} died {self.max_retries + 1} time(s) "
                               f"(max_retries={self.max_retries}; killed for memory, or its node lost?): "
                               f"{type(error).__name__}") from error


def local_runtime_env() -> dict[str, Any]:
    """Ray's runtime_env for a cluster on this machine: its workers import vlmzoo (and the caller's modules)
    from where this process does, as the local pool's processes do."""
    return {"env_vars": {"PYTHONPATH": child_environment()["PYTHONPATH"]}}
