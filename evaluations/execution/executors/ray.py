"""The Ray executor: the same cells as Ray tasks; the driver stays the only writer of the store.

Models and data slices reach the workers through ``ray.put``: workers never read the driver's files or
cache. Each task may ask for ``num_cpus`` and (fractional) ``num_gpus``. A task that raises or whose
worker dies is retried ``max_retries`` times; a cell that still fails is recorded as failed with its
error and is retried on the next run. Ray is the optional extra ``advbridge[ray]``; nothing here is
imported unless ``--executor ray`` is asked for.
"""

from __future__ import annotations

import dataclasses

import logging
import os
import time
from typing import Any

import torch
from tqdm.auto import tqdm

from advbridge.bridge.model import default_device

from advbridge.evaluations.execution.cells import CellInputs, Resources, cell_inputs, compute_cell
from advbridge.evaluations.execution.executor import EXECUTORS, Executor
from advbridge.evaluations.execution.loop import commit
from advbridge.evaluations.core.store import ResultStore
from advbridge.evaluations.suites.suite import Cell, Suite

logger = logging.getLogger(__name__)

#: Object store for an embedded local Ray: modest, since it holds only models and data slices.
LOCAL_OBJECT_STORE_BYTES = 256 * 1024**2
DEFAULT_MAX_RETRIES = 2


def require_ray():
    """Import Ray, or explain how to install it."""
    try:
        import ray
    except ImportError as err:
        raise ValueError("executor 'ray' needs Ray, which is an optional extra: pip install 'advbridge[ray]' "
                         "(and the same torch version on every worker)") from err
    return ray


def init_ray(address: str | None = None, num_cpus: int | None = None) -> tuple[Any, bool]:
    """Connect to ``address`` (or ``$RAY_ADDRESS``), else start an embedded local Ray; returns (ray, started)."""
    ray = require_ray()
    if ray.is_initialized():
        return ray, False
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False,
                 object_store_memory=LOCAL_OBJECT_STORE_BYTES, log_to_driver=False)
    return ray, True


def _compute_remote(cell: Cell, inputs: CellInputs, key: str, seed: int, metric_names: tuple[str, ...],
                    batch_size: int) -> tuple[dict[str, Any], dict[str, Any], float]:
    """Runs on a worker: one cell, with as many torch threads as CPUs the task was given."""
    torch.set_num_threads(max(1, int(cell.num_cpus)))
    device = default_device() if cell.num_gpus > 0 else torch.device("cpu")
    inputs = dataclasses.replace(
        inputs, model=inputs.model.with_device(device),
        attack_model=inputs.attack_model.with_device(device) if inputs.attack_model is not None else None,
        systems={name: system.to(device) for name, system in inputs.systems.items()})
    start = time.perf_counter()
    record, samples = compute_cell(cell, inputs, key, seed, metric_names, batch_size, progress=False)
    return record, samples, time.perf_counter() - start


def run_on_ray(todo: list[tuple[Cell, dict, str]], suite: Suite, resources: Resources, store: ResultStore, *,
               batch_size: int = 128, max_retries: int = DEFAULT_MAX_RETRIES, address: str | None = None,
               num_cpus: int | None = None, progress: bool = True) -> tuple[int, int]:
    """Compute ``todo`` as Ray tasks and commit each result on the driver as it arrives; returns (computed, failed)."""
    ray, started = init_ray(address, num_cpus)
    try:
        remote = ray.remote(_compute_remote)
        shared: dict[tuple, Any] = {}
        pending: dict[Any, tuple[Cell, dict, str]] = {}
        for cell, config, key in todo:
            slot = (cell.model, cell.n, cell.threat)
            if slot not in shared:  # one object per model, data slice and threat, shared by its cells
                shared[slot] = ray.put(cell_inputs(cell, resources))
            store.mark_started(key)
            ref = remote.options(num_cpus=cell.num_cpus, num_gpus=cell.num_gpus, max_retries=max_retries,
                                 retry_exceptions=True).remote(cell, shared[slot], key, suite.seed, suite.metrics,
                                                               batch_size)
            pending[ref] = (cell, config, key)
        computed = failed = 0
        with tqdm(total=len(pending), desc=f"suite {suite.name} (ray)", unit="cell", disable=not progress) as bar:
            while pending:
                (ref,), _ = ray.wait(list(pending), num_returns=1)
                cell, config, key = pending.pop(ref)
                try:
                    record, samples, elapsed = ray.get(ref)
                except Exception as err:  # the task raised, or its worker died, max_retries + 1 times
                    logger.error("cell %s (%s on %s) failed on Ray: %s", key, cell.label, cell.backend, err)
                    cause = getattr(err, "cause", None) or err  # a RayTaskError wraps the task's own exception
                    commit(store, suite.name, key, config, f"{type(cause).__name__}: {cause}"[-4000:])
                    failed += 1
                else:
                    commit(store, suite.name, key, config, (record, samples, elapsed))
                    computed += 1
                bar.update()
        return computed, failed
    finally:
        if started:
            ray.shutdown()


def _run(todo, suite: Suite, resources: Resources, store: ResultStore, *, batch_size: int = 128,
         progress: bool = True, address: str | None = None, max_retries: int | None = None,
         **_: Any) -> tuple[int, int]:
    return run_on_ray(todo, suite, resources, store, batch_size=batch_size,
                      max_retries=DEFAULT_MAX_RETRIES if max_retries is None else max_retries, address=address,
                      progress=progress)


EXECUTORS.add(Executor("ray", run=_run, check=require_ray), rank=20)
