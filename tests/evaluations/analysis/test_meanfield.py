"""Linear response, mean field and power-law fits (algorithms.md §6): Γ against references, the exact linear case."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from advbridge.bridge.model import Normalize
from advbridge.evaluations.analysis import gamma as gm
from advbridge.evaluations.analysis import meanfield as mf
from advbridge.evaluations.analysis.power_law import PowerLawFit, fit_power_law


@pytest.fixture(scope="module")
def tiny64(tiny):
    """A float64 copy of the tiny CNN, so that exact methods agree to rounding."""
    return copy.deepcopy(tiny.module).double().eval()


@pytest.fixture(scope="module")
def batch(mnist5k):
    return mnist5k.x_test[:24].double(), mnist5k.y_test[:24]


def _loss_direction(model, x, y, direction):
    xg = x.clone().requires_grad_(True)
    g, = torch.autograd.grad(F.cross_entropy(model(xg), y, reduction="sum"), xg)
    return g / g.flatten(1).norm(dim=1).view(-1, 1, 1, 1) if direction == "l2" else g.sign()


# --------------------------------------------------------------------------- Γ
@pytest.mark.parametrize("direction", ["l2", "sign"])
def test_gamma_methods_match_full_jacobian(tiny64, batch, direction):
    x, y = batch
    h_ref, g_ref = gm.gamma(tiny64, x, y, direction=direction, method="jacobian")
    with torch.no_grad():
        assert torch.allclose(h_ref, tiny64(x), atol=1e-12)
    scale = g_ref.abs().max()
    assert scale > 0
    for method in ("linearized", "double_vjp", "jvp", "auto"):
        h, g, used = gm.gamma_with_method(tiny64, x, y, direction=direction, method=method, batch_size=10)
        assert used == (method if method != "auto" else gm.AUTO_ORDER[0])
        assert torch.allclose(h, h_ref, atol=1e-12)
        assert torch.allclose(g, g_ref, rtol=1e-9, atol=1e-9 * scale), (method, (g - g_ref).abs().max())


def test_gamma_float32_model_and_bridge_model(tiny, tiny64, batch):
    """float32 (the zoo model as is) against the float64 reference, and a bridge Model accepted as is."""
    x, y = batch
    _, g64 = gm.gamma(tiny64, x, y, method="jacobian")
    _, g32 = gm.gamma(tiny, x.float(), y)              # bridge Model: its pipeline is differentiated
    assert g32.dtype == torch.float32
    assert torch.allclose(g32.double(), g64, rtol=1e-4, atol=1e-4 * g64.abs().max())
    assert tiny.module.training is False


@pytest.mark.parametrize("direction", ["l2", "sign"])
def test_gamma_matches_finite_difference(tiny64, batch, direction):
    """(h(x + t·u) − h(x))/t at t = 1e-3: exact where no ReLU switches, close everywhere."""
    x, y = batch
    h, g = gm.gamma(tiny64, x, y, direction=direction)
    u = _loss_direction(tiny64, x, y, direction)
    t = 1e-3
    with torch.no_grad():
        fd = (tiny64(x + t * u) - h) / t
    rel = (fd - g).abs().max(1).values / g.abs().max(1).values
    assert float(rel.max()) < 0.05
    assert float(rel.median()) < 1e-2
    assert float((rel < 1e-6).float().mean()) >= 0.25   # piecewise linear: many examples cross no kink


def test_linearized_covers_its_layers_and_steps_aside_otherwise(caplog):
    """Every layer type of the linearized fast path against the full Jacobian; other models go to double VJP."""
    torch.manual_seed(0)
    net = nn.Sequential(
        Normalize([0.1], [0.3]),
        nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, padding_mode="reflect"), nn.BatchNorm2d(4), nn.LeakyReLU(0.1)),
        nn.AvgPool2d(2), nn.Conv2d(4, 4, 3, stride=2), nn.Tanh(), nn.MaxPool2d(2, ceil_mode=True), nn.Flatten(),
        nn.Dropout(0.5), nn.Linear(36, 12), nn.Sigmoid(), nn.Linear(12, 10)).double()
    with torch.no_grad():
        bn = net[1][1]
        bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.5, 2), bn.weight.uniform_(0.5, 2)
    net.train()                                            # gamma switches to eval mode and back
    x = torch.rand(6, 1, 28, 28, dtype=torch.float64)
    y = torch.tensor([0, 3, 5, 7, 9, 1])
    for direction in ("l2", "sign"):
        _, ref = gm.gamma(net, x, y, direction=direction, method="jacobian")
        _, g, used = gm.gamma_with_method(net, x, y, direction=direction)
        assert used == "linearized"
        assert torch.allclose(g, ref, rtol=1e-9, atol=1e-9 * ref.abs().max())
    assert net.training and net[1][1].training
    other = nn.Sequential(nn.Flatten(), nn.ELU(), nn.Linear(784, 10)).double()
    with caplog.at_level("INFO", logger="advbridge.evaluations.analysis.gamma"):
        _, g, used = gm.gamma_with_method(other, x, y)
    assert used == "double_vjp" and "not a plain nn.Sequential" in caplog.text
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    with pytest.raises(RuntimeError, match="not a plain nn.Sequential of supported layers"):
        gm.gamma(other, x, y, method="linearized")
    assert torch.allclose(g, gm.gamma(other, x, y, method="jacobian")[1], atol=1e-10)


class _SquareOnceDifferentiable(torch.autograd.Function):
    """x² with a backward that cannot be differentiated again, and a forward-mode rule."""

    @staticmethod
    def forward(x):
        return x * x

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, = inputs
        ctx.save_for_backward(x)
        ctx.save_for_forward(x)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, = ctx.saved_tensors
        return 2 * x * grad

    @staticmethod
    def jvp(ctx, tangent):
        x, = ctx.saved_tensors
        return 2 * x * tangent


class _SquareNoForward(torch.autograd.Function):
    """x² with a twice-differentiable backward and no forward-mode rule."""

    @staticmethod
    def forward(x):
        return x * x

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx, grad):
        x, = ctx.saved_tensors
        return 2 * x * grad


class _Net(nn.Module):
    """``b(z² + z)`` with ``z = a(x)``: the skip connection keeps a graph cut at the square partial."""

    def __init__(self, square=None) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.a = nn.Linear(6, 5).double()
        self.b = nn.Linear(5, 3).double()
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64))
        self.square = square

    def forward(self, x):
        z = self.a(x)
        return self.b((self.square.apply(z) if self.square else torch.square(z)) + z)


def test_auto_falls_back_to_forward_mode(caplog):
    x = torch.randn(7, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    _, ref = gm.gamma(_Net(), x, y, method="jacobian")
    once = _Net(_SquareOnceDifferentiable)
    # double backward through a once-differentiable backward silently loses that path: the check catches it
    with pytest.raises(RuntimeError, match="fails the check"):
        gm.gamma(once, x, y, method="double_vjp")
    with caplog.at_level("WARNING", logger="advbridge.evaluations.analysis.gamma"):
        _, g, used = gm.gamma_with_method(once, x, y, method="auto", batch_size=3)
    assert used == "jvp" and "falling back to 'jvp'" in caplog.text
    _, g_jvp = gm.gamma(_Net(), x, y, method="jvp")
    assert torch.allclose(g, g_jvp, atol=1e-10) and torch.allclose(g, ref, atol=1e-10)
    # The other way round: no forward-mode rule, so "jvp" fails and "auto" (double VJP) gives the same Γ.
    no_fwd = _Net(_SquareNoForward)
    with pytest.raises((RuntimeError, NotImplementedError)):
        gm.gamma(no_fwd, x, y, method="jvp")
    _, g2, used2 = gm.gamma_with_method(no_fwd, x, y)
    assert used2 == "double_vjp" and torch.allclose(g2, ref, atol=1e-10)


def test_random_model_fails_the_consistency_check(tiny64, batch):
    """A JVP pass that sees other noise than the VJP pass gives a wrong Γ; the fused double VJP does not."""
    x, y = batch
    noisy = nn.Sequential(_Noise(), tiny64)
    with pytest.raises(RuntimeError, match="fails the check"):
        gm.gamma(noisy, x, y, method="jvp")
    _, g, used = gm.gamma_with_method(noisy, x, y)
    assert used == "double_vjp" and torch.isfinite(g).all()


class _Noise(nn.Module):
    def forward(self, x):
        return x + 0.3 * torch.randn_like(x)


def test_gamma_bad_arguments(tiny64, batch):
    x, y = batch
    with pytest.raises(ValueError, match=r"^direction must be 'l2' or 'sign', got 'x'$"):
        gm.gamma(tiny64, x, y, direction="x")
    with pytest.raises(ValueError, match=r"^method must be one of \['auto', 'linearized', 'double_vjp', 'jvp', "
                                         r"'jacobian'\], got 'fd'$"):
        gm.gamma(tiny64, x, y, method="fd")
    with pytest.raises(ValueError, match=r"^batch_size must be a positive integer, got 0$"):
        gm.gamma(tiny64, x, y, batch_size=0)
    with pytest.raises(ValueError, match=r"^x and y must have the same length, got 24 and 23$"):
        gm.gamma(tiny64, x, y[:-1])
    with pytest.raises(ValueError, match=r"^y must lie in \[0, 10\), got a label 10$"):
        gm.gamma(tiny64, x[:2], torch.tensor([0, 10]))
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        gm.gamma(object(), x, y)


def _nan_at(x: torch.Tensor, *index) -> torch.Tensor:
    x = x.clone()
    x[index] = float("nan")
    return x


MF_BAD_INPUT = [  # (case, x from 4 test images, error, exact message); a bridge Model supplies shape and bounds
    ("nan", lambda x: _nan_at(x, 1, 0, 5, 5), ValueError, r"^x contains NaN or inf values in 1 of 4 inputs$"),
    ("inf", lambda x: _nan_at(x, 0, 0, 5, 5).nan_to_num(nan=float("inf")), ValueError,
     r"^x contains NaN or inf values in 1 of 4 inputs$"),
    ("x255", lambda x: x * 255, ValueError,
     (r"^x has values in \[0, 255\] outside the bounds \[0, 1\] \(it looks like 0-255 pixels: divide by 255\); "
      r"scale the input or set the bounds$")),
    ("channels_last", lambda x: x.permute(0, 2, 3, 1), ValueError,
     (r"^x looks channels-last \(N, H, W, C\) with shape \(4, 28, 28, 1\); expected channels-first "
      r"\(N, C, H, W\) = \(N, 1, 28, 28\); use x.permute\(0, 3, 1, 2\)$")),
]


@pytest.mark.parametrize("case, make, error, message", MF_BAD_INPUT, ids=[c[0] for c in MF_BAD_INPUT])
@pytest.mark.parametrize("entry", ["gamma", "estimate_meanfield"])
def test_bad_input_names_the_argument(tiny, mnist5k, entry, case, make, error, message):
    """Before: NaN failed the Γ consistency check as "not differentiable or random"; ×255 and channels-last ran."""
    x, y = make(mnist5k.x_test[:4]), mnist5k.y_test[:4]
    with pytest.raises(error, match=message):
        {"gamma": gm.gamma, "estimate_meanfield": mf.estimate_meanfield}[entry](tiny, x, y)


def test_plain_module_input_checks(tiny64, batch):
    """A plain module has no shape or bounds: NaN is refused always, shape and bounds when given."""
    x, y = batch[0][:4], batch[1][:4]
    with pytest.raises(ValueError, match=r"^x contains NaN or inf values in 1 of 4 inputs$"):
        gm.gamma(tiny64, _nan_at(x, 2, 0, 1, 1), y)
    with pytest.raises(ValueError, match=r"^x contains NaN or inf values in 1 of 3 inputs$"):
        gm.gamma(_Net(), _nan_at(torch.zeros(3, 6, dtype=torch.float64), 0, 2), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"^x has values in \[0, 255\] outside the bounds \[0, 1\]"):
        mf.estimate_meanfield(tiny64, x * 255, y, bounds=(0, 1))
    with pytest.raises(ValueError, match=r"^x looks channels-last"):
        gm.gamma(tiny64, x.permute(0, 2, 3, 1), y, input_shape=(1, 28, 28))
    with pytest.raises(TypeError, match=r"^x must be a floating-point array \(float32 or float64\), got dtype "
                                        r"torch.uint8$"):
        gm.gamma(tiny64, (x * 255).to(torch.uint8), y)
    _, g = gm.gamma(tiny64, x, y, input_shape=(1, 28, 28), bounds=(0, 1))   # valid input: float64 kept
    assert g.dtype == torch.float64 and torch.allclose(g, gm.gamma(tiny64, x, y)[1])


def test_bridge_model_labels_are_checked_like_run_attack(tiny, mnist5k):
    x = mnist5k.x_test[:2]
    with pytest.raises(ValueError, match=r"^y has labels in \[-1, 3\]; expected 0 <= y < 10$"):
        gm.gamma(tiny, x, torch.tensor([-1, 3]))
    with pytest.raises(TypeError, match=r"^y must hold integer class indices, got dtype torch.float32$"):
        gm.gamma(tiny, x, torch.tensor([1.0, 3.0]))
    _, g64 = gm.gamma(tiny, x.double(), mnist5k.y_test[:2])               # float64 input to a float32 model
    assert torch.allclose(g64, gm.gamma(tiny, x, mnist5k.y_test[:2])[1])


# --------------------------------------------------------------------------- linear response
def test_linear_response_by_hand():
    # ex 0: h = (3, 1, 2), Γ = (0, 1, 3): sorted h (3, 2, 1), Γ (0, 3, 1); ε̂_2 = 1/3, ε̂_3 = 2/1 -> 1/3
    # ex 1: h = (0, 5, 4), Γ = (2, 1, 0): sorted h (5, 4, 0), Γ (1, 0, 2); ΔΓ_2 = -1 (skipped), ε̂_3 = 5
    # ex 2: h = (1, 0, 0.5), Γ = (4, 1, 2): nobody gains on the top logit -> ∞
    # ex 3: h = (0, 2, 1), Γ = (1, 0, 1), label 0 (misclassified): excluded from means and medians
    logits = torch.tensor([[3.0, 1.0, 2.0], [0.0, 5.0, 4.0], [1.0, 0.0, 0.5], [0.0, 2.0, 1.0]])
    gam = torch.tensor([[0.0, 1.0, 3.0], [2.0, 1.0, 0.0], [4.0, 1.0, 2.0], [1.0, 0.0, 1.0]])
    y = torch.tensor([0, 1, 0, 0])
    lr = mf.linear_response(logits, gam, y)
    np.testing.assert_allclose(lr.eps_lin[:3], [1 / 3, 5.0, math.inf])
    assert lr.eps_lin[3] == pytest.approx(1.0)            # computed for every example all the same
    assert lr.used.tolist() == [True, True, True, False]
    # rank-indexed means over the 3 correct examples: Γ_1 = (0, 1, 4), Γ_2 = (3, 0, 2), Γ_3 = (1, 2, 1)
    np.testing.assert_allclose(lr.gamma_mean_by_rank, [5 / 3, 5 / 3, 4 / 3])
    assert lr.gamma_mean_by_rank[1] - lr.gamma_mean_by_rank[0] == pytest.approx(0.0)
    np.testing.assert_allclose(lr.delta12, [1.0, 1.0, 0.5, 1.0])
    assert np.all(np.isinf(lr.eps_mf))                    # <Γ_2> − <Γ_1> = 0: mean field predicts no flips
    assert lr.eps_lin_median == pytest.approx(5.0)
    # Without labels every example counts: <Γ_1> = (0+1+4+0)/4, <Γ_2> = (3+0+2+1)/4: denominator 0.25
    lr_all = mf.linear_response(logits, gam)
    assert lr_all.used.all()
    np.testing.assert_allclose(lr_all.gamma_mean_by_rank, [5 / 4, 6 / 4, 5 / 4])
    np.testing.assert_allclose(lr_all.eps_mf, np.array([1.0, 1.0, 0.5, 1.0]) / 0.25)
    assert lr_all.eps_mf_median == pytest.approx(4.0)
    assert lr_all.eps_lin_median == pytest.approx(3.0)     # sorted (1/3, 1, 5, ∞): (1 + 5)/2
    np.testing.assert_allclose(mf.predicted_error_curve(lr.eps_lin[lr.used], [0.2, 1 / 3, 0.4, 5.0, 1e9]),
                               [0, 0, 1 / 3, 1 / 3, 2 / 3])
    np.testing.assert_allclose(lr.error_curve([0.4]), [1 / 3])
    json.dumps(lr.to_dict())
    assert lr.to_dict()["eps_lin"][2] == "inf"


def test_logit_gaps_and_exponents():
    logits = torch.tensor([[1.0, 3.0, 2.0], [0.0, -1.0, 0.5]])
    gaps = mf.logit_gaps(logits)
    assert sorted(gaps) == [2, 3]
    np.testing.assert_allclose(gaps[2].numpy(), [1.0, 0.5])
    np.testing.assert_allclose(gaps[3].numpy(), [2.0, 1.5])
    # i.i.d. logits: the density of Δ_1j goes like Δ^(j−2) at small Δ
    iid = torch.randn(40000, 10, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    exps = mf.small_gap_exponents(iid, quantile=0.05)
    assert sorted(exps) == list(range(2, 11))
    assert abs(exps[2] - 0) < 0.1 and abs(exps[3] - 1) < 0.25 and abs(exps[4] - 2) < 0.45
    assert all(exps[j + 1] > exps[j] for j in range(2, 10))
    with pytest.raises(ValueError, match=r"^quantile must lie in \(0, 1\], got 0$"):
        mf.small_gap_exponents(iid, quantile=0)
    with pytest.raises(ValueError, match=r"^logits must have shape \(N, K\) with K >= 2, got \(5,\)$"):
        mf.logit_gaps(torch.zeros(5))


def _logistic_regression(mnist5k) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10)).double()
    x, y = mnist5k.x_train[:2000].double(), mnist5k.y_train[:2000]
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(40):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval()


@pytest.mark.parametrize("direction", ["l2", "sign"])
def test_linear_model_prediction_is_exact(mnist5k, direction):
    """For logistic regression J is constant, so h(x + ε·u) = h(x) + ε·Γ exactly and P(ε̂_lin < ε) is the
    measured error of the one-step attack on the correctly classified inputs (unbounded domain, no clipping)."""
    model = _logistic_regression(mnist5k)
    x, y = mnist5k.x_test[:300].double(), mnist5k.y_test[:300]
    est = mf.estimate_meanfield(model, x, y, direction=direction)
    assert est.method == gm.AUTO_ORDER[0] and 0.7 < est.clean_accuracy < 1.0
    xc, yc = x[est.used], y[est.used]
    u = _loss_direction(model, xc, yc, direction)
    eps_lin = est.eps_lin[est.used]
    finite = np.sort(eps_lin[np.isfinite(eps_lin)])
    ranks = (np.array([0.05, 0.2, 0.4, 0.6, 0.8, 0.95]) * len(finite)).astype(int)
    grid = (finite[ranks - 1] + finite[ranks]) / 2          # between two thresholds, never on one
    predicted = est.error_curve(grid)
    with torch.no_grad():
        measured = [float((model(xc + float(eps) * u).argmax(1) != yc).double().mean()) for eps in grid]
        flips = model(xc + float(grid[2]) * u).argmax(1) != yc
    np.testing.assert_allclose(predicted, measured, atol=1e-12)
    assert np.array_equal(flips.numpy(), eps_lin < grid[2])      # example by example, not just on average
    assert 0 < predicted[0] < predicted[-1] < 1
    # the mean-field estimate only needs the rank-averaged Γ: positive denominator, finite median
    assert est.gamma_mean_by_rank[1] > est.gamma_mean_by_rank[0]
    assert 0 < est.eps_mf_median < math.inf and 0 < est.eps_lin_median < math.inf


def test_estimate_meanfield_on_tiny_cnn(tiny, mnist5k):
    x, y = mnist5k.x_test[:64], mnist5k.y_test[:64]
    est = mf.estimate_meanfield(tiny, x, y, batch_size=32)
    assert est.n == 64 and est.n_used == int((tiny.predict(x) == y).sum())
    assert len(est.gamma_mean_by_rank) == 10 and est.gamma_mean_by_rank[1] > est.gamma_mean_by_rank[0]
    assert 0 < est.eps_lin_median < math.inf and 0 < est.eps_mf_median < math.inf
    assert sorted(est.exponents) == list(range(2, 11))
    d = json.loads(json.dumps(est.to_dict()))
    assert d["method"] == est.method and len(d["eps_lin"]) == 64 and set(d["exponents"]) == {str(j) for j in
                                                                                              range(2, 11)}
    assert "eps_lin" not in est.to_dict(arrays=False)
    curve = est.error_curve([0.0, est.eps_lin_median * 1.0001, 1e9])
    assert curve[0] == 0 and curve[1] >= 0.5


# --------------------------------------------------------------------------- power law
def test_power_law_recovers_exact_data():
    eps = np.geomspace(0.01, 0.3, 8)
    fit = fit_power_law(eps, 0.7 * eps ** 1.3, n_boot=200)
    assert isinstance(fit, PowerLawFit)
    assert fit.A == pytest.approx(0.7, rel=1e-10) and fit.B == pytest.approx(1.3, rel=1e-10)
    assert fit.B_ci == pytest.approx((1.3, 1.3), rel=1e-9) and fit.n_points == 8
    assert fit.eps_range == pytest.approx((0.01, 0.3))
    np.testing.assert_allclose(fit.predict(eps), 0.7 * eps ** 1.3)
    # zeros and points past max_eps are left out
    err = 0.7 * eps ** 1.3
    err[0] = 0.0
    fit2 = fit_power_law(eps, err + np.where(eps > 0.2, 1.0, 0.0), max_eps=0.2, n_boot=0)
    assert fit2.n_points == 6 and fit2.B == pytest.approx(1.3) and all(math.isnan(v) for v in fit2.B_ci)
    assert json.loads(json.dumps(fit2.to_dict()))["B_ci"] == [None, None]


def test_power_law_bootstrap_covers_true_exponent():
    rng = np.random.default_rng(3)
    eps = np.geomspace(0.02, 0.2, 7)
    true_a, true_b = 2.0, 1.1
    samples = rng.random((3000, len(eps))) < true_a * eps ** true_b     # per-sample adversarial errors
    err = samples.mean(0)
    fit = fit_power_law(eps, err, samples=samples, n_boot=300, seed=1)
    assert fit.resampled == "samples" and fit.n_boot == 300
    lo, hi = fit.B_ci
    assert lo < true_b < hi and hi - lo < 0.3
    assert abs(fit.B - true_b) < 0.1
    # noisy points without samples: resample the points themselves
    noisy = true_a * eps ** true_b * np.exp(rng.normal(0, 0.05, len(eps)))
    fit_p = fit_power_law(eps, noisy, n_boot=300)
    assert fit_p.resampled == "points" and fit_p.B_ci[0] < true_b < fit_p.B_ci[1]


def test_power_law_bad_input():
    with pytest.raises(ValueError, match=r"^eps and err must have the same length, got 3 and 2$"):
        fit_power_law([0.1, 0.2, 0.3], [0.1, 0.2])
    with pytest.raises(ValueError, match=r"^eps must be positive and finite, got \[0.0\]$"):
        fit_power_law([0.0, 0.1, 0.2], [0.0, 0.1, 0.2])
    with pytest.raises(ValueError, match=r"^eps must be positive and finite, got \[-0.1\]$"):
        fit_power_law([-0.1, 0.1, 0.2], [0.1, 0.1, 0.2])
    with pytest.raises(ValueError, match=r"^need at least 2 points at distinct eps with err > 0 to fit a power "
                                         r"law, got 1$"):
        fit_power_law([0.1, 0.2, 0.3], [0.0, 0.0, 0.2])
    with pytest.raises(ValueError, match=r"^need at least 2 points at distinct eps with err > 0 and eps <= 0.15 "
                                         r"to fit a power law, got 1$"):
        fit_power_law([0.1, 0.2, 0.3], [0.1, 0.2, 0.3], max_eps=0.15)
    with pytest.raises(ValueError, match=r"^samples must have shape \(n_samples, 3\), got \(4, 2\)$"):
        fit_power_law([0.1, 0.2, 0.3], [0.1, 0.2, 0.3], samples=np.zeros((4, 2)))
