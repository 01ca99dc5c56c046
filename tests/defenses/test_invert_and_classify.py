"""Invert-and-Classify: BPDA gradients, ART and Foolbox attacks through it, batch independence, input checks and the
Enhanced INC trainer (the projection itself: test_projection.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from art.attacks.evasion import ProjectedGradientDescent
from torch import nn

from advbridge.bridge import Model
from advbridge.defenses.generative import VAE
from advbridge.defenses.invert_and_classify import EnhancedInvertAndClassify, InvertAndClassify
from advbridge.defenses.projection import GeneratorProjection, project
from advbridge.defenses.magnet import MagNet


def test_bad_projection_settings_name_the_argument(pca):
    x = torch.zeros(1, 1, 28, 28)
    with pytest.raises(ValueError, match=r"steps must be a positive integer, got 0"):
        project(pca, x, 16, steps=0)
    with pytest.raises(ValueError, match=r"momentum must be a number in \[0, 1\), got 1.5"):
        project(pca, x, 16, momentum=1.5)
    with pytest.raises(ValueError, match=r"optimizer must be one of \['sgd', 'adam'\], got 'lbfgs'"):
        InvertAndClassify(pca, 16, optimizer="lbfgs")
    with pytest.raises(ValueError, match=r"gradient must be one of \['bpda', 'unrolled'\], got 'none'"):
        InvertAndClassify(pca, 16, gradient="none")


def test_bpda_gradient_is_the_classifier_gradient_at_the_projection(pca, tiny, attack_set):
    x, y = attack_set[0][:8], attack_set[1][:8]
    inc = InvertAndClassify(pca, 16, steps=30, restarts=2)
    defended = Model(tiny.module, (1, 28, 28), preprocessing=[inc], device="cpu")
    art = defended.art()
    onehot = np.eye(10, dtype=np.float32)[y.numpy()]
    grad = art.loss_gradient(x.numpy(), onehot)
    assert (np.abs(grad).reshape(8, -1).max(1) > 0).all(), "ART got a zero gradient through the projection"
    with torch.no_grad():
        projected = inc.forward(x)[0]
    expected = tiny.art().loss_gradient(projected.numpy(), onehot)
    np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-7)


def test_art_and_foolbox_pgd_break_inc_with_bpda(pca, tiny, attack_set):
    import foolbox as fb

    x, y = attack_set[0][:16], attack_set[1][:16]
    inc = InvertAndClassify(pca, 16, steps=30, restarts=2)
    defended = Model(tiny.module, (1, 28, 28), preprocessing=[inc], device="cpu")
    clean = (defended.predict(x) == y).float().mean()
    pgd = ProjectedGradientDescent(defended.art(), eps=0.3, eps_step=0.05, max_iter=10, verbose=False)
    x_adv = torch.from_numpy(pgd.generate(x.numpy()))
    art_acc = (defended.predict(x_adv) == y).float().mean()
    _, adv, _ = fb.attacks.LinfPGD(steps=10, abs_stepsize=0.05, random_start=False)(
        defended.foolbox(), x, y, epsilons=0.3)
    fb_acc = (defended.predict(adv) == y).float().mean()
    assert clean >= 0.5
    assert art_acc <= clean - 0.3 and fb_acc <= clean - 0.3


def test_magnet_system_with_inc_classifies_the_projection(pca, tiny, attack_set):
    x, y = attack_set
    inc = InvertAndClassify(pca, 16, steps=30, restarts=2)
    out = MagNet(tiny.pipeline, {}, inc, device="cpu").run(x)
    with torch.no_grad():
        expected = tiny.module(inc.forward(x)[0]).argmax(1).numpy()
    np.testing.assert_array_equal(out.pred_reformed, expected)
    assert not out.rejected.any()


def test_enhanced_inc_shrinks_the_robustness_gap(pca, tiny, mnist5k):
    import copy

    module = copy.deepcopy(tiny.module)
    art = Model(module, (1, 28, 28), device="cpu").art()
    projection = GeneratorProjection(pca, 16, steps=20, restarts=1)
    trainer = EnhancedInvertAndClassify(art, projection, mu=1.0, eta=2.0, epochs=2, lr=1e-3, batch_size=64,
                                        inner_steps=3, inner_lr=0.1, seed=0)
    x, y = mnist5k.x_train[:256], mnist5k.y_train[:256]
    z, _ = trainer.project_dataset(x)
    torch.manual_seed(1)
    before = trainer.robustness_gap(z[:128]).item()
    trainer.fit_projected(z, x, y)
    torch.manual_seed(1)
    after = trainer.robustness_gap(z[:128]).item()
    assert len(trainer.history) == 2 and all(np.isfinite(h["loss"]) for h in trainer.history)
    assert after < 0.85 * before
    with pytest.raises(ValueError, match=r"mu must be a number in \[0, 1\], got 2"):
        EnhancedInvertAndClassify(art, projection, mu=2)


@pytest.fixture(scope="module")
def conv_decoder():
    """A seeded, untrained convolutional VAE decoder (latent 8): a non-convex projection problem."""
    torch.manual_seed(0)
    return VAE(latent_dim=8).decoder


@pytest.mark.parametrize("which", ["pca", "conv"])
def test_projection_of_an_image_does_not_depend_on_its_batch(which, pca, conv_decoder, mnist5k):
    """An image alone, at another position of a batch of 5, and in MagNet sweeps of batch size 1, 2 and 5: one
    projection (d798862 drew z₀ per batch position: up to 0.05 apart). Few steps, so z₀ still matters."""
    generator, d = (pca, 16) if which == "pca" else (conv_decoder, 8)
    x = mnist5k.x_test[:5]
    inc = InvertAndClassify(generator, d, steps=8, restarts=3, seed=3)
    alone = inc.forward(x[:1])[0]
    order = torch.tensor([1, 2, 3, 0, 4])  # image 0 at position 3
    in_batch = inc.forward(x[order])[0]
    assert (in_batch[3] - alone[0]).abs().max() <= 1e-6
    fresh = InvertAndClassify(generator, d, steps=8, restarts=3, seed=3)  # no memo shared with the calls above
    whole = fresh.forward(x)[0]
    for i in range(5):
        assert (whole[i] - fresh.forward(x[i:i + 1])[0][0]).abs().max() <= 1e-6
    torch.manual_seed(0)
    system = MagNet(nn.Sequential(nn.Flatten(), nn.Linear(784, 10)), {}, inc)
    predictions = [system.predict(x, batch_size=b) for b in (1, 2, 5)]
    assert all(np.array_equal(predictions[0], other) for other in predictions[1:])
    with torch.no_grad():
        sweeps = [torch.cat([inc.projection(x[i:i + b]) for i in range(0, 5, b)]) for b in (1, 2, 5)]
    assert max(float((sweeps[0] - other).abs().max()) for other in sweeps[1:]) <= 1e-6
    other_seed = InvertAndClassify(generator, d, steps=8, restarts=3, seed=4).forward(x[:1])[0]
    assert (other_seed - alone).abs().max() > 1e-4  # the seed still matters: z₀ is drawn, not fixed


BAD = {
    "x255": (lambda x: x * 255, r"outside the bounds \[0, 1\] \(it looks like 0-255 pixels"),
    "wrong_hw": (lambda x: nn.functional.pad(x, (2, 2, 2, 2)), r"has shape \(2, 1, 32, 32\); expected \(N, 1, 28, 28\)"),
    "channels_last": (lambda x: x.permute(0, 2, 3, 1), r"looks channels-last"),
    "three_channels": (lambda x: x.repeat(1, 3, 1, 1), r"has shape \(2, 3, 28, 28\); expected \(N, 1, 28, 28\)"),
    "nan": (lambda x: x.masked_fill(x > 0.5, float("nan")), r"contains NaN or inf"),
}


@pytest.mark.parametrize("bad", sorted(BAD))
def test_inc_rejects_bad_images(bad, pca, mnist5k):
    transform, message = BAD[bad]
    x = transform(mnist5k.x_test[:2])
    inc = InvertAndClassify(pca, 16, steps=2, restarts=1)
    with pytest.raises(ValueError, match=message):
        inc.forward(x)
    with pytest.raises(ValueError, match=message):
        InvertAndClassify(pca, 16, steps=2, restarts=1, gradient="unrolled").forward(x.requires_grad_(True))
    with pytest.raises(ValueError, match=message):
        MagNet(nn.Sequential(nn.Flatten(), nn.Linear(784, 10)), {}, inc).predict(x)


def test_inc_check_keeps_the_straight_through_gradient(pca, mnist5k):
    inc = InvertAndClassify(pca, 16, steps=2, restarts=1)
    x = mnist5k.x_test[:2].clone().requires_grad_(True)
    out, _ = inc.forward(x)
    assert out.requires_grad and out.device == x.device
    out.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))  # BPDA: identity backward, untouched by the input check
    assert inc.projection.image_shape == (1, 28, 28)


class _Affine(nn.Module):
    """A fixed input transform (a defence stand-in) in front of the classifier: ``0.8 x + 0.1``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.8 * x + 0.1


