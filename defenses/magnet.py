"""MagNet (Meng & Chen, CCS 2017; algorithms.md §2): detectors, reformer and the defended system.

The detectors are ART ``EvasionDetector``s; the reformer is an ART ``PreprocessorPyTorch`` and is
differentiable, so ``Model(classifier, preprocessing=[reformer])`` is attackable white-box from ART and
Foolbox through the bridge. Thresholds come from a false-positive budget on clean validation data.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from art.defences.detector.evasion import EvasionDetector
from art.defences.preprocessor.preprocessor import PreprocessorPyTorch
from torch import nn

logger = logging.getLogger(__name__)


def _as_tensor(x, name: str = "x") -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a numpy array or torch tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be floating point, got {x.dtype}")
    if x.ndim != 4 or len(x) == 0:
        raise ValueError(f"{name} must be a non-empty NCHW batch, got shape {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or inf values")
    return x.detach().float()


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


def _over_batches(fn, x: torch.Tensor, batch_size: int, device: torch.device) -> list:
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


class _ThresholdDetector(EvasionDetector):
    """Shared ``fit``/``detect``: scores above the clean-data threshold are flagged adversarial."""

    defence_params = ["drop_rate"]

    def __init__(self, drop_rate: float, device: str | torch.device | None) -> None:
        super().__init__()
        self.drop_rate = drop_rate
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.threshold: float | None = None
        self._check_params()

    def _check_params(self) -> None:
        if not isinstance(self.drop_rate, float) or not 0 < self.drop_rate < 1:
            raise ValueError(f"drop_rate must be a float in (0, 1), got {self.drop_rate!r}")

    @property
    def label(self) -> str:
        """A short name for reports (``recon_p2``, ``jsd_T10``, ``mid_population_pmi``)."""
        raise NotImplementedError

    def _modules(self) -> list[nn.Module]:
        return [getattr(self, name) for name in ("classifier", "ae") if hasattr(self, name)]

    def score_batch(self, passes: ForwardPasses) -> torch.Tensor:
        """Anomaly scores of one batch (higher = more suspicious), from shared forward passes."""
        raise NotImplementedError

    def score(self, x, batch_size: int = 256) -> np.ndarray:
        """Anomaly scores of ``x`` (higher = more suspicious)."""
        x = _as_tensor(x)
        for module in self._modules():
            module.to(self.device)
        return torch.cat([s.cpu() for s in _over_batches(self.score_batch, x, batch_size, self.device)]).numpy()

    def fit(self, x, y=None, batch_size: int = 256, nb_epochs: int = 0, **kwargs) -> None:
        """Set the threshold so that at most ``drop_rate`` of the clean inputs ``x`` are flagged."""
        self.threshold = threshold_for(self.score(x, batch_size), self.drop_rate)

    def detect(self, x, batch_size: int = 256, **kwargs) -> tuple[dict, np.ndarray]:
        """Return ``({"scores", "threshold"}, is_adversarial)``; an input passes iff score < threshold."""
        if self.threshold is None:
            raise ValueError(f"{type(self).__name__} is not fitted: call fit(x_clean_validation) first")
        scores = self.score(x, batch_size)
        return {"scores": scores, "threshold": self.threshold}, scores >= self.threshold


class ReconstructionErrorDetector(_ThresholdDetector):
    """MagNet detector I/II: ``mean_{c,h,w} |x - ae(x)|^p`` (§2.2; the mean of the p-th power, not a norm).

    :param ae: Autoencoder mapping x to its reconstruction.
    :param p: 1 or 2.
    :param drop_rate: False-positive budget on clean validation data.
    """

    defence_params = ["p", "drop_rate"]

    def __init__(self, ae: nn.Module, p: int = 2, drop_rate: float = 0.001, device=None) -> None:
        self.ae = ae.eval()
        self.p = p
        super().__init__(drop_rate, device)

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


class DivergenceDetector(_ThresholdDetector):
    """MagNet probability-divergence detector: ``JSD(softmax(f(x)/T), softmax(f(ae(x))/T))`` (§2.2).

    :param classifier: Module returning logits.
    :param ae: Autoencoder.
    :param temperature: Softmax temperature T (MagNet's CIFAR detectors use 10 and 40).
    """

    defence_params = ["temperature", "drop_rate"]

    def __init__(self, classifier: nn.Module, ae: nn.Module, temperature: float = 10.0, drop_rate: float = 0.01,
                 device=None) -> None:
        self.classifier = classifier.eval()
        self.ae = ae.eval()
        self.temperature = temperature
        super().__init__(drop_rate, device)

    def _check_params(self) -> None:
        super()._check_params()
        if not isinstance(self.temperature, (int, float)) or self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature!r}")

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

    :param ae: Autoencoder (MagNet uses AE-I); its weights are frozen.
    :param bounds: The data range to clip to.
    """

    def __init__(self, ae: nn.Module, bounds: tuple[float, float] = (0.0, 1.0), device_type: str = "cpu") -> None:
        super().__init__(device_type=device_type, is_fitted=True, apply_fit=False, apply_predict=True)
        self.ae = ae.eval().requires_grad_(False)
        self.bounds = bounds

    def forward(self, x: torch.Tensor, y=None):
        param = next(self.ae.parameters(), None)
        if param is not None and param.device != x.device:  # ART and Foolbox move the classifier, not this AE
            self.ae.to(x.device)
        return self.ae(x.float()).clamp(*self.bounds), y


@dataclass
class MagNetEvaluation:
    """MagNet's metric (§1.4/§2.5) and its ablations, as fractions of the inputs."""

    with_defense: float      # rejected, or correct after reforming
    detector_only: float     # rejected, or correct on the raw input
    reformer_only: float     # correct after reforming
    no_defense: float        # correct on the raw input
    detection_rate: float    # fraction rejected

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

    def evaluate(self, y: np.ndarray) -> MagNetEvaluation:
        raw_ok, reformed_ok = self.pred_raw == y, self.pred_reformed == y
        return MagNetEvaluation(with_defense=float((self.rejected | reformed_ok).mean()),
                                detector_only=float((self.rejected | raw_ok).mean()),
                                reformer_only=float(reformed_ok.mean()), no_defense=float(raw_ok.mean()),
                                detection_rate=float(self.rejected.mean()))


class MagNet:
    """Detectors + reformer + classifier.

    Every method makes one sweep over the inputs in which the detectors and the reformer share their forward
    passes (``ForwardPasses``): the cost of scoring is about that of ``f(x)``, ``ae(x)`` and ``f(ae(x))``.

    :param classifier: Module returning logits for raw-space input.
    :param detectors: Fitted or unfitted MagNet/MID detectors (``fit`` sets all thresholds), as a list or as a
        ``{name: detector}`` dict (list entries are named ``<index>_<label>``).
    :param reformer: ``Reformer`` or ``None``.
    """

    def __init__(self, classifier: nn.Module, detectors: list[_ThresholdDetector] | dict[str, _ThresholdDetector],
                 reformer: Reformer | None, device=None) -> None:
        if not detectors and reformer is None:
            raise ValueError("MagNet needs at least one detector or a reformer")
        if not isinstance(detectors, dict):
            detectors = {f"{i}_{det.label}": det for i, det in enumerate(detectors)}
        for name, det in detectors.items():
            if not isinstance(det, _ThresholdDetector):
                raise TypeError(f"detector {name!r} must be a MagNet or MID detector, got {type(det).__name__}")
        if reformer is not None and not isinstance(reformer, Reformer):
            raise TypeError(f"reformer must be a Reformer or None, got {type(reformer).__name__}")
        self.classifier = classifier.eval()
        self.named_detectors = dict(detectors)
        self.reformer = reformer
        self.device = torch.device(device) if device is not None else torch.device("cpu")

    @property
    def detectors(self) -> list[_ThresholdDetector]:
        return list(self.named_detectors.values())

    def to(self, device) -> "MagNet":
        self.device = torch.device(device)
        for det in self.detectors:
            det.device = self.device
        return self

    def fit(self, x_val, batch_size: int = 256) -> "MagNet":
        """Set every detector's threshold on clean validation inputs."""
        for det in self.detectors:
            det.fit(x_val, batch_size=batch_size)
        return self

    def run(self, x, batch_size: int = 256) -> MagNetOutputs:
        """Score, flag and classify ``x`` in one sweep with shared forward passes."""
        x = _as_tensor(x)
        for name, det in self.named_detectors.items():
            if det.threshold is None:
                raise ValueError(f"detector {name!r} is not fitted: call MagNet.fit(x_clean_validation) first")
        modules = [self.classifier] + [m for det in self.detectors for m in det._modules()]
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

        batches = _over_batches(one_batch, x, batch_size, self.device)
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
        x = _as_tensor(x)
        self.classifier.to(self.device)
        if self.reformer is None:
            return _batched(self.classifier, x, batch_size, self.device).argmax(1).numpy()
        self.reformer.ae.to(self.device)
        return torch.cat(_over_batches(lambda p: p.reformed_logits(self.classifier, self.reformer).argmax(1).cpu(),
                                       x, batch_size, self.device)).numpy()

    def evaluate(self, x, y, batch_size: int = 256) -> MagNetEvaluation:
        """MagNet's metric on ``(x, y)``: an input is handled when rejected or classified correctly after reforming."""
        x = _as_tensor(x)
        y = np.asarray(y)
        if y.shape != (len(x),):
            raise ValueError(f"y must have shape ({len(x)},), got {y.shape}")
        return self.run(x, batch_size).evaluate(y)


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
        x = _as_tensor(x)
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
        y = np.asarray(y)
        if y.shape != (len(_as_tensor(x)),):
            raise ValueError(f"y must have shape ({len(x)},), got {y.shape}")
        return self.run(x, batch_size).evaluate(y)
