"""MI-FGSM on both toolkits against two plain-torch references of Dong et al.'s update, one per accumulation rule:
ART accumulates the L1-normalised gradient (the paper), Foolbox the sign of the gradient. The references are what
make the ``outputs_differ`` cause a measurement rather than a guess."""

import numpy as np
import pytest
import torch
from torch import nn

from advbridge.bridge import AttackSpec, crossval, run_attack


def mifgsm_reference(model, x, y, eps: float, step: float, steps: int, momentum: float, accumulate: str):
    """L∞ MI-FGSM: ``g ← μ·g + a(∇)`` with ``a`` = ∇/‖∇‖₁ (``"l1"``) or sign(∇) (``"sign"``), a step of ``step`` along
    sign(g), then the projection onto the ε-ball and the clip to [0, 1] (which commute in L∞)."""
    xa, g = x.clone(), torch.zeros_like(x)
    for _ in range(steps):
        xa.requires_grad_(True)
        grad, = torch.autograd.grad(nn.functional.cross_entropy(model.pipeline(xa), y, reduction="sum"), xa)
        if accumulate == "l1":
            grad = grad / grad.flatten(1).abs().sum(1).clamp_min(1e-30).view(-1, 1, 1, 1)
        else:
            grad = grad.sign()
        g = momentum * g + grad
        xa = (x + (xa.detach() + step * g.sign() - x).clamp(-eps, eps)).clamp(0, 1)
    return xa


@pytest.fixture(scope="module")
def runs(tiny, attack_set):
    x, y = attack_set
    out = {}
    for momentum in (0.0, 1.0):
        spec = AttackSpec("mifgsm", "linf", params={"momentum": momentum})
        out[momentum] = {b: run_attack(tiny, x, y, spec, b, progress=False) for b in ("art", "foolbox")}
    return out


def test_without_momentum_both_toolkits_are_bim(tiny, attack_set, runs):
    x, y = attack_set
    art, foolbox = runs[0.0]["art"].x_adv, runs[0.0]["foolbox"].x_adv
    bim = run_attack(tiny, x, y, AttackSpec("bim", "linf"), "art", progress=False).x_adv
    assert torch.equal(art, foolbox)
    assert float((art - bim).abs().max()) < 1e-6


def test_with_momentum_each_toolkit_follows_its_own_accumulation_rule(tiny, attack_set, runs):
    x, y = attack_set
    p = AttackSpec("mifgsm", "linf").resolved_params()
    art, foolbox = runs[1.0]["art"].x_adv, runs[1.0]["foolbox"].x_adv
    l1 = mifgsm_reference(tiny, x, y, p["eps"], p["step_size"], p["steps"], 1.0, "l1")
    sign = mifgsm_reference(tiny, x, y, p["eps"], p["step_size"], p["steps"], 1.0, "sign")
    assert float((art - foolbox).abs().max()) > 0.05  # measured 0.16: a real difference, not float noise
    assert float((art - l1).abs().max()) < 1e-5       # ART: Dong et al.'s L1-normalised accumulation
    assert float((foolbox - sign).abs().max()) < 1e-5  # Foolbox: the sign accumulated
    assert float((art - sign).abs().max()) > 0.05 and float((foolbox - l1).abs().max()) > 0.05
    # Both stay inside the ε-ball and the bounds.
    for adv in (art, foolbox):
        assert float((adv - x).abs().max()) <= p["eps"] + 1e-6 and adv.min() >= 0 and adv.max() <= 1


def test_crossval_flags_carry_the_accumulation_and_algorithm_causes(tiny, attack_set):
    x, y = attack_set
    linf = crossval(tiny, x, y, AttackSpec("mifgsm", "linf"), progress=False)
    (flag,) = [f for f in linf.flags if f.code == "outputs_differ"]
    assert flag.cause and "L1-normalised" in flag.cause
    l1 = crossval(tiny, x[:8], y[:8], AttackSpec("mifgsm", "l1"), progress=False)
    causes = {f.code: f.cause for f in l1.flags}
    assert "outputs_differ" in causes and "not the same algorithm" in causes["outputs_differ"]
    unexplained = crossval(tiny, x, y, AttackSpec("mifgsm", "linf", params={"momentum": 0.0}), progress=False)
    assert not [f for f in unexplained.flags if f.code == "outputs_differ"]


def test_toolkit_defaults_and_bad_momentum():
    spec = AttackSpec("mifgsm", "linf", params={"eps": 0.2})
    assert spec.resolved_params()["step_size"] == pytest.approx(0.04)
    assert np.isclose(spec.resolved_params()["momentum"], 1.0)
    with pytest.raises(ValueError, match=r"mifgsm: momentum must be a number >= 0, got -0.5"):
        AttackSpec("mifgsm", "linf", params={"momentum": -0.5}).resolved_params()
