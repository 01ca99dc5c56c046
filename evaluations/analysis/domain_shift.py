"""Domain shift (Bradshaw et al. 2017, §8.3): accuracy and mean log-likelihood of the true class per model and test
set; a log-likelihood near ``log 0.1 = −2.30`` means "don't know", which is what a well-calibrated model should say
on a foreign domain. The test sets are in `advbridge.evaluations.data.domain_shift`, the suite estimator in
`advbridge.evaluations.estimators.domain_shift`."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from advbridge.bridge import Model
from advbridge.bridge.validation import check_positive_int


def evaluate_domain_shift(models: Mapping[str, Model], test_sets: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
                          batch_size: int = 256) -> dict[str, dict[str, dict[str, float]]]:
    """``{test set: {model: {"accuracy", "log_likelihood", "n"}}}``; the log-likelihood is the mean
    ``log softmax(z)_y`` (for a GPDNN, whose outputs are ``log p(y | x)``, its log predictive probability)."""
    batch_size = check_positive_int(batch_size, "batch_size")
    table: dict[str, dict[str, dict[str, float]]] = {}
    for set_name, (x, y) in test_sets.items():
        table[set_name] = {}
        for model_name, model in models.items():
            logits = model.logits(x, batch_size=batch_size).float().cpu()
            logp = torch.log_softmax(logits, 1).gather(1, y.unsqueeze(1)).squeeze(1)
            table[set_name][model_name] = {"accuracy": float((logits.argmax(1) == y).float().mean()),
                                           "log_likelihood": float(logp.mean()), "n": len(y)}
    return table
