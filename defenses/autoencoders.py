"""MagNet's denoising autoencoders (Meng & Chen 2017; algorithms.md §2.1) and their training loop."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol, cast

import torch
from torch import nn
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

#: MNIST AE-I (detector I and reformer), MNIST AE-II (detector II), CIFAR-10 (3 channels).
MNIST_AE_I = (3, "average", 3)
MNIST_AE_II = (3,)
CIFAR_AE = (3,)


class _WithActivity(Protocol):
    """An autoencoder that also returns its activity penalty (like `DenoisingAutoEncoder`)."""

    def forward_with_activity(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...


class DenoisingAutoEncoder(nn.Module):
    """MagNet autoencoder: 3x3 sigmoid convolutions, pooling mirrored by upsampling, a sigmoid output.

    :param structure: Encoder layers: an int is a 3x3 conv with that many filters, ``"average"``/``"max"``
        a 2x2 pooling; the decoder mirrors it (``[3, "average", 3]`` is MNIST AE-I).
    :param channels: Image channels (1 for MNIST, 3 for CIFAR-10).
    """

    def __init__(self, structure: Sequence[int | str] = MNIST_AE_I, channels: int = 1) -> None:
        super().__init__()
        if not structure:
            raise ValueError("structure must list at least one layer, e.g. [3, 'average', 3]")
        self.structure = tuple(structure)
        layers: list[nn.Module] = []
        prev = channels
        for item in self.structure:
            layers.extend(self._layer(item, prev, decoder=False))
            prev = item if isinstance(item, int) else prev
        for item in reversed(self.structure):
            layers.extend(self._layer(item, prev, decoder=True))
            prev = item if isinstance(item, int) else prev
        self.body = nn.ModuleList(layers)
        self.head = nn.Conv2d(prev, channels, 3, padding=1)

    @staticmethod
    def _layer(item: int | str, prev: int, decoder: bool) -> list[nn.Module]:
        if isinstance(item, int) and not isinstance(item, bool) and item > 0:
            return [nn.Conv2d(prev, item, 3, padding=1), nn.Sigmoid()]
        if item in ("average", "max"):
            if decoder:
                return [nn.Upsample(scale_factor=2, mode="nearest")]
            return [nn.AvgPool2d(2) if item == "average" else nn.MaxPool2d(2)]
        raise ValueError(f"structure entries must be positive ints, 'average' or 'max', got {item!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_activity(x)[0]

    def forward_with_activity(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reconstruction and the L2 activity penalty (sum of squared conv outputs, mean over the batch)."""
        activity = x.new_zeros(())
        h = x
        for layer in self.body:
            h = layer(h)
            if isinstance(layer, nn.Sigmoid):
                activity = activity + h.pow(2).flatten(1).sum(1).mean()
        return torch.sigmoid(self.head(h)), activity


def _noisy_batches(x: torch.Tensor, batch_size: int, noise: float, gen: torch.Generator,
                   bounds: tuple[float, float], device):
    """One epoch of shuffled ``(clean, clip(clean + noise·N(0, I)))`` batches."""
    perm = torch.randperm(len(x), generator=gen)
    for start in range(0, len(x), batch_size):
        clean = x[perm[start:start + batch_size]].to(device)
        yield clean, (clean + noise * torch.randn(clean.shape, generator=gen).to(device)).clamp(*bounds)


def train_autoencoder(ae: nn.Module, x: torch.Tensor, *, noise: float = 0.1, epochs: int = 100,
                      batch_size: int = 256, lr: float = 1e-3, activity_reg: float = 1e-9, seed: int = 0,
                      bounds: tuple[float, float] = (0.0, 1.0), device: str | torch.device = "cpu") -> list[float]:
    """Denoising training of §2.1: input ``clip(x + noise·N(0, I))``, target ``x``, MSE + activity penalty.

    Defaults are the paper's (Adam 1e-3, batch 256, 100 epochs); on 3,500 images, 10 epochs at lr 3e-3 and
    batch 64 already reach an MSE of about 0.01 (AE-II) to 0.05 (AE-I).

    :returns: The mean training loss of each epoch.
    """
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    gen = torch.Generator().manual_seed(seed)
    ae.to(device).train()
    opt = torch.optim.Adam(ae.parameters(), lr=lr)
    history = []
    for _ in tqdm(range(epochs), desc="train autoencoder", unit="epoch", leave=False):
        total = 0.0
        for clean, noisy in _noisy_batches(x, batch_size, noise, gen, bounds, device):
            out, activity = cast(_WithActivity, ae).forward_with_activity(noisy) if hasattr(
                ae, "forward_with_activity") else (ae(noisy), clean.new_zeros(()))
            loss = nn.functional.mse_loss(out, clean) + activity_reg * activity
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(clean)
        history.append(total / len(x))
    ae.eval()
    return history


def train_diverse_autoencoders(aes: list[nn.Module], x: torch.Tensor, *, alpha: float = 0.2, pre_epochs: int = 3,
                               epochs: int = 10, batch_size: int = 128, lr: float = 1e-3, noise: float = 0.1,
                               seed: int = 0, bounds: tuple[float, float] = (0.0, 1.0),
                               device: str | torch.device = "cpu") -> list[float]:
    """MagNet graybox diversity training (§2.7): pre-train each AE, then fine-tune them jointly on
    ``Σ_i MSE(x, ae_i(x̃)) - α Σ_i MSE(ae_i(x̃), mean_j ae_j(x̃))``, gradients flowing through the mean.

    :param aes: Two or more autoencoders (the paper trains 8 on CIFAR-10).
    :param alpha: Weight of the diversity term.
    :returns: The mean joint loss of each fine-tuning epoch.
    """
    if len(aes) < 2:
        raise ValueError(f"aes must hold at least 2 autoencoders, got {len(aes)}")
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    for i, ae in enumerate(aes):
        train_autoencoder(ae, x, noise=noise, epochs=pre_epochs, batch_size=batch_size, lr=lr, activity_reg=0.0,
                          seed=seed + i, bounds=bounds, device=device)
        ae.train()
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam([p for ae in aes for p in ae.parameters()], lr=lr)
    history = []
    for _ in tqdm(range(epochs), desc="diversity training", unit="epoch", leave=False):
        total = 0.0
        for clean, noisy in _noisy_batches(x, batch_size, noise, gen, bounds, device):
            outs = [ae(noisy) for ae in aes]
            mean = torch.stack(outs).mean(0)
            # A tensor, not the start value 0: there are at least two autoencoders (checked above).
            loss = cast(torch.Tensor, sum(nn.functional.mse_loss(o, clean) - alpha * nn.functional.mse_loss(o, mean)
                                          for o in outs))
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(clean)
        history.append(total / len(x))
    for ae in aes:
        ae.eval()
    return history
