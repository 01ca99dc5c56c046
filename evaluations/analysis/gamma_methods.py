"""The exact implementations of ``Γ = Jᵀu`` that :func:`advbridge.evaluations.analysis.gamma.gamma` chooses from
(algorithms.md §6.8): ``"linearized"`` (plain sequential networks), ``"double_vjp"``, ``"jvp"`` and the reference
``"jacobian"``, each ``(module, x, y, direction) -> (logits, Γ, δ, ⟨u, Jδ⟩)``, and the consistency check
``⟨Γ, δ⟩ = ⟨u, Jδ⟩`` every batch must pass.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from advbridge.bridge.model import Normalize

_TINY = 1e-12


class NotDifferentiable(RuntimeError):
    """The model output does not depend differentiably on its input: no method can help."""


# --------------------------------------------------------------------------- primitives
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
        raise NotDifferentiable("the model's logits do not depend differentiably on x (is the forward pass "
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
    gam = torch.func.jvp(module, (x.detach(),), (u,))[1]
    return h.detach(), gam.detach(), _error_signal(h, y), _dot(u, g)


# Layers whose tangent map the "linearized" method knows. Exact types only: a subclass may change forward().
_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_MAXPOOL: dict[type[nn.Module], Callable[..., Any]] = {nn.MaxPool1d: F.max_pool1d, nn.MaxPool2d: F.max_pool2d, nn.MaxPool3d: F.max_pool3d}
_BATCHNORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
#: Linear, bias-free layers: the tangent goes through the layer itself.
_LINEAR_AS_IS = (nn.Flatten, nn.Unflatten, nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d,
                 nn.AlphaDropout, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d,
                 nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)
_SUPPORTED = (*_CONV, *_MAXPOOL, *_BATCHNORM, *_LINEAR_AS_IS, nn.Linear, nn.ReLU, nn.LeakyReLU, nn.Sigmoid,
              nn.Tanh, Normalize)


class NotApplicable(RuntimeError):
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


def _tangent(layer: Any, t: torch.Tensor, saved: Any) -> torch.Tensor:
    """The layer's Jacobian applied to ``t``, at the point of the forward pass (``saved``: what it kept; the
    layer is one of the exact types `_leaf_layers` accepts)."""
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
        raise NotApplicable("linearized: the model is not a plain nn.Sequential of supported layers")
    xg = x.detach().requires_grad_(True)
    saved: list[torch.Tensor | None] = []
    a = xg
    for layer in layers:
        kind = type(layer)
        if kind in _MAXPOOL:
            pool: Any = layer
            a, idx = _MAXPOOL[kind](a, pool.kernel_size, pool.stride, pool.padding, pool.dilation,
                                    ceil_mode=pool.ceil_mode, return_indices=True)
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


def check_consistency(gam: torch.Tensor, delta: torch.Tensor, u_dot_g: torch.Tensor, method: str) -> None:
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


#: Γ method name -> implementation ``(module, x, y, direction) -> (logits, Γ, δ, ⟨u, Jδ⟩)``.
GAMMA_METHODS = {"linearized": _gamma_linearized, "jvp": _gamma_jvp, "double_vjp": _gamma_double_vjp,
                 "jacobian": _gamma_jacobian}
