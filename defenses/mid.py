"""MID: the mutual-information detector (Hsu et al., GlobalSIP 2018; algorithms.md §1) and its Jaccard metric.

X = f(x) and Y = f(ae(x)) are the classifier's outputs on an input and on its reconstruction. The slide's
"Jaccard distance" ``1 - d(X,Y)/H(X,Y)`` equals ``I(X,Y)/H(X,Y)``, a similarity in [0, 1] (§1.2). For one
input, the outer product of the two output vectors is an independent joint (I = 0), so the joint needs a
population or a coupling (§1.5); three estimators sit behind ``estimator=``:

- ``population_pmi`` (default): the clean-data soft confusion matrix Π = mean P Qᵀ, and per input the
  expected pointwise MI ``m(x) = P(x)ᵀ log(Π / p_X p_Y) Q(x)``, whose clean mean is I;
- ``coord_hist``: the K coordinate pairs (P_k, Q_k) as samples, histogrammed in 10 bins on [0, 1];
- ``max_coupling``: ``p(i,i) = min(P_i, Q_i)``, the residual mass spread as an outer product.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .magnet import ForwardPasses, _as_tensor, _over_batches, _ThresholdDetector, threshold_for

ESTIMATORS = ("population_pmi", "coord_hist", "max_coupling")
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


def max_coupling_similarity(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Per input: the maximal coupling ``p(i,i) = min(P_i, Q_i)`` plus the residuals' outer product, then I/H."""
    out = np.empty(len(p))
    for i, (a, b) in enumerate(zip(np.asarray(p, np.float64), np.asarray(q, np.float64), strict=True)):
        common = np.minimum(a, b)
        rest = 1.0 - common.sum()
        joint = np.diag(common)
        if rest > 1e-12:
            joint = joint + rest * np.outer((a - common) / rest, (b - common) / rest)
        out[i] = jaccard_from_joint(joint)
    return out


class MutualInformationDetector(_ThresholdDetector):
    """MID as an ART ``EvasionDetector``: flags inputs whose f(x)/f(ae(x)) agreement is unusually low.

    ``report["scores"]`` are anomaly scores (the negated similarity); ``similarity(x)`` gives the similarity.

    :param classifier: Module returning logits.
    :param ae: Module mapping x to a reconstruction (default pairing: a MagNet autoencoder), or ``None``
        when ``encoder`` and ``decoder`` are given (e.g. an α-GAN, ``ae = decoder ∘ encoder``).
    :param estimator: ``population_pmi``, ``coord_hist`` or ``max_coupling``.
    :param temperature: Softmax temperature T (``max_coupling`` needs T > 1 on confident models).
    :param drop_rate: False-positive budget on clean validation data.
    """

    defence_params = ["estimator", "temperature", "drop_rate"]

    def __init__(self, classifier: nn.Module, ae: nn.Module | None = None, *, encoder: nn.Module | None = None,
                 decoder: nn.Module | None = None, estimator: str = "population_pmi", temperature: float = 1.0,
                 drop_rate: float = 0.001, device=None) -> None:
        if (ae is None) == (encoder is None or decoder is None):
            raise ValueError("give either ae, or both encoder and decoder")
        self.classifier = classifier.eval()
        self.ae = ae.eval() if ae is not None else nn.Sequential(encoder, decoder).eval()
        self.estimator = estimator
        self.temperature = temperature
        self.pmi: np.ndarray | None = None
        self.clean_similarity: float | None = None
        super().__init__(drop_rate, device)

    def _check_params(self) -> None:
        super()._check_params()
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {list(ESTIMATORS)}, got {self.estimator!r}")
        if not isinstance(self.temperature, (int, float)) or self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature!r}")

    @property
    def label(self) -> str:
        return f"mid_{self.estimator}"

    def _probabilities_batch(self, passes: ForwardPasses) -> tuple[torch.Tensor, torch.Tensor]:
        t = float(self.temperature)
        return (torch.softmax(passes.logits(self.classifier) / t, 1),
                torch.softmax(passes.logits_of_recon(self.classifier, self.ae) / t, 1))

    def probabilities(self, x, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """``(P, Q)``: softmax_T of the classifier on x and on ae(x)."""
        x = _as_tensor(x)
        for module in self._modules():
            module.to(self.device)
        batches = _over_batches(self._probabilities_batch, x, batch_size, self.device)
        return (torch.cat([b[0].cpu() for b in batches]).double().numpy(),
                torch.cat([b[1].cpu() for b in batches]).double().numpy())

    def fit(self, x, y=None, batch_size: int = 256, nb_epochs: int = 0, **kwargs) -> None:
        """Build the clean population joint (for ``population_pmi``) and set the threshold on clean ``x``."""
        p, q = self.probabilities(x, batch_size)
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
