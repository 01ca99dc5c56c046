"""Transfer matrix: 100% diagonal for minimal attacks, noise rows, Szegedy's distortion, validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from advbridge.bridge import AttackSpec
from advbridge.evaluations.estimators.transfer import validate_transfer
from advbridge.evaluations.analysis.transfer import TransferResult, distortion, plot_transfer, transfer_matrix
from advbridge.evaluations.zoo.classifiers import load_model


@pytest.fixture(scope="module")
def two_models(tiny, mnist5k):
    """The tiny CNN and FC10(1e-2) (softmax regression, trains in about a second)."""
    fc10 = load_model("mnist_fc10_wd1e-2", "mnist5k", device="cpu", data=mnist5k).model
    return {"tiny": tiny, "fc10": fc10}


@pytest.fixture(scope="module")
def inputs(mnist5k):
    return mnist5k.x_train[:10], mnist5k.y_train[:10]


@pytest.fixture(scope="module")
def deepfool_result(two_models, inputs):
    """DeepFool (Foolbox) on both models, with noise rows at σ = 0 and 0.3 (seed 3)."""
    x, y = inputs
    return transfer_matrix(two_models, AttackSpec("deepfool", "l2"), x, y, backend="foolbox", noise_sigmas=(0.0, 0.3),
                           seed=3, progress=False)


def test_distortion_is_rms_per_pixel():
    x = torch.zeros(2, 1, 28, 28)
    x_adv = x.clone()
    x_adv[0, 0, 0, :4] = 0.5  # √(4 · 0.25 / 784) = 1/28
    assert distortion(x, x_adv) == pytest.approx([1 / 28, 0.0])
    noise = 0.1 * torch.randn(64, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    assert distortion(x[:1].expand(64, -1, -1, -1), noise).mean() == pytest.approx(0.1, rel=0.01)  # unclipped: σ
    with pytest.raises(ValueError, match="x and x_adv must have the same shape"):
        distortion(x, x[:1])


@pytest.mark.parametrize("attack", ["lbfgs", "deepfool"])
def test_minimal_attack_diagonal_is_100_percent(two_models, inputs, deepfool_result, attack):
    x, y = inputs
    if attack == "lbfgs":
        spec = AttackSpec("lbfgs", "l2", params={"steps": 20, "binary_search_steps": 3})
        result = transfer_matrix(two_models, spec, x, y, backend="native", noise_sigmas=(), progress=False)
    else:
        result = deepfool_result
    assert result.rows[:2] == ["tiny", "fc10"] and result.columns == ["tiny", "fc10"]
    assert np.diag(result.error[:2]).tolist() == [1.0, 1.0]
    assert (result.success_rate[:2] > 0.8).all()
    off = result.error[:2][~np.eye(2, dtype=bool)]
    assert ((off >= 0) & (off <= 1)).all()
    assert (result.distortion[:2] > 0).all() and (result.distortion[:2] < 0.2).all()
    # Hand check of the distortion and of one off-diagonal cell from the per-sample record.
    clean_ok = {name: (m.predict(x) == y).numpy() for name, m in two_models.items()}
    row = result.sample_distortion[0]
    counted = ~np.isnan(row)
    assert counted.sum() == result.n_counted[0] and counted.sum() <= clean_ok["tiny"].sum()
    assert result.distortion[0] == pytest.approx(row[counted].mean())
    assert result.counted[0, 1] == (counted & clean_ok["fc10"]).sum()
    assert result.clean_error.tolist() == pytest.approx([1 - clean_ok["tiny"].mean(), 1 - clean_ok["fc10"].mean()])


def test_noise_rows(two_models, inputs, deepfool_result):
    x, y = inputs
    result = deepfool_result
    assert result.rows[2:] == ["noise σ=0", "noise σ=0.3"] and result.kinds[2:] == ["noise", "noise"]
    assert result.sigmas[2:] == [0.0, 0.3]
    assert result.error[2].tolist() == [0.0, 0.0] and result.distortion[2] == 0.0
    assert np.isnan(result.success_rate[2]) and result.n_counted[2] == len(x)
    # Recompute the σ = 0.3 row by hand: the seeded draw shared by every σ, clipped.
    noisy = (x + 0.3 * torch.randn(x.shape, generator=torch.Generator().manual_seed(3))).clamp(0, 1)
    expected = (x - noisy).flatten(1).pow(2).mean(1).sqrt().mean()
    assert result.distortion[3] == pytest.approx(float(expected), rel=1e-5)
    assert result.distortion[3] < 0.3  # clipping at 0 and 1 removes part of the noise
    for j, model in enumerate(two_models.values()):
        ok = (model.predict(x) == y).numpy()
        wrong = (model.predict(noisy) != y).numpy()
        assert result.error[3, j] == pytest.approx(wrong[ok].mean())
    # Round trip through JSON.
    again = TransferResult.from_dict(result.to_dict(arrays=True))
    np.testing.assert_allclose(again.error, result.error)
    assert again.rows == result.rows and again.sigmas == result.sigmas


def test_heatmap(deepfool_result, tmp_path):
    path = plot_transfer(deepfool_result.to_dict(), tmp_path / "plots" / "t.png", row_labels={"fc10": "FC10(1e-2)"})
    assert path.exists() and path.stat().st_size > 1000


def test_validation_errors(two_models, inputs):
    x, y = inputs
    spec = AttackSpec("deepfool", "l2")
    with pytest.raises(ValueError, match="models must be a non-empty mapping"):
        transfer_matrix({}, spec, x, y)
    with pytest.raises(TypeError, match=r"models\['m'\] must be an advbridge.bridge.Model"):
        transfer_matrix({"m": object()}, spec, x, y)
    with pytest.raises(ValueError, match="noise_sigmas must be a sequence of non-negative numbers"):
        transfer_matrix(two_models, spec, x, y, noise_sigmas=(-0.1,))
    with pytest.raises(ValueError, match=r"x has shape \(10, 1, 14, 56\)"):
        transfer_matrix(two_models, spec, x.reshape(10, 1, 14, 56), y)
    assert validate_transfer({"models": ["mnist_tiny_cnn"]}) is None
    assert "models must list at least one model" in validate_transfer({})
    assert "unknown parameter(s) ['bogus']" in validate_transfer({"models": ["mnist_tiny_cnn"], "bogus": 1})
    assert "unknown model 'resnet'" in validate_transfer({"models": ["resnet"]})
    assert "backend 'art' does not implement lbfgs" in validate_transfer({"models": ["mnist_tiny_cnn"],
                                                                          "backend": "art"})
    assert "noise_sigmas" in validate_transfer({"models": ["mnist_tiny_cnn"], "noise_sigmas": [-1]})
    szegedy = ["mnist_fc10_wd1e-4", "mnist_fc10_wd1e-2", "mnist_fc10_wd1", "mnist_mlp", "mnist_fc200", "mnist_ae400"]
    assert validate_transfer({"models": szegedy + ["mnist_lenet", "mnist_gpdnn"], "attack": "cw",
                              "backend": "foolbox"}) is None
