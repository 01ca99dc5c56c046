"""VAT: one step of size ``eps`` (L2) along the virtual adversarial direction (Miyato et al. 2016).

The virtual adversarial direction maximises ``KL(p(x) || p(x + r))`` over small ``r``; it is the dominant
eigenvector of the KL's Hessian at ``r = 0``, found by ``steps`` power iterations from a random unit vector ``d``:
``d <- grad_r KL(p(x) || p(x + r))`` at ``r = xi * d`` (the gradient vanishes at 0, so this is a finite-difference
Hessian-vector product with step ``xi``). The output is ``clip(x + eps d/||d||)``. No label is read (untargeted only).

Foolbox (``VirtualAdversarialAttack(steps, xi)``, ``epsilons=eps``) does this with autograd on the logits. ART
(``VirtualAdversarialMethod(max_iter=steps, finite_diff=xi, eps=eps)``) differs in two ways, measured in
``tests/bridge/attacks/test_vat.py`` against float64 plain-torch references:

- it probes at ``x + d/||d||``, radius 1, whatever ``xi`` is: its ``d`` is the KL gradient at a unit-norm
  perturbation, not a Hessian-vector product;
- it estimates that gradient by one-sided finite differences of the float32 probabilities, one pixel at a time
  (``steps`` x (n_pixels + 1) predictions per input), with ``finite_diff`` as the step. At ``finite_diff = 1e-6``
  (ART's and Foolbox's default) the differences are float32 round-off: the direction is noise and ART's success at
  eps = 2 is 0 of 32 MNIST inputs, where Foolbox reaches 11.

At ``xi = 1e-6`` Foolbox's float32 gradient is mostly round-off too (a probe of 1e-6 moves the probabilities below
float32 resolution), although it still fools more inputs than noise does. So the shared default is ``xi = 1e-2``:
there both toolkits follow their own reference (see the test) and succeed equally (10 and 9 of 32 at eps = 2). ART
reads the model output as probabilities, so it gets the model with a softmax head. Random (the start ``d``): one
input at a time with a seed of its own; ART draws ``d`` from numpy, Foolbox from torch, so crossval compares the two
statistically.
"""

from __future__ import annotations

import foolbox as fb
from art.attacks.evasion import VirtualAdversarialMethod

from .base import ATTACKS, AttackDef, BuildContext, KnownCause, require_positive


def _derive(norm: str, p: dict) -> None:
    require_positive("vat", p, "eps", "steps", "xi")


def _art(ctx: BuildContext):
    p = ctx.params
    # ART checks that the outputs are probabilities, so it gets the same model with a softmax head.
    return VirtualAdversarialMethod(ctx.model.art(probabilities=True), max_iter=p["steps"],
                                    finite_diff=float(p["xi"]), eps=p["eps"], batch_size=ctx.batch_size,
                                    verbose=False)


def _foolbox(ctx: BuildContext):
    p = ctx.params
    return fb.attacks.VirtualAdversarialAttack(steps=p["steps"], xi=p["xi"]), p["eps"]


PROBE = ("ART's VirtualAdversarialMethod probes the KL at x + d/||d|| (radius 1, ignoring xi) and estimates its "
         "gradient by one-sided finite differences of float32 probabilities with step finite_diff = xi, one pixel at a "
         "time; Foolbox takes the autograd gradient at x + xi d/||d|| (the paper's Hessian-vector product). At "
         "xi = 1e-6 ART's differences are float32 round-off (its direction is noise: 0 of 32 MNIST inputs fooled at "
         "eps 2, Foolbox 11, noise of norm 2: 0); at the shared xi = 1e-2 both follow their float64 references and "
         "succeed equally (10 and 9 of 32)")

VAT = ATTACKS.add(AttackDef(
    name="vat",
    summary="Virtual adversarial direction: `steps` power iterations on the KL's Hessian (probe `xi`), one L2 step "
            "of eps (ART gets a softmax head)",
    norms={"l2": ("art", "foolbox")},
    defaults={"steps": 1, "xi": 1e-2},
    norm_defaults={"l2": {"eps": 1.0}},
    stochastic=True,
    derive=_derive,
    build={"art": _art, "foolbox": _foolbox},
    toolkit_defaults={"art": {"eps": 0.1, "steps": 10, "xi": 1e-6}, "foolbox": {"xi": 1e-6}},
    known_causes=(KnownCause(frozenset({"success_gap"}), PROBE),),
), rank=85)
