"""Executors: where and how `vlmzoo.compare` runs its (task, model, seed) runs (executors/base.py says the
interface): `LocalPool`, this machine's worker processes, and `RayCluster`, one Ray task per run."""
from __future__ import annotations

from vlmzoo.study.executors.base import Executor, Job, MissingExtraError
from vlmzoo.study.executors.local import DEFAULT_WORKERS, LocalPool
from vlmzoo.study.executors.ray_cluster import RayCluster

EXECUTORS = ("local", "ray")


def make_executor(executor: str | Executor = "local", *, workers: int | None = None, threads: int | None = None,
                  isolate: bool = True, address: str | None = None) -> Executor:
    """The executor compare's arguments name: "local" (LocalPool(workers, threads, isolate)), "ray"
    (RayCluster(address, threads, max_in_flight=workers)), or an Executor passed as it is."""
    if not isinstance(executor, str):
        if address is not None:
            raise ValueError("address= is for executor='ray'; an executor object carries its own")
        return executor
    if executor == "local":
        if address is not None:
            raise ValueError(f"address={address!r} needs executor='ray' (the local pool runs on this machine)")
        return LocalPool(workers=workers, threads=threads, isolate=isolate)
    if executor == "ray":
        if not isolate:
            raise ValueError("isolate=False runs in this process; executor='ray' runs each run in a Ray worker")
        return RayCluster(address=address, threads=threads, max_in_flight=workers)
    raise ValueError(f"executor must be one of {', '.join(map(repr, EXECUTORS))} or an Executor, got {executor!r}")


__all__ = ["DEFAULT_WORKERS", "EXECUTORS", "Executor", "Job", "LocalPool", "MissingExtraError", "RayCluster",
           "make_executor"]
