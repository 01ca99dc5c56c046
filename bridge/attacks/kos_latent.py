"""Kos et al. (2017) latent attack (algorithms.md §4.1 item 3), native: the paper's most effective one.

Minimises ``‖z_t − μ(x*)‖₂² + lam·‖x − x*‖₂`` over ``x*`` in the data box, with ``z_t = μ(x_t)`` the latent
mean of the target class's exemplar image ``x_t = target_image(y_t)``. See `kos_base` for the optimiser and
what is returned.
"""

from __future__ import annotations

import torch

from .base import ATTACKS
from .kos_base import KosAttack, kos_attack_def


class KosLatentAttack(KosAttack):
    """Latent attack: ``objective = ‖encode_mean(target_image(y_t)) − encode_mean(x*)‖₂²`` (per sample)."""

    def target_latent(self, target_labels: torch.Tensor) -> torch.Tensor:
        """``z_t = μ(target_image(y_t))``, without gradient."""
        g = self.generative
        return self.memoised("z_t", target_labels, lambda t: g.encode_mean(g.target_image(t)))

    def objective(self, x_adv: torch.Tensor, x_orig: torch.Tensor, target_labels: torch.Tensor) -> torch.Tensor:
        z_t = self.target_latent(target_labels)
        return (z_t - self.generative.encode_mean(x_adv)).flatten(1).pow(2).sum(1)


KOS_LATENT = ATTACKS.add(kos_attack_def(
    "kos_latent",
    "Kos et al. latent attack on a VAE: ‖z_t − μ(x*)‖² + λ‖x − x*‖₂ toward a target exemplar, Adam (native)",
    KosLatentAttack), rank=120)
