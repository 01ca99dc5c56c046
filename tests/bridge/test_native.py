"""Native attacks: L-BFGS (Szegedy) and their ART EvasionAttack interface."""

import numpy as np
import pytest

from advbridge.bridge import AttackSpec, run_attack
from advbridge.bridge.attacks import LBFGS, StepLL


def test_lbfgs_finds_small_untargeted_perturbations(tiny, attack_set):
    x, y = attack_set
    x, y = x[:8], y[:8]
    result = run_attack(tiny, x, y, AttackSpec("lbfgs", params={"binary_search_steps": 4, "steps": 50}), "native")
    assert result.success_rate >= 0.9
    # Minimal: smaller than the L2 budget at which PGD needs to work for the same inputs.
    pgd = run_attack(tiny, x, y, AttackSpec("pgd", "l2", params={"eps": 3.0}), "art")
    both = result.success & pgd.success
    assert np.median(result.norms["l2"][both]) < np.median(pgd.norms["l2"][both])
    assert result.norms["l2"].max() < 4.0


def test_lbfgs_targeted_reaches_the_target(tiny, attack_set):
    x, y = attack_set
    x, y = x[:6], y[:6]
    spec = AttackSpec("lbfgs", targeted="random", params={"binary_search_steps": 4, "steps": 50})
    result = run_attack(tiny, x, y, spec, "native", seed=1)
    assert result.success_rate >= 0.8
    assert np.array_equal(result.pred_adv[result.success], result.targets[result.success])


def test_native_attacks_are_art_evasion_attacks(tiny, attack_set):
    from art.attacks.attack import EvasionAttack

    x, y = attack_set
    clf = tiny.art()
    assert isinstance(StepLL(clf), EvasionAttack) and isinstance(LBFGS(clf), EvasionAttack)
    adv = StepLL(clf, eps=0.2).generate(x[:4].numpy())  # ART-style call, y=None → least-likely class
    assert np.abs(adv - x[:4].numpy()).max() == pytest.approx(0.2, abs=1e-6)
    with pytest.raises(ValueError, match="eps must be a positive number"):
        StepLL(clf, eps=-1)
    with pytest.raises(ValueError, match="binary_search_steps must be a positive integer"):
        LBFGS(clf, binary_search_steps=0)


def test_lbfgs_sample_does_not_depend_on_its_batch(tiny, attack_set):
    """Each sample runs its own L-BFGS-B and bisection: alone or at position 4 of a batch of 8, the same x_adv."""
    x, y = attack_set
    spec = AttackSpec("lbfgs", params={"binary_search_steps": 2, "steps": 20})
    batch = run_attack(tiny, x[3:11], y[3:11], spec, "native", progress=False)
    alone = run_attack(tiny, x[7:8], y[7:8], spec, "native", progress=False)
    assert alone.success[0]
    assert float((batch.x_adv[4] - alone.x_adv[0]).abs().max()) <= 1e-6
    assert batch.norms["l2"][4] == pytest.approx(alone.norms["l2"][0], abs=1e-6)
