"""User models given to suites as ``module:function`` (importable because pytest puts this folder on sys.path)."""

import os
from pathlib import Path

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


class CrashOnceInWorker(nn.Module):
    """Kills its process (``os._exit``) the first time it runs outside the process that built it."""

    def __init__(self, marker: str) -> None:
        super().__init__()
        self.driver_pid = os.getpid()
        self.marker = marker

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if os.getpid() != self.driver_pid and not Path(self.marker).exists():
            Path(self.marker).write_text(str(os.getpid()))
            os._exit(1)
        return x


class FailInWorker(nn.Module):
    """Raises whenever it runs outside the process that built it."""

    def __init__(self) -> None:
        super().__init__()
        self.driver_pid = os.getpid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if os.getpid() != self.driver_pid:
            raise RuntimeError("this model always fails on workers")
        return x


def crash_once() -> Model:
    return Model(_linear(), (1, 28, 28), preprocessing=[CrashOnceInWorker(os.environ["ADVBRIDGE_TEST_MARKER"])],
                 device="cpu")


def fail_in_worker() -> Model:
    return Model(_linear(), (1, 28, 28), preprocessing=[FailInWorker()], device="cpu")
