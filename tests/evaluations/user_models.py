"""User models given to suites as ``module:function`` (importable because pytest puts this folder on sys.path)."""

import torch
from torch import nn

from advbridge.bridge import Model


class RoundInput(nn.Module):
    """Quantises the input: its gradient is zero everywhere (gradient masking)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x * 4) / 4


class NoisyInput(nn.Module):
    """Adds fresh Gaussian noise at every call: a randomised defense."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.3 * torch.randn_like(x)


def _linear() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 10))


def masked() -> Model:
    return Model(_linear(), (1, 28, 28), preprocessing=[RoundInput()], device="cpu")


def noisy() -> Model:
    return Model(_linear(), (1, 28, 28), preprocessing=[NoisyInput()], device="cpu")
