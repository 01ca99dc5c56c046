"""GPDNN: trains on a small slice, probabilities sum to 1, attacks get gradients, robust-max vs Monte Carlo."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

try:  # `make test` installs the gp extra: without it this module fails loudly rather than being skipped
    import gpytorch
except ImportError as err:  # the missing-extra error itself: tests/evaluations/test_without_extras.py
    raise ImportError("tests/defenses/test_gpdnn.py needs GPyTorch: pip install -e '.[dev,gp]' (make test "
                      "installs it)") from err

from advbridge.bridge import AttackSpec, Model, run_attack  # noqa: E402
from advbridge.defenses.gpdnn import (GPDNNClassifier, RobustMaxLikelihood, build_gpdnn, fit_gpdnn,  # noqa: E402
                                      kmeans_inducing_points, train_gpdnn)


def small_features() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 8, 5, stride=2), nn.ReLU(), nn.Conv2d(8, 16, 5, stride=2), nn.ReLU(),
                         nn.Flatten(), nn.Linear(16 * 4 * 4, 16))


@pytest.fixture(scope="module")
def gpdnn(mnist5k):
    """A GPDNN trained on 400 images (a few seconds on one thread)."""
    x, y = mnist5k.x_train[:400], mnist5k.y_train[:400]
    torch.manual_seed(0)
    classifier, history = fit_gpdnn(small_features(), x, y, num_inducing=16, pretrain_epochs=3, epochs=5, lr=3e-2,
                                    batch_size=32, seed=0, progress=False)
    return classifier, history


def test_trains_on_a_small_slice(gpdnn, mnist5k):
    classifier, history = gpdnn
    assert history["elbo"][-1] < history["elbo"][0] - 1.0
    with torch.no_grad():
        accuracy = float((classifier(mnist5k.x_test[:300]).argmax(1) == mnist5k.y_test[:300]).float().mean())
    assert accuracy > 0.6


def test_predictive_probabilities_sum_to_one(gpdnn, mnist5k):
    classifier, _ = gpdnn
    with torch.no_grad():
        probs = classifier.predict_proba(mnist5k.x_test[:64])
        log_probs = classifier(mnist5k.x_test[:64])
    assert probs.shape == (64, 10)
    torch.testing.assert_close(probs.sum(1), torch.ones(64), atol=1e-5, rtol=0)
    eps = classifier.likelihood.epsilon
    assert float(probs.min()) >= eps / 9 * (1 - 1e-4) and float(probs.max()) <= 1 - eps + 1e-6
    torch.testing.assert_close(log_probs.exp(), probs)
    # The quadrature's own Σ_k P(k is the largest) is already 1 up to its error: the renormalisation is tiny.
    f = classifier.latent(mnist5k.x_test[:64])
    raw = classifier.likelihood.prob_is_largest(f.mean, f.variance).detach()
    assert float((raw.sum(1) - 1).abs().max()) < 1e-3


def test_attacks_get_nonzero_gradients(gpdnn, mnist5k):
    classifier, _ = gpdnn
    model = Model(classifier, (1, 28, 28), device="cpu")
    x, y = mnist5k.x_test[:8], mnist5k.y_test[:8]
    onehot = np.eye(10, dtype=np.float32)[y.numpy()]
    for _ in range(2):  # a second pass must work too (no cached graph from the first)
        grad = model.art().loss_gradient(x.numpy(), onehot)
        assert np.isfinite(grad).all()
        assert (np.abs(grad).reshape(8, -1).max(1) > 0).all()
    import eagerpy as ep

    fmodel = model.foolbox()  # Foolbox's own call path, gradient by eagerpy as its gradient attacks take it
    _, grad = ep.value_and_grad(lambda z: ep.crossentropy(fmodel(z), ep.astensor(y)).sum(), ep.astensor(x))
    assert (grad.raw.flatten(1).abs().amax(1) > 0).all()
    # And attacks move the inputs: FGSM through ART and Foolbox changes predictions on some inputs.
    spec = AttackSpec("fgsm", "linf", params={"eps": 0.3})
    for backend in ("art", "foolbox"):
        result = run_attack(model, x, y, spec, backend, progress=False)
        assert result.success.any(), backend
        assert (result.norms["linf"] > 0).all(), backend


def test_robust_max_expected_log_prob_matches_monte_carlo():
    torch.manual_seed(0)
    lik = RobustMaxLikelihood(4, epsilon=0.05)
    mean = torch.tensor([[0.5, 0.0, -0.3, 0.2], [2.0, -1.0, 0.0, 0.1], [0.0, 0.0, 0.0, 0.0]])
    var = torch.tensor([[0.3, 1.0, 0.5, 0.2], [0.1, 0.1, 0.1, 0.1], [1.0, 1.0, 1.0, 1.0]])
    dist = gpytorch.distributions.MultitaskMultivariateNormal(mean, torch.diag_embed(var.reshape(-1)))
    y = torch.tensor([0, 0, 2])
    quad = lik.expected_log_prob(y, dist)
    samples = mean + var.sqrt() * torch.randn(200_000, *mean.shape)
    mc = lik(samples).log_prob(y.expand(200_000, 3)).mean(0)
    torch.testing.assert_close(quad, mc, atol=5e-3, rtol=0)
    # By hand: symmetric Gaussians give P(k largest) = 1/K, so E log p = log(1-ε)/4 + 3/4·log(ε/3).
    assert math.isclose(float(quad[2]), math.log(0.95) / 4 + 0.75 * math.log(0.05 / 3), abs_tol=1e-3)
    # The predictive distribution is the same quadrature: p(y=k) = (1-ε)P_k + ε/(K-1)(1-P_k).
    probs = lik(dist).probs
    mc_probs = torch.stack([lik(samples).probs[..., k].mean(0) for k in range(4)], -1)
    torch.testing.assert_close(probs, mc_probs, atol=5e-3, rtol=0)


def test_kmeans_and_validation(mnist5k):
    feats = torch.cat([torch.randn(50, 2) + 10, torch.randn(50, 2) - 10])
    centres = kmeans_inducing_points(feats, 2, seed=0)
    assert sorted(float(c) for c in centres[:, 0].round()) == pytest.approx([-10, 10], abs=1.0)
    with pytest.raises(ValueError, match="N >= num_inducing = 200"):
        kmeans_inducing_points(feats, 200)
    with pytest.raises(ValueError, match=r"epsilon must lie in \(0, 1 - 1/num_classes\)"):
        RobustMaxLikelihood(10, epsilon=0.95)
    with pytest.raises(ValueError, match="num_classes must be at least 2"):
        RobustMaxLikelihood(1)
    with pytest.raises(TypeError, match="features must be a torch.nn.Module"):
        GPDNNClassifier("cnn", torch.zeros(4, 16))
    classifier = build_gpdnn(small_features(), mnist5k.x_train[:64], num_inducing=8)
    assert classifier.num_inducing == 8
    with pytest.raises(ValueError, match="x and y must be non-empty and of equal length"):
        train_gpdnn(classifier, mnist5k.x_train[:8], mnist5k.y_train[:4], progress=False)
    with pytest.raises(ValueError, match="lr must be a positive number"):
        train_gpdnn(classifier, mnist5k.x_train[:8], mnist5k.y_train[:8], lr=0, progress=False)


def test_gpdnn_zoo_names():
    from advbridge.evaluations.zoo.gpdnn import GPDNN_MODELS, load_gpdnn

    assert "mnist_gpdnn" in GPDNN_MODELS
    with pytest.raises(ValueError, match="unknown GPDNN model 'nope'"):
        load_gpdnn("nope")
    with pytest.raises(ValueError, match=r"defined for datasets \['mnist5k', 'mnist'\], got 'cifar10'"):
        load_gpdnn("mnist_gpdnn", "cifar10")
    # Suites and the zoo resolve it by name (the dataset check proves the dispatch without training it).
    from advbridge.evaluations.zoo.resolve import model_error
    from advbridge.evaluations.zoo.resolve import resolve_model

    assert model_error("mnist_gpdnn") is None
    with pytest.raises(ValueError, match=r"GPDNN model 'mnist_gpdnn' is defined for datasets"):
        resolve_model("mnist_gpdnn", "cifar10", 0, "cpu")
