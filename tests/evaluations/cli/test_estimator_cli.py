"""The estimator commands (`hardness`, `meanfield`, `transfer`): the JSON each writes, checked against the library."""

from __future__ import annotations

import json

import numpy as np
import pytest

from advbridge.evaluations.cli.app import main


def test_hardness_cli_writes_hardness_json(tmp_path, capsys, tiny, mnist5k):
    import torch

    from advbridge.bridge.attacks.jsma import PapernotJSMA
    from advbridge.evaluations.analysis.hardness import all_target_pairs

    out = tmp_path / "h"
    assert main(["hardness", "--model", "mnist_tiny_cnn", "--n", "6", "--levels", "0.02,0.05,0.1", "--out", str(out),
                 "--threads", "1"]) == 0
    doc = json.loads((out / "hardness.json").read_text())
    for key in ("success_rate", "mean_distortion_all", "mean_distortion_successful", "hardness", "time_s"):
        assert key in doc
    h = np.array([[np.nan if v is None else v for v in row] for row in doc["hardness"]])
    assert h.shape == (10, 10) and np.isnan(np.diag(h)).all()
    # The headline figures from a separate JSMA run at Υ = 14.5% on the same seeded slice, each pair judged by the
    # model and its distortion counted from the changed pixels (the CLI reads them off the one-pass trace).
    order = torch.randperm(len(mnist5k.x_test), generator=torch.Generator().manual_seed(0))[:6]
    x_pairs, _, targets = all_target_pairs(mnist5k.x_test[order], mnist5k.y_test[order], 10)
    assert doc["headline_distortion"] == 0.145 and doc["n_samples"] == 6
    adv = torch.from_numpy(PapernotJSMA(tiny.art(), max_distortion=0.145, forward=tiny.pipeline).generate(
        x_pairs.numpy(), targets.numpy()))
    ok = (tiny.predict(adv) == targets).numpy()
    distortion = ((adv != x_pairs).flatten(1).sum(1) / 784.0).numpy()
    assert doc["success_rate"] == pytest.approx(ok.mean(), abs=1e-12)
    assert doc["mean_distortion_all"] == pytest.approx(distortion.mean(), abs=1e-7)  # float32 fractions
    assert doc["mean_distortion_successful"] == pytest.approx(distortion[ok].mean(), abs=1e-7)
    assert 0 < ok.mean() < 1
    assert f"success {100 * ok.mean():.1f}%" in capsys.readouterr().out


def test_meanfield_cli_writes_estimates_and_fits(tmp_path):
    out = tmp_path / "m"
    assert main(["meanfield", "--model", "mnist_tiny_cnn", "--n", "30", "--out", str(out), "--threads", "1"]) == 0
    doc = json.loads((out / "meanfield.json").read_text())
    assert len(doc["gamma_mean_by_rank"]) == 10
    assert doc["gamma_mean_by_rank"][0] < 0 < doc["gamma_mean_by_rank"][1]  # the attack lowers the top logit
    assert doc["eps_lin_median"] > 0 and doc["eps_mf_median"] > 0
    assert set(doc["power_law"]) == {"L2-FGM", "FGSM", "PGD", "step-l.l."}
    fgsm = doc["power_law"]["FGSM"]
    assert fgsm["B_ci"][0] <= fgsm["B"] <= fgsm["B_ci"][1]
    with pytest.raises(SystemExit):
        main(["meanfield", "--model", "mnist_tiny_cnn", "--n", "x", "--out", str(out)])


def test_transfer_cli_matches_the_library(tmp_path, capsys, tiny, mnist5k):
    import torch

    from advbridge.bridge import AttackSpec
    from advbridge.evaluations.analysis.transfer import transfer_matrix
    from advbridge.evaluations.zoo.classifiers import load_model

    out = tmp_path / "t"
    assert main(["transfer", "--models", "mnist_tiny_cnn,mnist_fc10_wd1e-2", "--attack", "deepfool", "--norm", "l2",
                 "--backend", "foolbox", "--n", "8", "--noise-sigmas", "0.3", "--no-table1", "--out", str(out),
                 "--threads", "1"]) == 0
    doc = json.loads((out / "transfer.json").read_text())
    res = doc["transfer"]
    assert res["rows"] == ["mnist_tiny_cnn", "mnist_fc10_wd1e-2", "noise σ=0.3"] and doc["n"] == 8
    assert "train_error" not in doc["table1"][0]
    assert (out / "plots" / "transfer_transfer_transfer.png").exists()
    # The same matrix from the library on the same seeded slice of the test split.
    order = torch.randperm(len(mnist5k.x_test), generator=torch.Generator().manual_seed(0))[:8]
    fc10 = load_model("mnist_fc10_wd1e-2", "mnist5k", device="cpu", data=mnist5k).model
    direct = transfer_matrix({"mnist_tiny_cnn": tiny, "mnist_fc10_wd1e-2": fc10}, AttackSpec("deepfool", "l2"),
                             mnist5k.x_test[order], mnist5k.y_test[order], backend="foolbox", noise_sigmas=(0.3,),
                             progress=False)
    np.testing.assert_allclose(np.array(res["error"], dtype=float), direct.error)
    np.testing.assert_allclose(res["distortion"], direct.distortion, rtol=1e-6)
    assert "noise σ=0.3:" in capsys.readouterr().out
