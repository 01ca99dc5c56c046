"""MagNet (Meng & Chen, CCS 2017; algorithms.md §2): detectors, reformer and the defended system.

The detectors are ART ``EvasionDetector``s; the reformer is an ART ``PreprocessorPyTorch`` and is
differentiable, so ``Model(classifier, preprocessing=[reformer])`` is attackable white-box from ART and
Foolbox through the bridge. Thresholds come from a false-positive budget on clean validation data.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import SupportsInt

import numpy as np
import torch
from art.defences.detector.evasion import EvasionDetector
from art.defences.preprocessor.preprocessor import PreprocessorPyTorch
from torch import nn

from ..bridge.validation import check_labels
from .params import check_finite, check_images, check_positive, check_positive_int

logger = logging.getLogger(__name__)

Shape = tuple[int, int, int]


def _chw(dims: Iterable[SupportsInt]) -> Shape:
    """Three dimensions (their number checked by the caller) as a ``(C, H, W)`` tuple of ints."""
    c, h, w = (int(d) for d in dims)
    return c, h, w


def check_input_shape(input_shape, name: str = "input_shape") -> Shape | None:
    """``None``, or ``input_shape`` as a ``(C, H, W)`` tuple of positive ints; ``ValueError`` naming ``name``."""
    if input_shape is None:
        return None
    try:
        shape = tuple(input_shape)
    except TypeError:
        raise ValueError(f"{name} must be (C, H, W) or None, got {input_shape!r}") from None
    if len(shape) != 3 or any(isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1 for d in shape):
        raise ValueError(f"{name} must be (C, H, W) with positive integer entries, got {input_shape!r}")
    return _chw(shape)


def check_bounds(bounds, name: str = "bounds") -> tuple[float, float]:
    """``bounds`` as ``(low, high)``, finite with ``low < high``; ``ValueError`` naming ``name``."""
    try:
        low, high = bounds
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be (low, high) with low < high, got {bounds!r}") from None
    low, high = check_finite(low, f"{name}[0]"), check_finite(high, f"{name}[1]")
    if not low < high:
        raise ValueError(f"{name} must be (low, high) with low < high, got {bounds!r}")
    return low, high


def layout_error(x: torch.Tensor, what: str, err: Exception) -> ValueError:
    """The ``ValueError`` for input that ``what`` cannot run when no ``input_shape`` was given to check it against."""
    return ValueError(f"x with shape {tuple(x.shape)} does not fit {what}: expected channels-first (N, C, H, W) with "
                      f"the channels it was built for (channels-last input needs x.permute(0, 3, 1, 2)); give "
                      f"input_shape=(C, H, W) for a precise check. The module said: {err}")


def _batched(fn, x: torch.Tensor, batch_size: int, device: torch.device) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([fn(x[i:i + batch_size].to(device)).cpu() for i in range(0, len(x), batch_size)])


class ForwardPasses:
    """One batch's forward passes, each computed at most once and shared by every detector and the reformer.

    ``f(x)``, ``ae(x)`` and ``f(ae(x))`` are memoised per (classifier, autoencoder) pair, so MagNet's two
    reconstruction detectors, its divergence detectors, MID and the reformer together cost one classifier pass on
    x, one pass per distinct autoencoder and one classifier pass per reconstruction.
    """

    def __init__(self, x: torch.Tensor) -> None:
        self.x = x
        self._memo: dict[tuple, torch.Tensor] = {}

    def _get(self, key: tuple, compute) -> torch.Tensor:
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    def logits(self, classifier: nn.Module) -> torch.Tensor:
        return self._get(("f", id(classifier)), lambda: classifier(self.x))

    def recon(self, ae: nn.Module) -> torch.Tensor:
        return self._get(("ae", id(ae)), lambda: ae(self.x))

    def logits_of_recon(self, classifier: nn.Module, ae: nn.Module) -> torch.Tensor:
        return self._get(("f.ae", id(classifier), id(ae)), lambda: classifier(self.recon(ae)))

    def reformed_logits(self, classifier: nn.Module, reformer: "Reformer") -> torch.Tensor:
        """``f(clip(ae(x)))``; the same pass as ``f(ae(x))`` when clipping changes nothing (sigmoid AEs)."""
        def compute():
            recon = self.recon(reformer.ae)
            reformed = recon.clamp(*reformer.bounds)
            if torch.equal(reformed, recon):
                return self.logits_of_recon(classifier, reformer.ae)
            return classifier(reformed)
        return self._get(("f.reform", id(classifier), id(reformer)), compute)


def over_batches(fn, x: torch.Tensor, batch_size: int, device: torch.device) -> list:
    """``fn(ForwardPasses(batch))`` for each batch of ``x`` on ``device``, under ``no_grad``."""
    with torch.no_grad():
        return [fn(ForwardPasses(x[i:i + batch_size].to(device))) for i in range(0, len(x), batch_size)]


def threshold_for(scores: np.ndarray, drop_rate: float) -> float:
    """MagNet's rule (§2.3): flag the ``int(N·drop_rate)`` highest clean scores (at least one)."""
    k = max(1, int(len(scores) * drop_rate))
    return float(np.sort(scores)[-k])


