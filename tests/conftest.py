"""Shared fixtures: one thread, the embedded data set, and a tiny CNN trained in seconds (session-scoped)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from advbridge.bridge import Model
from advbridge.evaluations.data.datasets import load_dataset
from advbridge.evaluations.zoo.classifiers import load_model

torch.set_num_threads(1)

# The user-model factories the suites name as ``user_models:<function>`` (tests/evaluations/user_models.py), importable
# from every test folder of the mirrored tree.
sys.path.insert(0, str(Path(__file__).parent / "evaluations"))


class Blur(nn.Module):
    """A fixed 3x3 box blur: a differentiable torch preprocessor standing in for a defense."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1, bias=False)
        self.conv.weight.data.fill_(1 / 9)
        self.conv.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


@pytest.fixture(scope="session")
def mnist5k():
    return load_dataset("mnist5k")


@pytest.fixture(scope="session")
def tiny(mnist5k):
    """The zoo's tiny CNN (cached after the first run) as a bridge Model on the CPU."""
    return load_model("mnist_tiny_cnn", "mnist5k", device="cpu", data=mnist5k).model


@pytest.fixture(scope="session")
def defended(tiny):
    """The same classifier behind a torch preprocessor and mean/std normalisation."""
    return Model(tiny.module, (1, 28, 28), preprocessing=[Blur()], mean=[0.1307], std=[0.3081], device="cpu")


@pytest.fixture(scope="session")
def attack_set(tiny, mnist5k):
    """32 test images the tiny CNN classifies correctly."""
    x, y = mnist5k.x_test, mnist5k.y_test
    keep = (tiny.predict(x) == y).nonzero().flatten()[:32]
    return x[keep], y[keep]
