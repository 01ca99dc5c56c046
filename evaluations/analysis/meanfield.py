"""Linear response and mean-field estimates of adversarial error (Cubuk et al. 2017; algorithms.md §6.3–6.5, §6.8).

For a classifier with logits ``h(x)`` (``K`` classes), ``J_ij = ∂h_j/∂x_i`` and the cross-entropy error signal
``δ = softmax(h) − onehot(y)``, the loss gradient is ``∇_x L = Jδ``. A one-step attack ``x + ε·u`` moves the
logits to first order by ``ε·Γ(x)`` with

- ``Γ = Jᵀ Jδ / ‖Jδ‖₂`` for the L2 fast gradient method (``direction="l2"``),
- ``Γ = Jᵀ sign(Jδ)`` for FGSM (``direction="sign"``).

:func:`gamma` computes ``Γ`` without a full Jacobian: one VJP (``g = Jδ``) plus one Jacobian-transpose product
(``Jᵀu``) per batch, about 3 forward passes for plain sequential networks (``method="linearized"``), 4 for any
differentiable model (``"double_vjp"``), 5 with forward-mode AD (``"jvp"``). :func:`linear_response` turns ``(h, Γ)`` into the per-example linear-response threshold
``ε̂_lin`` (§6.3) and the mean-field threshold ``ε̂_MF`` (§6.4); :func:`predicted_error_curve` gives the
predicted adversarial error ``P(ε̂ < ε)``; :func:`logit_gaps` and :func:`small_gap_exponents` test the
logit-difference law ``P(Δ_1j) ∝ Δ_1j^{j−2}`` (§6.5). :func:`estimate_meanfield` bundles all of it into a
JSON-serialisable :class:`MeanFieldEstimate`.

Ranks are 1-based as in the paper: rank 1 is the largest clean logit of an example, rank ``j`` its ``j``-th
largest, and ``Δ_1j = h_1 − h_j ≥ 0``.

JSON encoding (all ``to_dict()`` methods): ``+∞`` is written as the string ``"inf"`` (``−∞`` as ``"-inf"``),
NaN as ``null``; numpy arrays become lists and integer dictionary keys become strings.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from advbridge.bridge.model import Normalize
from advbridge.bridge.validation import check_images, check_labels, check_positive_int

logger = logging.getLogger(__name__)

DIRECTIONS = ("l2", "sign")
METHODS = ("auto", "linearized", "double_vjp", "jvp", "jacobian")
#: Order in which ``method="auto"`` tries the exact Γ implementations (cheapest first, see :func:`gamma`).
AUTO_ORDER = ("linearized", "double_vjp", "jvp")
_TINY = 1e-12


class _NotDifferentiable(RuntimeError):
    """The model output does not depend differentiably on its input: no method can help."""


# --------------------------------------------------------------------------- helpers
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


def _as_tensor(name: str, value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    try:
        return torch.as_tensor(np.asarray(value))
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a tensor or an array, got {type(value).__name__}") from err


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def _direction(g: torch.Tensor, direction: str) -> torch.Tensor:
    """``u`` from the loss gradient ``g``: ``g/‖g‖₂`` per example (L2-FGM) or ``sign(g)`` (FGSM)."""
    if direction == "sign":
        return g.sign()
    norms = g.flatten(1).norm(dim=1).clamp_min(_TINY)
    return g / norms.view(-1, *[1] * (g.dim() - 1))


def _check_output(h: Any, x: torch.Tensor, y: torch.Tensor) -> None:
    if not isinstance(h, torch.Tensor) or h.dim() != 2 or h.shape[0] != x.shape[0]:
        shape = tuple(h.shape) if isinstance(h, torch.Tensor) else type(h).__name__
        raise ValueError(f"model must return logits of shape (B, K), got {shape} for a batch of {x.shape[0]}")
    if int(y.max()) >= h.shape[1]:
        raise ValueError(f"y must lie in [0, {h.shape[1]}), got a label {int(y.max())}")
    if not h.requires_grad:
        raise _NotDifferentiable("the model's logits do not depend differentiably on x (is the forward pass "
                                 "run under torch.no_grad or on detached tensors?)")


def _forward(module: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits of ``x`` (made a leaf requiring grad), checked for shape and differentiability."""
    xg = x.detach().requires_grad_(True)
    h = module(xg)
    _check_output(h, x, y)
    return xg, h