def _wrapped_linear(seed: int = 0) -> Model:
    torch.manual_seed(seed)
    module = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    return Model(module, (1, 28, 28), mean=[0.5], std=[0.25], preprocessing=[_Affine()], device="cpu")


def _cross_entropy(logits: np.ndarray, y: np.ndarray) -> float:
    z = logits.astype(np.float64) - logits.max(1, keepdims=True)
    return float(-(z[np.arange(len(y)), y] - np.log(np.exp(z).sum(1))).mean())


def test_enhanced_inc_cross_entropy_is_the_wrapped_classifier_on_the_training_images(pca, mnist5k):
    """§3.1's CE(y_i, C(x_i)) with C the ART classifier's whole function: its preprocessing defence, its mean/std
    and its model (d798862 took the bare module on G(z*), skipping both)."""
    model = _wrapped_linear()
    art = model.art()
    x, y = mnist5k.x_train[:64], mnist5k.y_train[:64]
    expected = _cross_entropy(art.predict(x.numpy()), y.numpy())  # before training: ART's own forward pass
    trainer = EnhancedInvertAndClassify(art, GeneratorProjection(pca, 16, steps=3, restarts=1), mu=0.0, epochs=3,
                                        lr=1e-3, batch_size=64, seed=0)
    trainer.fit(x.numpy(), y.numpy())
    assert trainer.history[0]["ce"] == pytest.approx(expected, rel=1e-5)  # one batch: the loss before its step
    assert trainer.history[-1]["ce"] < trainer.history[0]["ce"]
    # what was trained is what is judged: the wrapped classifier's CE on x went down
    assert _cross_entropy(art.predict(x.numpy()), y.numpy()) < expected


