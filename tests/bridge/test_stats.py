"""The paired tests behind the crossval of random attacks, against closed forms and a coverage simulation, and the
A/A check on a real random attack: one toolkit, two seeds, flagged at most ALPHA of the time."""

import numpy as np
import pytest

from advbridge.bridge import AttackSpec, aa_check
from advbridge.bridge.crossval import SUCCESS_GAP
from advbridge.bridge.stats import ALPHA, mcnemar_p, median_interval, wilcoxon_p


def test_mcnemar_is_the_exact_binomial_on_discordant_pairs():
    a = np.array([1] * 8 + [0] * 20, bool)
    b = np.zeros(28, bool)
    assert mcnemar_p(a, b) == pytest.approx(2 * 0.5 ** 8)  # 8 discordant, all one way
    assert mcnemar_p(a, a) == 1.0
    # 3 vs 1 discordant: P(X <= 1) + P(X >= 3) for X ~ Bin(4, 1/2) = 10/16
    a2, b2 = np.array([1, 1, 1, 0, 1], bool), np.array([0, 0, 0, 1, 1], bool)
    assert mcnemar_p(a2, b2) == pytest.approx(10 / 16)
    assert mcnemar_p(a2, b2, mask=np.array([1, 1, 0, 0, 0], bool)) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="same shape"):
        mcnemar_p(a, b[:3])


def test_wilcoxon_exact_p_for_all_positive_differences():
    a, b = np.arange(1, 11, dtype=float) + 0.5, np.zeros(10)
    assert wilcoxon_p(a, b) == pytest.approx(2 / 2 ** 10)  # every sign positive: 2 of 2^10 sign patterns
    assert wilcoxon_p(a[:5], b[:5]) == 1.0                   # too few pairs for a verdict
    assert wilcoxon_p(a, a) == 1.0


def test_median_interval_covers_the_true_median_at_its_level():
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(2000):
        low, high = median_interval(rng.uniform(size=30))
        hits += low <= 0.5 <= high
    assert 0.93 <= hits / 2000 <= 0.99  # the binomial interval is conservative (nominal 95%)
    assert np.isnan(median_interval(np.array([]))[0])


def test_aa_false_flags_stay_below_alpha_where_fixed_thresholds_fire(tiny, attack_set):
    """Twelve seed pairs of the single-draw noise attack (per-sample success is a coin flip for many inputs): the
    statistics flag at most the binomial allowance at ALPHA, while a fixed 5-point threshold on the same runs fires
    far more often."""
    x, y = attack_set
    spec = AttackSpec("noise", "linf", params={"eps": 0.5, "repeats": 1})  # success 19-28% by seed
    flags = fixed = 0
    for pair in range(12):
        report = aa_check(tiny, x, y, spec, "foolbox", seeds=(2 * pair, 2 * pair + 1), progress=False)
        flags += any(f.code in ("success_gap", "norm_gap") for f in report.flags)
        a, b = report.results.values()
        fixed += abs(a.success_rate - b.success_rate) > SUCCESS_GAP
        assert 0 <= report.ratios[f"McNemar p {a.backend}@{2 * pair}/{b.backend}@{2 * pair + 1} (per-sample success)"] <= 1
    assert flags <= 2           # P(>= 3 of 12) < 2% at a true rate of ALPHA = 5%
    assert fixed >= 4, fixed    # the old rule: a false alarm on a third of the pairs or more
    assert ALPHA == 0.05


def test_aa_check_refuses_a_deterministic_attack(tiny, attack_set):
    x, y = attack_set
    with pytest.raises(ValueError, match="needs a random attack"):
        aa_check(tiny, x, y, AttackSpec("fgsm", "linf"), "art")
    with pytest.raises(ValueError, match="two different integers"):
        aa_check(tiny, x, y, AttackSpec("noise", "linf"), "foolbox", seeds=(1, 1))
