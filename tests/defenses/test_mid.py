"""MID: the Jaccard metric, its three estimators, and the detector on clean vs C&W inputs."""

import numpy as np
import pytest
import torch
from scipy.optimize import linprog
from scipy.stats import entropy
from torch import nn

from advbridge.bridge import AttackSpec, run_attack
from advbridge.defenses.mid import (MutualInformationDetector, coord_hist_similarity, information_terms,
                                    jaccard_similarity, max_coupling_similarity)


def test_coord_hist_reference_values():
    """algorithms.md §1.5 Option B: one-hot vectors, same class vs different classes."""
    a, b = np.eye(10)[[3]], np.eye(10)[[7]]
    same = np.zeros((10, 10))
    np.add.at(same, ([9, 0, 0, 0, 0, 0, 0, 0, 0, 0], [9, 0, 0, 0, 0, 0, 0, 0, 0, 0]), 0.1)
    assert information_terms(same)[0] == pytest.approx(0.3251, abs=1e-4)
    assert coord_hist_similarity(a, a)[0] == pytest.approx(1.0)
    mi, h_xy = information_terms(_coord_joint(a[0], b[0]))
    assert mi == pytest.approx(0.0111, abs=1e-4) and h_xy == pytest.approx(0.6390, abs=1e-4)
    assert coord_hist_similarity(a, b)[0] == pytest.approx(0.0174, abs=1e-4)


def _coord_joint(a, b):
    joint = np.zeros((10, 10))
    np.add.at(joint, (np.minimum((a * 10).astype(int), 9), np.minimum((b * 10).astype(int), 9)), 0.1)
    return joint


def test_jaccard_similarity_population():
    labels = np.repeat(np.arange(10), 20)
    hard = np.eye(10)[labels]
    assert jaccard_similarity(hard, hard) == pytest.approx(1.0, abs=1e-3)  # Y determined by X: I = H(X,Y)
    rng = np.random.default_rng(0)
    shuffled = np.eye(10)[rng.permutation(labels)]
    assert jaccard_similarity(hard, shuffled) < 0.15                      # nearly independent
    soft = np.array([0.6, 0.3, 0.1])
    assert information_terms(np.outer(soft, soft[::-1]))[0] == pytest.approx(0.0, abs=1e-12)  # one input: independent
    with pytest.raises(ValueError, match="same shape"):
        jaccard_similarity(hard, hard[:, :5])


def test_max_coupling_is_one_iff_equal():
    p = np.array([[0.7, 0.2, 0.1]])
    assert max_coupling_similarity(p, p)[0] == pytest.approx(1.0)
    assert max_coupling_similarity(p, np.array([[0.1, 0.2, 0.7]]))[0] < 0.9
    # exact one-hot predictions: the joint is a point mass (H = 0); 1 on the diagonal, 0 for a flip (was 1.0)
    one_hot = np.eye(10)
    assert max_coupling_similarity(one_hot[[3]], one_hot[[3]])[0] == 1.0
    assert max_coupling_similarity(one_hot[[3]], one_hot[[7]])[0] == 0.0


def test_max_coupling_hand_computed_values():
    """§1.5 Option C by hand: diag(min) + (1 - Σmin) r_P r_Qᵀ, then I/H(X,Y) in nats."""
    # P = (0.9, 0.1), Q = (0.6, 0.4): min = (0.6, 0.1), rest 0.3, r_P = e1, r_Q = e2 -> [[0.6, 0.3], [0, 0.1]]
    # I = 0.6 ln(0.6/0.54) + 0.3 ln(0.3/0.36) + 0.1 ln(0.1/0.04) = 0.100149; H = 0.897940
    two = max_coupling_similarity(np.array([[0.9, 0.1]]), np.array([[0.6, 0.4]]))[0]
    assert two == pytest.approx(0.100149 / 0.897940, abs=1e-5)
    # P = (0.5, 0.3, 0.2), Q = (0.2, 0.3, 0.5): joint [[0.2, 0, 0.3], [0, 0.3, 0], [0, 0, 0.2]]
    # I = 0.4 ln 2 + 0.3 ln 1.2 + 0.3 ln(10/3) = ln 2; H = -(0.4 ln 0.2 + 0.6 ln 0.3) = 1.366159
    three = max_coupling_similarity(np.array([[0.5, 0.3, 0.2]]), np.array([[0.2, 0.3, 0.5]]))[0]
    assert three == pytest.approx(np.log(2) / 1.366159, abs=1e-5)


def test_max_coupling_against_a_linear_program_and_scipy_entropies():
    """Random K = 10 pairs: the coupling's diagonal mass is the LP optimum over all couplings of P and Q, and
    the similarity is I = H(X) + H(Y) - H(X,Y) over H(X,Y), with scipy's entropies of that joint."""
    rng = np.random.default_rng(0)
    k = 10
    rows = np.kron(np.eye(k), np.ones(k))      # row sums of a flattened (k, k) joint
    cols = np.kron(np.ones(k), np.eye(k))      # column sums
    for _ in range(5):
        p, q = rng.dirichlet(np.ones(k)), rng.dirichlet(np.ones(k) * 0.5)
        lp = linprog(-np.eye(k).ravel(), A_eq=np.vstack([rows, cols]), b_eq=np.r_[p, q], bounds=(0, None))
        assert lp.status == 0
        best_agreement = -lp.fun                               # max P(X = Y) over all couplings
        assert best_agreement == pytest.approx(np.minimum(p, q).sum(), abs=1e-9)
        # the reference's maximal coupling: agreement mass on the diagonal, residuals independent
        over, under = np.clip(p - q, 0, None), np.clip(q - p, 0, None)
        joint = np.diag(np.minimum(p, q)) + np.outer(over, under) / over.sum()
        np.testing.assert_allclose(joint.sum(1), p, atol=1e-12)
        np.testing.assert_allclose(joint.sum(0), q, atol=1e-12)
        h_xy = entropy(joint.ravel())
        expected = (entropy(p) + entropy(q) - h_xy) / h_xy
        assert max_coupling_similarity(p[None], q[None])[0] == pytest.approx(expected, abs=1e-9)


