"""Domain shift: accuracy and log-likelihood per model and test set."""

from __future__ import annotations

from advbridge.evaluations.analysis.domain_shift import evaluate_domain_shift
from advbridge.evaluations.zoo.classifiers import load_model


def test_table_per_test_set_and_model(tiny, mnist5k):
    fc10 = load_model("mnist_fc10_wd1e-2", "mnist5k", device="cpu", data=mnist5k).model
    table = evaluate_domain_shift({"tiny": tiny, "fc10": fc10}, {"mnist": (mnist5k.x_test[:50], mnist5k.y_test[:50])})
    assert set(table["mnist"]) == {"tiny", "fc10"} and table["mnist"]["tiny"]["log_likelihood"] < 0
