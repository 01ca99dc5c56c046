"""VAT on both toolkits against float64 plain-torch references of one power iteration, each from the very start
vector the toolkit drew (the bridge seeds every input's RNGs with ``input_seed``; ART draws from numpy, Foolbox from
torch). Foolbox follows the paper (the KL gradient at ``x + xi d``); ART takes the KL gradient at ``x + d``, radius 1,
by float32 finite differences with step ``xi``, which at ``xi = 1e-6`` are round-off."""

import copy

import numpy as np
import pytest
import torch

from advbridge.bridge import AttackSpec, crossval
from advbridge.bridge.attacks import ATTACKS
from advbridge.bridge.run import input_seed, seed_everything

N = 4


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.flatten(1).norm(dim=1).view(-1, *([1] * (v.ndim - 1)))


def kl_gradient(model, x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """``grad_r KL(p(x) || p(x + r))`` per input, in the dtype of ``x``."""
    r = r.clone().requires_grad_(True)
    with torch.no_grad():
        log_p = torch.log_softmax(model(x), 1)
    log_q = torch.log_softmax(model(x + r), 1)
    grad, = torch.autograd.grad((log_p.exp() * (log_p - log_q)).sum(), r)
    return grad


def vat_reference(model, x: torch.Tensor, d0: torch.Tensor, eps: float, radius: float) -> torch.Tensor:
    """One power iteration in float64 from ``d0``, probing at ``radius``, then the step of ``eps``, clipped."""
    model64 = copy.deepcopy(model.pipeline).double()
    d = kl_gradient(model64, x.double(), radius * _unit(d0.double()))
    return (x.double() + eps * _unit(d)).clamp(0, 1).float()


def drawn_start(seed: int, x: torch.Tensor, y: torch.Tensor, backend: str) -> torch.Tensor:
    """The start vector ``backend`` draws for each input, reproduced from the bridge's per-input seed."""
    out = []
    for xi, yi in zip(x, y, strict=True):
        seed_everything(input_seed(seed, xi, yi))
        if backend == "art":  # VirtualAdversarialMethod: np.random.randn on the flattened batch
            out.append(torch.from_numpy(np.random.randn(1, xi.numel()).astype(np.float32)).view(1, *xi.shape))
        else:  # VirtualAdversarialAttack: ep.normal, i.e. torch.randn of the input's shape
            out.append(torch.randn((1, *xi.shape)))
    return torch.cat(out)


@pytest.fixture(scope="module")
def inputs(tiny, attack_set):
    """The first N inputs whose top probability is below 0.99 (float64): on more confident ones the softmax saturates
    in float32 and even a probe of 1e-2 is partly round-off."""
    x, y = attack_set
    with torch.no_grad():
        top = torch.softmax(copy.deepcopy(tiny.pipeline).double()(x.double()), 1).max(1).values
    keep = (top < 0.99).nonzero().flatten()[:N]
    assert len(keep) == N
    return x[keep], y[keep]


@pytest.fixture(scope="module")
def reports(tiny, inputs):
    x, y = inputs
    return {xi: crossval(tiny, x, y, AttackSpec("vat", "l2", params={"xi": xi}), progress=False)
            for xi in (1e-2, 1e-6)}


def _errors(tiny, inputs, reports, xi: float) -> dict[str, np.ndarray]:
    """Per-input L2 distance of each toolkit's output from the reference with its own start: Foolbox probing at
    ``xi`` (the paper), ART at radius 1 (ART) and at ``xi`` (the paper)."""
    x, y = inputs
    eps = reports[xi].params["eps"]
    art, foolbox = reports[xi].results["art"].x_adv, reports[xi].results["foolbox"].x_adv
    d_art, d_fb = drawn_start(0, x, y, "art"), drawn_start(0, x, y, "foolbox")
    dist = lambda a, b: (a - b).flatten(1).norm(dim=1).numpy()  # noqa: E731
    return {"foolbox": dist(foolbox, vat_reference(tiny, x, d_fb, eps, xi)),
            "art": dist(art, vat_reference(tiny, x, d_art, eps, 1.0)),
            "art_paper": dist(art, vat_reference(tiny, x, d_art, eps, xi))}


def test_each_toolkit_follows_its_own_probe(tiny, inputs, reports):
    err = _errors(tiny, inputs, reports, 1e-2)
    assert err["foolbox"].max() < 0.05   # measured <= 0.012: the paper's Hessian-vector product
    assert err["art"].max() < 0.05       # measured <= 0.026 (finite differences): the gradient at radius 1
    assert (err["art_paper"] > 2 * err["art"]).all()  # measured 0.08-0.20: ART does not probe at xi
    for r in reports[1e-2].results.values():  # one step of eps, shortened only by the clip to [0, 1]
        assert (r.norms["l2"] <= reports[1e-2].params["eps"] + 1e-4).all() and r.norms["l2"].min() > 0.5


def test_at_xi_1e_6_the_float32_directions_are_round_off(tiny, inputs, reports):
    err = _errors(tiny, inputs, reports, 1e-6)
    # Unit directions scaled by eps = 1: a distance near sqrt(2) is an unrelated direction.
    assert err["art"].min() > 0.5       # measured 0.80-0.97: ART's finite differences are noise
    assert err["foolbox"].min() > 0.2   # measured 0.41-1.36: Foolbox's gradient at a 1e-6 probe is round-off too


def test_statistical_crossval_and_the_cause(reports):
    report = reports[1e-2]
    assert "McNemar p art/foolbox (per-sample success)" in report.ratios  # compared statistically (random start)
    assert not any(key.startswith("max |x_adv") for key in report.ratios)
    assert not [f for f in report.flags if f.code not in ("defaults_differ", "success_gap")]
    (cause,) = ATTACKS["vat"].known_causes
    assert cause.flags == {"success_gap"} and "finite differences" in cause.cause


def test_bad_parameters_and_toolkit_defaults():
    for key, bad in (("xi", 0.0), ("steps", 0), ("eps", -1.0)):
        with pytest.raises(ValueError, match=rf"parameter '{key}' of attack 'vat' must be > 0"):
            AttackSpec("vat", "l2", params={key: bad}).resolved_params()
    with pytest.raises(ValueError, match="cannot run attack 'vat' targeted"):
        ATTACKS["vat"].check_backend("foolbox", "l2", ATTACKS["vat"].resolve("l2", {}), targeted=True)
    assert ATTACKS["vat"].differing_toolkit_defaults("art", "l2", AttackSpec("vat", "l2").resolved_params()) == \
        {"eps": (0.1, 1.0), "steps": (10, 1), "xi": (1e-6, 1e-2)}
