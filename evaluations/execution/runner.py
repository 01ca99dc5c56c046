"""The suite runner: expand a suite into cells, skip finished ones, compute the rest and commit each at once.

A killed run loses at most the cell in flight; rerunning with the same ``--out`` resumes. The local
executor computes cells in this process; ``compute_cell`` is the unit an executor runs.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from advbridge.bridge.result import library_versions

from advbridge.evaluations.core.store import ResultStore
from advbridge.evaluations.core.keys import config_key
from advbridge.evaluations.suites.suite import Cell, EstimatorCell, Suite
from advbridge.evaluations.data.domain_shift import DataNotSupplied
from advbridge.evaluations.execution.cells import Resources, compute_estimator
from advbridge.evaluations.execution.executor import EXECUTORS
from advbridge.evaluations.execution.loop import run_cells
from advbridge.evaluations.reports.render import write_reports

logger = logging.getLogger(__name__)

@dataclass
class RunSummary:
    suite: str
    total: int
    computed: int
    skipped: int
    failed: int
    wall_time_s: float
    out: Path
    #: Cells left out because their data was not supplied (``--data-root``), one message each; run them later.
    not_run: list[str] = field(default_factory=list)


def run_suite(suite: Suite, out: str | Path, *, force: bool = False, executor: str = "local",
              device: str | None = None, batch_size: int = 128, data_root: str | None = None,
              progress: bool = True, write_report: bool = True, address: str | None = None,
              max_retries: int | None = None) -> RunSummary:
    """Run every unfinished cell of ``suite`` into ``out/results.db`` and render the reports.

    :param suite: A loaded suite.
    :param out: Output folder; the store is ``out/results.db``.
    :param force: Recompute cells that are already finished.
    :param executor: ``local`` (in-process) or ``ray`` (cells as Ray tasks; needs ``advbridge[ray]``).
    :param device: Device for models and attacks (the local executor and the driver).
    :param batch_size: Inputs per toolkit call.
    :param data_root: Folder of user-supplied data files.
    :param address: Ray cluster address (``auto`` or ``ray://host:port``); embedded local Ray when absent.
    :param max_retries: Ray retries per task (default 2).
    """
    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; expected one of {list(EXECUTORS)}")
    chosen = EXECUTORS[executor]
    if chosen.check is not None:
        chosen.check()  # a clear error before any work
    start = time.perf_counter()
    out = Path(out)
    store = ResultStore(out / "results.db")
    store.save_suite(suite.name, suite.text, suite.quick)
    versions = library_versions()
    resources = Resources(suite, device=device, data_root=data_root)
    not_run: list[str] = []
    keyed: list[tuple[Cell | EstimatorCell, dict[str, Any], str]] = []
    for cell in suite.cells():
        config = cell.config(suite, versions)
        keyed.append((cell, config, config_key(config)))
    done = store.done_keys()
    todo: list[tuple[Cell | EstimatorCell, dict[str, Any], str]] = [item for item in keyed
                                                                     if force or item[2] not in done]
    logger.info("suite %s: %d cells, %d to compute", suite.name, len(keyed), len(todo))
    try:
        computed, failed = chosen.run(todo, suite, resources, store, force=force, batch_size=batch_size,
                                      progress=progress, address=address, max_retries=max_retries)
        estimator_cells = [(cell, config, config_key(config))
                           for cell in suite.estimator_cells() for config in [cell.config(suite, versions)]]
        estimator_todo = [item for item in estimator_cells if force or item[2] not in done]
        more, more_failed = _run_estimators(estimator_todo, suite, resources, store, force, progress, not_run)
        computed, failed = computed + more, failed + more_failed
        keyed += estimator_cells
        todo += estimator_todo
    finally:
        store.close()
    summary = RunSummary(suite.name, len(keyed), computed, len(keyed) - len(todo), failed,
                         time.perf_counter() - start, out, not_run)
    if write_report:
        write_reports(out, suite_name=suite.name)
    return summary


def _run_estimators(todo, suite: Suite, resources: Resources, store: ResultStore, force: bool,
                    progress: bool, not_run: list[str]) -> tuple[int, int]:
    """Estimator cells, on the driver, each committed when it finishes (as attack cells are). A cell whose data the
    user has not supplied (``DataNotSupplied``) is left out of the store, its message appended to ``not_run``."""

    def skipped(cell, err: BaseException) -> None:
        logger.warning("estimator %s (%s) not run: %s", cell.name, cell.label, err)
        not_run.append(f"{cell.label}: {err}")

    return run_cells(todo, store, suite.name,
                     lambda cell, key: compute_estimator(cell, resources, key, suite.seed, progress),
                     force=force, desc=f"suite {suite.name} estimators", progress=progress, hide_when_empty=True,
                     failed_message=lambda cell, key, err: f"estimator {cell.name} on {cell.model} failed: {err}",
                     not_run=(DataNotSupplied,), on_not_run=skipped)
