"""Domain shift (Bradshaw et al. 2017, §8.3): MNIST-trained models on digit sets they were not trained on.

Accuracy and mean log-likelihood of the true class per model and test set; a log-likelihood near ``log 0.1 = −2.30``
means "don't know", which is what a well-calibrated model should say on a foreign domain.

The test sets do not ship with advbridge and are never downloaded. They are read from the folder the user passes as
``--data-root`` (``data_root``), under the file names torchvision uses:

- ``semeion``: ``semeion.data`` (UCI Semeion handwritten digits, 16×16 binary), read by
  ``torchvision.datasets.SEMEION`` (md5-checked); resized to 20×20 and centred in 28×28, as MNIST's digits are;
- ``svhn``: ``test_32x32.mat`` (SVHN test split), read by ``torchvision.datasets.SVHN`` (md5-checked); converted to
  grey levels (ITU-R 601-2 luma) and resized to 28×28, not inverted;
- ``anomnist``: ``anomnist.npz`` with arrays ``x`` (``(N, 28, 28)`` or ``(N, 1, 28, 28)``, uint8 in [0, 255] or
  floats in [0, 1]) and ``y`` (``(N,)`` digits); read with ``allow_pickle=False``. Bradshaw's ANOMNIST has no public
  loader, so the user converts it to this form.

When a listed file is missing the estimator raises :class:`DataNotSupplied`; the runner skips the cell with that
message and runs it on a later ``advbridge run`` that supplies the data (nothing is stored for it meanwhile).

The test sets are read by `advbridge.evaluations.data.domain_shift`, the table computed by
`advbridge.evaluations.analysis.domain_shift`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch

from advbridge.bridge import Model

from advbridge.evaluations.analysis.domain_shift import evaluate_domain_shift
from advbridge.evaluations.data.datasets import DATASETS, load_dataset
from advbridge.evaluations.data.domain_shift import (TEST_SETS, DataNotSupplied, load_test_set, missing_files,
                                                     not_supplied_message)
from advbridge.evaluations.estimators.base import ESTIMATORS, Estimator, check_keys
from advbridge.evaluations.zoo.resolve import model_error, resolve_model

logger = logging.getLogger(__name__)

#: ``[[estimators]] name = "domain_shift"`` parameters and their defaults.
DOMAIN_SHIFT_PARAMS: dict[str, Any] = {"models": None, "test_sets": ["anomnist", "semeion", "svhn"], "n": 1000,
                                       "dataset": "mnist5k", "seed": 0, "batch_size": 256}
DOMAIN_SHIFT_SUMMARY = ("Accuracy and log-likelihood of MNIST-trained models on foreign digit sets supplied under "
                        "--data-root (Bradshaw §8.3 domain shift)")


def validate_domain_shift(params: Mapping[str, Any]) -> str | None:
    """Why ``params`` is not a valid ``domain_shift`` estimator configuration, or ``None``."""
    error = check_keys(params, DOMAIN_SHIFT_PARAMS)
    if error:
        return error
    p = {**DOMAIN_SHIFT_PARAMS, **params}
    if not isinstance(p["models"], list) or not p["models"] or len(set(map(str, p["models"]))) != len(p["models"]):
        return f"models must list at least one model name, without repeats, got {p['models']!r}"
    for name in p["models"]:
        error = model_error(name)
        if error:
            return error
    sets = p["test_sets"]
    if not isinstance(sets, list) or not sets or any(s not in TEST_SETS for s in sets):
        return f"test_sets must list some of {sorted(TEST_SETS)}, got {sets!r}"
    for key in ("n", "batch_size"):
        if isinstance(p[key], bool) or not isinstance(p[key], int) or p[key] < 1:
            return f"{key} must be a positive integer, got {p[key]!r}"
    if p["dataset"] not in DATASETS or p["dataset"] == "cifar10":
        return f"dataset must be an MNIST data set ('mnist5k' or 'mnist'), got {p['dataset']!r}"
    if isinstance(p["seed"], bool) or not isinstance(p["seed"], int):
        return f"seed must be an integer, got {p['seed']!r}"
    return None


def compute_domain_shift(model: Model, x: torch.Tensor, y: torch.Tensor, params: Mapping[str, Any],
                         progress: bool = True, data_root: str | None = None
                         ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The ``domain_shift`` estimator: ``params["models"]`` on the training data set's test split (row ``mnist``)
    and on each of ``params["test_sets"]`` (at most ``n`` images each, a seeded draw) read from ``data_root``.

    The cell's own ``model``, ``x`` and ``y`` only anchor the cell. Raises :class:`DataNotSupplied` (before any model
    is loaded) when a test set's file is missing.
    """
    error = validate_domain_shift(params)
    if error:
        raise ValueError(f"domain_shift estimator: {error}")
    p = {**DOMAIN_SHIFT_PARAMS, **params}
    if missing_files(p["test_sets"], data_root):
        raise DataNotSupplied(not_supplied_message(p["test_sets"], data_root))
    data = load_dataset(p["dataset"], root=data_root)
    sets = {"mnist": (data.x_test, data.y_test)}
    generator = torch.Generator().manual_seed(int(p["seed"]))
    for name in p["test_sets"]:
        xs, ys = load_test_set(name, data_root)
        keep = torch.randperm(len(xs), generator=generator)[:p["n"]]
        sets[name] = (xs[keep], ys[keep])
        logger.info("domain shift: %s, %d of %d images", name, len(keep), len(xs))
    models = {name: resolve_model(name, p["dataset"], p["seed"], str(model.device), data, data_root)[0]
              for name in p["models"]}
    table = evaluate_domain_shift(models, sets, p["batch_size"])
    metrics = {f"{key}[{s}][{m}]": v[key] for s, row in table.items() for m, v in row.items()
               for key in ("accuracy", "log_likelihood")}
    return metrics, {"table": table, "params": dict(p)}, {}


DOMAIN_SHIFT = ESTIMATORS.add(Estimator("domain_shift", validate_domain_shift, compute_domain_shift,
                                        DOMAIN_SHIFT_SUMMARY), rank=40)
