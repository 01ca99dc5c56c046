"""Image grids for eyeballing generative models: seeded samples, sample grids and reconstruction pairs (PNG)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torchvision.utils import save_image

from ..params import check_positive_int

logger = logging.getLogger(__name__)


def sample_images(generator_fn: Callable[[torch.Tensor], torch.Tensor], latent_dim: int, n: int = 64,
                  seed: int = 0, device: str | torch.device | None = None) -> torch.Tensor:
    """``generator_fn(z)`` for ``n`` codes ``z ~ N(0, I)`` drawn from a CPU ``torch.Generator`` seeded with ``seed``.

    Runs without gradients and leaves the module's train/eval mode alone (call ``.eval()`` first).

    :param generator_fn: ``z (n, latent_dim) -> images``, e.g. ``vae.decode`` or a :class:`WGANGenerator`.
    :param device: Where z goes; by default the device of ``generator_fn``'s parameters when it is an
        ``nn.Module`` (or a bound method of one), else the CPU.
    :returns: The images, on the generator's device.
    """
    check_positive_int(latent_dim, "latent_dim")
    check_positive_int(n, "n")
    if device is None:
        module = generator_fn if isinstance(generator_fn, nn.Module) else getattr(generator_fn, "__self__", None)
        param = next(module.parameters(), None) if isinstance(module, nn.Module) else None
        device = param.device if param is not None else "cpu"
    z = torch.randn(n, latent_dim, generator=torch.Generator().manual_seed(seed)).to(device)
    with torch.no_grad():
        return generator_fn(z)


def _check_grid_images(images, name: str) -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] not in (1, 3) \
            or len(images) == 0:
        got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"{name} must be a non-empty (B, C, H, W) tensor with C = 1 or 3, got {got}")
    return images.detach().float().cpu().clamp(0, 1)


def save_grid(images: torch.Tensor, path: str | Path, nrow: int = 8) -> Path:
    """Save ``images`` (in [0, 1]; clamped) as one PNG grid, ``nrow`` images per row, 2-pixel padding.

    :returns: The path written (parent folders are created).
    """
    images = _check_grid_images(images, "images")
    check_positive_int(nrow, "nrow")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(images, path, nrow=nrow, padding=2, format="png")
    logger.info("saved a grid of %d images to %s", len(images), path)
    return path


def save_reconstructions(x: torch.Tensor, recon: torch.Tensor, path: str | Path, nrow: int = 8) -> Path:
    """Save originals and their reconstructions as blocks of two rows: ``nrow`` originals, then the same
    ``nrow`` reconstructed right below; a last incomplete row is padded with black images.

    :param x: Originals ``(B, C, H, W)`` in [0, 1].
    :param recon: Their reconstructions, same shape.
    :returns: The path written.
    """
    x, recon = _check_grid_images(x, "x"), _check_grid_images(recon, "recon")
    if x.shape != recon.shape:
        raise ValueError(f"recon must have the shape of x {tuple(x.shape)}, got {tuple(recon.shape)}")
    check_positive_int(nrow, "nrow")
    pad = (-len(x)) % nrow
    if pad:
        blank = x.new_zeros((pad,) + tuple(x.shape[1:]))
        x, recon = torch.cat([x, blank]), torch.cat([recon, blank])
    rows = torch.stack([x.view(-1, nrow, *x.shape[1:]), recon.view(-1, nrow, *x.shape[1:])], 1)
    return save_grid(rows.reshape(-1, *x.shape[1:]), path, nrow=nrow)
