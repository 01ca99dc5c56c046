"""Input checks shared by every public entry point: clear errors naming the argument, never a silent cast.

float64 input is accepted and cast to float32; everything else that is off raises ``ValueError`` or
``TypeError`` with the argument's name and what was expected.
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np
import torch

#: Tolerance, in input units, for values a hair outside the bounds (float round-off).
BOUNDS_TOLERANCE = 1e-5


class HasInputSpec(Protocol):
    """What ``check_inputs`` reads of a model (``bridge.Model`` has it); keeps this module below ``model``."""

    @property
    def input_shape(self) -> tuple[int, ...]: ...

    @property
    def bounds(self) -> tuple[float, float]: ...


def check_inputs(x, model: HasInputSpec, name: str = "x") -> torch.Tensor:
    """Return ``x`` as a float32 CPU tensor of shape ``(N, *model.input_shape)``, or raise.

    :param x: numpy array or torch tensor, NCHW, within ``model.bounds``.
    :param model: The wrapped model whose shape and bounds ``x`` must match.
    :param name: Argument name used in error messages.
    """
    low, high = model.bounds
    return check_images(x, tuple(model.input_shape), (float(low), float(high)), name)


def check_images(x, input_shape: tuple[int, ...] | None, bounds: tuple[float, float] | None = (0.0, 1.0),
                 name: str = "x", device: torch.device | str | None = "cpu") -> torch.Tensor:
    """Return ``x`` as a float32 tensor of shape ``(N, *input_shape)`` on ``device``, or raise naming ``name``.

    The one input check behind every public entry point (attacks, defenses, detectors, estimators).

    :param x: numpy array or torch tensor, NCHW.
    :param input_shape: Required ``(C, H, W)``; ``None`` accepts any rank-4 shape.
    :param bounds: Required value range ``(low, high)``; ``None`` checks finiteness only. A ×255 image fails here.
    :param name: Argument name used in error messages.
    :param device: Device of the returned tensor; ``None`` keeps the input's device.
    :raises TypeError: for non-array or non-floating input.
    :raises ValueError: for a wrong rank or shape (channels-last named as such), an empty batch, NaN/inf, or values
        outside ``bounds``.
    """
    if isinstance(x, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(x))
    elif isinstance(x, torch.Tensor):
        t = x.detach()
    else:
        raise TypeError(f"{name} must be a numpy array or torch tensor, got {type(x).__name__}")
    if not (t.is_floating_point()):
        raise TypeError(f"{name} must be a floating-point array (float32 or float64), got dtype {t.dtype}")
    t = t.to(t.device if device is None else device, torch.float32)
    expected = None if input_shape is None else tuple(int(d) for d in input_shape)
    shape_text = "(N, C, H, W)" if expected is None else f"(N, C, H, W) with (C, H, W) = {expected}"
    if t.ndim != 4:
        raise ValueError(f"{name} must have rank 4 {shape_text}, got shape {tuple(t.shape)}")
    if len(t) == 0:
        raise ValueError(f"{name} is an empty batch; need at least one input")
    if expected is not None and tuple(t.shape[1:]) != expected:
        channels_last = (t.shape[3], t.shape[1], t.shape[2])
        if channels_last == expected:
            raise ValueError(f"{name} looks channels-last (N, H, W, C) with shape {tuple(t.shape)}; "
                             f"expected channels-first (N, C, H, W) = (N, {expected[0]}, {expected[1]}, "
                             f"{expected[2]}); use x.permute(0, 3, 1, 2)")
        raise ValueError(f"{name} has shape {tuple(t.shape)}; expected (N, {expected[0]}, {expected[1]}, "
                         f"{expected[2]})")
    finite = torch.isfinite(t)
    if not bool(finite.all()):
        bad = int((~finite.flatten(1).all(1)).sum())
        raise ValueError(f"{name} contains NaN or inf values in {bad} of {len(t)} inputs")
    if bounds is None:
        return t
    low, high = float(bounds[0]), float(bounds[1])
    tmin, tmax = float(t.min()), float(t.max())
    if tmin < low - BOUNDS_TOLERANCE or tmax > high + BOUNDS_TOLERANCE:
        hint = " (it looks like 0-255 pixels: divide by 255)" if tmax > 1.5 and high <= 1.0 else ""
        raise ValueError(f"{name} has values in [{tmin:.4g}, {tmax:.4g}] outside the bounds "
                         f"[{low:g}, {high:g}]{hint}; scale the input or set the bounds")
    return t.clamp(low, high)


def check_labels(y, n: int, nb_classes: int, name: str = "y") -> torch.Tensor:
    """Return integer labels ``y`` as an int64 CPU tensor of shape ``(n,)``, or raise.

    :param y: Class indices (numpy, torch or a sequence); one-hot arrays are rejected.
    :param n: Required length (the batch size of ``x``).
    :param nb_classes: Labels must lie in ``[0, nb_classes)``.
    :param name: Argument name used in error messages.
    """
    if isinstance(y, torch.Tensor):
        t = y.detach().cpu()
    else:
        try:
            t = torch.as_tensor(np.asarray(y))
        except (TypeError, ValueError) as err:
            raise TypeError(f"{name} must be an integer array of class indices, got {type(y).__name__}") from err
    if t.is_floating_point() or t.dtype == torch.bool or t.is_complex():
        raise TypeError(f"{name} must hold integer class indices, got dtype {t.dtype}")
    if t.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of class indices of length {n}, got shape {tuple(t.shape)}")
    if len(t) != n:
        raise ValueError(f"{name} has length {len(t)} but x has {n} inputs")
    if n and (int(t.min()) < 0 or int(t.max()) >= nb_classes):
        raise ValueError(f"{name} has labels in [{int(t.min())}, {int(t.max())}]; expected 0 <= {name} < "
                         f"{nb_classes}")
    return t.to(torch.int64)


def check_positive_int(value, name: str) -> int:
    """Return ``value`` as an int >= 1, or ``ValueError("<name> must be a positive integer, got ...")``.

    One checker for the whole package (bridge, defenses, evaluations): always ``ValueError``.
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_positive(value, name: str) -> float:
    """Return ``value`` as a finite float > 0, or ``ValueError("<name> must be a positive finite number, got ...")``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(float(value)) or not value > 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def check_finite(value, name: str) -> float:
    """Return ``value`` as a finite float, or ``ValueError("<name> must be a finite number, got ...")``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(float(value)):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)
