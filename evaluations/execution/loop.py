"""The one commit loop: skip a cell that is done, compute it, commit it or record its failure.

Every executor stores through `commit`, and the in-process ones (local attack cells, estimator cells on the
driver) run `run_cells`; the Ray executor computes remotely and commits each result with `commit` as it arrives.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from tqdm.auto import tqdm

from advbridge.evaluations.core.store import ResultStore

logger = logging.getLogger(__name__)

Todo = Sequence[tuple[Any, dict[str, Any], str]]
"""``(cell, config, key)`` triples, in run order."""


def failure_text(err: BaseException) -> str:
    """What the store records for a failed cell: the exception's last line."""
    return "".join(traceback.format_exception_only(err)).strip()


def commit(store: ResultStore, suite_name: str, key: str, config: dict[str, Any],
           outcome: tuple[dict[str, Any], dict[str, Any], float] | str) -> bool:
    """Commit a computed cell (``(record, samples, seconds)``) or record a failure (its message); ``True`` when
    the cell was computed."""
    if isinstance(outcome, str):
        store.commit_failure(key, suite_name, config, outcome)
        return False
    record, samples, elapsed = outcome
    store.commit_cell(key, suite_name, config, record, samples, elapsed)
    return True


def run_cells(todo: Todo, store: ResultStore, suite_name: str,
              compute: Callable[[Any, str], tuple[dict[str, Any], dict[str, Any]]], *, force: bool, desc: str,
              progress: bool, failed_message: Callable[[Any, str, BaseException], str],
              hide_when_empty: bool = False, not_run: tuple[type[BaseException], ...] = (),
              on_not_run: Callable[[Any, BaseException], None] | None = None) -> tuple[int, int]:
    """Cells one after another in this process, each committed when it finishes; returns (computed, failed).

    :param compute: ``compute(cell, key) -> (record, samples)``.
    :param failed_message: The log line for a failed cell.
    :param not_run: Exceptions that leave a cell out of the store (not a failure), passed to ``on_not_run``.
    """
    computed = failed = 0
    for cell, config, key in tqdm(todo, desc=desc, unit="cell", disable=not progress or (hide_when_empty and not todo)):
        if not force and store.is_done(key):  # another run sharing the store finished it meanwhile
            continue
        store.mark_started(key)
        t0 = time.perf_counter()
        try:
            record, samples = compute(cell, key)
        except not_run as err:
            if on_not_run is not None:
                on_not_run(cell, err)
            continue
        except Exception as err:  # recorded, shown in the report, retried on the next run
            logger.error("%s", failed_message(cell, key, err))
            commit(store, suite_name, key, config, failure_text(err))
            failed += 1
            continue
        commit(store, suite_name, key, config, (record, samples, time.perf_counter() - t0))
        computed += 1
    return computed, failed
