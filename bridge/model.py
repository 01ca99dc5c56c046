"""`Model`: one torch classifier, wrapped once, handed to ART and Foolbox as the identical function.

The raw input space (``bounds``) is where attacks perturb and where norms are measured. Inside the
wrapper the input goes through the torch preprocessors (defenses such as a reformer), then the
optional mean/std normalisation, then the classifier, which returns logits.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from typing import Any

import foolbox as fb
import numpy as np
import torch
from art.defences.preprocessor.preprocessor import PreprocessorPyTorch
from art.estimators.classification import PyTorchClassifier
from torch import nn

from .validation import check_finite, check_positive, check_positive_int

logger = logging.getLogger(__name__)


def default_device() -> torch.device:
    """CUDA when present, CPU otherwise."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std`` for NCHW input, with mean/std kept as buffers."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        mean_t = torch.as_tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1)
        std_t = torch.as_tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1)
        if torch.any(std_t <= 0):
            raise ValueError(f"std must be positive, got {std}")
        self.register_buffer("mean", mean_t)
        self.register_buffer("std", std_t)

    mean: torch.Tensor
    std: torch.Tensor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class Float32Classifier(PyTorchClassifier):
    """ART's ``PyTorchClassifier`` that casts float64 input to float32 before predicting.

    ART's decision-based attacks (HopSkipJump, Boundary) hand float64 arrays to ``predict``, which a float32 torch
    module refuses. Casting here keeps the wrapped module itself as ART's ``model``.
    """

    def predict(self, x: np.ndarray, batch_size: int = 128, training_mode: bool = False, **kwargs) -> np.ndarray:
        if isinstance(x, np.ndarray) and x.dtype == np.float64:
            x = x.astype(np.float32)
        return super().predict(x, batch_size=batch_size, training_mode=training_mode, **kwargs)


def _art_preprocessor(module: nn.Module, device_type: str):
    """Wrap a plain ``nn.Module`` as an ART ``PreprocessorPyTorch`` (differentiable, predict-only)."""
    if isinstance(module, PreprocessorPyTorch):
        return module

    class TorchModulePreprocessor(PreprocessorPyTorch):
        """ART view of a torch module used as an input transform; gradients flow through ``forward``."""

        def __init__(self, inner: nn.Module) -> None:
            super().__init__(device_type=device_type, is_fitted=True, apply_fit=False, apply_predict=True)
            self.inner = inner

        def forward(self, x: torch.Tensor, y=None):
            return self.inner(x.float()), y

    return TorchModulePreprocessor(module)