def jensen_shannon(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Per-row JSD(P, Q) in nats, as ``scipy.stats.entropy`` computes it in MagNet's code."""
    m = 0.5 * (p + q)

    def kl(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.where(a > 0, a * (a.clamp_min(1e-30).log() - b.clamp_min(1e-30).log()), 0.0).sum(1)

    return 0.5 * kl(p, m) + 0.5 * kl(q, m)


class ThresholdDetector(EvasionDetector):
    """Shared ``fit``/``detect``: scores above the clean-data threshold are flagged adversarial.

    Every input is checked by ``check_images``: NCHW of ``input_shape`` (or, when that is ``None``, of the shape
    of the clean data given to ``fit``), finite, and inside ``bounds``, so a ×255 image, channels-last input or a
    wrong H×W is a ``ValueError`` naming the argument instead of a silent score or a raw convolution error.

    :param drop_rate: False-positive budget on clean validation data.
    :param device: Device the scoring runs on (CPU by default).
    :param input_shape: ``(C, H, W)`` of one input; ``None`` takes it from the data given to ``fit``.
    :param bounds: Data range ``(low, high)`` of the inputs (the classifier's clip values).
    """

    defence_params = ["drop_rate"]

    def __init__(self, drop_rate: float, device: str | torch.device | None, input_shape: Shape | None = None,
                 bounds: tuple[float, float] = (0.0, 1.0)) -> None:
        super().__init__()
        self.drop_rate = drop_rate
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.input_shape = check_input_shape(input_shape)
        self.bounds = check_bounds(bounds)
        self.threshold: float | None = None
        self.fitted_shape: Shape | None = None
        self._check_params()

    def _check_params(self) -> None:
        if not isinstance(self.drop_rate, float) or not 0 < self.drop_rate < 1:
            raise ValueError(f"drop_rate must be a float in (0, 1), got {self.drop_rate!r}")

    @property
    def expected_shape(self) -> Shape | None:
        """``input_shape`` if given, else the shape of the clean data ``fit`` saw (``None`` before it)."""
        return self.input_shape or self.fitted_shape

    def check_x(self, x, name: str = "x") -> torch.Tensor:
        """``x`` as a float32 CPU tensor, checked against ``expected_shape`` and ``bounds`` (or ``ValueError``)."""
        return check_images(x, self.expected_shape, self.bounds, name)

    def _fit_input(self, x, batch_size) -> torch.Tensor:
        """Check the clean data of ``fit`` and remember its shape when no ``input_shape`` was given."""
        check_positive_int(batch_size, "batch_size")
        x = check_images(x, self.input_shape, self.bounds, "x")
        if self.input_shape is None:
            self.fitted_shape = _chw(x.shape[1:])  # check_images: x has rank 4
        return x

    @property
    def label(self) -> str:
        """A short name for reports (``recon_p2``, ``jsd_T10``, ``mid_population_pmi``)."""
        raise NotImplementedError

    def torch_modules(self) -> list[nn.Module]:
        """The torch modules this detector runs (moved to ``device`` before scoring)."""
        return [getattr(self, name) for name in ("classifier", "ae") if hasattr(self, name)]

    def score_batch(self, passes: ForwardPasses) -> torch.Tensor:
        """Anomaly scores of one batch (higher = more suspicious), from shared forward passes."""
        raise NotImplementedError

    def score(self, x, batch_size: int = 256) -> np.ndarray:
        """Anomaly scores of ``x`` (higher = more suspicious)."""
        return self._score_checked(self.check_x(x), batch_size)

    def _unchecked_layout(self, learning: bool) -> bool:
        """True when nothing checked the input's layout: no ``input_shape``, and ``fit`` is learning it now or
        has not run (then a module error on the input is reported as a layout error)."""
        return self.input_shape is None and (learning or self.fitted_shape is None)

    def _score_checked(self, x: torch.Tensor, batch_size: int, learning: bool = False) -> np.ndarray:
        check_positive_int(batch_size, "batch_size")
        for module in self.torch_modules():
            module.to(self.device)
        try:
            batches = over_batches(self.score_batch, x, batch_size, self.device)
        except RuntimeError as err:
            if isinstance(err, torch.OutOfMemoryError) or not self._unchecked_layout(learning):
                raise
            raise layout_error(x, type(self).__name__, err) from err
        return torch.cat([s.cpu() for s in batches]).numpy()

    def fit(self, x, y=None, batch_size: int = 256, nb_epochs: int = 0, **kwargs) -> None:
        """Set the threshold so that at most ``drop_rate`` of the clean inputs ``x`` are flagged."""
        x = self._fit_input(x, batch_size)
        self.threshold = threshold_for(self._score_checked(x, batch_size, learning=True), self.drop_rate)

    def detect(self, x, batch_size: int = 256, **kwargs) -> tuple[dict, np.ndarray]:
        """Return ``({"scores", "threshold"}, is_adversarial)``; an input passes iff score < threshold."""
        if self.threshold is None:
            raise ValueError(f"{type(self).__name__} is not fitted: call fit(x_clean_validation) first")
        scores = self.score(x, batch_size)
        return {"scores": scores, "threshold": self.threshold}, scores >= self.threshold


class ReconstructionErrorDetector(ThresholdDetector):
    """MagNet detector I/II: ``mean_{c,h,w} |x - ae(x)|^p`` (§2.2; the mean of the p-th power, not a norm).

    :param ae: Autoencoder mapping x to its reconstruction.
    :param p: 1 or 2.
    :param drop_rate: False-positive budget on clean validation data.
    :param input_shape: ``(C, H, W)``; ``None`` takes it from ``fit``'s data.
    :param bounds: Data range of the inputs.
    """

    defence_params = ["p", "drop_rate"]

    def __init__(self, ae: nn.Module, p: int = 2, drop_rate: float = 0.001, device=None, *,
                 input_shape: Shape | None = None, bounds: tuple[float, float] = (0.0, 1.0)) -> None:
        self.ae = ae.eval()
        self.p = p
        super().__init__(drop_rate, device, input_shape, bounds)

    def _check_params(self) -> None:
        super()._check_params()
        if self.p not in (1, 2):
            raise ValueError(f"p must be 1 or 2, got {self.p!r}")

    @property
    def label(self) -> str:
        return f"recon_p{self.p}"

    def score_from(self, x: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
        return (x - recon).abs().pow(self.p).flatten(1).mean(1)

    def score_batch(self, passes: ForwardPasses) -> torch.Tensor:
        return self.score_from(passes.x, passes.recon(self.ae))


class DivergenceDetector(ThresholdDetector):
    """MagNet probability-divergence detector: ``JSD(softmax(f(x)/T), softmax(f(ae(x))/T))`` (§2.2).

    :param classifier: Module returning logits.
    :param ae: Autoencoder.
    :param temperature: Softmax temperature T (MagNet's CIFAR detectors use 10 and 40); finite and > 0.
    :param input_shape: ``(C, H, W)``; ``None`` takes it from ``fit``'s data.
    :param bounds: Data range of the inputs.
    """

    defence_params = ["temperature", "drop_rate"]

    def __init__(self, classifier: nn.Module, ae: nn.Module, temperature: float = 10.0, drop_rate: float = 0.01,
                 device=None, *, input_shape: Shape | None = None, bounds: tuple[float, float] = (0.0, 1.0)) -> None:
        self.classifier = classifier.eval()
        self.ae = ae.eval()
        self.temperature = temperature
        super().__init__(drop_rate, device, input_shape, bounds)

    def _check_params(self) -> None:
        super()._check_params()
        self.temperature = check_positive(self.temperature, "temperature")

    @property
    def label(self) -> str:
        return f"jsd_T{self.temperature:g}"

    def score_from(self, logits: torch.Tensor, logits_recon: torch.Tensor) -> torch.Tensor:
        t = float(self.temperature)
        return jensen_shannon(torch.softmax(logits / t, 1), torch.softmax(logits_recon / t, 1))

    def score_batch(self, passes: ForwardPasses) -> torch.Tensor:
        return self.score_from(passes.logits(self.classifier), passes.logits_of_recon(self.classifier, self.ae))


class Reformer(PreprocessorPyTorch):
    """MagNet reformer ``x' = clip(ae(x), low, high)``: differentiable, so white-box attacks see through it.

    ``forward`` checks its input with ``check_images`` (shape, finite, inside ``bounds``) without detaching or
    moving it: ART calls it inside attacks with tensors that require grad, on the model's device.

    :param ae: Autoencoder (MagNet uses AE-I); its weights are frozen.
    :param bounds: The data range to clip to; inputs outside it (a ×255 image) are a ``ValueError``.
    :param device_type: ``cpu`` or ``gpu`` (ART's convention).
    :param input_shape: ``(C, H, W)`` of one input; ``None`` checks the rank only (a convolutional autoencoder
        accepts any H×W, so give it to have a wrong size rejected).
    """

    def __init__(self, ae: nn.Module, bounds: tuple[float, float] = (0.0, 1.0), device_type: str = "cpu", *,
                 input_shape: Shape | None = None) -> None:
        super().__init__(device_type=device_type, is_fitted=True, apply_fit=False, apply_predict=True)
        if not isinstance(ae, nn.Module):
            raise TypeError(f"ae must be a torch.nn.Module mapping images to reconstructions, got {type(ae).__name__}")
        self.ae = ae.eval().requires_grad_(False)
        self.bounds = check_bounds(bounds)
        self.input_shape = check_input_shape(input_shape)

    def check_x(self, x, name: str = "x") -> None:
        """Raise ``ValueError``/``TypeError`` unless ``x`` is a finite NCHW batch of ``input_shape`` in ``bounds``.

        A check only: the caller goes on with its own ``x`` (graph and device untouched).
        """
        check_images(x, self.input_shape, self.bounds, name, device=None)

    def forward(self, x: torch.Tensor, y=None):
        self.check_x(x)
        param = next(self.ae.parameters(), None)
        if param is not None and param.device != x.device:  # ART and Foolbox move the classifier, not this AE
            self.ae.to(x.device)
        try:
            return self.ae(x.float()).clamp(*self.bounds), y
        except RuntimeError as err:
            if isinstance(err, torch.OutOfMemoryError) or self.input_shape is not None:
                raise
            raise layout_error(x, "the reformer's autoencoder", err) from err


@dataclass
class MagNetEvaluation:
    """MagNet's metric (§1.4/§2.5) and its ablations, as fractions of the inputs.

    One definition of success (as in the bridge): when the clean inputs are given, an input whose clean version
    the system gets wrong is *already misclassified*; it counts as wrong, never as handled, whatever happens to its
    adversarial version.
    """

    with_defense: float      # (clean right after reforming and) rejected, or correct after reforming
    detector_only: float     # (clean right on the raw input and) rejected, or correct on the raw input
    reformer_only: float     # (clean right after reforming and) correct after reforming
    no_defense: float        # correct on the raw input
    detection_rate: float    # fraction rejected
    already_misclassified: int = 0  # clean inputs wrong after reforming (0 when no clean inputs were given)

    def to_dict(self) -> dict[str, float]:
        return dict(self.__dict__)


@dataclass
class MagNetOutputs:
    """Per-input outputs of one pass of the defended system over a set of inputs."""

    scores: dict[str, np.ndarray]   # detector name -> anomaly scores
    flags: dict[str, np.ndarray]    # detector name -> score >= its threshold
    rejected: np.ndarray            # any detector flags the input
    pred_raw: np.ndarray            # argmax f(x)
    pred_reformed: np.ndarray       # argmax f(reformer(x)) (= pred_raw without a reformer)

    def evaluate(self, y: np.ndarray, clean: MagNetOutputs | None = None) -> MagNetEvaluation:
        """MagNet's metric on these outputs; ``clean``: the same system's outputs on the clean versions.

        With ``clean``, an input the system gets wrong when clean (after reforming; on the raw input for the
        detector-only ablation) counts as not handled.
        """
        y = np.asarray(y)
        raw_ok, reformed_ok = self.pred_raw == y, self.pred_reformed == y
        clean_reformed_ok = np.ones_like(reformed_ok) if clean is None else clean.pred_reformed == y
        clean_raw_ok = np.ones_like(raw_ok) if clean is None else clean.pred_raw == y
        return MagNetEvaluation(with_defense=float((clean_reformed_ok & (self.rejected | reformed_ok)).mean()),
                                detector_only=float((clean_raw_ok & (self.rejected | raw_ok)).mean()),
                                reformer_only=float((clean_reformed_ok & reformed_ok).mean()),
                                no_defense=float((clean_raw_ok & raw_ok).mean()),
                                detection_rate=float(self.rejected.mean()),
                                already_misclassified=int((~clean_reformed_ok).sum()))


class MagNet:
    """Detectors + reformer + classifier.

    Every method makes one sweep over the inputs in which the detectors and the reformer share their forward
    passes (``ForwardPasses``): the cost of scoring is about that of ``f(x)``, ``ae(x)`` and ``f(ae(x))``.

    Inputs are checked by ``check_images`` against ``input_shape`` and ``bounds`` and labels by ``check_labels``:
    a ×255 image, a wrong H×W, channels-last input or float/out-of-range labels are a ``ValueError`` or
    ``TypeError`` naming the argument.

    :param classifier: Module returning logits for raw-space input.
    :param detectors: Fitted or unfitted MagNet/MID detectors (``fit`` sets all thresholds), as a list or as a
        ``{name: detector}`` dict (list entries are named ``<index>_<label>``).
    :param reformer: ``Reformer`` or ``None``.
    :param input_shape: ``(C, H, W)`` of one input; ``None`` takes the reformer's or the detectors' (given or
        fitted) shape, else the shape of the data given to ``fit``.
    :param bounds: Data range of the inputs; ``None`` takes the reformer's or the detectors' bounds (they must
        agree), else ``(0, 1)``.
    """

    def __init__(self, classifier: nn.Module, detectors: list[ThresholdDetector] | dict[str, ThresholdDetector],
                 reformer: Reformer | None, device=None, *, input_shape: Shape | None = None,
                 bounds: tuple[float, float] | None = None) -> None:
        if not isinstance(classifier, nn.Module):
            raise TypeError(f"classifier must be a torch.nn.Module returning logits, got {type(classifier).__name__}")
        if not detectors and reformer is None:
            raise ValueError("MagNet needs at least one detector or a reformer")
        if not isinstance(detectors, dict):
            detectors = {f"{i}_{det.label}": det for i, det in enumerate(detectors)}
        for name, det in detectors.items():
            if not isinstance(det, ThresholdDetector):
                raise TypeError(f"detector {name!r} must be a MagNet or MID detector, got {type(det).__name__}")
        if reformer is not None and not isinstance(reformer, Reformer):
            raise TypeError(f"reformer must be a Reformer or None, got {type(reformer).__name__}")
        self.classifier = classifier.eval()
        self.named_detectors = dict(detectors)
        self.reformer = reformer
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.input_shape = check_input_shape(input_shape)
        self.bounds = self._agreed_bounds(bounds)
        self.fitted_shape: Shape | None = None
        self._nb_classes: int | None = None
        self._check_shapes()

    def _components(self) -> list[tuple[str, ThresholdDetector | Reformer]]:
        parts: list[tuple[str, ThresholdDetector | Reformer]] = [(f"detector {name!r}", det)
                                                                 for name, det in self.named_detectors.items()]
        if self.reformer is not None:
            parts.insert(0, ("the reformer", self.reformer))
        return parts

    def _agreed_bounds(self, bounds) -> tuple[float, float]:
        parts = self._components()
        chosen = check_bounds(bounds) if bounds is not None else (parts[0][1].bounds if parts else (0.0, 1.0))
        for what, part in parts:
            if tuple(part.bounds) != tuple(chosen):
                raise ValueError(f"bounds {chosen} differ from the bounds {tuple(part.bounds)} of {what}; "
                                 f"give every component the classifier's clip values")
        low, high = chosen
        return low, high

    @property
    def expected_shape(self) -> Shape | None:
        """The ``(C, H, W)`` inputs must have: given, or the components', or the one ``fit`` saw."""
        return self._check_shapes()

    def _check_shapes(self) -> Shape | None:
        """The expected input shape; ``ValueError`` when the given and the components' shapes disagree."""
        shapes: dict[str, Shape] = {}
        for what, part in self._components():
            shape = part.input_shape if isinstance(part, Reformer) else part.expected_shape
            if shape is not None:
                c, h, w = shape
                shapes[what] = (c, h, w)
        chosen = self.input_shape or next(iter(shapes.values()), None) or self.fitted_shape
        for what, shape in shapes.items():
            if shape != chosen:
                raise ValueError(f"input_shape {chosen} differs from the input shape {shape} of {what}")
        return chosen

    def check_x(self, x, name: str = "x") -> torch.Tensor:
        """``x`` as a float32 CPU tensor checked against ``expected_shape`` and ``bounds``, or ``ValueError``."""
        return check_images(x, self.expected_shape, self.bounds, name)

    def check_y(self, y, x: torch.Tensor, name: str = "y") -> np.ndarray:
        """Integer labels of ``x`` in ``[0, K)`` (K from one classifier pass), as an int64 array, or raise."""
        if self._nb_classes is None:
            self.classifier.to(self.device)
            with torch.no_grad():
                self._nb_classes = int(self.classifier(x[:1].to(self.device)).shape[1])
        return check_labels(y, len(x), self._nb_classes, name).numpy()

    @property
    def detectors(self) -> list[ThresholdDetector]:
        return list(self.named_detectors.values())

    def to(self, device) -> "MagNet":
        self.device = torch.device(device)
        for det in self.detectors:
            det.device = self.device
        return self

    def fit(self, x_val, batch_size: int = 256) -> "MagNet":
        """Set every detector's threshold on clean validation inputs."""
        x_val = check_images(x_val, self.expected_shape, self.bounds, "x_val")
        if self.expected_shape is None:
            self.fitted_shape = _chw(x_val.shape[1:])  # check_images: x_val has rank 4
        for det in self.detectors:
            det.fit(x_val, batch_size=batch_size)
        return self

    def run(self, x, batch_size: int = 256) -> MagNetOutputs:
        """Score, flag and classify ``x`` in one sweep with shared forward passes."""
        return self._run_checked(self.check_x(x), batch_size)

    def _run_checked(self, x: torch.Tensor, batch_size: int) -> MagNetOutputs:
        check_positive_int(batch_size, "batch_size")
        for name, det in self.named_detectors.items():
            if det.threshold is None:
                raise ValueError(f"detector {name!r} is not fitted: call MagNet.fit(x_clean_validation) first")
        modules = [self.classifier] + [m for det in self.detectors for m in det.torch_modules()]
        if self.reformer is not None:
            modules.append(self.reformer.ae)
        for module in modules:
            module.to(self.device)

        def one_batch(passes: ForwardPasses):
            scores = {name: det.score_batch(passes).cpu() for name, det in self.named_detectors.items()}
            raw = passes.logits(self.classifier).argmax(1).cpu()
            reformed = (passes.reformed_logits(self.classifier, self.reformer).argmax(1).cpu()
                        if self.reformer is not None else raw)
            return scores, raw, reformed

        try:
            batches = over_batches(one_batch, x, batch_size, self.device)
        except RuntimeError as err:
            if isinstance(err, torch.OutOfMemoryError) or self.expected_shape is not None:
                raise
            raise layout_error(x, "the MagNet system", err) from err
        scores = {name: torch.cat([b[0][name] for b in batches]).numpy() for name in self.named_detectors}
        flags = {name: scores[name] >= det.threshold for name, det in self.named_detectors.items()}
        rejected = np.zeros(len(x), dtype=bool)
        for flagged in flags.values():
            rejected |= flagged
        return MagNetOutputs(scores, flags, rejected, torch.cat([b[1] for b in batches]).numpy(),
                             torch.cat([b[2] for b in batches]).numpy())

    def detect(self, x, batch_size: int = 256) -> np.ndarray:
        """True where any detector rejects the input."""
        return self.run(x, batch_size).rejected

    def predict(self, x, batch_size: int = 256) -> np.ndarray:
        """Class predictions after reforming (what MagNet outputs for inputs that pass)."""
        x = self.check_x(x)
        check_positive_int(batch_size, "batch_size")
        self.classifier.to(self.device)
        if self.reformer is None:
            return _batched(self.classifier, x, batch_size, self.device).argmax(1).numpy()
        self.reformer.ae.to(self.device)
        return torch.cat(over_batches(lambda p: p.reformed_logits(self.classifier, self.reformer).argmax(1).cpu(),
                                      x, batch_size, self.device)).numpy()

    def evaluate(self, x, y, batch_size: int = 256, x_clean=None) -> MagNetEvaluation:
        """MagNet's metric on ``(x, y)``: an input is handled when rejected or classified correctly after reforming.

        :param y: Integer class indices in ``[0, K)``, one per input (float or out-of-range labels raise).
        :param x_clean: The clean inputs ``x`` was made from; when given, an input whose clean version the system
            gets wrong is already misclassified and counts as not handled (the bridge's one definition of success).
        """
        x = self.check_x(x)
        y = self.check_y(y, x)
        clean = None
        if x_clean is not None:
            x_clean = self.check_x(x_clean, "x_clean")
            if len(x_clean) != len(x):
                raise ValueError(f"x_clean has {len(x_clean)} inputs but x has {len(x)}")
            clean = self._run_checked(x_clean, batch_size)
        return self._run_checked(x, batch_size).evaluate(y, clean)


def graybox_random_row(matrix: np.ndarray) -> np.ndarray:
    """The "Random" row of MagNet's graybox table (§2.7): the defender draws one AE uniformly, so each
    attack column's accuracy is the mean over the defending AEs (rows)."""
    matrix = np.asarray(matrix, dtype=float)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.size == 0:
        raise ValueError(f"matrix must be a non-empty square (defend x attack) array, got shape {matrix.shape}")
    return matrix.mean(0)


class RandomizedMagNet:
    """MagNet's graybox defense: one of several MagNet systems (one per diverse AE) is drawn per query.

    :param systems: ``MagNet`` instances sharing the classifier, one per autoencoder.
    :param seed: Seeds the draws, so a run is reproducible.
    :param query_size: Inputs per query: each call is split into queries of this many inputs and one system
        is drawn per query. ``None`` draws once per call.
    """

    def __init__(self, systems: list[MagNet], seed: int = 0, query_size: int | None = None) -> None:
        if len(systems) < 2:
            raise ValueError(f"systems must hold at least 2 MagNet instances, got {len(systems)}")
        if query_size is not None and (isinstance(query_size, bool) or not isinstance(query_size, int)
                                       or query_size < 1):
            raise ValueError(f"query_size must be a positive int or None, got {query_size!r}")
        for i, system in enumerate(systems):
            if not isinstance(system, MagNet):
                raise TypeError(f"systems[{i}] must be a MagNet, got {type(system).__name__}")
        self.systems = list(systems)
        self.query_size = query_size
        self.reseed(seed)

    def reseed(self, seed: int) -> "RandomizedMagNet":
        """Restart the draws from ``seed`` (an evaluation that reseeds is independent of earlier queries)."""
        self.rng = np.random.default_rng(seed)
        self.last_choice: int | None = None
        self.choices: list[int] = []
        return self

    def _draw(self) -> MagNet:
        self.last_choice = int(self.rng.integers(len(self.systems)))
        self.choices.append(self.last_choice)
        return self.systems[self.last_choice]

    def to(self, device) -> "RandomizedMagNet":
        for system in self.systems:
            system.to(device)
        return self

    def _queries(self, x) -> list:
        x = self.systems[0].check_x(x)
        size = self.query_size or len(x)
        return [x[i:i + size] for i in range(0, len(x), size)]

    def fit(self, x_val, batch_size: int = 256) -> "RandomizedMagNet":
        for system in self.systems:
            system.fit(x_val, batch_size)
        return self

    def run(self, x, batch_size: int = 256) -> MagNetOutputs:
        """Each query answered by a freshly drawn system (outputs concatenated; ``scores`` are left empty,
        since the drawn systems' detectors differ)."""
        parts = [self._draw().run(q, batch_size) for q in self._queries(x)]
        return MagNetOutputs({}, {}, np.concatenate([o.rejected for o in parts]),
                             np.concatenate([o.pred_raw for o in parts]),
                             np.concatenate([o.pred_reformed for o in parts]))

    def detect(self, x, batch_size: int = 256) -> np.ndarray:
        return self.run(x, batch_size).rejected

    def predict(self, x, batch_size: int = 256) -> np.ndarray:
        return self.run(x, batch_size).pred_reformed

    def evaluate(self, x, y, batch_size: int = 256) -> MagNetEvaluation:
        """MagNet's metric with one drawn system per query; ``y`` as in ``MagNet.evaluate``."""
        x = self.systems[0].check_x(x)
        y = self.systems[0].check_y(y, x)
        return self.run(x, batch_size).evaluate(y)
