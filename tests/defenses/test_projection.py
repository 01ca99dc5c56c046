"""Defense-GAN's projection: PCA's closed form, restarts batched against the Python loop, unrolled gradients against
finite differences, and the memo."""

from __future__ import annotations

import pytest
import torch

from advbridge.defenses.projection import GeneratorProjection, descend, initial_codes, project


def closed_form(pca, x: torch.Tensor) -> torch.Tensor:
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
    z0 = initial_codes(4, 4, 16, init_std=0.25, seed=0)  # the default sqrt(1/d) for d = 16
    finals = torch.stack([descend(pca, x, z0[:, r], 5, 10.0, 0.7, "sgd", (0.0, 1.0), False)[1] for r in range(4)], 1)
    assert torch.allclose(a.mse, finals.min(1).values, atol=1e-7)
    assert torch.allclose(a.mse, (a.images - x).pow(2).flatten(1).mean(1), atol=1e-7)


def test_unrolled_gradient_matches_finite_differences(pca, mnist5k):
    gen = type(pca)(pca.mean.double(), pca.basis.double())
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


def test_projection_memo_is_exact(pca, mnist5k):
    x = mnist5k.x_test[:6]
    projection = GeneratorProjection(pca, 16, steps=5, restarts=2)
    first = projection.project(x)
    assert projection.project(x.clone()) is first  # an identical batch is served from the memo
    halves = torch.cat([projection.project(x[:3]).images, projection.project(x[3:]).images])
    assert (halves - first.images).abs().max() <= 1e-6  # split batches agree (float rounding of the BLAS only)
    recomputed = GeneratorProjection(pca, 16, steps=5, restarts=2).project(x)
    assert torch.equal(recomputed.images, first.images) and torch.equal(recomputed.z, first.z)
