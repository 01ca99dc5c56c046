"""`run_attack`: validate, resolve targets, call one backend batch by batch, judge the output."""

from __future__ import annotations

import hashlib
import logging
import random
import time

import foolbox as fb
import numpy as np
import torch
from tqdm.auto import tqdm

from .attacks import BACKENDS, BuildContext
from .model import Model
from .result import AttackResult, judge
from .spec import AttackSpec
from .validation import check_inputs, check_labels, check_positive_int

logger = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (ART draws from numpy, Foolbox from torch)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


#: The toolkit batch size of every stochastic attack, whatever ``batch_size`` the caller gives.
STOCHASTIC_QUERY_BATCH = 64


def input_seed(seed: int, x: torch.Tensor, goal: torch.Tensor) -> int:
    """The seed of one input of a stochastic attack: a hash of the run's ``seed``, the input's bytes and its label
    or target, so it does not depend on the input's batch or position."""
    digest = hashlib.sha256(np.int64(seed).tobytes() + x.detach().cpu().contiguous().numpy().tobytes()
                            + np.int64(int(goal)).tobytes()).digest()
    return int.from_bytes(digest[:4], "little")


def resolve_targets(spec: AttackSpec, model: Model, x: torch.Tensor, y: torch.Tensor, seed: int,
                    batch_size: int = 512) -> torch.Tensor | None:
    """Target labels for ``spec.targeted``; a target never equals the true label.

    - ``none``: ``None``;
    - ``least_likely``: the class with the lowest logit among the classes other than ``y``;
    - ``random``: a seeded draw, uniform over the ``nb_classes - 1`` classes other than ``y``;
    - explicit labels: checked like ``y``; a target equal to its true label is a ``ValueError`` naming
      ``targeted`` and the index (such an attack could only "succeed" by doing nothing).
    """
    mode = spec.targeted
    if mode == "none":
        return None
    if mode == "least_likely":
        logits = model.logits(x, batch_size).detach().cpu().double()
        logits[torch.arange(len(y)), y] = float("inf")  # the true label is never the target
        return logits.argmin(1)
    if mode == "random":
        gen = torch.Generator().manual_seed(seed)
        offset = torch.randint(1, model.nb_classes, (len(y),), generator=gen)
        return (y + offset) % model.nb_classes
    targets = check_labels(torch.tensor(mode), len(x), model.nb_classes, name="targeted")
    same = (targets == y).nonzero().flatten()
    if len(same):
        i = int(same[0])
        raise ValueError(f"targeted[{i}] = {int(targets[i])} equals the true label y[{i}]; a target must differ from "
                         f"the true label ({len(same)} of {len(y)} targets do, first at index {i})")
    return targets


def _generate_batch(backend: str, attack, model: Model, minimization: bool, xb: torch.Tensor,
                    goal: torch.Tensor, targeted: bool) -> torch.Tensor:
    if backend in ("art", "native", "advlib"):
        return torch.from_numpy(np.asarray(attack.generate(xb.numpy(), y=goal.numpy()), dtype=np.float32))
    fb_attack, eps = attack
    dev_x, dev_goal = xb.to(model.device), goal.to(model.device)
    criterion = fb.criteria.TargetedMisclassification(dev_goal) if targeted else fb.criteria.Misclassification(dev_goal)
    _, clipped, fb_success = fb_attack(model.foolbox(), dev_x, criterion, epsilons=eps)
    x_adv = clipped.detach().cpu()
    # Foolbox hands back failed minimisation samples (and some others) as all-zero images: use the input.
    zero = (x_adv.flatten(1) == 0).all(1) & ~(xb.flatten(1) == 0).all(1)
    revert = zero | (~fb_success.cpu() if minimization else torch.zeros_like(zero))
    x_adv[revert] = xb[revert]
    return x_adv


