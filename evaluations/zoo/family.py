"""The model-family interface and registry: each family (zoo classifiers, trained variants, generative models,
GPDNNs, ``package.module:function`` imports) is one module of this package that adds one `ModelFamily` to
``FAMILIES``; `advbridge.evaluations.zoo.resolve` looks a model name up through them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from advbridge.bridge import Model
from advbridge.bridge.registry import Registry


@dataclass(frozen=True)
class ModelFamily:
    """One kind of model a suite can name.

    :param name: The family's name (the ``kind`` column of ``advbridge models``).
    :param owns: Whether a model name belongs to this family.
    :param load: ``load(name, dataset, *, seed, device, data, data_root) -> (Model, info)``.
    :param listing: The rows ``(name, kind, description)`` ``advbridge models`` lists.
    :param hint: How an unknown-model error names this family's models.
    :param checkpoints: ``checkpoints(name, dataset, seed) -> manifest names`` of the shipped weights it reads;
        ``None`` for a family with no shipped weights.
    :param validate: Why an owned name is still not usable (``None`` when it is); default: always usable.
    :param hint_rank: Where the hint goes in that error (families are listed by their registry rank).
    """

    name: str
    owns: Callable[[str], bool]
    load: Callable[..., tuple[Model, dict[str, Any]]]
    listing: Callable[[], list[tuple[str, str, str]]]
    hint: str | Callable[[], str]
    checkpoints: Callable[[str, str, int], list[str]] | None = None
    validate: Callable[[str], str | None] | None = None
    hint_rank: int = 0

    def describe(self) -> str:
        return self.hint() if callable(self.hint) else self.hint


FAMILIES: Registry[ModelFamily] = Registry("model family", "advbridge.evaluations.zoo")
"""Every model family, in the order ``advbridge models`` lists them (their ``rank``)."""


def accuracy(module: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device | None = None,
             batch_size: int = 500) -> float:
    """Top-1 accuracy of ``module`` on ``(x, y)``."""
    device = device or next(module.parameters()).device
    correct = 0
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            pred = module(x[start:start + batch_size].to(device)).argmax(1).cpu()
            correct += int((pred == y[start:start + batch_size]).sum())
    return correct / len(x)
