"""The linear-response vector Γ of Cubuk et al. (2017) (algorithms.md §6.3, §6.8).

For a classifier with logits ``h(x)`` (``K`` classes), ``J_ij = ∂h_j/∂x_i`` and the cross-entropy error signal
``δ = softmax(h) − onehot(y)``, the loss gradient is ``∇_x L = Jδ``. A one-step attack ``x + ε·u`` moves the
logits to first order by ``ε·Γ(x)`` with

- ``Γ = Jᵀ Jδ / ‖Jδ‖₂`` for the L2 fast gradient method (``direction="l2"``),
- ``Γ = Jᵀ sign(Jδ)`` for FGSM (``direction="sign"``).

:func:`gamma` computes ``Γ`` without a full Jacobian: one VJP (``g = Jδ``) plus one Jacobian-transpose product
(``Jᵀu``) per batch, about 3 forward passes for plain sequential networks (``method="linearized"``), 4 for any
differentiable model (``"double_vjp"``), 5 with forward-mode AD (``"jvp"``); the methods themselves are in
`advbridge.evaluations.analysis.gamma_methods`. `advbridge.evaluations.analysis.meanfield` turns ``(h, Γ)`` into
the linear-response and mean-field thresholds.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from advbridge.bridge import Model
from advbridge.bridge.validation import check_images, check_labels, check_positive_int

from advbridge.evaluations.analysis.gamma_methods import (GAMMA_METHODS, NotApplicable, NotDifferentiable,
                                                          check_consistency)

logger = logging.getLogger(__name__)

DIRECTIONS = ("l2", "sign")
METHODS = ("auto", "linearized", "double_vjp", "jvp", "jacobian")
#: Order in which ``method="auto"`` tries the exact Γ implementations (cheapest first, see :func:`gamma`).
AUTO_ORDER = ("linearized", "double_vjp", "jvp")


def _resolve_module(model: Any) -> nn.Module:
    """The torch function to differentiate: ``model`` itself, or the ``.pipeline`` of a bridge ``Model``."""
    if isinstance(model, nn.Module):
        return model
    pipeline = getattr(model, "pipeline", None)
    if isinstance(pipeline, nn.Module):
        return pipeline
    raise TypeError(f"model must be a torch.nn.Module (or a bridge Model), got {type(model).__name__}")


def _device_dtype(module: nn.Module, x: torch.Tensor) -> tuple[torch.device, torch.dtype]:
    """The model's device and floating dtype (first parameter, else first buffer, else ``x``'s)."""
    for tensor in (*module.parameters(), *module.buffers()):
        if tensor.is_floating_point():
            return tensor.device, tensor.dtype
    for tensor in (*module.parameters(), *module.buffers()):
        return tensor.device, (x.dtype if x.is_floating_point() else torch.float32)
    return x.device, (x.dtype if x.is_floating_point() else torch.float32)


def as_tensor(name: str, value: Any) -> torch.Tensor:
    """``value`` as a tensor (a tensor as is, anything array-like through numpy); ``ValueError`` naming ``name``."""
    if isinstance(value, torch.Tensor):
        return value
    try:
        return torch.as_tensor(np.asarray(value))
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a tensor or an array, got {type(value).__name__}") from err


def to_numpy(t: torch.Tensor) -> np.ndarray:
    """A detached CPU numpy copy of ``t``."""
    return t.detach().cpu().numpy()


def _check_gamma_args(model: Any, x: Any, y: Any, direction: str, batch_size: int, method: str,
                      input_shape: Sequence[int] | None = None, bounds: tuple[float, float] | None = None):
    """Checked ``(x, y)``: the x checks of ``bridge.validation.check_images`` (NaN/inf, shape with channels-last
    named, bounds with a 0–255 hint), with the shape and bounds of a bridge ``Model`` or those given."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be 'l2' or 'sign', got {direction!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
    check_positive_int(batch_size, "batch_size")
    bridge_model = not isinstance(model, nn.Module) and isinstance(getattr(model, "pipeline", None), nn.Module)
    if bridge_model:
        input_shape = tuple(model.input_shape) if input_shape is None else input_shape
        bounds = tuple(model.bounds) if bounds is None else bounds
    x = as_tensor("x", x)
    y = as_tensor("y", y)
    if x.dim() < 2:
        raise ValueError(f"x must be a batch with shape (N, ...), got shape {tuple(x.shape)}")
    if y.dim() != 1:
        raise ValueError(f"y must be a 1-D tensor of class indices, got shape {tuple(y.shape)}")
    if len(x) != len(y):
        raise ValueError(f"x and y must have the same length, got {len(x)} and {len(y)}")
    if len(x) == 0:
        raise ValueError("x is empty")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point array (float32 or float64), got dtype {x.dtype}")
    if input_shape is not None or x.dim() == 4:
        check_images(x, None if input_shape is None else tuple(input_shape), bounds, "x",
                     device=None)  # validation only: x keeps its dtype
    else:  # not an image batch: the same finiteness and bounds check on a flat view
        check_images(x.reshape(len(x), 1, 1, -1), None, bounds, "x", device=None)
    if bridge_model:
        return x, check_labels(y, len(x), model.nb_classes, "y")
    if y.is_floating_point() or y.dtype == torch.bool:
        raise ValueError(f"y must hold integer class indices, got dtype {y.dtype}")
    if int(y.min()) < 0:
        raise ValueError(f"y must be non-negative class indices, got {int(y.min())}")
    return x, y.long()


