"""The ``hardness`` and ``meanfield`` estimators in a suite: stored, reported and resumed like attack cells; bad
parameters fail when the suite loads."""

from __future__ import annotations

import pytest

from advbridge.evaluations.analysis.hardness import hardness_matrix
from advbridge.evaluations.core.store import ResultStore
from advbridge.evaluations.execution.runner import run_suite
from advbridge.evaluations.execution.cells import Resources
from advbridge.evaluations.suites.load import load_suite
from advbridge.evaluations.suites.schema import SuiteError

SUITE = """\
[suite]
name = "hardness_small"
models = ["mnist_tiny_cnn"]
backends = ["art"]
[data]
n = 4
[[attacks]]
name = "fgsm"
params = { eps = 0.1 }
[[estimators]]
name = "hardness"
params = { levels = [0.02, 0.05, 0.1] }
"""


def test_estimator_cells_are_stored_reported_and_resumed(tmp_path, tiny, mnist5k):
    suite = load_suite("hardness_small", text=SUITE)
    first = run_suite(suite, tmp_path, progress=False, device="cpu")
    assert (first.total, first.computed, first.failed) == (2, 2, 0)  # the estimator shares the attack's slice
    with ResultStore(tmp_path / "results.db") as store:
        (cell,) = [c for c in store.cells(status="done") if c["record"].get("kind") == "estimator"]
    x, y, _ = Resources(suite, device="cpu").slice("mnist_tiny_cnn", 4)
    direct = hardness_matrix(tiny, x, y, levels=(0.02, 0.05, 0.1), progress=False)
    assert cell["record"]["metrics"]["success_rate"] == pytest.approx(direct.success_rate)
    report = (tmp_path / "report.md").read_text()
    assert "## JSMA hardness" in report and "hardness_hardness_small_mnist_tiny_cnn_hardness.png" in report
    again = run_suite(suite, tmp_path, progress=False, device="cpu")
    assert (again.computed, again.skipped) == (0, 2)
    with pytest.raises(SuiteError, match=r":\d+: estimator 'hardness': unknown parameter\(s\) \['level'\]"):
        load_suite("bad.toml", text=SUITE.replace("levels =", "level ="))


@pytest.mark.parametrize("params, message", [
    ("theta = nan", r"theta must be a finite number, got nan"),
    ("theta = 0", r"theta must be non-zero \(\+1 increases features, -1 decreases them\), got 0.0"),
    ("batch_size = 0", r"batch_size must be a positive integer, got 0"),
    ("headline_distortion = 1.5", r"headline_distortion must be a fraction in \(0, 1\], got 1.5"),
    ("headline_distortion = -0.1", r"headline_distortion must be a positive finite number, got -0.1"),
])
def test_bad_estimator_params_fail_when_the_suite_loads(params, message):
    """Before: accepted by the suite and failed only when the cell ran (or, for NaN θ, ran)."""
    with pytest.raises(SuiteError, match=r":\d+: estimator 'hardness': " + message + "$"):
        load_suite("bad.toml", text=SUITE.replace("params = { levels", f"params = {{ {params}, levels"))


@pytest.mark.parametrize("params, message", [
    ("batch_size = 0", r"batch_size must be a positive integer, got 0"),
    ("quantile = 0", r"quantile must be a positive finite number, got 0"),
    ("quantile = 1.5", r"quantile must lie in \(0, 1\], got 1.5"),
])
def test_bad_meanfield_params_fail_when_the_suite_loads(params, message):
    text = SUITE.replace('name = "hardness"\nparams = { levels = [0.02, 0.05, 0.1] }',
                         f'name = "meanfield"\nparams = {{ {params} }}')
    with pytest.raises(SuiteError, match=r":\d+: estimator 'meanfield': " + message + "$"):
        load_suite("bad.toml", text=text)
