"""MID: the mutual-information detector (Hsu et al., GlobalSIP 2018; algorithms.md §1) and its Jaccard metric.

X = f(x) and Y = f(ae(x)) are the classifier's outputs on an input and on its reconstruction. The slide's
"Jaccard distance" ``1 - d(X,Y)/H(X,Y)`` equals ``I(X,Y)/H(X,Y)``, a similarity in [0, 1] (§1.2). For one
input, the outer product of the two output vectors is an independent joint (I = 0), so the joint needs a
population or a coupling (§1.5); three estimators sit behind ``estimator=``:

- ``population_pmi`` (default): the clean-data soft confusion matrix Π = mean P Qᵀ, and per input the
  expected pointwise MI ``m(x) = P(x)ᵀ log(Π / p_X p_Y) Q(x)``, whose clean mean is I;
- ``coord_hist``: the K coordinate pairs (P_k, Q_k) as samples, histogrammed in 10 bins on [0, 1];
- ``max_coupling``: ``p(i,i) = min(P_i, Q_i)``, the residual mass spread as an outer product. §1.5 says it
  needs T > 1 (MagNet's temperatures are 10 and 40): its default temperature is 40, and T <= 1 is rejected.
  Being a mutual information, it cannot see labels: a flip of a confident class to another scores as
  "predictable" as keeping it, and a large loss of confidence (entropy mismatch) scores lower than a flip at any
  T. A flip ranks below a change of confidence only while that change stays within about a factor 1.5 of the
  logit margin (``MAX_COUPLING_TEMPERATURE``).

The temperature defaults to the reference's: T = 1 for ``population_pmi`` and ``coord_hist`` (§1.5, "default
``population_pmi`` and T = 1"), ``MAX_COUPLING_TEMPERATURE`` = 40 for ``max_coupling``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .magnet import ForwardPasses, Shape, ThresholdDetector, layout_error, over_batches, threshold_for
from .params import check_positive, check_positive_int

ESTIMATORS = ("population_pmi", "coord_hist", "max_coupling")
#: T for ``max_coupling`` when none is given. §1.5 says it needs T > 1 and names MagNet's 10 and 40; 40 is taken
#: because it ranks a flip of the predicted class below a wider range of same-class confidence changes: for a
#: logit margin h = 8 (K = 10, uniform tail), a margin change to c keeps scoring above the flip for
#: c/h in [0.50, 1.46] at T = 40, in [0.76, 1.21] at T = 10 and in [0.98, 1.02] at T = 1.
MAX_COUPLING_TEMPERATURE = 40.0
SMOOTHING = 1e-6
HIST_BINS = 10


def information_terms(joint: np.ndarray) -> tuple[float, float]:
    """``(I(X,Y), H(X,Y))`` in nats of a joint distribution (rows X, columns Y)."""
    joint = np.asarray(joint, dtype=np.float64)
    if joint.ndim != 2 or joint.size == 0 or (joint < 0).any() or not np.isfinite(joint).all():
        raise ValueError("joint must be a non-empty 2-D array of non-negative finite probabilities")
    joint = joint / joint.sum()
    px, py = joint.sum(1, keepdims=True), joint.sum(0, keepdims=True)
    nz = joint > 0
    mi = float((joint[nz] * np.log(joint[nz] / (px @ py)[nz])).sum())
    h_xy = float(-(joint[nz] * np.log(joint[nz])).sum())
    return mi, h_xy


def jaccard_from_joint(joint: np.ndarray) -> float:
    """``I(X,Y) / H(X,Y)`` of a joint distribution, 1 when H(X,Y) = 0."""
    mi, h_xy = information_terms(joint)
    return 1.0 if h_xy <= 1e-12 else float(np.clip(mi / h_xy, 0.0, 1.0))


def population_joint(p: np.ndarray, q: np.ndarray, smoothing: float = SMOOTHING) -> np.ndarray:
    """Π = mean over inputs of P Qᵀ, smoothed and renormalised (the soft confusion matrix of §1.5)."""
    p, q = np.asarray(p, np.float64), np.asarray(q, np.float64)
    if p.shape != q.shape or p.ndim != 2 or len(p) == 0:
        raise ValueError(f"P and Q must be (N, K) arrays of the same shape, got {p.shape} and {q.shape}")
    joint = p.T @ q / len(p) + smoothing
    return joint / joint.sum()


def jaccard_similarity(p: np.ndarray, q: np.ndarray) -> float:
    """The MID Jaccard metric ``I(X,Y)/H(X,Y)`` of two sets of predictions (P on inputs, Q on reconstructions).

    :param p: ``(N, K)`` class probabilities of the classifier on the inputs.
    :param q: ``(N, K)`` class probabilities on their reconstructions.
    :return: A similarity in [0, 1]: near 1 when reconstruction keeps the class structure (natural data),
        lower on adversarial sets. Computed on the population joint Π = mean P Qᵀ; with one input the joint
        is an outer product, X and Y are independent, and the value is 0.
    """
    return jaccard_from_joint(population_joint(p, q))


def coord_hist_similarity(p: np.ndarray, q: np.ndarray, bins: int = HIST_BINS) -> np.ndarray:
    """Per input: the K coordinate pairs (P_k, Q_k) binned on [0, 1] into a joint histogram, then I/H."""
    edges = np.linspace(0.0, 1.0, bins + 1)[1:-1]
    out = np.empty(len(p))
    for i, (a, b) in enumerate(zip(np.asarray(p), np.asarray(q), strict=True)):
        joint = np.zeros((bins, bins))
        np.add.at(joint, (np.digitize(a, edges), np.digitize(b, edges)), 1.0)
        out[i] = jaccard_from_joint(joint / len(a))
    return out


def maximal_coupling(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """The joint of §1.5 Option C for one input: ``diag(min(P, Q)) + (1 − Σmin)·r_P r_Qᵀ``.

    ``r_P = (P − min)/(1 − Σmin)`` and ``r_Q`` likewise are the normalised residuals; the marginals are P and Q and
    ``P(X = Y) = Σ min(P_i, Q_i)`` is the largest any coupling reaches.
    """
    a, b = np.asarray(p, np.float64), np.asarray(q, np.float64)
    common = np.minimum(a, b)
    rest = 1.0 - common.sum()
    joint = np.diag(common)
    if rest > 1e-12:
        joint = joint + rest * np.outer((a - common) / rest, (b - common) / rest)
    return joint


def max_coupling_similarity(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Per input: I/H(X,Y) of the maximal coupling of P and Q (§1.5 Option C); 1 iff P = Q.

    A joint with H(X,Y) = 0 is a point mass: 1 when it sits on the diagonal (P = Q, one-hot), 0 off it (two
    different one-hot predictions, a total flip), where ``jaccard_from_joint``'s convention would say 1.
    Use it with T > 1 (the detector's default is 40), where softmax outputs are never exactly one-hot.
    """
    p, q = np.asarray(p, np.float64), np.asarray(q, np.float64)
    if p.shape != q.shape or p.ndim != 2:
        raise ValueError(f"P and Q must be (N, K) arrays of the same shape, got {p.shape} and {q.shape}")
    out = np.empty(len(p))
    for i, (a, b) in enumerate(zip(p, q, strict=True)):
        joint = maximal_coupling(a, b)
        mi, h_xy = information_terms(joint)
        if h_xy <= 1e-12:
            out[i] = float(np.trace(joint) / joint.sum() > 1 - 1e-12)
        else:
            out[i] = float(np.clip(mi / h_xy, 0.0, 1.0))
    return out