def gamma_with_method(model: Any, x: Any, y: Any, *, direction: str = "l2", batch_size: int = 256,
                      method: str = "auto", input_shape: Sequence[int] | None = None,
                      bounds: tuple[float, float] | None = None) -> tuple[torch.Tensor, torch.Tensor, str]:
    """:func:`gamma` that also returns the method actually used (``"double_vjp+jvp"`` when ``"auto"`` changed
    method part-way)."""
    x, y = _check_gamma_args(model, x, y, direction, batch_size, method, input_shape, bounds)
    module = _resolve_module(model)
    device, dtype = _device_dtype(module, x)
    candidates = list(AUTO_ORDER) if method == "auto" else [method]
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    logits, gammas, used = [], [], []
    try:
        with torch.enable_grad():
            for start in range(0, len(x), batch_size):
                xb = x[start:start + batch_size].to(device=device, dtype=dtype)
                yb = y[start:start + batch_size].to(device)
                while True:
                    try:
                        h, gam, delta, u_dot_g = GAMMA_METHODS[candidates[0]](module, xb, yb, direction)
                        check_consistency(gam, delta, u_dot_g, candidates[0])
                        break
                    except NotDifferentiable:
                        raise
                    except NotApplicable as err:
                        if len(candidates) == 1:
                            raise
                        logger.info("gamma: %s; using %r", err, candidates[1])
                        candidates.pop(0)
                    except (RuntimeError, NotImplementedError) as err:
                        if len(candidates) == 1:
                            raise
                        logger.warning("gamma: method %r failed at example %d (%s: %s); falling back to %r",
                                       candidates[0], start, type(err).__name__,
                                       str(err).splitlines()[0] if str(err) else "", candidates[1])
                        candidates.pop(0)
                logits.append(h)
                gammas.append(gam)
                if candidates[0] not in used:
                    used.append(candidates[0])
    finally:
        for m, training in modes:
            m.training = training
    name = "+".join(used)
    logger.info("gamma: %d examples, direction %s, method %s%s, device %s", len(x), direction, name,
                " (auto)" if method == "auto" else "", device)
    return torch.cat(logits), torch.cat(gammas), name


