"""The ``transfer`` estimator: its result, Table 1 rows and metrics, and the report built from them."""

from __future__ import annotations

import math

import pytest

from advbridge.evaluations.estimators.base import ESTIMATORS
from advbridge.evaluations.reports.sections.transfer import transfer_markdown, transfer_plots


def test_estimator_and_report(tiny, mnist5k, tmp_path):
    x, y = mnist5k.x_train[:10], mnist5k.y_train[:10]
    params = {"models": ["mnist_tiny_cnn", "mnist_fc10_wd1e-2"], "attack": "deepfool", "backend": "foolbox",
              "noise_sigmas": [0.1]}
    assert ESTIMATORS["transfer"].validate(params) is None
    metrics, result, samples = ESTIMATORS["transfer"].compute(tiny, x, y, params, progress=False)
    assert result["transfer"]["rows"] == ["mnist_tiny_cnn", "mnist_fc10_wd1e-2", "noise σ=0.1"]
    table1 = {row["model"]: row for row in result["table1"]}
    assert 0 < table1["mnist_fc10_wd1e-2"]["train_error"] < 0.2
    assert metrics["test_error[mnist_fc10_wd1e-2]"] == table1["mnist_fc10_wd1e-2"]["test_error"]
    assert metrics["distortion[mnist_tiny_cnn]"] == pytest.approx(result["transfer"]["distortion"][0])
    assert len(samples["distortion[noise σ=0.1]"]) == len(x)
    record = {"estimator": "transfer", "suite": "s", "label": "transfer", "result": result, "model": "mnist_tiny_cnn"}
    plots = transfer_plots([{"record": record}], tmp_path / "plots")
    assert plots == ["plots/transfer_s_transfer.png"] and (tmp_path / plots[0]).exists()
    text = "\n".join(transfer_markdown(None, [{"record": record}], plots))
    assert "Table 1" in text and "| mnist_fc10_wd1e-2 | FC10(1e-2) |" in text and "/ 10.0%" in text
    assert "Table 2" in text and "| noise σ=0.1 |" in text and "(0.100)" in text and "(10.1%)" in text
    assert not math.isnan(metrics["mean_transfer_error"])
