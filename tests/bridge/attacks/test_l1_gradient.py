"""FGM and PGD in L1: not the same algorithm in ART and Foolbox. Plain-torch references of each toolkit's L1 step
show which one each implements (ART: the one coordinate of largest |gradient|; Foolbox: every coordinate along
gradient/‖gradient‖₁), and crossval's flags carry that cause."""

import pytest
import torch
from torch import nn

from advbridge.bridge import AttackSpec, crossval, run_attack


def l1_fgm_reference(model, x, y, eps: float, sparse: bool) -> torch.Tensor:
    xa = x.clone().requires_grad_(True)
    grad, = torch.autograd.grad(nn.functional.cross_entropy(model.pipeline(xa), y, reduction="sum"), xa)
    g = grad.flatten(1)
    if sparse:  # ART: the whole step on argmax |g|
        step = torch.zeros_like(g)
        idx = g.abs().argmax(1)
        step[torch.arange(len(g)), idx] = g[torch.arange(len(g)), idx].sign()
    else:       # Foolbox: g / ‖g‖₁
        step = g / g.abs().sum(1, keepdim=True).clamp_min(1e-12)
    return (x + eps * step.view_as(x)).clamp(0, 1)


@pytest.mark.parametrize("eps", [10.0, 30.0])
def test_each_toolkit_l1_fgm_matches_its_own_reference(tiny, attack_set, eps):
    x, y = attack_set
    spec = AttackSpec("fgsm", "l1", params={"eps": eps})
    art = run_attack(tiny, x, y, spec, "art", progress=False)
    foolbox = run_attack(tiny, x, y, spec, "foolbox", progress=False)
    sparse, dense = l1_fgm_reference(tiny, x, y, eps, True), l1_fgm_reference(tiny, x, y, eps, False)
    assert float((art.x_adv - sparse).abs().max()) < 1e-5
    assert int((art.x_adv != x).flatten(1).sum(1).max()) <= 1  # one coordinate per sample, whatever eps
    assert float((foolbox.x_adv - dense).abs().max()) < 1e-5
    assert (foolbox.x_adv != x).flatten(1).sum(1).float().median() > 100  # dense: hundreds of pixels move


@pytest.mark.parametrize("name", ["fgsm", "pgd"])
def test_crossval_l1_flags_name_the_algorithm_difference(tiny, attack_set, name):
    x, y = attack_set
    report = crossval(tiny, x, y, AttackSpec(name, "l1", params={"eps": 30.0}), progress=False)
    causes = {f.code: f.cause for f in report.flags}
    assert "success_gap" in causes, causes  # ART's sparse step barely moves the input
    assert "not the same algorithm in L1" in causes["success_gap"]
    assert "not the same algorithm in L1" in causes["outputs_differ"]
    if name == "pgd":
        assert "SparseL1DescentAttack" in causes["outputs_differ"]