def gamma(model: nn.Module | Model, x: torch.Tensor, y: torch.Tensor, *, direction: str = "l2",
          batch_size: int = 256, method: str = "auto", input_shape: Sequence[int] | None = None,
          bounds: tuple[float, float] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Clean logits ``h(x)`` and the linear-response vector ``Γ(x) = Jᵀu`` (algorithms.md §6.3, §6.8).

    ``u = Jδ/‖Jδ‖₂`` (``direction="l2"``, L2-FGM) or ``u = sign(Jδ)`` (``"sign"``, FGSM), with
    ``δ = softmax(h) − onehot(y)`` so that ``Jδ`` is the gradient of the cross-entropy. Then
    ``h(x + ε·u) = h(x) + ε·Γ(x) + O(ε²)``. An example whose loss gradient vanishes gets ``u = 0`` and ``Γ = 0``.

    The model runs in eval mode on its own device and dtype (those of its first parameter or buffer); the
    per-module ``training`` flags are restored afterwards. Batches are independent because eval mode has no
    batch-coupled layers.

    :param model: Torch module mapping ``x`` to logits ``(B, K)``; a bridge ``Model`` is accepted too (its
        ``.pipeline``, preprocessing and normalisation included, is differentiated).
    :param x: Inputs ``(N, ...)``, the space in which the attack perturbs.
    :param y: Labels ``(N,)`` defining ``δ`` (true labels for the untargeted attacks of §6.2).
    :param direction: ``"l2"`` or ``"sign"``.
    :param batch_size: Examples per VJP/JVP pair.
    :param method: How ``Jᵀu`` is computed, all exact (costs in forward passes of the batch, measured by
        ``bench/bench_meanfield.py`` on the zoo ``mnist_cnn``, one CPU thread):

        - ``"linearized"``: only for a plain ``nn.Sequential`` (nested ones allowed) of known layers (linear
          and convolutional layers, ReLU/LeakyReLU/sigmoid/tanh, max and average pooling, eval-mode batch norm,
          dropout, flatten, the bridge ``Normalize``) without hooks. The forward pass keeps each layer's
          linearisation (activation masks, max-pool argmax indices), and after the VJP ``u`` is pushed through
          the linearised layers once (weights without biases): about 3, the least an exact ``Γ`` needs.
        - ``"double_vjp"``: VJP with ``create_graph=True``, then the gradient of ``⟨Jδ, u⟩`` with respect to
          ``δ`` (reverse over reverse on the VJP's own forward pass); about 4, any differentiable model.
        - ``"jvp"``: VJP, then forward-mode ``torch.func.jvp`` (which reruns the forward pass); about 5. The
          first forward-mode call in a process imports ``torch._dynamo`` (several seconds).
        - ``"jacobian"``: the full Jacobian from ``K`` backward passes; a reference, about ``K + 2``.
        - ``"auto"`` (default): the first of ``"linearized"``, ``"double_vjp"``, ``"jvp"`` that applies
          (``"linearized"`` is skipped for other architectures) and passes the check below; a method that
          raises (e.g. double backward through a custom ``autograd.Function``) or fails the check hands the
          rest of the examples to the next one, with a warning. The method used is logged
          (``"double_vjp+jvp"`` if it changed part-way).

        Every batch is checked against the identity ``⟨Γ, δ⟩ = ⟨u, Jδ⟩`` (``‖Jδ‖₂`` or ``‖Jδ‖₁``), which any
        exact ``Jᵀu`` satisfies; a method that fails it (a silently cut graph, or a random model whose JVP pass
        differs from its VJP pass) raises ``RuntimeError``, or hands over to the fallback under ``"auto"``.
    :param input_shape: ``(C, H, W)`` that ``x`` must have (channels-last input is named as such); a bridge
        ``Model`` supplies its own. ``None`` for a plain module: any shape.
    :param bounds: ``(low, high)`` that ``x`` must lie in (a 0–255 image fails with a hint); a bridge ``Model``
        supplies its own. ``None`` for a plain module: only NaN/inf are refused.
    :returns: ``(logits, Gamma)``, both ``(N, K)``, detached, on the model's device.
    :raises ValueError: For a bad ``direction``, ``method``, ``batch_size``, mismatched ``x``/``y``, an empty
        batch, NaN/inf in ``x``, or ``x`` of the wrong shape or outside the bounds (``bridge.validation``).
    :raises TypeError: For a non-floating ``x``, or (bridge ``Model``) non-integer labels.
    :raises RuntimeError: When no method can differentiate the model, or ``Γ`` fails the consistency check.
    """
    logits, gam, _ = gamma_with_method(model, x, y, direction=direction, batch_size=batch_size, method=method,
                                       input_shape=input_shape, bounds=bounds)
    return logits, gam

