"""The local executor: cells one after another in this process."""

from __future__ import annotations

from typing import Any

from advbridge.evaluations.core.store import ResultStore
from advbridge.evaluations.execution.cells import Resources, cell_inputs, compute_cell
from advbridge.evaluations.execution.executor import EXECUTORS, Executor
from advbridge.evaluations.execution.loop import Todo, run_cells
from advbridge.evaluations.suites.suite import Suite


def run_local(todo: Todo, suite: Suite, resources: Resources, store: ResultStore, *, force: bool = False,
              batch_size: int = 128, progress: bool = True, **_: Any) -> tuple[int, int]:
    """Compute ``todo`` in this process, each cell committed when it finishes; returns (computed, failed)."""
    return run_cells(
        todo, store, suite.name,
        lambda cell, key: compute_cell(cell, cell_inputs(cell, resources), key, suite.seed, suite.metrics, batch_size,
                                       progress),
        force=force, desc=f"suite {suite.name}", progress=progress,
        failed_message=lambda cell, key, err: f"cell {key} ({cell.label} {cell.setting} on {cell.backend}) failed: "
                                              f"{err}")


EXECUTORS.add(Executor("local", run=run_local), rank=10)
