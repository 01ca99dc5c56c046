"""Kos et al. (2017) VAE attack (algorithms.md §4.1 item 2), native.

The slide writes the ELBO ``−KL[q(z|x*)‖p(z)] + E_q[log p(x_t|z)]``, which the attacker maximises; this
attack minimises its negation, the generative module's ``neg_elbo(x*, x_t)``, plus ``lam·‖x − x*‖₂``, with
``x_t = target_image(y_t)``. Whether ``neg_elbo`` samples ``z`` or uses the mean is the module's choice (with
sampling, ``run_attack``'s seed makes the run reproducible). See `kos_base` for the optimiser and what is
returned.
"""

from __future__ import annotations

import torch

from .base import ATTACKS
from .kos_base import GENERATIVE_METHODS, KosAttack, kos_attack_def


class KosVAEAttack(KosAttack):
    """VAE attack: ``objective = neg_elbo(x*, target_image(y_t))`` (per sample)."""

    required_methods = GENERATIVE_METHODS + ("neg_elbo",)

    def objective(self, x_adv: torch.Tensor, x_orig: torch.Tensor, target_labels: torch.Tensor) -> torch.Tensor:
        g = self.generative
        x_t = self.memoised("x_t", target_labels, g.target_image)
        return g.neg_elbo(x_adv, x_t.reshape(x_adv.shape)).reshape(len(x_adv))


KOS_VAE = ATTACKS.add(kos_attack_def(
    "kos_vae",
    "Kos et al. VAE attack: negative ELBO of the target exemplar under q(z|x*) + λ‖x − x*‖₂, Adam (native)",
    KosVAEAttack), rank=130)
