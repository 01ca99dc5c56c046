"""Native Papernot JSMA and the hardness matrix: the single pass equals one run per level, the pair choice equals a
brute-force reference, the adversarial distance equals a full-Jacobian computation, crossval against ART."""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest
import torch
from art.attacks.evasion import SaliencyMapMethod
from torch import nn

from advbridge.bridge import AttackSpec, Model, crossval, run_attack
from advbridge.bridge.attacks.jsma import PapernotJSMA
from advbridge.evaluations.analysis.hardness import (adversarial_distance, all_target_pairs, hardness_matrix,
                                                     trapezoid_hardness)

LEVELS = (0.02, 0.05, 0.1)


@pytest.fixture(scope="module")
def pairs(mnist5k):
    return all_target_pairs(mnist5k.x_test[:4], mnist5k.y_test[:4], 10)


def reference_pair(alpha: np.ndarray, beta: np.ndarray, domain: np.ndarray, theta: float):
    """cleverhans' rule, written plainly: the pair p ≠ q in the domain maximising −A·B with A > 0, B < 0 (θ > 0)
    or A < 0, B > 0 (θ < 0)."""
    a = alpha[:, None] + alpha[None, :]
    b = beta[:, None] + beta[None, :]
    ok = ((a > 0) & (b < 0)) if theta > 0 else ((a < 0) & (b > 0))
    ok &= domain[:, None] & domain[None, :] & ~np.eye(len(alpha), dtype=bool)
    score = np.where(ok, -a * b, 0.0)
    if not (score > 0).any():
        return None
    return tuple(int(v) for v in np.unravel_index(score.argmax(), score.shape))


def reference_jsma(forward, x: torch.Tensor, target: int, max_distortion: float, theta: float = 1.0,
                   saliency_on: str = "probs") -> torch.Tensor:
    """Papernot's Algorithm 2 (§5.3) written plainly for one input: the full Jacobian of F (softmax outputs or
    logits) at every iteration, β = Σ_{c≠t} ∂F_c/∂x summed from its rows (no Σp = 1 shortcut), the brute-force
    pair search above, ⌊D·Υ/2⌋ iterations, the domain of features not yet at the bound.

    ``forward`` should be a float64 copy: summing the rows cancels the large gradients of the confident class, and
    in float32 that rounding (~1e-8) swamps the target probability's gradient of an unlikely target."""
    x = x.clone().double()
    dims = x.numel()
    domain = (x.flatten() < 1.0) if theta > 0 else (x.flatten() > 0.0)
    outputs = (lambda v: torch.softmax(forward(v.unsqueeze(0)), 1)[0]) if saliency_on == "probs" else \
        (lambda v: forward(v.unsqueeze(0))[0])
    for _ in range(int(np.floor(dims * max_distortion / 2))):
        with torch.no_grad():
            if int(forward(x.unsqueeze(0)).argmax(1)) == target:
                break
        jac = torch.autograd.functional.jacobian(outputs, x).reshape(-1, dims)
        alpha = jac[target]
        beta = jac.sum(0) - alpha
        pair = reference_pair(alpha.numpy(), beta.numpy(), domain.numpy(), theta)
        if pair is None:
            break
        flat = x.view(-1)
        for feature in pair:
            flat[feature] = (flat[feature] + theta).clamp(0.0, 1.0)
            domain[feature] = False
    return x.float()


@pytest.fixture(scope="module")
def pipeline64(tiny):
    """The tiny CNN's pipeline in float64, for the references."""
    return copy.deepcopy(tiny.pipeline).double().eval()


