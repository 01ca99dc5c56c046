"""Argument checks, batching and noise shared by the generative models of :mod:`advbridge.defenses.generative`."""

from __future__ import annotations

import torch

from ..params import check_positive_int

__all__ = ["FEATURE_SIZES", "batches", "check_image_batch", "check_training_data", "feature_size", "randn"]

#: Image side -> side of the feature map after two stride-2 convolutions.
FEATURE_SIZES = {28: 7, 32: 8}


def feature_size(channels, image_size) -> int:
    """Validate ``channels`` and ``image_size``; return the side of the 4x-downsampled feature map."""
    check_positive_int(channels, "channels")
    if image_size not in FEATURE_SIZES or isinstance(image_size, bool):
        raise ValueError(f"image_size must be one of {sorted(FEATURE_SIZES)}, got {image_size!r}")
    return FEATURE_SIZES[image_size]


def check_image_batch(x, shape: tuple[int, int, int], name: str = "x") -> None:
    """Raise unless ``x`` is a ``(B, *shape)`` tensor."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or tuple(x.shape[1:]) != tuple(shape):
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a (B, {', '.join(map(str, shape))}) tensor, got {got}")


def check_training_data(x, shape: tuple[int, int, int], batch_size) -> None:
    """Images of the model's shape in [0, 1] (every model here ends in a sigmoid), at least one of them."""
    check_image_batch(x, shape)
    check_positive_int(batch_size, "batch_size")
    if len(x) == 0:
        raise ValueError("x must hold at least one image, got an empty tensor")
    if float(x.min()) < 0 or float(x.max()) > 1:
        raise ValueError(f"x must lie in [0, 1], got values in [{float(x.min()):.3g}, {float(x.max()):.3g}]")


def batches(x: torch.Tensor, batch_size: int, gen: torch.Generator, device):
    """One epoch of shuffled batches of ``x`` (the permutation drawn from the CPU generator ``gen``)."""
    perm = torch.randperm(len(x), generator=gen)
    for start in range(0, len(x), batch_size):
        yield x[perm[start:start + batch_size]].to(device)


def randn(shape, gen: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
    """``N(0, I)`` noise on ``like``'s device and dtype, drawn from ``gen`` (on whatever device it lives)."""
    if gen is None:
        return torch.randn(shape, device=like.device, dtype=like.dtype)
    return torch.randn(shape, generator=gen, device=gen.device, dtype=like.dtype).to(like.device)
