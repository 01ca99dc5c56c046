"""The exact oracle against independent references: brute force on a 2-D toy problem, the closed form of an affine
model where the box is inactive, verified minimisers, attacks that never undercut it, and a corrupted oracle that
the undercut check catches."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from advbridge.bridge import AttackSpec, Model, run_attack
from advbridge.evaluations.analysis.exact import affine_closed_form, minimal_distance, undercuts


def _toy(hidden: int | None, seed: int) -> nn.Sequential:
    """A random float64 network on [0, 1]² with 3 classes, each covering at least 5% of the box (the first such
    draw from ``seed``)."""
    axis = torch.linspace(0, 1, 41, dtype=torch.float64)
    coarse = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
    for attempt in range(200):
        torch.manual_seed(1000 * seed + attempt)
        if hidden is None:
            net = nn.Sequential(nn.Linear(2, 3)).double()
        else:
            net = nn.Sequential(nn.Linear(2, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                nn.Linear(hidden, 3)).double()
        with torch.no_grad():  # steeper layers, the first layer's kinks through random points of the box
            for layer in net:
                if isinstance(layer, nn.Linear):
                    layer.weight.mul_(4.0)
            net[0].bias.copy_(-(net[0].weight * torch.rand(net[0].out_features, 2, dtype=torch.float64)).sum(1))
            shares = torch.bincount(net(coarse).argmax(1), minlength=3) / len(coarse)
        if shares.min() >= 0.05:
            return net
    raise AssertionError("no toy network with three classes")


GRID = 801  # spacing h = 1/800 on [0, 1]²


def _brute_force(net: nn.Module, x0: np.ndarray, y: int, norm: str) -> float:
    """The smallest distance from x0 to a grid point of [0, 1]² that the network puts in another class."""
    axis = np.linspace(0.0, 1.0, GRID)
    pts = np.stack(np.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
    with torch.no_grad():
        pred = net(torch.as_tensor(pts, dtype=torch.float64)).argmax(1).numpy()
    delta = pts[pred != y] - x0
    if not len(delta):
        return math.inf
    return float({"linf": np.abs(delta).max(1), "l1": np.abs(delta).sum(1), "l2": np.linalg.norm(delta, axis=1)}[norm]
                 .min())


TOY_CASES = [(None, "linf"), (None, "l1"), (None, "l2"), (8, "linf"), (8, "l1")]


@pytest.mark.parametrize("hidden, norm", TOY_CASES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_oracle_equals_brute_force_on_a_2d_toy(hidden, norm, seed):
    """No grid point beats the oracle (soundness), and the oracle is within the grid's resolution of the best grid
    point (tightness): an encoding error of a ReLU, a bound or a class would break one of the two."""
    net = _toy(hidden, seed)
    rng = np.random.default_rng(seed)
    checked = 0
    for _ in range(6):
        x0 = rng.uniform(0.2, 0.8, 2)
        y = int(net(torch.as_tensor(x0)[None]).argmax(1))
        grid = _brute_force(net, x0, y, norm)
        r = minimal_distance(net, torch.as_tensor(x0), y, norm, margin=1e-7, incumbent=math.inf)
        if not math.isfinite(grid):
            assert r.distance == math.inf and r.exact
            continue
        checked += 1
        assert r.exact and r.verified
        h = 1.0 / (GRID - 1)
        assert grid >= r.distance - 1e-6  # nothing on the grid is closer than the exact minimum
        assert grid <= r.distance + 2 * h + 1e-6  # and the grid gets as close as its spacing allows
    assert checked >= 3


@pytest.fixture(scope="module")
def linear():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    with torch.no_grad():
        net[1].weight.mul_(3.0)
    x = (0.5 + 0.02 * torch.randn(6, 1, 28, 28)).clamp(0, 1)
    return net, x, net(x).argmax(1)


@pytest.mark.parametrize("norm", ["linf", "l2", "l1"])
def test_affine_oracle_equals_the_closed_form_where_the_box_is_inactive(linear, norm):
    net, x, y = linear
    w, b = net[1].weight.detach().double().numpy(), net[1].bias.detach().double().numpy()
    for i in range(3):
        flat = x[i].double().flatten().numpy()
        closed = affine_closed_form(w, b, flat, int(y[i]), norm)
        boxed = minimal_distance(net, x[i], int(y[i]), norm)
        assert boxed.exact and boxed.verified and boxed.unstable == 0
        assert boxed.distance >= closed - 1e-9  # the box only removes points
        wide = minimal_distance(net, x[i], int(y[i]), norm, bounds=(-10.0, 10.0))
        assert wide.distance == pytest.approx(closed, rel=1e-6, abs=2 * wide.margin_slack)
        if norm != "l1":  # L1's closed form puts everything on one pixel, past the [0, 1] box
            assert boxed.distance == pytest.approx(closed, abs=2 * boxed.margin_slack)
        else:
            assert boxed.distance > closed * 1.01


def test_every_minimiser_is_verified_by_a_forward_pass(linear):
    net, x, y = linear
    for norm in ("linf", "l1", "l2"):
        r = minimal_distance(net, x[0], int(y[0]), norm)
        delta = (torch.as_tensor(r.x_star) - x[0]).flatten().double()
        size = {"linf": delta.abs().max(), "l1": delta.abs().sum(), "l2": delta.norm()}[norm]
        assert float(size) == pytest.approx(r.distance, rel=1e-4)
        assert int(net(torch.as_tensor(r.x_star, dtype=torch.float32)[None]).argmax(1)) == r.target != int(y[0])
        assert 0 <= r.x_star.min() and r.x_star.max() <= 1


@pytest.mark.parametrize("attack, norm, backend", [("deepfool", "l2", "foolbox"), ("cw", "l2", "foolbox"),
                                                   ("fmn", "linf", "foolbox"), ("fmn", "l1", "foolbox")])
def test_no_attack_undercuts_the_oracle_and_a_corrupted_oracle_is_caught(linear, attack, norm, backend):
    net, x, y = linear
    model = Model(net, (1, 28, 28), device="cpu")
    found = run_attack(model, x, y, AttackSpec(attack, norm), backend, progress=False)
    oracle = [minimal_distance(net, x[i], int(y[i]), norm) for i in range(len(x))]
    exact, slack = np.array([r.distance for r in oracle]), np.array([r.margin_slack for r in oracle])
    assert found.success.all()
    assert len(undercuts(exact, found.norms[norm], found.success, slack)) == 0
    assert np.median(found.norms[norm] / exact) < 1.1  # and these attacks come close
    corrupted = exact * 1.5  # an oracle that overstates the distance
    assert len(undercuts(corrupted, found.norms[norm], found.success, slack)) == len(x)


@pytest.fixture(scope="module")
def relu_net():
    """A 20-16-16-4 ReLU network, small enough that its MILPs solve in well under a second."""
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4))
    x = torch.rand(5, 20) * 0.6 + 0.2
    return net, x, net(x).argmax(1)


@pytest.mark.parametrize("norm", ["linf", "l1"])
def test_relu_oracle_is_exact_and_never_undercut_by_fmn(relu_net, norm):
    net, x, y = relu_net
    for i in range(len(x)):
        r = minimal_distance(net, x[i], int(y[i]), norm)
        searched = minimal_distance(net, x[i], int(y[i]), norm, incumbent=math.inf)  # the whole box, no attack
        assert r.exact and r.verified and searched.exact
        assert r.distance == pytest.approx(searched.distance, rel=1e-6)
        assert r.unstable <= searched.unstable  # the incumbent's region leaves fewer unstable ReLUs


def test_a_time_limit_gives_a_bracket_not_a_claim(relu_net):
    net, x, y = relu_net
    r = minimal_distance(net, x[0], int(y[0]), "linf", incumbent=math.inf, time_limit=1e-6)
    assert not r.exact
    assert r.lower <= r.distance


def test_bad_input_is_refused_with_the_argument_named(linear, relu_net):
    net, x, y = linear
    with pytest.raises(ValueError, match="got Sigmoid at position 1 where ReLU was expected"):
        minimal_distance(nn.Sequential(nn.Linear(2, 3), nn.Sigmoid(), nn.Linear(3, 2)), torch.zeros(2), 0, "linf")
    relu, xr, yr = relu_net
    with pytest.raises(ValueError, match="solves L2 on affine models only"):
        minimal_distance(relu, xr[0], int(yr[0]), "l2")
    with pytest.raises(ValueError, match="norm must be one of"):
        minimal_distance(net, x[0], int(y[0]), "l0")
    wrong = (int(y[0]) + 1) % 10
    with pytest.raises(ValueError, match=f"y = {wrong}: the module classifies x0 as {int(y[0])}"):
        minimal_distance(net, x[0], wrong, "linf")
    with pytest.raises(ValueError, match="margin must be > 0"):
        minimal_distance(net, x[0], int(y[0]), "linf", margin=0.0)
    with pytest.raises(ValueError, match="x0 has 10 values; the module's first layer takes 784"):
        minimal_distance(net, torch.zeros(10), 0, "linf")
