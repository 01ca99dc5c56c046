"""The estimator registry: every registered estimator validates and computes a tiny case through ``ESTIMATORS``, the
registered names and their order are the expected ones, and a name registered twice raises."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import torch

from advbridge.evaluations.estimators.base import ESTIMATORS, Estimator, check_keys

#: The registered estimators, in registry (rank) order.
NAMES = ["meanfield", "hardness", "transfer", "domain_shift"]

#: One tiny configuration per estimator: few levels, one model, no noise rows, a small foreign test set.
TINY_PARAMS: dict[str, dict[str, Any]] = {
    "meanfield": {"directions": ["l2", "sign"], "batch_size": 4},
    "hardness": {"levels": [0.02, 0.05], "batch_size": 9},
    "transfer": {"models": ["mnist_tiny_cnn"], "attack": "fgsm", "attack_params": {"eps": 0.1}, "backend": "art",
                 "noise_sigmas": [], "table1": False},
    "domain_shift": {"models": ["mnist_tiny_cnn"], "test_sets": ["anomnist"], "n": 8},
}


def test_registered_names_in_order():
    assert list(ESTIMATORS) == NAMES
    assert len(ESTIMATORS) == len(NAMES)
    for name, estimator in ESTIMATORS.items():
        assert isinstance(estimator, Estimator) and estimator.name == name and estimator.summary


def test_every_estimator_has_a_tiny_case():
    assert sorted(TINY_PARAMS) == sorted(ESTIMATORS)


def test_a_name_registered_twice_raises():
    existing = ESTIMATORS["hardness"]
    with pytest.raises(ValueError, match="estimator 'hardness' is registered twice"):
        ESTIMATORS.add(Estimator("hardness", existing.validate, existing.compute, "a second hardness"))
    assert ESTIMATORS["hardness"] is existing and list(ESTIMATORS) == NAMES


def test_unknown_estimator_names_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown estimator 'nope'; expected one of \['domain_shift', 'hardness', "
                                         r"'meanfield', 'transfer'\]"):
        ESTIMATORS.lookup("nope")


def test_check_keys_names_the_unknown_and_the_allowed():
    assert check_keys({"a": 1}, {"a": 0, "b": 0}) is None
    assert check_keys({"c": 1}, {"a": 0, "b": 0}) == "unknown parameter(s) ['c']; expected some of ['a', 'b']"


@pytest.mark.parametrize("name", NAMES)
def test_every_estimator_runs_a_tiny_case(name, tiny, mnist5k, tmp_path):
    estimator = ESTIMATORS[name]
    params = TINY_PARAMS[name]
    assert estimator.validate(params) is None
    assert "unknown parameter(s) ['bogus']" in estimator.validate({**params, "bogus": 1})
    x, y = mnist5k.x_test[:2], mnist5k.y_test[:2]
    digits = ((1 - mnist5k.x_test[:20, 0]) * 255).round().to(torch.uint8).numpy()  # a stand-in ANOMNIST
    np.savez(tmp_path / "anomnist.npz", x=digits, y=mnist5k.y_test[:20].numpy())
    torch.manual_seed(0)
    metrics, result, samples = estimator.compute(tiny, x, y, dict(params), progress=False, data_root=str(tmp_path))
    assert metrics and isinstance(result, dict) and isinstance(samples, dict)
    json.dumps({"metrics": metrics, "result": result, "samples": samples})  # what the store writes
    assert all(v is None or isinstance(v, (int, float)) for v in metrics.values())
