"""The Kos et al. (source, target) attack-success matrices (algorithms.md §4.3–4.4) on a hand-computed example."""

import numpy as np
import pytest
import torch

from advbridge.evaluations.analysis.kos import as_matrices, overall_mean, per_source_means, plot_matrix
from advbridge.evaluations.papers.kos import PAPER_CELLS, PAPER_MEAN, PAPER_PER_SOURCE, PAPER_SOURCE_COUNTS

# 3 classes. Pairs (source -> target): 0->1 ×3, 0->2 ×1, 1->0 ×2, 2->1 ×2; nothing for 1->2 and 2->0.
SOURCE = [0, 0, 0, 0, 1, 1, 2, 2]
TARGET = [1, 1, 1, 2, 0, 0, 1, 1]
PRED = [1, 2, 0, 2, 0, 2, 2, 1]
#   0->1: preds 1, 2, 0 -> moved 2/3, hit 1/3;  0->2: pred 2 -> 1, 1
#   1->0: preds 0, 2   -> moved 2/2, hit 1/2;   2->1: preds 2, 1 -> moved 1/2, hit 1/2
NAN = np.nan
EXPECTED_IGNORE = np.array([[NAN, 2 / 3, 1.0], [1.0, NAN, NAN], [NAN, 0.5, NAN]])
EXPECTED_TARGET = np.array([[NAN, 1 / 3, 1.0], [0.5, NAN, NAN], [NAN, 0.5, NAN]])
EXPECTED_COUNTS = np.array([[0, 3, 1], [2, 0, 0], [0, 2, 0]])


def test_as_matrices_by_hand():
    out = as_matrices(SOURCE, TARGET, PRED, nb_classes=3)
    np.testing.assert_allclose(out["as_ignore_target"], EXPECTED_IGNORE, equal_nan=True)
    np.testing.assert_allclose(out["as_target"], EXPECTED_TARGET, equal_nan=True)
    np.testing.assert_array_equal(out["counts"], EXPECTED_COUNTS)
    both = ~np.isnan(out["as_target"])
    assert (out["as_target"][both] <= out["as_ignore_target"][both]).all()
    # Torch tensors are accepted; a diagonal pair (target = source) is counted but never rated.
    tensors = as_matrices(torch.tensor(SOURCE + [1]), torch.tensor(TARGET + [1]), torch.tensor(PRED + [0]), 3)
    assert tensors["counts"][1, 1] == 1 and np.isnan(tensors["as_target"][1, 1])
    np.testing.assert_allclose(tensors["as_target"], EXPECTED_TARGET, equal_nan=True)


def test_per_source_and_overall_means():
    np.testing.assert_allclose(per_source_means(EXPECTED_IGNORE), [(2 / 3 + 1) / 2, 1.0, 0.5])
    np.testing.assert_allclose(per_source_means(EXPECTED_TARGET), [(1 / 3 + 1) / 2, 0.5, 0.5])
    assert np.isnan(per_source_means(np.full((2, 2), np.nan))).all()
    assert overall_mean(EXPECTED_TARGET) == pytest.approx((1 / 3 + 1 + 0.5 + 0.5) / 4)


def test_paper_constants_are_consistent():
    assert set(PAPER_PER_SOURCE) == set(range(10)) and sum(PAPER_SOURCE_COUNTS.values()) == 992
    ignore = np.mean([v[0] for v in PAPER_PER_SOURCE.values()])
    target = np.mean([v[1] for v in PAPER_PER_SOURCE.values()])
    assert ignore == pytest.approx(PAPER_MEAN[0], abs=0.1) and target == pytest.approx(PAPER_MEAN[1], abs=0.1)
    assert all(t <= i for i, t in list(PAPER_PER_SOURCE.values()) + list(PAPER_CELLS.values()))
    assert PAPER_CELLS[(0, 4)] == (75.90, 0.00)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match=r"target must have 8 entries like source, got 7"):
        as_matrices(SOURCE, TARGET[:-1], PRED, 3)
    with pytest.raises(ValueError, match=r"pred must lie in \[0, 3\), got 0..3"):
        as_matrices(SOURCE, TARGET, PRED[:-1] + [3], 3)
    with pytest.raises(ValueError, match="source must be a 1-D array"):
        as_matrices([[0]], [1], [1], 3)
    with pytest.raises(ValueError, match="matrix must be square"):
        per_source_means(np.zeros((2, 3)))


def test_plot_matrix_writes_a_png(tmp_path):
    path = plot_matrix(EXPECTED_TARGET, tmp_path / "sub" / "as_target.png", "AS_target")
    assert path.exists() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