def test_enhanced_inc_robustness_term_goes_through_the_wrapped_classifier(pca, mnist5k):
    model = _wrapped_linear()
    art = model.art()
    trainer = EnhancedInvertAndClassify(art, GeneratorProjection(pca, 16, steps=3, restarts=1), mu=1.0,
                                        inner_steps=0, seed=0)
    z, _ = trainer.project_dataset(mnist5k.x_train[:16])
    torch.manual_seed(5)
    with torch.no_grad():
        gap = float(trainer.robustness_gap(z))
    torch.manual_seed(5)
    moved = pca(z + 0.01 * torch.randn_like(z)).clamp(0, 1)  # no ascent steps: z' is the noisy start

    def probs(images):
        logits = art.predict(images.numpy()).astype(np.float64)
        e = np.exp(logits - logits.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)
    expected = ((probs(moved) - probs(pca(z).clamp(0, 1))) ** 2).sum(1).mean()
    assert gap == pytest.approx(expected, rel=1e-4)


def test_enhanced_inc_checks_its_training_data(pca, mnist5k):
    art = _wrapped_linear().art()
    trainer = EnhancedInvertAndClassify(art, GeneratorProjection(pca, 16, steps=2, restarts=1), epochs=1)
    x, y = mnist5k.x_train[:4].numpy(), mnist5k.y_train[:4].numpy()
    with pytest.raises(ValueError, match="outside the bounds"):
        trainer.fit(x * 255, y)
    with pytest.raises(ValueError, match="looks channels-last"):
        trainer.fit(x.transpose(0, 2, 3, 1), y)
    with pytest.raises(TypeError, match="y must hold integer class indices"):
        trainer.fit(x, y.astype(np.float32))
    with pytest.raises(ValueError, match=r"y has labels in \[0, 10\]"):
        trainer.fit(x, np.array([0, 1, 2, 10]))