class MutualInformationDetector(ThresholdDetector):
    """MID as an ART ``EvasionDetector``: flags inputs whose f(x)/f(ae(x)) agreement is unusually low.

    ``report["scores"]`` are anomaly scores (the negated similarity); ``similarity(x)`` gives the similarity.

    :param classifier: Module returning logits.
    :param ae: Module mapping x to a reconstruction (default pairing: a MagNet autoencoder), or ``None``
        when ``encoder`` and ``decoder`` are given (e.g. an α-GAN, ``ae = decoder ∘ encoder``).
    :param estimator: ``population_pmi``, ``coord_hist`` or ``max_coupling``.
    :param temperature: Softmax temperature T, finite and > 0; ``None`` is the reference's default for the
        estimator (1, or 40 for ``max_coupling``, which needs T > 1).
    :param drop_rate: False-positive budget on clean validation data.
    :param input_shape: ``(C, H, W)``; ``None`` takes it from ``fit``'s data.
    :param bounds: Data range of the inputs.
    """

    defence_params = ["estimator", "temperature", "drop_rate"]

    def __init__(self, classifier: nn.Module, ae: nn.Module | None = None, *, encoder: nn.Module | None = None,
                 decoder: nn.Module | None = None, estimator: str = "population_pmi",
                 temperature: float | None = None, drop_rate: float = 0.001, device=None,
                 input_shape: Shape | None = None, bounds: tuple[float, float] = (0.0, 1.0)) -> None:
        if (ae is None) == (encoder is None or decoder is None):
            raise ValueError("give either ae, or both encoder and decoder")
        self.classifier = classifier.eval()
        if ae is not None:
            self.ae = ae.eval()
        elif encoder is not None and decoder is not None:  # always so here, by the check above
            self.ae = nn.Sequential(encoder, decoder).eval()
        self.estimator = estimator
        if temperature is None:
            temperature = MAX_COUPLING_TEMPERATURE if estimator == "max_coupling" else 1.0
        self.temperature = temperature
        self.pmi: np.ndarray | None = None
        self.clean_similarity: float | None = None
        super().__init__(drop_rate, device, input_shape, bounds)

    def _check_params(self) -> None:
        super()._check_params()
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {list(ESTIMATORS)}, got {self.estimator!r}")
        self.temperature = check_positive(self.temperature, "temperature")
        if self.estimator == "max_coupling" and not self.temperature > 1:
            raise ValueError(f"temperature must be > 1 for estimator 'max_coupling' (algorithms.md §1.5; default "
                             f"{MAX_COUPLING_TEMPERATURE:g}), got {self.temperature!r}")

    @property
    def label(self) -> str:
        return f"mid_{self.estimator}"

    def _probabilities_batch(self, passes: ForwardPasses) -> tuple[torch.Tensor, torch.Tensor]:
        t = float(self.temperature)
        return (torch.softmax(passes.logits(self.classifier) / t, 1),
                torch.softmax(passes.logits_of_recon(self.classifier, self.ae) / t, 1))

    def probabilities(self, x, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """``(P, Q)``: softmax_T of the classifier on x and on ae(x)."""
        return self._probabilities_checked(self.check_x(x), batch_size)

    def _probabilities_checked(self, x: torch.Tensor, batch_size: int,
                               learning: bool = False) -> tuple[np.ndarray, np.ndarray]:
        check_positive_int(batch_size, "batch_size")
        for module in self.torch_modules():
            module.to(self.device)
        try:
            batches = over_batches(self._probabilities_batch, x, batch_size, self.device)
        except RuntimeError as err:
            if isinstance(err, torch.OutOfMemoryError) or not self._unchecked_layout(learning):
                raise
            raise layout_error(x, type(self).__name__, err) from err
        return (torch.cat([b[0].cpu() for b in batches]).double().numpy(),
                torch.cat([b[1].cpu() for b in batches]).double().numpy())

    def fit(self, x, y=None, batch_size: int = 256, nb_epochs: int = 0, **kwargs) -> None:
        """Build the clean population joint (for ``population_pmi``) and set the threshold on clean ``x``."""
        p, q = self._probabilities_checked(self._fit_input(x, batch_size), batch_size, learning=True)
        joint = population_joint(p, q)
        self.pmi = np.log(joint / (joint.sum(1, keepdims=True) @ joint.sum(0, keepdims=True)))
        self.clean_similarity = jaccard_from_joint(joint)
        self.threshold = threshold_for(-self._similarity_from(p, q), self.drop_rate)

    def similarity(self, x, batch_size: int = 256) -> np.ndarray:
        """Per-input similarity (higher = more natural)."""
        return self._similarity_from(*self.probabilities(x, batch_size))

    def _similarity_from(self, p: np.ndarray, q: np.ndarray) -> np.ndarray:
        if self.estimator == "coord_hist":
            return coord_hist_similarity(p, q)
        if self.estimator == "max_coupling":
            return max_coupling_similarity(p, q)
        if self.pmi is None:
            raise ValueError("MutualInformationDetector with population_pmi is not fitted: call fit(x_clean) first")
        return np.einsum("nk,kl,nl->n", p, self.pmi, q)

    def score_batch(self, passes: ForwardPasses) -> torch.Tensor:
        p, q = self._probabilities_batch(passes)
        return torch.from_numpy(-self._similarity_from(p.cpu().double().numpy(), q.cpu().double().numpy()))
