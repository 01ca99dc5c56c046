"""Shared starting points for the attacks that walk from an adversarial start (Brendel-Bethge, HopSkipJump,
Boundary): one start per input, drawn from the input's own seed and handed to whichever toolkit runs the attack.

The start is Foolbox's default initialisation, ``LinearSearchBlendedUniformNoiseAttack``: the smallest blend of the
input with uniform noise that the model misclassifies. Handing it to both toolkits makes their runs comparable (and
ART's reproducible: its HopSkipJump and Boundary draw their own starts from an unseeded ``np.random.RandomState()``).
An input without an adversarial start is returned unchanged (a failure), never a crash.
"""

from __future__ import annotations

from typing import Any

import foolbox as fb
import numpy as np
import torch

__all__ = ["ArtFromStarts", "FoolboxFromStarts", "starting_points"]


def starting_points(model, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The start of each input of ``x`` (on ``model.device``) and whether it is adversarial."""
    criterion = fb.criteria.Misclassification(labels.to(model.device))
    _, starts, found = fb.attacks.LinearSearchBlendedUniformNoiseAttack()(model.foolbox(), x.to(model.device),
                                                                          criterion, epsilons=None)
    return starts.detach(), found.detach()


class FoolboxFromStarts:
    """A Foolbox minimisation attack called as the bridge calls one (untargeted), run from ``starting_points``."""

    def __init__(self, model, attack: Any) -> None:
        self.model, self.attack = model, attack

    def __call__(self, fmodel, x, criterion, epsilons=None):
        labels = criterion.labels.raw
        starts, found = starting_points(self.model, x, labels)
        out = x.clone()
        if found.any():
            _, adv, _ = self.attack(fmodel, x[found], fb.criteria.Misclassification(labels[found]), epsilons=None,
                                    starting_points=starts[found])
            out[found] = adv
        return out, out, found & fmodel(out).argmax(1).ne(labels)


class ArtFromStarts:
    """An ART attack with ``generate(x, y)`` (``y``: integer labels), run from ``starting_points`` passed as the
    ``generate`` keyword ``keyword`` (``starting_points`` for Brendel-Bethge, ``x_adv_init`` for HopSkipJump and
    Boundary)."""

    def __init__(self, model, attack: Any, keyword: str) -> None:
        self.model, self.attack, self.keyword = model, attack, keyword

    def generate(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        starts, found = starting_points(self.model, torch.from_numpy(x), torch.from_numpy(y).long())
        keep = found.cpu().numpy()
        out = x.copy()
        if keep.any():
            labels = np.eye(self.model.nb_classes, dtype=np.float32)[y[keep]]
            out[keep] = self.attack.generate(x[keep], y=labels, **{self.keyword: starts.cpu().numpy()[keep]})
        return out