@pytest.mark.parametrize("theta, dims", [(1.0, 40), (-1.0, 40), (1.0, 200)])  # 200 > 64: the pruned search
def test_pair_choice_equals_the_brute_force_reference(tiny, theta, dims):
    gen = torch.Generator().manual_seed(0)
    alpha, beta = torch.randn(3, dims, generator=gen), torch.randn(3, dims, generator=gen)
    domain = torch.rand(3, dims, generator=gen) > 0.3
    attack = PapernotJSMA(tiny.art(), theta=theta, pair_rows=2)
    p, q, found = attack.best_pairs(alpha, beta, domain)
    for row in range(3):
        expected = reference_pair(alpha[row].numpy(), beta[row].numpy(), domain[row].numpy(), theta)
        assert bool(found[row]) == (expected is not None)
        if expected is not None:
            assert {int(p[row]), int(q[row])} == set(expected)
    # On probabilities β = −α exactly, and the O(D) choice equals the pair search.
    p2, q2, found2 = attack.best_pairs_probs(alpha, domain, theta)
    p3, q3, found3 = attack.best_pairs(alpha, -alpha, domain)
    assert torch.equal(found2, found3)
    for row in range(3):
        if found2[row]:
            assert {int(p2[row]), int(q2[row])} == {int(p3[row]), int(q3[row])}


@pytest.mark.parametrize("saliency_on, sources, levels", [("probs", 4, LEVELS), ("logits", 1, (0.02, 0.06, 0.1))])
def test_single_pass_equals_one_run_per_level(tiny, pairs, saliency_on, sources, levels):
    x, _, targets = (v[:9 * sources] for v in pairs)  # the logit pair search is O(D²): fewer pairs
    full = PapernotJSMA(tiny.art(), max_distortion=max(levels), saliency_on=saliency_on, forward=tiny.pipeline)
    trace = full.trace(x.numpy(), targets.numpy())
    dims = int(np.prod(x.shape[1:]))
    for level in levels:
        run = PapernotJSMA(tiny.art(), max_distortion=level, saliency_on=saliency_on, forward=tiny.pipeline)
        adv = torch.from_numpy(run.generate(x.numpy(), targets.numpy()))
        ok_sep = (tiny.predict(adv) == targets).numpy()
        dist_sep = ((adv - x).flatten(1).abs() > 0).sum(1).numpy() / dims
        ok, dist = trace.at(level)
        np.testing.assert_array_equal(ok, ok_sep)
        np.testing.assert_allclose(dist, dist_sep)
    assert 0 < trace.at(max(levels))[0].mean() <= 1


def test_native_jsma_through_the_bridge(tiny, attack_set, pipeline64):
    x, y = attack_set[0][:8], attack_set[1][:8]
    result = run_attack(tiny, x, y, AttackSpec("jsma", "l0", "random", {"max_distortion": 0.1}), "native",
                        progress=False)
    # The first three inputs against the plain full-Jacobian, brute-force-pair reference: same pixels, same outcome.
    for i in range(3):
        expected = reference_jsma(pipeline64, x[i], int(result.targets[i]), 0.1)
        assert torch.equal(result.x_adv[i], expected), i
        with torch.no_grad():
            reached = int(tiny.pipeline(expected.unsqueeze(0)).argmax(1)) == int(result.targets[i])
        assert bool(result.success[i]) == reached
    assert result.success[:3].any() and (result.x_adv[:3] != x[:3]).any()
    assert result.norms["l0"].max() <= 2 * int(784 * 0.1 / 2)
    changed = (result.x_adv - x).abs() > 0
    assert torch.all(result.x_adv[changed] == 1.0)  # θ = +1 sets features to the upper bound
    with pytest.raises(ValueError, match=r"parameter 'saliency_on'='probs' cannot be honoured by backend 'art'"):
        run_attack(tiny, x, y, AttackSpec("jsma", "l0", "random", {"saliency_on": "probs"}), "art")


def test_crossval_native_against_art(tiny, attack_set, pipeline64):
    x, y = attack_set[0][:6], attack_set[1][:6]
    report = crossval(tiny, x, y, AttackSpec("jsma", "l0", "random", {}), backends=("native", "art"),
                      progress=False)
    assert set(report.results) == {"native", "art"}
    art, native = report.results["art"], report.results["native"]
    assert np.array_equal(native.targets, art.targets)
    targets = art.targets
    # ART's SaliencyMapMethod called directly (θ = 1, γ = Υ = 0.145, the bridge's defaults), judged by a fresh
    # forward pass of the module; the native run against the brute-force reference on two inputs.
    direct = SaliencyMapMethod(tiny.art(), theta=1.0, gamma=0.145, verbose=False).generate(
        x.numpy(), y=np.eye(10, dtype=np.float32)[targets])
    np.testing.assert_allclose(art.x_adv.numpy(), direct, atol=1e-6)
    with torch.no_grad():
        reached = (tiny.pipeline(torch.from_numpy(direct)).argmax(1).numpy() == targets)
    np.testing.assert_array_equal(art.success, reached)
    for i in range(2):
        expected = reference_jsma(pipeline64, x[i], int(targets[i]), 0.145)
        assert torch.equal(native.x_adv[i], expected), i
        with torch.no_grad():
            assert bool(native.success[i]) == (int(tiny.pipeline(expected.unsqueeze(0)).argmax(1)) == targets[i])


