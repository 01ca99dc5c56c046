"""The executor interface and registry: how a suite's attack cells are computed (in this process, on Ray, ...).
Each executor is one module of `advbridge.evaluations.execution.executors`; `run_suite` looks it up by name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from advbridge.bridge.registry import Registry


@dataclass(frozen=True)
class Executor:
    """One way to compute attack cells.

    :param name: What ``--executor`` and ``run_suite(executor=...)`` call it.
    :param run: ``run(todo, suite, resources, store, *, force, batch_size, progress, address, max_retries) ->
        (computed, failed)``, committing each cell through `advbridge.evaluations.execution.loop.commit`.
    :param check: Raises a clear error before any work when the executor cannot run here (a missing extra).
    """

    name: str
    run: Callable[..., tuple[int, int]]
    check: Callable[[], None] | None = None


EXECUTORS: Registry[Executor] = Registry("executor", "advbridge.evaluations.execution.executors")
"""Every executor, in the order ``--executor`` lists them (their ``rank``)."""