class _ArtPreprocessorModule(nn.Module):
    """Torch view of an ART ``PreprocessorPyTorch`` so Foolbox can chain it in an ``nn.Sequential``."""

    def __init__(self, preprocessor) -> None:
        super().__init__()
        self.preprocessor = preprocessor
        if isinstance(preprocessor, nn.Module):
            self.add_module("inner", preprocessor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.preprocessor.forward(x.float())[0]


class Model:
    """A torch classifier returning logits, with its input bounds, optional normalisation and defenses.

    :param module: ``nn.Module`` mapping NCHW float32 input to logits of shape ``(N, K)``.
    :param input_shape: ``(C, H, W)`` of one input.
    :param bounds: ``(low, high)`` of the raw input space; attacks clip here and norms are measured here.
    :param mean: Per-channel mean subtracted inside the wrapper, or ``None``.
    :param std: Per-channel std divided inside the wrapper, or ``None``.
    :param preprocessing: Torch preprocessors (defenses) applied to the raw input before normalisation,
        each an ``nn.Module`` or an ART ``PreprocessorPyTorch``.
    :param nb_classes: Number of classes; inferred from one forward pass when ``None``.
    :param device: ``"cpu"``, ``"cuda"`` or a ``torch.device``; CUDA when present by default.
    """

    def __init__(
        self,
        module: nn.Module,
        input_shape: Sequence[int],
        *,
        bounds: tuple[float, float] = (0.0, 1.0),
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        preprocessing: Sequence[nn.Module] = (),
        nb_classes: int | None = None,
        device: str | torch.device | None = None,
    ) -> None:
        if not isinstance(module, nn.Module):
            raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
        input_shape = _check_input_shape(input_shape)
        low, high = _check_bounds(bounds)
        if (mean is None) != (std is None):
            raise ValueError("mean and std must be given together")
        self.module = module
        self.input_shape = input_shape
        self.bounds = (low, high)
        self.mean = None if mean is None else _check_channels(mean, "mean", input_shape[0], positive=False)
        self.std = None if std is None else _check_channels(std, "std", input_shape[0], positive=True)
        self.preprocessing = list(preprocessing)
        for i, p in enumerate(self.preprocessing):
            if not (isinstance(p, nn.Module) or _is_art_preprocessor(p)):
                raise TypeError(f"preprocessing[{i}] must be a torch.nn.Module or an ART PreprocessorPyTorch, "
                                f"got {type(p).__name__}")
        self.device = torch.device(device) if device is not None else default_device()
        self._pipeline: nn.Module | None = None
        self._art: dict[bool, object] = {}
        self._foolbox = None
        self.nb_classes = check_positive_int(nb_classes, "nb_classes") if nb_classes is not None \
            else self._infer_nb_classes()

    # ------------------------------------------------------------------ torch
    @property
    def pipeline(self) -> nn.Module:
        """The whole function as one torch module: preprocessors, normalisation, classifier (eval mode)."""
        if self._pipeline is None:
            layers: list[nn.Module] = [_ArtPreprocessorModule(p) if _is_art_preprocessor(p) else p
                                       for p in self.preprocessing]
            if self.mean is not None and self.std is not None:
                layers.append(Normalize(self.mean, self.std))
            layers.append(self.module)
            self._pipeline = nn.Sequential(*layers).to(self.device).eval()
        return self._pipeline

    def _infer_nb_classes(self) -> int:
        with torch.no_grad():
            out = self.pipeline(torch.full((1, *self.input_shape), self.bounds[0], device=self.device))
        if out.ndim != 2:
            raise ValueError(f"module must return logits of shape (N, K), got shape {tuple(out.shape)}")
        return int(out.shape[1])

    def logits(self, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        """Logits for raw-space input ``x`` (no gradient), computed in batches; returned on the model's device."""
        outs = []
        pipe = self.pipeline
        with torch.no_grad():
            for start in range(0, len(x), batch_size):
                outs.append(pipe(x[start:start + batch_size].to(self.device, torch.float32)))
        return torch.cat(outs)

    def predict(self, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        """Predicted labels for raw-space input ``x``, on the CPU."""
        return self.logits(x, batch_size).argmax(1).cpu()

    # ------------------------------------------------------------- toolkits
    def art(self, probabilities: bool = False):
        """ART ``PyTorchClassifier`` computing this function.

        :param probabilities: Append a softmax head, for ART attacks that read outputs as probabilities
            (NewtonFool). The argmax, and therefore every prediction, is unchanged.
        """
        if probabilities not in self._art:
            device_type = "gpu" if self.device.type == "cuda" else "cpu"
            module = nn.Sequential(self.module, nn.Softmax(dim=1)) if probabilities else self.module
            preprocessing: tuple[Any, Any] = (0.0, 1.0)
            if self.mean is not None:
                shape = (-1, 1, 1)
                preprocessing = (np.asarray(self.mean, np.float32).reshape(shape),
                                 np.asarray(self.std, np.float32).reshape(shape))
            self._art[probabilities] = Float32Classifier(
                model=module,
                loss=nn.CrossEntropyLoss(),
                input_shape=self.input_shape,
                nb_classes=self.nb_classes,
                channels_first=True,
                clip_values=np.asarray(self.bounds, dtype=np.float32),
                preprocessing_defences=[_art_preprocessor(p, device_type) for p in self.preprocessing] or None,
                preprocessing=preprocessing,
                device_type=device_type,
            )
        return self._art[probabilities]

    def foolbox(self):
        """Foolbox ``PyTorchModel`` computing this function."""
        if self._foolbox is None:
            self._foolbox = fb.PyTorchModel(self.pipeline, bounds=self.bounds, device=self.device)
        return self._foolbox

    def with_device(self, device: str | torch.device) -> "Model":
        """The same model on another device, with fresh toolkit wrappers; ``self`` is left as it is.

        On a different device the clone gets its own deep copy of the module and preprocessors (moved there when
        first used), so the original's module, and the ART/Foolbox wrappers it has cached, stay on its device. On
        the same device nothing moves, and the clone shares the module.
        """
        target = torch.device(device)
        clone = self.__class__.__new__(self.__class__)
        clone.__setstate__(self.__getstate__())
        if target != self.device:
            # One deepcopy call keeps modules shared between the classifier and a preprocessor shared in the copy.
            clone.module, clone.preprocessing = copy.deepcopy((self.module, self.preprocessing))
        clone.device = target
        return clone

    def __getstate__(self) -> dict:
        """Pickle without the cached toolkit wrappers (rebuilt on first use), e.g. for Ray workers."""
        state = dict(self.__dict__)
        state.update(_pipeline=None, _art={}, _foolbox=None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)

    def __repr__(self) -> str:
        return (f"Model({type(self.module).__name__}, input_shape={self.input_shape}, bounds={self.bounds}, "
                f"nb_classes={self.nb_classes}, preprocessing={len(self.preprocessing)}, device={self.device})")


def _check_input_shape(input_shape) -> tuple[int, int, int]:
    """``input_shape`` as ``(C, H, W)`` of positive ints, or ``ValueError`` naming it."""
    try:
        dims = tuple(input_shape)
    except TypeError as err:
        raise TypeError(f"input_shape must be a sequence (C, H, W), got {input_shape!r}") from err
    if len(dims) != 3:
        raise ValueError(f"input_shape must be (C, H, W), got {dims}")
    for d in dims:
        if isinstance(d, (bool, np.bool_)) or not isinstance(d, (int, np.integer)) or d < 1:
            raise ValueError(f"input_shape must be (C, H, W) of positive integers, got {dims}")
    return tuple(int(d) for d in dims)  # type: ignore[return-value]


def _check_bounds(bounds) -> tuple[float, float]:
    """``bounds`` as finite ``(low, high)`` with ``low < high``, or ``ValueError`` naming it."""
    try:
        low, high = bounds
    except (TypeError, ValueError) as err:
        raise ValueError(f"bounds must be (low, high), got {bounds!r}") from err
    low, high = check_finite(low, "bounds[0]"), check_finite(high, "bounds[1]")
    if not low < high:
        raise ValueError(f"bounds must be (low, high) with low < high, got {tuple(bounds)}")
    return low, high


def _check_channels(values, name: str, channels: int, positive: bool) -> list[float]:
    """Per-channel ``mean`` or ``std``: 1 or ``channels`` finite entries (``std``: > 0), or ``ValueError``."""
    try:
        flat = np.atleast_1d(np.asarray(values, dtype=np.float64)).reshape(-1)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be a number or a sequence of numbers, got {values!r}") from err
    if len(flat) not in (1, channels):
        expected = "1 entry" if channels == 1 else f"1 entry or {channels} (one per channel)"
        raise ValueError(f"{name} must have {expected}, got {len(flat)}")
    check = check_positive if positive else check_finite
    return [check(float(v), f"{name}[{i}]") for i, v in enumerate(flat)]


def _is_art_preprocessor(obj) -> bool:
    return isinstance(obj, PreprocessorPyTorch)
