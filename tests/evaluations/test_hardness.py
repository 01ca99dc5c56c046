"""Native Papernot JSMA and the hardness matrix: the single pass equals one run per level, the pair choice equals a
brute-force reference, the adversarial distance equals a full-Jacobian computation, crossval against ART."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from advbridge.bridge import AttackSpec, crossval, run_attack
from advbridge.bridge.attacks.jsma import PapernotJSMA
from advbridge.evaluations.hardness import adversarial_distance, all_target_pairs, hardness_matrix, trapezoid_hardness

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


@pytest.mark.parametrize("theta, dims", [(1.0, 40), (-1.0, 40), (1.0, 200)])  # 200 > 64: the pruned search
def test_pair_choice_equals_the_brute_force_reference(tiny, theta, dims):
    gen = torch.Generator().manual_seed(0)
    alpha, beta = torch.randn(3, dims, generator=gen), torch.randn(3, dims, generator=gen)
    domain = torch.rand(3, dims, generator=gen) > 0.3
    attack = PapernotJSMA(tiny.art(), theta=theta, pair_rows=2)
    p, q, found = attack._best_pairs(alpha, beta, domain)
    for row in range(3):
        expected = reference_pair(alpha[row].numpy(), beta[row].numpy(), domain[row].numpy(), theta)
        assert bool(found[row]) == (expected is not None)
        if expected is not None:
            assert {int(p[row]), int(q[row])} == set(expected)
    # On probabilities β = −α exactly, and the O(D) choice equals the pair search.
    p2, q2, found2 = attack._best_pairs_probs(alpha, domain, theta)
    p3, q3, found3 = attack._best_pairs(alpha, -alpha, domain)
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


def test_native_jsma_through_the_bridge(tiny, attack_set):
    x, y = attack_set[0][:8], attack_set[1][:8]
    result = run_attack(tiny, x, y, AttackSpec("jsma", "l0", "random", {"max_distortion": 0.1}), "native",
                        progress=False)
    assert np.array_equal(result.success, result.pred_adv == result.targets)
    assert result.norms["l0"].max() <= 2 * int(784 * 0.1 / 2)
    changed = (result.x_adv - x).abs() > 0
    assert torch.all(result.x_adv[changed] == 1.0)  # θ = +1 sets features to the upper bound
    with pytest.raises(ValueError, match=r"parameter 'saliency_on'='probs' cannot be honoured by backend 'art'"):
        run_attack(tiny, x, y, AttackSpec("jsma", "l0", "random", {"saliency_on": "probs"}), "art")


def test_crossval_native_against_art(tiny, attack_set):
    x, y = attack_set[0][:6], attack_set[1][:6]
    report = crossval(tiny, x, y, AttackSpec("jsma", "l0", "random", {}), backends=("native", "art"),
                      progress=False)
    assert set(report.results) == {"native", "art"}
    for r in report.results.values():
        assert np.array_equal(r.success, r.pred_adv == r.targets)
    assert np.array_equal(report.results["native"].targets, report.results["art"].targets)


def test_adversarial_distance_equals_the_full_jacobian(tiny, pairs):
    x, _, targets = pairs
    x, targets = x[:3], targets[:3]
    got = adversarial_distance(tiny, x, targets, "logits")
    for i in range(3):
        jac = torch.autograd.functional.jacobian(lambda v: tiny.pipeline(v.unsqueeze(0))[0], x[i]).flatten(1)
        t = int(targets[i])
        other = jac.sum(0) - jac[t]
        expected = 1 - float(((jac[t] > 0) & (other < 0)).float().mean())
        assert got[i] == pytest.approx(expected, abs=1e-6)


def test_hardness_matrix_shapes_and_trapezoid(tiny, mnist5k):
    assert trapezoid_hardness(np.array([1.0, 0.0, 0.5]), np.array([0.2, 0.0, 0.1])) == pytest.approx(0.05 / 2 + 0.15 / 2)
    result = hardness_matrix(tiny, mnist5k.x_test[:10], mnist5k.y_test[:10], levels=LEVELS, progress=False)
    assert result.hardness.shape == (10, 10) and np.isnan(np.diag(result.hardness)).all()
    present = sorted(set(mnist5k.y_test[:10].tolist()))
    for s in present:
        assert np.isfinite(np.delete(result.hardness[s], s)).all()
    assert 0 <= result.robustness <= np.nanmin(result.adversarial_distance) + 1e-9
    assert result.vjp_calls <= result.vjp_calls_separate
    with pytest.raises(ValueError, match=r"levels must list at least 2 distortion fractions in \(0, 1\]"):
        hardness_matrix(tiny, mnist5k.x_test[:2], mnist5k.y_test[:2], levels=(0.1,))


SUITE = """\
[suite]
name = "hardness_small"
models = ["mnist_tiny_cnn"]
backends = ["art"]
[data]
n = 4
[[attacks]]
name = "fgsm"
params = { eps = 0.1 }
[[estimators]]
name = "hardness"
params = { levels = [0.02, 0.05, 0.1] }
"""


def test_estimator_cells_are_stored_reported_and_resumed(tmp_path, tiny, mnist5k):
    from advbridge.evaluations.runner import Resources, run_suite
    from advbridge.evaluations.store import ResultStore
    from advbridge.evaluations.suite import SuiteError, load_suite

    suite = load_suite("hardness_small", text=SUITE)
    first = run_suite(suite, tmp_path, progress=False, device="cpu")
    assert (first.total, first.computed, first.failed) == (2, 2, 0)  # the estimator shares the attack's slice
    with ResultStore(tmp_path / "results.db") as store:
        (cell,) = [c for c in store.cells(status="done") if c["record"].get("kind") == "estimator"]
    x, y, _ = Resources(suite, device="cpu").slice("mnist_tiny_cnn", 4)
    direct = hardness_matrix(tiny, x, y, levels=(0.02, 0.05, 0.1), progress=False)
    assert cell["record"]["metrics"]["success_rate"] == pytest.approx(direct.success_rate)
    report = (tmp_path / "report.md").read_text()
    assert "## JSMA hardness" in report and "hardness_hardness_small_mnist_tiny_cnn_hardness.png" in report
    again = run_suite(suite, tmp_path, progress=False, device="cpu")
    assert (again.computed, again.skipped) == (0, 2)
    with pytest.raises(SuiteError, match=r":\d+: estimator 'hardness': unknown parameter\(s\) \['level'\]"):
        load_suite("bad.toml", text=SUITE.replace("levels =", "level ="))
