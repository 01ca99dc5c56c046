"""Kos et al. (2017) classifier attack (algorithms.md §4.1 item 1), native.

Minimises ``CE(f_class(μ(x*)), y_t) + lam·‖x − x*‖₂`` over ``x*`` in the data box, where ``f_class`` is the
classifier trained on latent means and ``μ`` the encoder mean. See `kos_base` for the optimiser and what is
returned.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from .base import ATTACKS
from .kos_base import KosAttack, kos_attack_def


class KosClassifierAttack(KosAttack):
    """Classifier attack: ``objective = CE(classify_latent(encode_mean(x*)), y_t)`` (per sample)."""

    def objective(self, x_adv: torch.Tensor, x_orig: torch.Tensor, target_labels: torch.Tensor) -> torch.Tensor:
        logits = self.generative.classify_latent(self.generative.encode_mean(x_adv))
        return F.cross_entropy(logits, target_labels.long(), reduction="none")


KOS_CLASSIFIER = ATTACKS.add(kos_attack_def(
    "kos_classifier",
    "Kos et al. classifier attack on a VAE: CE of the latent classifier on μ(x*) + λ‖x − x*‖₂, Adam (native)",
    KosClassifierAttack), rank=110)
