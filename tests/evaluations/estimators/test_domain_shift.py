"""Domain shift: skipped with a message (nothing stored) without --data-root, run and reported once data is supplied."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from advbridge.evaluations.core.store import ResultStore
from advbridge.evaluations.estimators.domain_shift import validate_domain_shift
from advbridge.evaluations.execution.runner import run_suite
from advbridge.evaluations.suites.load import load_suite

SUITE = """\
[suite]
name = "shift_small"
models = ["mnist_tiny_cnn"]
[data]
n = 1
[[estimators]]
name = "domain_shift"
params = { models = ["mnist_tiny_cnn", "mnist_fc10_wd1e-2"], test_sets = ["anomnist"], n = 40 }
"""


def _write_anomnist(folder, mnist5k, n: int = 60):
    """A stand-in ANOMNIST: MNIST test digits, inverted (a real shift of domain), as uint8 (N, 28, 28)."""
    x = ((1 - mnist5k.x_test[:n, 0]) * 255).round().to(torch.uint8).numpy()
    np.savez(folder / "anomnist.npz", x=x, y=mnist5k.y_test[:n].numpy())
    return x


def test_skipped_without_data_then_run_when_supplied(tmp_path, tiny, mnist5k):
    suite = load_suite("shift_small", text=SUITE)
    out = tmp_path / "out"
    first = run_suite(suite, out, progress=False, device="cpu")
    assert (first.total, first.computed, first.failed) == (1, 0, 0)
    assert len(first.not_run) == 1 and "anomnist.npz" in first.not_run[0] and "--data-root" in first.not_run[0]
    with ResultStore(out / "results.db") as store:
        assert store.cells() == []  # nothing stored: the next run with data computes it
    assert "Not run: domain shift skipped: it needs anomnist.npz" in (out / "report.md").read_text()

    data_root = tmp_path / "data"
    data_root.mkdir()
    raw = _write_anomnist(data_root, mnist5k)
    second = run_suite(suite, out, progress=False, device="cpu", data_root=str(data_root))
    assert (second.computed, second.failed, second.not_run) == (1, 0, [])
    with ResultStore(out / "results.db") as store:
        (cell,) = store.cells(status="done")
    table = cell["record"]["result"]["table"]
    assert list(table) == ["mnist", "anomnist"]
    # Recompute the tiny CNN's anomnist cell by hand: the seeded draw of n = 40 of the 60 images.
    keep = torch.randperm(60, generator=torch.Generator().manual_seed(0))[:40]
    x = torch.from_numpy(raw[keep.numpy()].astype(np.float32) / 255).unsqueeze(1)
    y = mnist5k.y_test[:60][keep]
    logp = torch.log_softmax(tiny.logits(x), 1)
    ours = table["anomnist"]["mnist_tiny_cnn"]
    assert ours["n"] == 40
    assert ours["accuracy"] == pytest.approx(float((logp.argmax(1) == y).float().mean()))
    assert ours["log_likelihood"] == pytest.approx(float(logp.gather(1, y[:, None]).mean()), abs=1e-5)
    assert table["mnist"]["mnist_tiny_cnn"]["accuracy"] > ours["accuracy"]  # inverted digits are a foreign domain
    report = (out / "report.md").read_text()
    assert "## Domain shift (Bradshaw et al. 2017, §8.3)" in report and "| anomnist | 40 |" in report
    third = run_suite(suite, out, progress=False, device="cpu", data_root=str(data_root))
    assert (third.computed, third.skipped) == (0, 1)


def test_bad_params_get_clear_errors():
    assert "test_sets must list some of" in validate_domain_shift({"models": ["mnist_tiny_cnn"], "test_sets": ["x"]})
    assert "unknown model 'resnet'" in validate_domain_shift({"models": ["resnet"]})
    assert "dataset must be an MNIST data set" in validate_domain_shift({"models": ["mnist_tiny_cnn"],
                                                                          "dataset": "cifar10"})
    assert validate_domain_shift({"models": ["mnist_lenet", "mnist_gpdnn"]}) is None