@pytest.fixture(scope="module")
def soft():
    """A tiny random CNN on 8×8 inputs whose softmax outputs are all moderate (≥ 1e-3): there summing the
    Jacobian's rows is exact to rounding even for the least likely target, so the full-Jacobian reference needs no
    Σp = 1 shortcut. ``(model, float64 copy, x, y)``, every class a source twice."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 10))
    with torch.no_grad():
        for param in net.parameters():
            param.mul_(3)
    model = Model(net.eval(), (1, 8, 8), device="cpu")
    x = torch.rand(20, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    return model, copy.deepcopy(model.pipeline).double().eval(), x, torch.arange(20) % 10


def reference_distance(forward64, x: torch.Tensor, saliency_on: str) -> tuple[np.ndarray, np.ndarray]:
    """``A(X, t)`` for every target t of every input, ``(N, K)``, from the full Jacobian of F (softmax outputs or
    logits) in float64: ``1 − (1/D)·#{i : ∂F_t/∂X_i > 0 and Σ_{c≠t} ∂F_c/∂X_i < 0}`` (§5.2, §5.5), β summed from
    the rows; and the probabilities ``(N, K)``."""
    def outputs(v):
        out = forward64(v.unsqueeze(0))[0]
        return torch.softmax(out, 0) if saliency_on == "probs" else out

    rows, probs = [], []
    for xi in x.double():
        jac = torch.autograd.functional.jacobian(outputs, xi).flatten(1)       # (K, D)
        other = jac.sum(0, keepdim=True) - jac                                 # row t: Σ_{c≠t} ∂F_c/∂X
        rows.append(1 - ((jac > 0) & (other < 0)).double().mean(1).numpy())
        with torch.no_grad():
            probs.append(torch.softmax(forward64(xi.unsqueeze(0))[0], 0).numpy())
    return np.stack(rows), np.stack(probs)


@pytest.mark.parametrize("saliency_on", ["probs", "logits"])  # probabilities: the default
@pytest.mark.parametrize("which", ["soft", "zoo"])
def test_adversarial_distance_equals_the_full_jacobian(tiny, mnist5k, pipeline64, soft, saliency_on, which):
    model, forward64, x, y = soft if which == "soft" else (tiny, pipeline64, mnist5k.x_test[:6], mnist5k.y_test[:6])
    x_pairs, _, targets = all_target_pairs(x, y, 10)
    got = adversarial_distance(model, x_pairs, targets, saliency_on, batch_size=7)  # batches of 7 pairs
    rows = np.repeat(np.arange(len(x)), 9)
    distance, probs = reference_distance(forward64, x, saliency_on)
    expected = distance[rows, targets.numpy()]
    # On the zoo model some targets have p_t < 1e-12 (the confident class's p is 1 − 1e-6): there the row sum
    # cancels below float64 rounding and the reference itself is noise, so those pairs are left out.
    keep = probs[rows, targets.numpy()] > 1e-12 if saliency_on == "probs" else np.ones(len(rows), dtype=bool)
    assert keep.sum() >= 0.9 * len(keep)
    np.testing.assert_allclose(got[keep], expected[keep], rtol=0, atol=1e-6)  # float32 A: the same count of D
    assert 0 < got.min() and got.max() < 1 and len(np.unique(got)) > 8   # non-trivial counts, varying by pair


def test_hardness_matrix_against_separate_runs_and_the_full_jacobian(soft):
    """H(s, t) from one JSMA run per level (success judged by the model, distortion counted from the pixels) and
    the trapezoid over τ written out; A(s, t) and R(F) from the full Jacobian, grouped by source class by hand."""
    model, forward64, x, y = soft
    levels = (0.1, 0.25, 0.5)                                   # 3, 8 and 16 pairs of the 64 features
    result = hardness_matrix(model, x, y, levels=levels, batch_size=32, progress=False)
    assert result.hardness.shape == (10, 10) and np.isnan(np.diag(result.hardness)).all()
    x_pairs, sources, targets = all_target_pairs(x, y, 10)
    src, tgt = sources.numpy(), targets.numpy()
    ok_by_level, dist_by_level = [], []
    for level in levels:
        adv = torch.from_numpy(PapernotJSMA(model.art(), max_distortion=level, forward=model.pipeline).generate(
            x_pairs.numpy(), tgt))
        with torch.no_grad():
            ok_by_level.append((forward64(adv.double()).argmax(1) == targets).numpy())
        dist_by_level.append(((adv != x_pairs).flatten(1).sum(1) / 64.0).numpy())
    distance, _ = reference_distance(forward64, x, "probs")
    for s in range(10):
        for t in range(10):
            sel = (src == s) & (tgt == t)
            if s == t:
                assert np.isnan(result.hardness[s, t]) and np.isnan(result.adversarial_distance[s, t])
                continue
            eps = [float(ok[sel].mean()) for ok in ok_by_level]
            tau = [float(d[sel].mean()) for d in dist_by_level]
            points = sorted(zip(tau, eps))
            h = sum((t1 - t0) * (e1 + e0) / 2 for (t0, e0), (t1, e1) in itertools.pairwise(points))
            assert result.hardness[s, t] == pytest.approx(h, abs=1e-12), (s, t)
            np.testing.assert_allclose(result.success[:, s, t], eps, atol=1e-12)
            np.testing.assert_allclose(result.distortion[:, s, t], tau, atol=1e-12)
            assert result.adversarial_distance[s, t] == pytest.approx(distance[(y == s).numpy(), t].mean(), abs=1e-6)
    off_diagonal = distance[np.repeat(np.arange(len(x)), 9), tgt]
    assert result.robustness == pytest.approx(off_diagonal.min(), abs=1e-6)
    assert len(np.unique(result.hardness[np.isfinite(result.hardness)])) > 10   # the levels separate the pairs
    assert result.vjp_calls <= result.vjp_calls_separate
    assert trapezoid_hardness(np.array([1.0, 0.0, 0.5]), np.array([0.2, 0.0, 0.1])) == pytest.approx(0.05 / 2 + 0.15 / 2)
    with pytest.raises(ValueError, match=r"levels must list at least 2 distortion fractions in \(0, 1\]"):
        hardness_matrix(model, x[:2], y[:2], levels=(0.1,))


def _nan_first(x: torch.Tensor) -> torch.Tensor:
    x = x.clone()
    x[0, 0, 3, 4] = float("nan")
    return x


BAD_INPUT = [  # (case, (x, y) from the first two test images, kwargs, error, exact message)
    ("nan", lambda x, y: (_nan_first(x), y), {}, ValueError, r"^x contains NaN or inf values in 1 of 2 inputs$"),
    ("inf", lambda x, y: (x.masked_fill(x > 0.5, float("inf")), y), {}, ValueError,
     r"^x contains NaN or inf values in 2 of 2 inputs$"),
    ("x255", lambda x, y: (x * 255, y), {}, ValueError,
     (r"^x has values in \[0, 255\] outside the bounds \[0, 1\] \(it looks like 0-255 pixels: divide by 255\); "
      r"scale the input or set the bounds$")),
    ("channels_last", lambda x, y: (x.permute(0, 2, 3, 1), y), {}, ValueError,
     (r"^x looks channels-last \(N, H, W, C\) with shape \(2, 28, 28, 1\); expected channels-first "
      r"\(N, C, H, W\) = \(N, 1, 28, 28\); use x.permute\(0, 3, 1, 2\)$")),
    ("wrong_size", lambda x, y: (x[:, :, :20, :20], y), {}, ValueError,
     r"^x has shape \(2, 1, 20, 20\); expected \(N, 1, 28, 28\)$"),
    ("empty", lambda x, y: (x[:0], y[:0]), {}, ValueError, r"^x is an empty batch; need at least one input$"),
    ("integer_x", lambda x, y: ((x * 255).to(torch.uint8), y), {}, TypeError,
     r"^x must be a floating-point array \(float32 or float64\), got dtype torch.uint8$"),
    ("label_10", lambda x, y: (x, torch.tensor([10, 1])), {}, ValueError,
     r"^y has labels in \[1, 10\]; expected 0 <= y < 10$"),
    ("label_-1", lambda x, y: (x, torch.tensor([-1, 1])), {}, ValueError,
     r"^y has labels in \[-1, 1\]; expected 0 <= y < 10$"),
    ("float_labels", lambda x, y: (x, y.float()), {}, TypeError,
     r"^y must hold integer class indices, got dtype torch.float32$"),
    ("short_labels", lambda x, y: (x, y[:1]), {}, ValueError, r"^y has length 1 but x has 2 inputs$"),
    ("batch_size", lambda x, y: (x, y), {"batch_size": 0}, ValueError,
     r"^batch_size must be a positive integer, got 0$"),
    ("theta_0", lambda x, y: (x, y), {"theta": 0}, ValueError,
     r"^theta must be non-zero \(\+1 increases features, -1 decreases them\), got 0.0$"),
    ("theta_nan", lambda x, y: (x, y), {"theta": float("nan")}, ValueError, r"^theta must be a finite number, got nan$"),
    ("headline", lambda x, y: (x, y), {"headline_distortion": 1.5}, ValueError,
     r"^headline_distortion must be a fraction in \(0, 1\], got 1.5$"),
    ("levels_nan", lambda x, y: (x, y), {"levels": (0.1, float("nan"))}, ValueError,
     r"^levels must list at least 2 distortion fractions in \(0, 1\], got \[0.1, nan\]$"),
]


@pytest.mark.parametrize("case, make, kwargs, error, message", BAD_INPUT, ids=[c[0] for c in BAD_INPUT])
def test_hardness_matrix_bad_input_names_the_argument(tiny, mnist5k, case, make, kwargs, error, message):
    """Before: NaN gave success 0.0, ×255 and channels-last ran, labels 10/−1 failed deep inside, float labels
    ran, an empty batch failed in torch.cat."""
    x, y = make(mnist5k.x_test[:2], mnist5k.y_test[:2])
    with pytest.raises(error, match=message):
        hardness_matrix(tiny, x, y, **{"levels": (0.02, 0.05), "progress": False, **kwargs})


def test_adversarial_distance_bad_input(tiny, mnist5k):
    x = mnist5k.x_test[:2]
    with pytest.raises(ValueError, match=r"^x contains NaN or inf values in 1 of 2 inputs$"):
        adversarial_distance(tiny, _nan_first(x), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match=r"^targets has labels in \[1, 10\]; expected 0 <= targets < 10$"):
        adversarial_distance(tiny, x, torch.tensor([1, 10]))
    with pytest.raises(ValueError, match=r"^saliency_on must be one of \['probs', 'logits'\], got 'x'$"):
        adversarial_distance(tiny, x, torch.tensor([1, 2]), "x")


def test_hardness_matrix_float64_input_gives_the_float32_result(tiny, mnist5k):
    """float64 input (numpy's default) is cast, not a dtype error deep inside the attack."""
    x, y = mnist5k.x_test[:2], mnist5k.y_test[:2]
    r32 = hardness_matrix(tiny, x, y, levels=(0.02, 0.05), progress=False)
    r64 = hardness_matrix(tiny, x.double().numpy(), y.numpy(), levels=(0.02, 0.05), progress=False)
    assert r64.per_pair["success_iter"] == r32.per_pair["success_iter"]
    np.testing.assert_array_equal(r64.hardness, r32.hardness)
    assert r64.success_rate == r32.success_rate