class _HalvesClassifier(nn.Module):
    """Reads 2K pixels in [0, 1]: the logits are the first K pixels times ``scale``."""

    def __init__(self, k: int, scale: float) -> None:
        super().__init__()
        self.k, self.scale = k, scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, :self.k] * self.scale


class _SwapHalves(nn.Module):
    """A stand-in "autoencoder": its output's first K pixels are the input's last K, so f(ae(x)) is any logits."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = x.shape[-1] // 2
        return torch.cat([x[..., k:], x[..., :k]], -1)


def _logit_pairs(pairs, k: int = 10, scale: float = 20.0) -> torch.Tensor:
    """Inputs (N, 1, 1, 2K) whose classifier logits are ``a`` on x and ``b`` on ae(x), for each ``(a, b)``."""
    return torch.tensor(np.array([np.r_[a, b] / scale for a, b in pairs]), dtype=torch.float32)[:, None, None, :]


def test_max_coupling_ranks_a_flip_below_a_change_of_confidence_at_the_default():
    """The issue's case: a logit margin of 8 on class 3 (p = 0.997 at T = 1). At d798862's T = 1 the flip to
    class 7 scored 0.80 and the same class at margin 6 scored 0.11. At the default T (40; T = 10 still fails for
    margin 6: 0.884 vs 0.886), every same-class margin in 5..11 must score above the flip."""
    k, e = 10, np.eye(10)
    det = MutualInformationDetector(_HalvesClassifier(k, 20.0), _SwapHalves(), estimator="max_coupling")
    margins = [5.0, 6.0, 10.0, 11.0]
    x = _logit_pairs([(8 * e[3], 8 * e[7])] + [(8 * e[3], c * e[3]) for c in margins])
    sim = det.similarity(x)
    flip, confidence = sim[0], sim[1:]
    assert (confidence > flip).all(), f"flip {flip:.4f} vs confidence changes {np.round(confidence, 4)}"
    p, _ = det.probabilities(x)  # the detector's P and Q are softmax_T of the two logit vectors
    np.testing.assert_allclose(p[0], np.exp(8 * e[3] / det.temperature) / np.exp(8 * e[3] / det.temperature).sum(),
                               rtol=1e-5)


def test_max_coupling_needs_a_temperature_above_one():
    clf, ae = _HalvesClassifier(10, 20.0), _SwapHalves()
    with pytest.raises(ValueError, match=r"temperature must be > 1 for estimator 'max_coupling'"):
        MutualInformationDetector(clf, ae, estimator="max_coupling", temperature=1.0)
    assert MutualInformationDetector(clf, ae).temperature == 1.0  # population_pmi keeps the reference's T = 1


@pytest.mark.parametrize("estimator", ["population_pmi", "coord_hist", "max_coupling"])
def test_mid_scores_clean_above_cw(estimator, autoencoders, tiny, attack_set, mnist5k):
    _, ae2 = autoencoders
    det = MutualInformationDetector(tiny.module, ae2, estimator=estimator, drop_rate=0.05)  # default temperatures
    det.fit(mnist5k.x_val)
    x, y = attack_set
    cw = run_attack(tiny, x, y, AttackSpec("cw", "l2"), "foolbox")
    ok = cw.success
    assert ok.sum() >= 20
    clean_sim, adv_sim = det.similarity(x[ok]), det.similarity(cw.x_adv[ok])
    # measured here: population_pmi 1.69 vs 0.40, coord_hist 0.91 vs 0.61, max_coupling at its default T = 40
    # 0.940 vs 0.929 (4.1 standard errors; 2.3 at T = 10, too weak to assert an order)
    assert clean_sim.mean() > adv_sim.mean() + 3 * clean_sim.std() / np.sqrt(len(clean_sim))
    if estimator == "max_coupling":
        assert (0 <= clean_sim).all() and (clean_sim <= 1).all() and (0 <= adv_sim).all() and (adv_sim <= 1).all()
    report, flagged = det.detect(cw.x_adv[ok])
    assert flagged.mean() >= det.detect(x[ok])[1].mean() and report["threshold"] == det.threshold
    if estimator == "population_pmi":  # the clean mean of the pointwise score is the population MI (§1.5)
        p, q = det.probabilities(mnist5k.x_val)
        joint = p.T @ q / len(p) + 1e-6
        assert det.similarity(mnist5k.x_val).mean() == pytest.approx(information_terms(joint)[0], abs=1e-3)


def test_mid_accepts_an_encoder_decoder_pair_and_rejects_bad_arguments(autoencoders, tiny):
    ae1, _ = autoencoders
    encoder, decoder = torch.nn.Identity(), ae1
    det = MutualInformationDetector(tiny.module, encoder=encoder, decoder=decoder)
    x = torch.rand(4, 1, 28, 28)
    p, q = det.probabilities(x)
    assert p.shape == q.shape == (4, 10) and np.allclose(q.sum(1), 1)
    with pytest.raises(ValueError, match="either ae, or both encoder and decoder"):
        MutualInformationDetector(tiny.module)
    with pytest.raises(ValueError, match="estimator must be one of"):
        MutualInformationDetector(tiny.module, ae1, estimator="kde")
    with pytest.raises(ValueError, match="not fitted"):
        MutualInformationDetector(tiny.module, ae1).similarity(x)
