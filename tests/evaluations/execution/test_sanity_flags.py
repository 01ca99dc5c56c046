"""AutoAttack-style sanity flags on real user models given as module:function."""

import json

from advbridge.evaluations.execution.runner import run_suite
from advbridge.evaluations.suites.load import load_suite

SUITE = """\
[suite]
name = "sanity"
models = ["user_models:masked", "user_models:noisy", "mnist_tiny_cnn"]
backends = ["art"]

[data]
n = 20

[[attacks]]
name = "fgsm"
norm = "linf"
"""


def test_zero_gradient_and_randomized_flags(tmp_path, tiny):
    run_suite(load_suite("sanity", text=SUITE), tmp_path, progress=False)
    flags = {r["model"]: r["flags"] for r in json.loads((tmp_path / "results.json").read_text())}
    assert any(f.startswith("zero_gradient") for f in flags["user_models:masked"])
    assert any(f.startswith("randomized") for f in flags["user_models:noisy"])
    assert flags["mnist_tiny_cnn"] == []
    report = (tmp_path / "report.md").read_text()
    assert "user_models:masked: zero_gradient" in report and "user_models:noisy: randomized" in report
