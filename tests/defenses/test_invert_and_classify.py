"""Invert-and-Classify: the projection against PCA's closed form, BPDA/unrolled gradients, ART and Foolbox attacks
through it, and the Enhanced INC trainer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from art.attacks.evasion import ProjectedGradientDescent
from torch import nn

from advbridge.bridge import Model
from advbridge.defenses.invert_and_classify import (EnhancedInvertAndClassify, GeneratorProjection, InvertAndClassify,
                                                    _descend, initial_codes, project)
from advbridge.defenses.magnet import MagNet


class LinearGenerator(nn.Module):
    """``G(z) = mean + W z`` with orthonormal W: PCA as a generative model, whose projection has a closed form."""

    def __init__(self, mean: torch.Tensor, basis: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean.flatten())
        self.register_buffer("basis", basis)  # (D, d), orthonormal columns

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return (self.mean + z @ self.basis.T).reshape(len(z), 1, 28, 28)


@pytest.fixture(scope="module")
def pca(mnist5k):
    x = mnist5k.x_train[:2000].flatten(1)
    mean = x.mean(0)
    _, _, v = torch.linalg.svd(x - mean, full_matrices=False)
    return LinearGenerator(mean, v[:16].T.contiguous())


def closed_form(pca: LinearGenerator, x: torch.Tensor) -> torch.Tensor:
    z = (x.flatten(1) - pca.mean) @ pca.basis
    return pca(z)


def test_projection_reaches_the_closed_form_on_pca(pca, mnist5k):
    # Unclamped bounds: the least-squares projection on the PCA plane is exact and unique.
    x = mnist5k.x_test[:8]
    p = project(pca, x, 16, steps=200, restarts=3, lr=10.0, momentum=0.7, bounds=(-10.0, 10.0))
    assert torch.allclose(p.images, closed_form(pca, x), atol=1e-3)
    assert p.z.shape == (8, 16) and p.mse.shape == (8,)


def test_restarts_batched_equal_the_python_loop_and_keep_the_best(pca, mnist5k):
    x = mnist5k.x_test[:4]
    a = project(pca, x, 16, steps=5, restarts=4, batched=True)
    b = project(pca, x, 16, steps=5, restarts=4, batched=False)
    assert torch.allclose(a.images, b.images, atol=1e-5)
    z0 = initial_codes(4, 4, 16, init_std=0.25, seed=0, device=x.device)  # the default sqrt(1/d) for d = 16
    finals = torch.stack([_descend(pca, x, z0[:, r], 5, 10.0, 0.7, "sgd", (0.0, 1.0), False)[1] for r in range(4)], 1)
    assert torch.allclose(a.mse, finals.min(1).values, atol=1e-7)
    assert torch.allclose(a.mse, (a.images - x).pow(2).flatten(1).mean(1), atol=1e-7)


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


def test_unrolled_gradient_matches_finite_differences(pca, mnist5k):
    gen = LinearGenerator(pca.mean.double(), pca.basis.double())
    x = mnist5k.x_test[:1].double().requires_grad_(True)
    direction = torch.randn(x.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = project(gen, x, 16, steps=5, restarts=1, lr=5.0, create_graph=True, bounds=(-10.0, 10.0))
    (out.images * out.images).sum().backward()
    analytic = float((x.grad * direction).sum())

    def value(t: float) -> float:
        with torch.no_grad():
            moved = (x + t * direction).detach()
        imgs = project(gen, moved, 16, steps=5, restarts=1, lr=5.0, bounds=(-10.0, 10.0)).images
        return float((imgs * imgs).sum())
    numeric = (value(1e-4) - value(-1e-4)) / 2e-4
    assert analytic == pytest.approx(numeric, rel=1e-4)


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
    z, images = trainer.project_dataset(x)
    torch.manual_seed(1)
    before = trainer._robustness(module.eval(), pca, z[:128], (0.0, 1.0)).item()
    trainer.fit_projected(z, images, y)
    torch.manual_seed(1)
    after = trainer._robustness(module.eval(), pca, z[:128], (0.0, 1.0)).item()
    assert len(trainer.history) == 2 and all(np.isfinite(h["loss"]) for h in trainer.history)
    assert after < 0.85 * before
    with pytest.raises(ValueError, match=r"mu must be a number in \[0, 1\], got 2"):
        EnhancedInvertAndClassify(art, projection, mu=2)