def run_attack(model: Model, x, y, spec: AttackSpec, backend: str = "art", *, seed: int = 0,
               batch_size: int = 128, progress: bool = True) -> AttackResult:
    """Run ``spec`` on ``backend`` and judge the result with the bridge's own model (``result.judge_success``:
    success only on inputs the model classifies correctly when clean; the others are ``already_misclassified``).

    :param model: The wrapped model.
    :param x: Inputs, NCHW within ``model.bounds`` (numpy or torch; float64 is cast).
    :param y: True labels, shape ``(N,)``.
    :param spec: The attack.
    :param backend: ``art``, ``foolbox``, ``native`` or ``advlib`` (the optional adv-lib backend).
    :param seed: Seeds every RNG before the run; the same seed on CPU gives identical numbers.
    :param batch_size: Inputs per toolkit call (also ART's ``batch_size``).
    :param progress: Show a progress bar over batches.
    """
    if not isinstance(model, Model):
        raise TypeError(f"model must be an advbridge.bridge.Model, got {type(model).__name__}")
    if not isinstance(spec, AttackSpec):
        raise TypeError(f"spec must be an AttackSpec, got {type(spec).__name__}")
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {list(BACKENDS)}")
    batch_size = check_positive_int(batch_size, "batch_size")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an integer, got {seed!r}")
    x_t = check_inputs(x, model, "x")
    y_t = check_labels(y, len(x_t), model.nb_classes, "y")
    attack_def = spec.definition
    params = spec.resolved_params()
    attack_def.check_backend(backend, spec.norm, params, spec.is_targeted)

    seed_everything(int(seed))
    targets = resolve_targets(spec, model, x_t, y_t, int(seed))
    goal = targets if targets is not None else y_t
    # A stochastic attack runs one input at a time; its toolkit batch (the batches in which ART queries the model)
    # is fixed, because a decision-based attack's path turns on the round-off of queries at the boundary.
    ctx = BuildContext(model=model, norm=spec.norm, params=params, targeted=spec.is_targeted,
                       batch_size=STOCHASTIC_QUERY_BATCH if attack_def.stochastic else min(batch_size, len(x_t)))
    attack = attack_def.build[backend](ctx)

    chunks = []
    start_time = time.perf_counter()
    if attack_def.stochastic:  # one input at a time, its RNGs seeded from the input itself
        for i in tqdm(range(len(x_t)), desc=f"{spec.name}/{backend}", unit="input", leave=False,
                      disable=not progress or len(x_t) < 2):
            attack = attack_def.build[backend](ctx)  # afresh: some toolkit attacks keep state between calls
            # Seeded after the build, so that what a toolkit's constructor draws cannot shift the input's draws.
            seed_everything(input_seed(int(seed), x_t[i], goal[i]))
            chunks.append(_generate_batch(backend, attack, model, attack_def.minimization, x_t[i:i + 1],
                                          goal[i:i + 1], spec.is_targeted))
    else:
        n_batches = (len(x_t) + batch_size - 1) // batch_size
        for start in tqdm(range(0, len(x_t), batch_size), total=n_batches, desc=f"{spec.name}/{backend}",
                          unit="batch", leave=False, disable=not progress or n_batches < 2):
            sl = slice(start, start + batch_size)
            chunks.append(_generate_batch(backend, attack, model, attack_def.minimization, x_t[sl], goal[sl],
                                          spec.is_targeted))
    elapsed = time.perf_counter() - start_time

    judged = judge(model, x_t, torch.cat(chunks), y_t, targets)
    result = AttackResult(spec=spec, backend=backend, params=params, x_adv=judged["x_adv"], labels=y_t.numpy(),
                          targets=None if targets is None else targets.numpy(), pred_clean=judged["pred_clean"],
                          pred_adv=judged["pred_adv"], success=judged["success"], nonfinite=judged["nonfinite"],
                          norms=judged["norms"], time_s=elapsed, seed=int(seed),
                          already_misclassified=judged["already_misclassified"])
    logger.info("%s on %s: success %.1f%% of %d correctly classified inputs (%d already misclassified) in %.2fs",
                spec, backend, 100 * result.success_rate, result.n_correct, result.n - result.n_correct, elapsed)
    return result
