"""The Ray executor on a real local Ray cluster (2 CPUs): same results as local, worker deaths retried."""

import json

import pytest

try:  # `make test` installs the ray extra: without it this module fails loudly rather than being skipped
    import ray
except ImportError as err:  # the missing-extra errors themselves: test_without_extras.py
    raise ImportError("tests/evaluations/execution/executors/test_ray.py needs Ray: pip install -e '.[dev,ray]' (make test "
                      "installs it)") from err

from advbridge.evaluations.execution.runner import run_suite
from advbridge.evaluations.core.store import ResultStore
from advbridge.evaluations.suites.load import load_suite
from suite_texts import DEFENDED

SMALL = """\
[suite]
name = "small_ray"
models = ["mnist_tiny_cnn"]
backends = ["art", "foolbox"]

[data]
n = 40

[[attacks]]
name = "fgsm"
norm = "linf"
params = { eps = [0.05, 0.2] }

[[attacks]]
name = "pgd"
norm = "l2"
params = { eps = 1.0, steps = 5, random_start = true }

[[attacks]]
name = "deepfool"
norm = "l2"
n = 8
params = { steps = 10 }
"""


@pytest.fixture(scope="module")
def local_ray():
    import user_models
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(user_models)  # workers cannot import the tests folder
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 * 1024**2, log_to_driver=False)
    yield
    ray.shutdown()


def _records(out):
    return {r["cell"]: (r["metrics"], r["flags"]) for r in json.loads((out / "results.json").read_text())}


def test_ray_gives_the_local_results(tmp_path, tiny, local_ray):
    suite = load_suite("small_ray", text=SMALL)
    local = run_suite(suite, tmp_path / "local", progress=False)
    on_ray = run_suite(suite, tmp_path / "ray", executor="ray", progress=False)
    assert local.computed == on_ray.computed == 8 and on_ray.failed == 0
    assert _records(tmp_path / "ray") == _records(tmp_path / "local")
    again = run_suite(suite, tmp_path / "ray", executor="ray", progress=False)  # resume: nothing to do
    assert again.computed == 0 and again.skipped == 8


def test_defended_cells_on_ray_give_the_local_results(tmp_path, tiny, local_ray):
    """Defended systems (detectors, reformer, a randomized system) travel to the workers intact."""
    suite = load_suite("defended", text=DEFENDED)
    local = run_suite(suite, tmp_path / "local", progress=False, write_report=False)
    on_ray = run_suite(suite, tmp_path / "ray", executor="ray", progress=False, write_report=False)
    assert local.computed == on_ray.computed == 4 and on_ray.failed == 0
    with ResultStore(tmp_path / "local" / "results.db") as a, ResultStore(tmp_path / "ray" / "results.db") as b:
        local_cells = {c["key"]: c["record"]["metrics"] for c in a.cells()}
        ray_cells = {c["key"]: c["record"]["metrics"] for c in b.cells()}
    assert ray_cells == local_cells and any("accuracy_with_defense[random]" in m for m in ray_cells.values())


def test_worker_death_is_retried_and_nothing_is_lost_or_duplicated(tmp_path, monkeypatch, local_ray):
    marker = tmp_path / "crashed"
    monkeypatch.setenv("ADVBRIDGE_TEST_MARKER", str(marker))
    text = SMALL.replace('models = ["mnist_tiny_cnn"]', 'models = ["user_models:crash_once"]')
    summary = run_suite(load_suite("crash", text=text), tmp_path / "out", executor="ray", progress=False)
    assert marker.exists()  # a worker really died
    assert summary.computed == 8 and summary.failed == 0
    with ResultStore(tmp_path / "out" / "results.db") as store:
        assert len(store.done_keys()) == 8
        assert set(store.finish_counts().values()) == {1}
        assert store.integrity_check() == "ok"


def test_a_cell_that_keeps_failing_is_recorded_with_its_error(tmp_path, local_ray):
    text = SMALL.replace('models = ["mnist_tiny_cnn"]', 'models = ["user_models:fail_in_worker"]')
    suite = load_suite("fails", text=text)
    summary = run_suite(suite, tmp_path, executor="ray", max_retries=1, progress=False)
    assert summary.failed == 8 and summary.computed == 0
    with ResultStore(tmp_path / "results.db") as store:
        failed = store.cells(status="failed")
    assert len(failed) == 8 and all("always fails on workers" in c["error"] for c in failed)
    assert "## Failed cells (retried on the next run)" in (tmp_path / "report.md").read_text()
    assert run_suite(suite, tmp_path, executor="ray", max_retries=0, progress=False).failed == 8  # retried
