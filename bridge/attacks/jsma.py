"""JSMA (Papernot et al. 2016): Papernot's pair saliency natively, and ART's `SaliencyMapMethod`.

ART's saliency uses only the target-class gradient ∂F_t/∂x (ART issue #2306); the native `PapernotJSMA` is the
paper's pair saliency against Σ_{j≠t} ∂F_j/∂x, batched over (sample, target) pairs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from art.attacks.attack import EvasionAttack
from art.estimators.classification.classifier import ClassifierMixin
from art.estimators.estimator import BaseEstimator
from torch import nn
from tqdm.auto import tqdm

from art.attacks.evasion import SaliencyMapMethod

from .base import ATTACKS, AttackDef, BuildContext, KnownCause, require_choice

SALIENCY_ON = ("probs", "logits")


class PapernotJSMA(EvasionAttack):
    """Papernot et al.'s JSMA with pair saliency (algorithms.md §5.3), batched over (sample, target) pairs.

    Each iteration takes one forward pass and two vector-Jacobian products per batch, ``α = ∂F_t/∂x`` and
    ``∂ΣF/∂x`` (so ``β = ∂ΣF/∂x − α``), never the full Jacobian; then, for every pair of features (p, q) still in
    the search domain, ``A = α_p + α_q`` and ``B = β_p + β_q``, and it moves the pair maximising ``−A·B`` subject to
    ``A > 0, B < 0`` (θ > 0; ``A < 0, B > 0`` for θ < 0) by θ, clipped to the bounds, and removes both from the
    domain. On probabilities ``Σ_c F_c = 1``, so ``β = −α`` exactly: one VJP suffices and the best pair is the two
    largest ``α`` (O(D) rather than the O(D²) pair search logits need). A sample stops at success (``argmax F = t``), after ``⌊D·Υ/2⌋`` iterations, when fewer than two
    features remain, or when no pair satisfies the sign conditions.

    :param estimator: ART classifier (gives the bounds, and the torch model when ``forward`` is not given).
    :param theta: Change per selected feature (+1: set to the upper bound).
    :param max_distortion: Υ, the largest fraction of features that may change.
    :param saliency_on: ``probs`` (softmax outputs, the default: 94.4% success at 5.7% distortion on a
        ``mnist_cnn``-like model against 71.1% at 9.8% on logits, algorithms.md §5.1) or ``logits``.
    :param batch_size: (sample, target) pairs per batch.
    :param forward: Torch module mapping raw inputs to logits (the bridge passes ``Model.pipeline``); by default
        the estimator's model behind its ART preprocessing.
    :param pair_rows: Rows of the D×D pair-score matrix computed at once (memory: rows·D²·4 bytes).
    """

    attack_params = EvasionAttack.attack_params + ["theta", "max_distortion", "saliency_on", "batch_size"]
    _estimator_requirements = (BaseEstimator, ClassifierMixin)

    def __init__(self, estimator, theta: float = 1.0, max_distortion: float = 0.145, saliency_on: str = "probs",
                 batch_size: int = 128, forward: nn.Module | None = None, pair_rows: int = 32) -> None:
        super().__init__(estimator=estimator)
        self.theta = theta
        self.max_distortion = max_distortion
        self.saliency_on = saliency_on
        self.batch_size = batch_size
        self.forward = forward
        self.pair_rows = pair_rows
        self._targeted = True
        self._check_params()

    def _check_params(self) -> None:
        if isinstance(self.theta, bool) or not isinstance(self.theta, (int, float)) or self.theta == 0:
            raise ValueError(f"theta must be a non-zero number, got {self.theta!r}")
        if isinstance(self.max_distortion, bool) or not isinstance(self.max_distortion, (int, float)) or \
                not 0 < self.max_distortion <= 1:
            raise ValueError(f"max_distortion must be a number in (0, 1], got {self.max_distortion!r}")
        if self.saliency_on not in SALIENCY_ON:
            raise ValueError(f"saliency_on must be one of {list(SALIENCY_ON)}, got {self.saliency_on!r}")
        for name in ("batch_size", "pair_rows"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.estimator.clip_values is None:
            raise ValueError("PapernotJSMA needs an estimator with clip_values (the bounds theta moves toward)")

    def _module(self) -> Callable[[torch.Tensor], torch.Tensor]:
        if self.forward is not None:
            return self.forward
        est = self.estimator

        def forward(x: torch.Tensor) -> torch.Tensor:
            x_pre, _ = est._apply_preprocessing(x, y=None, fit=False)
            return est.model(x_pre)
        return forward

    def generate(self, x: np.ndarray, y: np.ndarray | None = None, **kwargs) -> np.ndarray:
        """Adversarial examples toward the target classes ``y`` (indices or one-hot; required).

        :param x: Inputs, float32, within the estimator's clip values.
        :param y: Target classes.
        """
        if y is None:
            raise ValueError("PapernotJSMA is targeted: y must hold the target classes")
        return self.trace(x, y).x_adv.numpy()

    def trace(self, x, targets, progress: bool = False) -> JSMATrace:
        """Run the attack at ``max_distortion`` and record, per pair, the iteration of its first success.

        Because the attack is greedy and deterministic, the run at any smaller Υ' is a prefix of this one: a pair
        succeeds at Υ' iff it succeeded within ``⌊D·Υ'/2⌋`` iterations (``JSMATrace.at``).
        """
        x_t = torch.as_tensor(np.asarray(x, dtype=np.float32))
        t = torch.as_tensor(np.asarray(targets))
        if t.dim() == 2:
            t = t.argmax(1)
        if len(t) != len(x_t):
            raise ValueError(f"targets must hold one class per input ({len(x_t)}), got {len(t)}")
        forward = self._module()
        device = _device_of(forward, self.estimator)
        low, high = (float(v) for v in np.asarray(self.estimator.clip_values, dtype=np.float64).reshape(2, -1)[:, 0])
        dims = int(np.prod(x_t.shape[1:]))
        max_iter = int(np.floor(dims * self.max_distortion / 2))
        out = x_t.clone()
        success = torch.full((len(x_t),), -1, dtype=torch.long)
        stop = torch.zeros(len(x_t), dtype=torch.long)
        vjps = 0
        for start in tqdm(range(0, len(x_t), self.batch_size), desc="jsma", unit="batch", leave=False,
                          disable=not progress):
            sl = slice(start, start + self.batch_size)
            adv, succ, stopped, calls = self._batch(forward, x_t[sl].to(device), t[sl].to(device), low, high,
                                                    max_iter)
            out[sl], success[sl], stop[sl] = adv.cpu(), succ.cpu(), stopped.cpu()
            vjps += calls
        return JSMATrace(out, success.numpy(), stop.numpy(), dims, max_iter, vjps)

    def _batch(self, forward, x: torch.Tensor, t: torch.Tensor, low: float, high: float, max_iter: int):
        shape = x.shape
        flat = x.flatten(1).clone()
        n, dims = flat.shape
        domain = flat < high if self.theta > 0 else flat > low
        active = torch.ones(n, dtype=torch.bool, device=x.device)
        success = torch.full((n,), -1, dtype=torch.long, device=x.device)
        stop = torch.full((n,), max_iter, dtype=torch.long, device=x.device)
        calls = 0
        for it in range(max_iter + 1):
            idx = active.nonzero().flatten()
            if len(idx) == 0:
                break
            xa = flat[idx].reshape(len(idx), *shape[1:]).requires_grad_(True)
            with torch.enable_grad():
                logits = forward(xa)
                reached = logits.argmax(1) == t[idx]
                success[idx[reached]] = it
                stop[idx[reached]] = it
                active[idx[reached]] = False
                if it == max_iter:
                    break
                keep = ~reached
                if not keep.any():
                    break
                rows = idx[keep]
                if self.saliency_on == "probs":  # one VJP: Σ_c ∂p_c/∂x = 0 (see best_pairs_probs)
                    target_out = torch.softmax(logits[keep], 1).gather(1, t[rows].unsqueeze(1)).sum()
                    alpha, = torch.autograd.grad(target_out, xa)
                    calls += 1
                    p, q, found = self.best_pairs_probs(alpha[keep].flatten(1), domain[rows], self.theta)
                else:  # two VJPs: ∂F_t/∂x and ∂ΣF/∂x
                    target_out = logits[keep].gather(1, t[rows].unsqueeze(1)).sum()
                    alpha, = torch.autograd.grad(target_out, xa, retain_graph=True)
                    total, = torch.autograd.grad(logits[keep].sum(), xa)
                    calls += 2
                    alpha = alpha[keep].flatten(1)
                    p, q, found = self.best_pairs(alpha, total[keep].flatten(1) - alpha, domain[rows])
            stuck = rows[~found]
            active[stuck] = False
            stop[stuck] = it
            rows, p, q = rows[found], p[found], q[found]
            for feature in (p, q):
                flat[rows, feature] = (flat[rows, feature] + self.theta).clamp(low, high)
                domain[rows, feature] = False
            few = rows[domain[rows].sum(1) < 2]
            active[few] = False
            stop[few] = it + 1
        return flat.reshape(shape).detach(), success, stop, calls

    def best_pairs(self, alpha: torch.Tensor, beta: torch.Tensor, domain: torch.Tensor):
        """Per row, the pair (p ≠ q) of domain features maximising −(α_p+α_q)(β_p+β_q) under the sign conditions.

        Exact, without scoring all D² pairs: ``U_p = max(0, α_p + max α)·max(0, −β_p − min β)`` bounds the score of
        every pair that contains p, so once a pair scoring S* is known (the best among the K features of largest U),
        only features with ``U ≥ S*`` can beat it and the search runs over those. Out-of-domain features are pushed
        out of every valid pair by shifting α and β (cleverhans' trick); θ < 0 flips both signs, which turns its
        conditions into θ > 0's.
        """
        sign = 1.0 if self.theta > 0 else -1.0
        a, b = sign * alpha, sign * beta
        a = torch.where(domain, a, a - 2 * a.abs().amax(1, keepdim=True) - 1)
        b = torch.where(domain, b, b + 2 * b.abs().amax(1, keepdim=True) + 1)
        n, dims = a.shape
        bound = (a + a.amax(1, keepdim=True)).clamp_min(0) * (-b - b.amin(1, keepdim=True)).clamp_min(0)
        bound = torch.where(domain, bound, torch.full_like(bound, -1.0))
        seed_k = min(PAIR_SEED_FEATURES, dims)
        seed_idx = bound.topk(seed_k, dim=1).indices
        seed_score, _, _ = _pair_search(a.gather(1, seed_idx), b.gather(1, seed_idx))
        need = int((bound >= seed_score.unsqueeze(1)).sum(1).max()) if n else 0
        idx = bound.topk(max(need, 2), dim=1).indices if need < dims else \
            torch.arange(dims, device=a.device).expand(n, dims)
        p = torch.zeros(n, dtype=torch.long, device=a.device)
        q = torch.zeros_like(p)
        found = torch.zeros(n, dtype=torch.bool, device=a.device)
        rows = max(1, self.pair_rows * (dims // idx.shape[1]) ** 2)  # same memory per chunk as pair_rows × D²
        for start in range(0, n, rows):
            sl = slice(start, start + rows)
            ia = idx[sl]
            best_value, i, j = _pair_search(a[sl].gather(1, ia), b[sl].gather(1, ia))
            p[sl], q[sl] = ia.gather(1, i.unsqueeze(1)).squeeze(1), ia.gather(1, j.unsqueeze(1)).squeeze(1)
            found[sl] = best_value > 0
        return p, q, found

    @staticmethod
    def best_pairs_probs(alpha: torch.Tensor, domain: torch.Tensor, theta: float):
        """The same choice on softmax outputs in O(D): there Σ_c ∂p_c/∂x = 0, so β = −α and −A·B = A², maximised
        by the two domain features with the largest θ·α (valid while their sum is positive)."""
        a = torch.where(domain, (1.0 if theta > 0 else -1.0) * alpha, torch.full_like(alpha, -torch.inf))
        top = a.topk(2, dim=1)
        found = (top.values.sum(1) > 0) & torch.isfinite(top.values).all(1)
        return top.indices[:, 0], top.indices[:, 1], found

#: Features of largest score bound whose pairs seed the exact pruned pair search.
PAIR_SEED_FEATURES = 64


def _pair_search(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Over all pairs (i ≠ j) of the columns of ``a``/``b`` (rows, k): the largest ``−(a_i+a_j)(b_i+b_j)`` with
    ``a_i+a_j > 0`` and ``b_i+b_j < 0`` (0 when none) and its ``(i, j)``."""
    big_a = a.unsqueeze(2) + a.unsqueeze(1)                      # A, (rows, k, k)
    prod = (b.unsqueeze(2) + b.unsqueeze(1)).mul_(big_a)         # A·B
    prod.masked_fill_(big_a <= 0, 0).clamp_(max=0)               # keep A > 0, B < 0: A·B < 0
    prod.diagonal(dim1=1, dim2=2).zero_()                        # i ≠ j
    value, best = prod.flatten(1).min(1)                         # max −A·B
    k = a.shape[1]
    return -value, best // k, best % k


@dataclass
class JSMATrace:
    """One ``PapernotJSMA`` run at Υ_max, with what any smaller Υ would have given."""

    x_adv: torch.Tensor
    success_iter: np.ndarray   # first iteration at which argmax F = t (-1: never)
    stop_iter: np.ndarray      # iterations actually run (= success_iter on success)
    dims: int                  # D, features per input
    max_iter: int              # ⌊D·Υ_max/2⌋
    vjp_calls: int             # vector-Jacobian products computed (two per active batch per iteration)

    def at(self, max_distortion: float) -> tuple[np.ndarray, np.ndarray]:
        """Success and distortion (fraction of features changed) of the run at ``max_distortion`` ≤ Υ_max."""
        limit = int(np.floor(self.dims * max_distortion / 2))
        if limit > self.max_iter:
            raise ValueError(f"max_distortion {max_distortion} exceeds the traced run's "
                             f"({2 * self.max_iter / self.dims:.4f})")
        ok = (self.success_iter >= 0) & (self.success_iter <= limit)
        iters = np.where(ok, self.success_iter, np.minimum(self.stop_iter, limit))
        return ok, 2.0 * iters / self.dims


def _device_of(forward, estimator) -> torch.device:
    module = forward if isinstance(forward, nn.Module) else getattr(estimator, "model", None)
    param = next(module.parameters(), None) if isinstance(module, nn.Module) else None
    return param.device if param is not None else torch.device("cpu")


def _derive(norm: str, p: dict) -> None:
    if not 0 < p["max_distortion"] <= 1:
        raise ValueError(f"parameter 'max_distortion' of attack 'jsma' must be in (0, 1], got {p['max_distortion']}")
    if p["theta"] == 0:
        raise ValueError("parameter 'theta' of attack 'jsma' must be non-zero")
    require_choice("jsma", p, "saliency_on", ("auto",) + SALIENCY_ON)


def _native(ctx: BuildContext):
    p = ctx.params
    saliency = "probs" if p["saliency_on"] == "auto" else p["saliency_on"]
    return PapernotJSMA(ctx.model.art(), theta=p["theta"], max_distortion=p["max_distortion"], saliency_on=saliency,
                        batch_size=ctx.batch_size, forward=ctx.model.pipeline)


def _art(ctx: BuildContext):
    p = ctx.params
    return SaliencyMapMethod(ctx.model.art(), theta=p["theta"], gamma=p["max_distortion"],
                             batch_size=ctx.batch_size, verbose=False)


JSMA = ATTACKS.add(AttackDef(
    name="jsma",
    summary="Jacobian saliency map attack (targeted, L0): Papernot's pair saliency (native); ART's uses the "
            "target-class gradient only",
    norms={"l0": ("native", "art")},
    # saliency_on "auto": probabilities on native (§5.1), ART's own choice (its model outputs) on ART.
    defaults={"theta": 1.0, "max_distortion": 0.145, "saliency_on": "auto"},
    targeted_backends=frozenset({"native", "art"}),
    requires_target=True,
    minimization=True,
    derive=_derive,
    build={"native": _native, "art": _art},
    toolkit_defaults={"art": {"theta": 0.1, "max_distortion": 1.0}},
    unsupported={"art": {"saliency_on": "auto"}},
    known_causes=(
        KnownCause(frozenset({"success_gap", "norm_gap"}),
                   "ART SaliencyMapMethod scores features with the target-class gradient only, not Papernot's "
                   "pair saliency (∂F_t/∂x against Σ_{j≠t} ∂F_j/∂x)",
                   ("https://github.com/Trusted-AI/adversarial-robustness-toolbox/issues/2306",)),
    ),
), rank=80)
