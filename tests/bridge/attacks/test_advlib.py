"""The optional adv-lib backend: the authors' implementations against Foolbox's ports sample by sample, the L2-FMN
projection bugs of both (pinned on the libraries' own functions), and the clear errors where adv-lib is missing or the
model's box is not [0, 1]."""

import logging
import sys
from pathlib import Path

import eagerpy as ep
import foolbox as fb
import numpy as np
import pytest
import torch
from torch import nn

import advbridge.evaluations.suites as suites_package
from advbridge.bridge import AttackSpec, Model, backend_unavailable, crossval, run_attack
from advbridge.evaluations.suites.load import load_suite

SHIPPED = Path(suites_package.__file__).parent

pytest.importorskip("adv_lib.attacks", reason="adv-lib is not installed: " + str(backend_unavailable("advlib")))


#: (attack, norm, params) -> the largest |x_adv(foolbox) - x_adv(advlib)| measured on the tiny CNN, with headroom.
SAME_OUTPUTS = [
    ("ddn", "l2", {"steps": 30}, 1e-5),
    ("fmn", "linf", {"steps": 30}, 1e-3),
    ("cw", "l2", {"steps": 30, "binary_search_steps": 3}, 1e-2),
]


@pytest.mark.parametrize("attack, norm, params, tol", SAME_OUTPUTS)
def test_advlib_matches_foolbox_sample_by_sample(tiny, attack_set, attack, norm, params, tol):
    """Foolbox's DDN, FMN-L∞ and C&W-L2 are ports of the code adv-lib holds: the same inputs, the same outputs."""
    x, y = attack_set[0][:12], attack_set[1][:12]
    report = crossval(tiny, x, y, AttackSpec(attack, norm, params=params), ("foolbox", "advlib"), progress=False)
    fb_r, al_r = report.results["foolbox"], report.results["advlib"]
    assert fb_r.success.mean() > 0.5
    assert (fb_r.success == al_r.success).all()
    assert float((fb_r.x_adv - al_r.x_adv).abs().max()) <= tol
    assert report.agreement == 1.0


def test_fmn_l2_projections_are_broken_in_both_libraries():
    """The known cause of FMN-L2's gap, on the libraries' own functions: Foolbox's projection is the identity, and
    adv-lib's scales a short step up to the sphere ‖δ‖ = ε. A correct projection onto the ε-ball fails both."""
    from adv_lib.attacks.fast_minimum_norm import l2_projection_

    x0 = torch.zeros(2, 4)
    delta = torch.tensor([[2.0, 0.0, 0.0, 0.0], [0.5, 0.0, 0.0, 0.0]])  # norms 2 and 0.5, ε = 1
    eps = torch.ones(2)
    projected = fb.attacks.L2FMNAttack().project(ep.astensor(x0 + delta), ep.astensor(x0), ep.astensor(eps))
    fb_norms = projected.raw.norm(dim=1)
    assert torch.allclose(fb_norms, torch.tensor([2.0, 0.5]))  # unchanged: the 2 is not brought back to 1
    al_norms = l2_projection_(delta.clone(), eps).norm(dim=1)
    assert torch.allclose(al_norms, torch.tensor([1.0, 1.0]))  # the 0.5 is scaled up to 1


def test_fmn_l2_gap_is_flagged_with_its_cause(tiny, attack_set):
    x, y = attack_set[0][:16], attack_set[1][:16]
    report = crossval(tiny, x, y, AttackSpec("fmn", "l2", params={"steps": 30}), ("foolbox", "advlib"), progress=False)
    flags = [f for f in report.flags if f.code in ("outputs_differ", "success_gap", "norm_gap")]
    assert flags and all("norms / norms" in f.cause for f in flags)


def test_advlib_refuses_a_model_outside_the_unit_box():
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    model = Model(net, (1, 2, 2), bounds=(0.0, 255.0), device="cpu")
    x = torch.full((2, 1, 2, 2), 100.0)
    with pytest.raises(ValueError, match=r"backend 'advlib' attacks inputs in \[0, 1\] only .* \(0.0, 255.0\)"):
        run_attack(model, x, model.predict(x), AttackSpec("ddn", "l2"), "advlib", progress=False)


def test_deepfool_on_advlib_refuses_fewer_candidates_than_classes(tiny, attack_set):
    with pytest.raises(ValueError, match="parameter 'candidates'=3 cannot be honoured by backend 'advlib'"):
        run_attack(tiny, attack_set[0][:2], attack_set[1][:2], AttackSpec("deepfool", "l2", params={"candidates": 3}),
                   "advlib", progress=False)


def test_without_advlib_runs_raise_and_suites_skip_with_the_install_command(tiny, attack_set, monkeypatch, caplog):
    """adv-lib made unimportable (``None`` in ``sys.modules`` is Python's own way to block an import)."""
    monkeypatch.setitem(sys.modules, "adv_lib", None)
    monkeypatch.setitem(sys.modules, "adv_lib.attacks", None)
    why = backend_unavailable("advlib")
    assert why is not None and "needs adv-lib, which is not installed" in why and "pip install" in why
    assert backend_unavailable("art") is None
    with pytest.raises(ImportError, match="needs adv-lib"):
        run_attack(tiny, attack_set[0][:2], attack_set[1][:2], AttackSpec("ddn", "l2"), "advlib", progress=False)
    suite = load_suite(SHIPPED / "toolkit_breadth.toml", quick=True)
    with caplog.at_level(logging.WARNING):
        cells = suite.cells()
    assert cells and all(c.backend != "advlib" for c in cells)
    assert "skipping its cells of backend 'advlib' needs adv-lib" in caplog.text
    monkeypatch.undo()
    assert any(c.backend == "advlib" for c in load_suite(SHIPPED / "toolkit_breadth.toml", quick=True).cells())
    with pytest.raises(ValueError, match="unknown backend 'cleverhans'"):
        backend_unavailable("cleverhans")


def test_advlib_on_a_normalised_pipeline_attacks_the_whole_function(defended, attack_set):
    """adv-lib gets the model's whole pipeline (preprocessor, normalisation, classifier): its outputs are judged by
    the bridge, and a successful point is misclassified by the defended model."""
    x, y = attack_set[0][:6], attack_set[1][:6]
    r = run_attack(defended, x, y, AttackSpec("ddn", "l2", params={"steps": 30}), "advlib", progress=False)
    assert r.success.mean() > 0.5
    assert (defended.predict(r.x_adv[r.success]) != torch.as_tensor(y)[r.success]).all()
    assert np.all(r.norms["l2"][r.success] > 0)