def _error_signal(h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``δ = ∂CE/∂h = softmax(h) − onehot(y)``, with ``δ_y = −Σ_{k≠y} p_k`` (no cancellation in ``p_y − 1``).

    In float32 ``p_y − 1`` loses most of its digits for a confident example (``1 − p_y ≈ 1e-5`` leaves two
    significant digits), which tilts ``Jδ`` by up to a percent; summing the other probabilities does not.
    """
    p = h.detach().double().softmax(1)
    onehot = F.one_hot(y, h.shape[1]).bool()
    delta = p.masked_fill(onehot, 0.0)
    delta = delta - onehot.double() * delta.sum(1, keepdim=True)
    return delta.to(h.dtype)


def _loss_gradient(h: torch.Tensor, xg: torch.Tensor, y: torch.Tensor, create_graph: bool = False):
    """The VJP ``g = Jδ`` (the gradient of the summed cross-entropy) and the cotangent ``δ`` used."""
    delta = _error_signal(h, y).requires_grad_(create_graph)
    g, = torch.autograd.grad(h, xg, grad_outputs=delta, create_graph=create_graph)
    return g, delta


def _gamma_jvp(module: nn.Module, x: torch.Tensor, y: torch.Tensor, direction: str):
    """VJP, then a forward-mode JVP with ``torch.func.jvp``.

    The VJP is ``autograd.grad`` of the logits with cotangent ``δ``, i.e. the gradient of the summed
    cross-entropy with ``δ`` computed without cancellation (see :func:`_error_signal`).
    """
    xg, h = _forward(module, x, y)
    g, _ = _loss_gradient(h, xg, y)
    g = g.detach()
    u = _direction(g, direction)
    _, gam = torch.func.jvp(module, (x.detach(),), (u,))
    return h.detach(), gam.detach(), _error_signal(h, y), _dot(u, g)


# Layers whose tangent map the "linearized" method knows. Exact types only: a subclass may change forward().
_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_MAXPOOL = {nn.MaxPool1d: F.max_pool1d, nn.MaxPool2d: F.max_pool2d, nn.MaxPool3d: F.max_pool3d}
_BATCHNORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
#: Linear, bias-free layers: the tangent goes through the layer itself.
_LINEAR_AS_IS = (nn.Flatten, nn.Unflatten, nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d,
                 nn.AlphaDropout, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d,
                 nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)
_SUPPORTED = (*_CONV, *_MAXPOOL, *_BATCHNORM, *_LINEAR_AS_IS, nn.Linear, nn.ReLU, nn.LeakyReLU, nn.Sigmoid,
              nn.Tanh, Normalize)


class _NotApplicable(RuntimeError):
    """The method does not apply to this model (found out before any computation)."""


def _leaf_layers(module: nn.Module) -> list[nn.Module] | None:
    """The layers of a plain ``nn.Sequential`` (nested ones flattened) if all are known, else ``None``."""
    if module._forward_hooks or module._forward_pre_hooks:
        return None
    if type(module) is nn.Sequential:
        layers: list[nn.Module] = []
        for child in module:
            sub = _leaf_layers(child)
            if sub is None:
                return None
            layers += sub
        return layers
    if type(module) not in _SUPPORTED:
        return None
    if type(module) in _MAXPOOL and module.return_indices:
        return None
    if type(module) is nn.LeakyReLU and not module.negative_slope > 0:
        return None
    if type(module) in _BATCHNORM and (module.training or module.running_var is None):
        return None
    return [module]


def _tangent(layer: nn.Module, t: torch.Tensor, saved: torch.Tensor) -> torch.Tensor:
    """The layer's Jacobian applied to ``t``, at the point of the forward pass (``saved``: what it kept)."""
    kind = type(layer)
    if kind in _CONV:
        return layer._conv_forward(t, layer.weight, None)
    if kind is nn.Linear:
        return F.linear(t, layer.weight)
    if kind is nn.ReLU:  # saved: the output (autograd's mask is output > 0 too)
        return t * (saved > 0)
    if kind is nn.LeakyReLU:  # saved: the output, whose sign is the input's (slope > 0)
        return torch.where(saved > 0, t, t * layer.negative_slope)
    if kind is nn.Sigmoid:
        return t * saved * (1 - saved)
    if kind is nn.Tanh:
        return t * (1 - saved * saved)
    if kind in _MAXPOOL:  # saved: the argmax indices into the flattened spatial dimensions
        return t.flatten(2).gather(2, saved.flatten(2)).view(saved.shape)
    if kind in _BATCHNORM:
        scale = torch.rsqrt(layer.running_var + layer.eps)
        if layer.weight is not None:
            scale = scale * layer.weight
        return t * scale.view(1, -1, *[1] * (t.dim() - 2))
    if kind is Normalize:
        return t / layer.std
    return layer(t)  # _LINEAR_AS_IS


def _gamma_linearized(module: nn.Module, x: torch.Tensor, y: torch.Tensor, direction: str):
    """For a plain ``nn.Sequential`` of known layers: one forward pass that keeps each layer's linearisation
    (ReLU masks, max-pool argmax indices, ...), the VJP, then ``Jᵀu`` as one pass of ``u`` through the
    linearised layers (weights without biases). About 3 forward passes: the least an exact ``Γ`` needs.
    """
    layers = _leaf_layers(module)
    if layers is None:
        raise _NotApplicable("linearized: the model is not a plain nn.Sequential of supported layers")
    xg = x.detach().requires_grad_(True)
    saved: list[torch.Tensor | None] = []
    a = xg
    for layer in layers:
        kind = type(layer)
        if kind in _MAXPOOL:
            a, idx = _MAXPOOL[kind](a, layer.kernel_size, layer.stride, layer.padding, layer.dilation,
                                    ceil_mode=layer.ceil_mode, return_indices=True)
            saved.append(idx)
        else:
            a = layer(a)
            saved.append(a if kind in (nn.ReLU, nn.LeakyReLU, nn.Sigmoid, nn.Tanh) else None)
    h = a
    _check_output(h, x, y)
    g, delta = _loss_gradient(h, xg, y)
    u = _direction(g, direction)
    with torch.no_grad():
        t = u
        for layer, kept in zip(layers, saved):
            t = _tangent(layer, t, kept)
    return h.detach(), t, delta, _dot(u, g)


def _gamma_double_vjp(module: nn.Module, x: torch.Tensor, y: torch.Tensor, direction: str):
    """Reverse-over-reverse on the VJP's own graph (one forward pass).

    ``g(v) = J v`` is linear in the logit cotangent ``v``, so ``∂⟨g(v), u⟩/∂v = Jᵀu`` exactly. The VJP is taken
    with ``v = δ`` and ``create_graph=True``; differentiating it once more with respect to ``v`` gives ``Γ``.
    This is the double-VJP trick of ``torch.autograd.functional.jvp`` without its second forward pass.
    """
    xg, h = _forward(module, x, y)
    g, v = _loss_gradient(h, xg, y, create_graph=True)
    if not g.requires_grad:
        raise RuntimeError("double VJP: the input gradient is not differentiable with respect to the logit "
                           "cotangent (a backward pass without a graph)")
    u = _direction(g.detach(), direction)
    gam, = torch.autograd.grad(g, v, grad_outputs=u, allow_unused=True)
    if gam is None:
        raise RuntimeError("double VJP: the input gradient does not depend on the logit cotangent")
    return h.detach(), gam.detach(), v.detach(), _dot(u, g.detach())


def _gamma_jacobian(module: nn.Module, x: torch.Tensor, y: torch.Tensor, direction: str):
    """Reference: the full Jacobian from ``K`` backward passes, then ``g = Jδ``, ``Γ = Jᵀu``."""
    xg, h = _forward(module, x, y)
    k = h.shape[1]
    rows = [torch.autograd.grad(h[:, c].sum(), xg, retain_graph=c < k - 1)[0].flatten(1) for c in range(k)]
    jac = torch.stack(rows, dim=2)                                    # (B, D, K)
    delta = _error_signal(h, y)
    g = torch.bmm(jac, delta.unsqueeze(2)).squeeze(2)                 # (B, D)
    u = _direction(g, direction)
    gam = torch.bmm(jac.transpose(1, 2), u.unsqueeze(2)).squeeze(2)   # (B, K)
    return h.detach(), gam, delta, _dot(u, g)


def _dot(u: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    return (u.flatten(1) * g.flatten(1)).sum(1)


def _check_consistency(gam: torch.Tensor, delta: torch.Tensor, u_dot_g: torch.Tensor, method: str) -> None:
    """Raise unless ``⟨Γ, δ⟩ = ⟨u, Jδ⟩`` (``= ‖Jδ‖₂`` or ``‖Jδ‖₁``) for every example.

    The identity holds for any exact ``Γ = Jᵀu``; it fails when part of the graph was silently cut (a custom
    ``autograd.Function`` whose backward is not differentiable but does not raise) or when the model is
    random and the JVP's forward pass differs from the VJP's. Tolerance ``10·√eps`` of the dtype, relative to
    ``Σ_k |Γ_k δ_k| + |⟨u, g⟩|``.
    """
    lhs = (gam * delta).sum(1)
    tol = 10 * math.sqrt(torch.finfo(gam.dtype).eps)
    scale = (gam * delta).abs().sum(1) + u_dot_g.abs()
    bad = (lhs - u_dot_g).abs() > tol * scale
    if bool(bad.any()) or not bool(torch.isfinite(gam).all()):
        worst = float(((lhs - u_dot_g).abs() / scale.clamp_min(torch.finfo(scale.dtype).tiny)).max())
        raise RuntimeError(f"{method}: Γ fails the check <Γ, δ> = <u, Jδ> on {int(bad.sum())} of {len(bad)} "
                           f"examples (worst relative error {worst:.2g}): a part of the model is not "
                           f"differentiable by this method, or the model is random")


_IMPLEMENTATIONS = {"linearized": _gamma_linearized, "jvp": _gamma_jvp, "double_vjp": _gamma_double_vjp,
                    "jacobian": _gamma_jacobian}


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
    x = _as_tensor("x", x)
    y = _as_tensor("y", y)
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
        check_images(x, input_shape, bounds, "x", device=None)  # validation only: x keeps its dtype
    else:  # not an image batch: the same finiteness and bounds check on a flat view
        check_images(x.reshape(len(x), 1, 1, -1), None, bounds, "x", device=None)
    if bridge_model:
        return x, check_labels(y, len(x), model.nb_classes, "y")
    if y.is_floating_point() or y.dtype == torch.bool:
        raise ValueError(f"y must hold integer class indices, got dtype {y.dtype}")
    if int(y.min()) < 0:
        raise ValueError(f"y must be non-negative class indices, got {int(y.min())}")
    return x, y.long()


def _gamma(model: Any, x: Any, y: Any, *, direction: str = "l2", batch_size: int = 256, method: str = "auto",
           input_shape: Sequence[int] | None = None,
           bounds: tuple[float, float] | None = None) -> tuple[torch.Tensor, torch.Tensor, str]:
    """:func:`gamma` that also returns the method actually used."""
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
                        h, gam, delta, u_dot_g = _IMPLEMENTATIONS[candidates[0]](module, xb, yb, direction)
                        _check_consistency(gam, delta, u_dot_g, candidates[0])
                        break
                    except _NotDifferentiable:
                        raise
                    except _NotApplicable as err:
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


def gamma(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, direction: str = "l2", batch_size: int = 256,
          method: str = "auto", input_shape: Sequence[int] | None = None,
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
    logits, gam, _ = _gamma(model, x, y, direction=direction, batch_size=batch_size, method=method,
                            input_shape=input_shape, bounds=bounds)
    return logits, gam


# --------------------------------------------------------------------------- linear response
def json_float(v: float) -> float | str | None:
    """A float for JSON: NaN as ``None``, ±∞ as ``"inf"``/``"-inf"``."""
    v = float(v)
    if math.isnan(v):
        return None
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return v


def _json(value: Any) -> Any:
    """JSON-safe copy: ±∞ → ``"inf"``/``"-inf"``, NaN → ``None``, arrays → lists, int keys → strings."""
    if isinstance(value, dict):
        return {str(k): _json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json(v) for v in value]
    if isinstance(value, torch.Tensor):
        value = _to_numpy(value)
    if isinstance(value, np.ndarray):
        return [_json(v) for v in value.tolist()]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return json_float(value)
    return value


def _median(a: np.ndarray) -> float:
    """Median that keeps ∞ (``np.median`` of a set with a majority of ∞ is ∞); NaN when empty."""
    if a.size == 0:
        return float("nan")
    s = np.sort(a)
    n = len(s)
    if n % 2:
        return float(s[n // 2])
    lo, hi = s[n // 2 - 1], s[n // 2]
    return float(hi) if np.isinf(hi) else float((lo + hi) / 2)


def _check_logits(name: str, logits: Any) -> torch.Tensor:
    t = _as_tensor(name, logits)
    if t.dim() != 2 or t.shape[1] < 2:
        raise ValueError(f"{name} must have shape (N, K) with K >= 2, got {tuple(t.shape)}")
    return t.detach().double()


def _rank_sorted(logits: torch.Tensor, gam: torch.Tensor | None = None):
    """Logits (and Γ) of each example sorted by descending clean logit (stable for ties)."""
    hs, idx = torch.sort(logits, dim=1, descending=True, stable=True)
    return hs, (None if gam is None else gam.gather(1, idx))


@dataclass
class LinearResponse:
    """Per-example linear-response and mean-field thresholds (algorithms.md §6.3–6.4).

    Arrays cover all ``N`` examples in input order; ``used`` marks those the summary statistics are taken over
    (the correctly classified ones when labels were given, §6.3 [R]; all of them otherwise).

    :ivar eps_lin: ``ε̂_lin = min_j Δ_1j/(Γ_j − Γ_1)`` over the ranks ``j ≥ 2`` with ``Γ_j − Γ_1 > 0``;
        ``∞`` when no logit gains on the top one.
    :ivar eps_mf: ``ε̂_MF = Δ_12/(⟨Γ_2⟩ − ⟨Γ_1⟩)``; ``∞`` for every example when ``⟨Γ_2⟩ ≤ ⟨Γ_1⟩``.
    :ivar delta12: ``Δ_12 = h_1 − h_2``.
    :ivar used: Boolean mask of the examples the means and medians are over.
    :ivar gamma_mean_by_rank: ``⟨Γ_i⟩``, ``i = 1..K`` (rank-indexed, list index ``i − 1``) over ``used``.
    :ivar eps_lin_median: Median of ``eps_lin[used]`` (``∞`` if most are ``∞``).
    :ivar eps_mf_median: Median of ``eps_mf[used]``.
    """

    eps_lin: np.ndarray
    eps_mf: np.ndarray
    delta12: np.ndarray
    used: np.ndarray
    gamma_mean_by_rank: list[float]
    eps_lin_median: float
    eps_mf_median: float

    @property
    def n_used(self) -> int:
        return int(self.used.sum())

    def error_curve(self, eps_grid: Sequence[float], kind: str = "lin") -> np.ndarray:
        """Predicted adversarial error ``P(ε̂ < ε)`` over the used examples (see :func:`predicted_error_curve`).

        :param eps_grid: The ``ε`` values.
        :param kind: ``"lin"`` (``ε̂_lin``) or ``"mf"`` (``ε̂_MF``).
        """
        if kind not in ("lin", "mf"):
            raise ValueError(f"kind must be 'lin' or 'mf', got {kind!r}")
        return predicted_error_curve((self.eps_lin if kind == "lin" else self.eps_mf)[self.used], eps_grid)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dictionary (``∞`` → ``"inf"``, NaN → ``None``, arrays → lists)."""
        return _json({"n": len(self.used), "n_used": self.n_used, "gamma_mean_by_rank": self.gamma_mean_by_rank,
                      "eps_lin_median": self.eps_lin_median, "eps_mf_median": self.eps_mf_median,
                      "eps_lin": self.eps_lin, "eps_mf": self.eps_mf, "delta12": self.delta12, "used": self.used})


def linear_response(logits: torch.Tensor, Gamma: torch.Tensor, y: torch.Tensor | None = None) -> LinearResponse:
    """``ε̂_lin`` (§6.3), ``⟨Γ_i⟩`` by rank and ``ε̂_MF`` (§6.4) from clean logits and ``Γ``.

    Each example's logits are sorted in descending order and ``Γ`` is permuted the same way; with
    ``Δ_1j = h_1 − h_j`` the top class is overtaken by rank ``j`` at ``ε̂_j = Δ_1j/(Γ_j − Γ_1)`` when
    ``Γ_j − Γ_1 > 0``, and ``ε̂_lin`` is the smallest of these (``∞`` if there is none). The linear prediction of
    the adversarial error is then ``P(ε̂_lin < ε)`` (exact for a linear model).

    :param logits: Clean logits ``(N, K)``.
    :param Gamma: ``Γ`` from :func:`gamma`, ``(N, K)``, class-indexed like ``logits``.
    :param y: Optional labels ``(N,)``. When given, ``⟨Γ_i⟩``, ``ε̂_MF`` and the medians are taken over the
        correctly classified examples only (§6.3 [R]: ``err_adv(ε) = P(ε̂ < ε)`` holds for clean examples that
        are classified correctly); otherwise over all. Per-example arrays always cover all ``N``.
    :returns: A :class:`LinearResponse` (numpy float64 arrays).
    """
    h = _check_logits("logits", logits)
    gam = _as_tensor("Gamma", Gamma).detach().double().to(h.device)
    if gam.shape != h.shape:
        raise ValueError(f"logits and Gamma must have the same shape, got {tuple(h.shape)} and {tuple(gam.shape)}")
    if y is not None:
        yt = _as_tensor("y", y).to(h.device)
        if yt.dim() != 1 or len(yt) != len(h):
            raise ValueError(f"y must have shape ({len(h)},) like logits, got {tuple(yt.shape)}")
        used = h.argmax(1) == yt.long()
    else:
        used = torch.ones(len(h), dtype=torch.bool, device=h.device)
    hs, gs = _rank_sorted(h, gam)
    delta = hs[:, :1] - hs                                   # Δ_1j, column j−1
    dgam = gs - gs[:, :1]                                    # Γ_j − Γ_1
    ratio = torch.where(dgam > 0, delta / dgam.where(dgam > 0, torch.ones_like(dgam)),
                        torch.full_like(delta, math.inf))
    eps_lin = ratio[:, 1:].min(dim=1).values
    if bool(used.any()):
        gmean = gs[used].mean(0)
    else:
        logger.warning("linear_response: no correctly classified example; means and medians are NaN")
        gmean = torch.full((h.shape[1],), math.nan, dtype=h.dtype, device=h.device)
    den = float(gmean[1] - gmean[0])
    if den > 0:
        eps_mf = delta[:, 1] / den
    else:
        if not math.isnan(den):
            logger.warning("linear_response: <Γ_2> − <Γ_1> = %.4g <= 0; the mean-field estimate predicts no "
                           "flips (ε̂_MF = inf)", den)
        eps_mf = torch.full_like(delta[:, 1], math.inf if not math.isnan(den) else math.nan)
    used_np = _to_numpy(used)
    eps_lin_np, eps_mf_np = _to_numpy(eps_lin), _to_numpy(eps_mf)
    return LinearResponse(eps_lin=eps_lin_np, eps_mf=eps_mf_np, delta12=_to_numpy(delta[:, 1]), used=used_np,
                          gamma_mean_by_rank=[float(v) for v in _to_numpy(gmean)],
                          eps_lin_median=_median(eps_lin_np[used_np]), eps_mf_median=_median(eps_mf_np[used_np]))


def predicted_error_curve(eps_hat: Any, eps_grid: Sequence[float]) -> np.ndarray:
    """Predicted adversarial error ``P(ε̂ < ε)`` for each ``ε`` of ``eps_grid``.

    The fraction of ``eps_hat`` strictly below ``ε`` (``∞`` never counts). Pass the thresholds of the correctly
    classified examples to predict the fraction of them that an ``ε`` attack flips; multiply by the clean
    accuracy for ``acc_clean − acc_adv`` over a whole data set.

    :param eps_hat: Per-example thresholds (``ε̂_lin`` or ``ε̂_MF``), any shape, no NaN.
    :param eps_grid: The ``ε`` values.
    :returns: float64 array of ``len(eps_grid)`` fractions in ``[0, 1]``.
    """
    e = np.asarray(_to_numpy(eps_hat) if isinstance(eps_hat, torch.Tensor) else eps_hat, dtype=np.float64).ravel()
    grid = np.asarray(eps_grid, dtype=np.float64).ravel()
    if e.size == 0:
        raise ValueError("eps_hat is empty")
    if np.isnan(e).any():
        raise ValueError("eps_hat must not contain NaN")
    if np.isnan(grid).any():
        raise ValueError("eps_grid must not contain NaN")
    s = np.sort(e)
    return np.searchsorted(s, grid, side="left") / len(s)


# --------------------------------------------------------------------------- logit-difference law
def logit_gaps(logits: torch.Tensor) -> dict[int, torch.Tensor]:
    """``Δ_1j = h_1 − h_j`` for the ranks ``j = 2..K`` of each example (§6.5).

    :param logits: Clean logits ``(N, K)``.
    :returns: ``{j: (N,) float64 tensor}``, on ``logits``' device; every gap is ``≥ 0``.
    """
    h = _check_logits("logits", logits)
    hs, _ = _rank_sorted(h)
    return {j: hs[:, 0] - hs[:, j - 1] for j in range(2, h.shape[1] + 1)}


def small_gap_exponents(logits: torch.Tensor, quantile: float = 0.2, *, min_points: int = 5) -> dict[int, float]:
    """Fitted small-``Δ`` exponent ``a_j`` of the density ``P(Δ_1j) ∝ Δ_1j^{a_j}``, ``j = 2..K`` (§6.5).

    Estimator: sort the ``n`` gaps ``Δ_(1) ≤ … ≤ Δ_(n)`` of rank ``j``; the empirical CDF at ``Δ_(i)`` is the
    Weibull plotting position ``i/(n+1)`` (its expectation). Over the smallest ``quantile`` of the gaps
    (``i ≤ ⌊quantile·n⌋``, keeping only ``Δ > 0``), least squares of ``log CDF`` on ``log Δ`` gives the CDF
    exponent ``s``; the density exponent is ``a_j = s − 1``. For i.i.d. logits the law predicts
    ``a_j = j − 2`` (``Δ_12`` has a non-zero density at 0). Fitting the CDF rather than a histogram needs no
    binning; the cost is a bias from the ``O(Δ)`` correction, which shrinks with ``quantile``.

    :param logits: Clean logits ``(N, K)`` (pass the correctly classified ones to match :func:`linear_response`).
    :param quantile: Fraction of the smallest gaps the fit uses, in ``(0, 1]``.
    :param min_points: Fewest positive gaps needed for a fit; below it the exponent is NaN.
    :returns: ``{j: a_j}``.
    """
    if isinstance(quantile, bool) or not isinstance(quantile, (int, float)) or not 0 < quantile <= 1:
        raise ValueError(f"quantile must lie in (0, 1], got {quantile!r}")
    if min_points < 2:
        raise ValueError(f"min_points must be at least 2, got {min_points}")
    out: dict[int, float] = {}
    for j, gaps in logit_gaps(logits).items():
        d = np.sort(_to_numpy(gaps))
        n = len(d)
        m = math.floor(quantile * n)
        cdf = np.arange(1, n + 1, dtype=np.float64) / (n + 1)
        d, cdf = d[:m], cdf[:m]
        keep = (d > 0) & np.isfinite(d)
        d, cdf = d[keep], cdf[keep]
        if len(d) < min_points or np.ptp(np.log(d)) == 0:
            logger.warning("small_gap_exponents: rank %d has %d positive gaps in the lowest %.0f%%; exponent "
                           "is NaN", j, len(d), 100 * quantile)
            out[j] = float("nan")
            continue
        slope = np.polyfit(np.log(d), np.log(cdf), 1)[0]
        out[j] = float(slope - 1)
    return out


# --------------------------------------------------------------------------- bundle
@dataclass
class MeanFieldEstimate:
    """Everything :func:`estimate_meanfield` computes for one model and data set.

    Per-example arrays cover all ``n`` inputs in order; summary statistics are over the ``used`` (correctly
    classified) ones. ``to_dict()`` writes ``∞`` as ``"inf"`` and NaN as ``null``.

    :ivar direction: ``"l2"`` (L2-FGM) or ``"sign"`` (FGSM).
    :ivar method: The Γ method that ran (``"linearized"``, ``"double_vjp"``, ``"jvp"``, ``"jacobian"``, or
        e.g. ``"double_vjp+jvp"`` when ``"auto"`` fell back part-way).
    :ivar n: Number of inputs.
    :ivar n_used: Number of correctly classified inputs.
    :ivar clean_accuracy: ``n_used / n``.
    :ivar gamma_mean_by_rank: ``⟨Γ_i⟩``, ``i = 1..K`` (list index ``i − 1``).
    :ivar eps_mf_median: Median ``ε̂_MF``.
    :ivar eps_lin_median: Median ``ε̂_lin``.
    :ivar exponents: ``{j: a_j}`` small-gap density exponents of ``Δ_1j`` (see :func:`small_gap_exponents`).
    :ivar quantile: The fraction of gaps the exponent fits use.
    :ivar eps_lin: Per-example ``ε̂_lin``.
    :ivar eps_mf: Per-example ``ε̂_MF``.
    :ivar delta12: Per-example ``Δ_12``.
    :ivar used: Per-example mask of correct classification.
    """

    direction: str
    method: str
    n: int
    n_used: int
    clean_accuracy: float
    gamma_mean_by_rank: list[float]
    eps_mf_median: float
    eps_lin_median: float
    exponents: dict[int, float]
    quantile: float
    eps_lin: np.ndarray = field(repr=False)
    eps_mf: np.ndarray = field(repr=False)
    delta12: np.ndarray = field(repr=False)
    used: np.ndarray = field(repr=False)

    def error_curve(self, eps_grid: Sequence[float], kind: str = "lin") -> np.ndarray:
        """Predicted ``P(ε̂ < ε)`` over the correctly classified inputs.

        :param eps_grid: The ``ε`` values.
        :param kind: ``"lin"`` (``ε̂_lin``) or ``"mf"`` (``ε̂_MF``).
        """
        if kind not in ("lin", "mf"):
            raise ValueError(f"kind must be 'lin' or 'mf', got {kind!r}")
        return predicted_error_curve((self.eps_lin if kind == "lin" else self.eps_mf)[self.used], eps_grid)

    def to_dict(self, arrays: bool = True) -> dict[str, Any]:
        """JSON-safe dictionary (``∞`` → ``"inf"``, NaN → ``None``; exponent keys are strings).

        :param arrays: Include the per-example arrays.
        """
        out: dict[str, Any] = {"direction": self.direction, "method": self.method, "n": self.n,
                               "n_used": self.n_used, "clean_accuracy": self.clean_accuracy,
                               "gamma_mean_by_rank": self.gamma_mean_by_rank, "eps_mf_median": self.eps_mf_median,
                               "eps_lin_median": self.eps_lin_median, "exponents": self.exponents,
                               "quantile": self.quantile}
        if arrays:
            out.update(eps_lin=self.eps_lin, eps_mf=self.eps_mf, delta12=self.delta12, used=self.used)
        return _json(out)


def estimate_meanfield(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, direction: str = "l2",
                       batch_size: int = 256, method: str = "auto", quantile: float = 0.2,
                       input_shape: Sequence[int] | None = None,
                       bounds: tuple[float, float] | None = None) -> MeanFieldEstimate:
    """Γ, ``ε̂_lin``, ``ε̂_MF`` and the logit-gap exponents of ``model`` on ``(x, y)`` in one call.

    :param model: Torch module returning logits, or a bridge ``Model`` (see :func:`gamma`).
    :param x: Inputs ``(N, ...)``.
    :param y: True labels ``(N,)``; statistics are over the correctly classified inputs.
    :param direction: ``"l2"`` or ``"sign"``.
    :param batch_size: Examples per batch.
    :param method: Γ method (see :func:`gamma`).
    :param quantile: Fraction of the smallest gaps used by :func:`small_gap_exponents`.
    :param input_shape: Shape ``x`` must have (see :func:`gamma`); a bridge ``Model`` supplies its own.
    :param bounds: Range ``x`` must lie in (see :func:`gamma`); a bridge ``Model`` supplies its own.
    :raises ValueError: For bad arguments or inputs, as :func:`gamma`.
    """
    logits, gam, used_method = _gamma(model, x, y, direction=direction, batch_size=batch_size, method=method,
                                      input_shape=input_shape, bounds=bounds)
    y_t = _as_tensor("y", y).to(logits.device)
    lr = linear_response(logits, gam, y_t)
    correct = torch.as_tensor(lr.used, device=logits.device)
    if lr.n_used >= 2:
        exponents = small_gap_exponents(logits[correct], quantile)
    else:
        exponents = {j: float("nan") for j in range(2, logits.shape[1] + 1)}
    n = len(lr.used)
    est = MeanFieldEstimate(direction=direction, method=used_method, n=n, n_used=lr.n_used,
                            clean_accuracy=lr.n_used / n, gamma_mean_by_rank=lr.gamma_mean_by_rank,
                            eps_mf_median=lr.eps_mf_median, eps_lin_median=lr.eps_lin_median, exponents=exponents,
                            quantile=float(quantile), eps_lin=lr.eps_lin, eps_mf=lr.eps_mf, delta12=lr.delta12,
                            used=lr.used)
    logger.info("estimate_meanfield: %d/%d correct, median eps_lin %.4g, median eps_MF %.4g, method %s",
                est.n_used, n, est.eps_lin_median, est.eps_mf_median, used_method)
    return est
