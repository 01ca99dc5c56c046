"""The executor registry: every registered executor runs one tiny suite into a store with the same cells and the
same numbers as every other; a duplicate name is refused."""

from __future__ import annotations

import pytest

from advbridge.evaluations.core.store import ResultStore
from advbridge.evaluations.execution.executor import EXECUTORS, Executor
from advbridge.evaluations.execution.runner import run_suite
from advbridge.evaluations.suites.load import load_suite

TINY = """\
[suite]
name = "tiny_executors"
models = ["mnist_tiny_cnn"]
backends = ["art", "foolbox"]

[data]
n = 16

[[attacks]]
name = "fgsm"
norm = "linf"
params = { eps = [0.05, 0.2] }
"""


def test_the_registered_executors():
    assert list(EXECUTORS) == ["local", "ray"]
    with pytest.raises(ValueError, match="executor 'local' is registered twice"):
        EXECUTORS.add(Executor("local", run=run_suite))
    with pytest.raises(ValueError, match=r"unknown executor 'dask'; expected one of \['local', 'ray'\]"):
        run_suite(load_suite("tiny_executors", text=TINY), "unused", executor="dask")


def test_every_executor_stores_the_same_cells(tmp_path, tiny):
    suite = load_suite("tiny_executors", text=TINY)
    stored = {}
    for name in EXECUTORS:
        summary = run_suite(suite, tmp_path / name, executor=name, progress=False, write_report=False)
        assert (summary.computed, summary.failed) == (4, 0), name
        with ResultStore(tmp_path / name / "results.db") as store:
            stored[name] = {c["key"]: c["record"]["metrics"] for c in store.cells(status="done")}
    assert len(stored["local"]) == 4
    assert all(cells == stored["local"] for cells in stored.values())
