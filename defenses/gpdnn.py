"""GPDNN (Bradshaw, Matthews & Ghahramani 2017; algorithms.md §8): a CNN feeding a sparse variational GP classifier.

The feature extractor maps an image to ``D`` features; one latent GP per class (a shared RBF kernel, shared inducing
inputs ``Z``, a separate ``q(u_k)`` per class) turns them into ``f(x) ∈ R^K``; the robust-max likelihood of §8.1 turns
``f`` into a class: ``p(y | f) = 1 − ε`` if ``y = argmax f``, else ``ε / (K − 1)``. Everything is trained end to end
on the SVGP bound ``Σ_n E_q[log p(y_n | f(x_n))] − KL(q(u) ‖ p(u))`` (GPyTorch ``VariationalELBO``), with the
expectation computed by 1-D Gauss–Hermite quadrature as GPflow's ``RobustMax`` does.

:class:`GPDNNClassifier` returns the log predictive probabilities ``log p(y | x)`` as its output (§8.2: a GPDNN has no
logits), so ``Model(GPDNNClassifier(...), (1, 28, 28))`` runs every ART and Foolbox attack, with gradients flowing
through the quadrature into the input. Because those outputs already sum to one in probability space,
``softmax(log p) = p`` and ART's cross-entropy loss on them is the negative log predictive probability.

Needs GPyTorch: ``pip install 'advbridge[gp]'``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import torch
from torch import nn
from tqdm.auto import tqdm

try:
    import gpytorch
    from gpytorch.distributions import MultitaskMultivariateNormal, MultivariateNormal
    from gpytorch.likelihoods import Likelihood
    from gpytorch.utils.quadrature import GaussHermiteQuadrature1D
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise ImportError("advbridge.defenses.gpdnn needs GPyTorch: pip install 'advbridge[gp]'") from err

from .params import check_positive_int

logger = logging.getLogger(__name__)

#: GPflow's ``RobustMax`` default (§8.1: β fixed small).
ROBUST_MAX_EPSILON = 1e-3
#: GPflow's ``RobustMax`` uses 20 Gauss–Hermite points.
QUADRATURE_POINTS = 20
#: GPflow keeps every Gaussian CDF inside [1e-4, 1 − 1e-4] so that no factor of the product is exactly 0 or 1.
CDF_JITTER = 1e-4


def _shuffled_batches(n: int, batch_size: int, generator: torch.Generator):
    """Index tensors of one epoch's minibatches over a fresh seeded permutation of ``range(n)``."""
    perm = torch.randperm(n, generator=generator)
    for start in range(0, n, batch_size):
        yield perm[start:start + batch_size]


# --------------------------------------------------------------------------- likelihood
class RobustMaxLikelihood(Likelihood):
    """Robust-max likelihood: ``p(y | f) = 1 − ε`` if ``y = argmax_k f_k``, else ``ε / (K − 1)``.

    Under a factorised Gaussian ``q(f) = Π_k N(μ_k, σ_k²)`` the probability that class ``k`` is the largest is
    ``P_k = ∫ N(t; μ_k, σ_k²) Π_{j≠k} Φ((t − μ_j) / σ_j) dt``, a 1-D integral done by Gauss–Hermite quadrature
    (``GaussHermiteQuadrature1D``). Then ``E_q[log p(y | f)] = P_y log(1 − ε) + (1 − P_y) log(ε / (K − 1))`` and the
    predictive probability is ``p(y = k | x) = (1 − ε) P_k + ε / (K − 1) (1 − P_k)``.

    :param num_classes: ``K`` (at least 2).
    :param epsilon: ``ε`` in (0, 1 − 1/K); fixed, not learned (GPflow's default 1e-3).
    :param num_quadrature: Gauss–Hermite points.
    """

    def __init__(self, num_classes: int, epsilon: float = ROBUST_MAX_EPSILON,
                 num_quadrature: int = QUADRATURE_POINTS) -> None:
        super().__init__()
        num_classes = check_positive_int(num_classes, "num_classes")
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or \
                not 0 < epsilon < 1 - 1 / num_classes:
            raise ValueError(f"epsilon must lie in (0, 1 - 1/num_classes) = (0, {1 - 1 / num_classes:.4g}), "
                             f"got {epsilon!r}")
        self.num_classes = num_classes
        self.epsilon = float(epsilon)
        self.quadrature = GaussHermiteQuadrature1D(num_locs=check_positive_int(num_quadrature, "num_quadrature"))

    @property
    def log_correct(self) -> float:
        """``log(1 − ε)``."""
        return math.log1p(-self.epsilon)

    @property
    def log_wrong(self) -> float:
        """``log(ε / (K − 1))``."""
        return math.log(self.epsilon / (self.num_classes - 1))

    @staticmethod
    def _moments(function_dist) -> tuple[torch.Tensor, torch.Tensor]:
        """Marginal means and variances ``(..., N, K)`` of ``q(f)``."""
        if not isinstance(function_dist, MultitaskMultivariateNormal):
            raise TypeError(f"function_dist must be a MultitaskMultivariateNormal over (N, K), got "
                            f"{type(function_dist).__name__}")
        return function_dist.mean, function_dist.variance.clamp_min(1e-10)

    def prob_is_largest(self, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
        """``P_k``: the probability that class ``k`` has the largest latent value, shape ``(..., N, K)``.

        :param mean: ``μ``, shape ``(..., N, K)``.
        :param var: ``σ²``, same shape, positive.
        """
        if mean.shape != var.shape or mean.shape[-1] != self.num_classes:
            raise ValueError(f"mean and var must both have shape (..., N, {self.num_classes}), got "
                             f"{tuple(mean.shape)} and {tuple(var.shape)}")
        std = var.sqrt()
        eye = torch.eye(self.num_classes, dtype=torch.bool, device=mean.device)

        def product_of_cdfs(t: torch.Tensor) -> torch.Tensor:
            # t: (Q, ..., N, K), the candidate maximum t_k for every class k; z[..., k, j] = (t_k − μ_j) / σ_j.
            z = (t.unsqueeze(-1) - mean.unsqueeze(-2)) / std.unsqueeze(-2)
            cdf = 0.5 * (1.0 + torch.erf(z / math.sqrt(2.0)))
            cdf = cdf * (1 - 2 * CDF_JITTER) + CDF_JITTER
            cdf = torch.where(eye, torch.ones_like(cdf), cdf)
            return cdf.prod(-1)

        return self.quadrature(product_of_cdfs, torch.distributions.Normal(mean, std))

    def predictive_probs(self, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
        """``p(y = k | x)``, shape ``(..., N, K)``; rows sum to 1 (the quadrature's ``Σ_k P_k`` is renormalised)."""
        p_max = self.prob_is_largest(mean, var)
        p_max = p_max / p_max.sum(-1, keepdim=True)
        wrong = self.epsilon / (self.num_classes - 1)
        return (1 - self.epsilon) * p_max + wrong * (1 - p_max)

    def forward(self, function_samples: torch.Tensor, *args, **kwargs) -> torch.distributions.Categorical:
        """``p(y | f)`` for samples ``f`` of shape ``(..., N, K)``: a categorical distribution."""
        top = function_samples.argmax(-1, keepdim=True)
        probs = torch.full_like(function_samples, self.epsilon / (self.num_classes - 1))
        probs.scatter_(-1, top, 1 - self.epsilon)
        return torch.distributions.Categorical(probs=probs)

    def expected_log_prob(self, observations: torch.Tensor, function_dist, *args, **kwargs) -> torch.Tensor:
        """``E_{q(f)}[log p(y | f)]`` per observation, shape ``(..., N)`` (quadrature, no sampling)."""
        mean, var = self._moments(function_dist)
        p_max = self.prob_is_largest(mean, var)
        p_y = p_max.gather(-1, observations.long().unsqueeze(-1)).squeeze(-1)
        return p_y * self.log_correct + (1 - p_y) * self.log_wrong

    def marginal(self, function_dist, *args, **kwargs) -> torch.distributions.Categorical:
        """The predictive ``p(y | x)`` as a categorical distribution."""
        return torch.distributions.Categorical(probs=self.predictive_probs(*self._moments(function_dist)))


# --------------------------------------------------------------------------- the GP
class MulticlassSVGP(gpytorch.models.ApproximateGP):
    """``K`` independent latent GPs sharing an RBF kernel (with an output scale) and the inducing inputs ``Z``.

    The variational posterior ``q(u_k) = N(m_k, S_k)`` (whitened, full Cholesky ``S_k``) is separate per class, via a
    ``[K]`` batch shape; ``IndependentMultitaskVariationalStrategy`` turns the batch into a ``(N, K)`` output.

    :param inducing_points: Initial ``Z``, shape ``(M, D)``; learned.
    :param num_classes: ``K``.
    """

    def __init__(self, inducing_points: torch.Tensor, num_classes: int) -> None:
        if inducing_points.ndim != 2:
            raise ValueError(f"inducing_points must have shape (M, D), got {tuple(inducing_points.shape)}")
        num_classes = check_positive_int(num_classes, "num_classes")
        batch = torch.Size([num_classes])
        q_u = gpytorch.variational.CholeskyVariationalDistribution(inducing_points.size(0), batch_shape=batch)
        strategy = gpytorch.variational.IndependentMultitaskVariationalStrategy(
            gpytorch.variational.VariationalStrategy(self, inducing_points, q_u, learn_inducing_locations=True),
            num_tasks=num_classes)
        super().__init__(strategy)
        self.num_classes = num_classes
        self.mean_module = gpytorch.means.ConstantMean(batch_shape=batch)
        self.covar_module = gpytorch.kernels.ScaleKernel(gpytorch.kernels.RBFKernel())  # shared by all classes

    def forward(self, features: torch.Tensor) -> MultivariateNormal:
        return MultivariateNormal(self.mean_module(features), self.covar_module(features))


# --------------------------------------------------------------------------- the classifier
class GPDNNClassifier(nn.Module):
    """A GPDNN whose output is ``log p(y | x)`` (§8.2), so that ``Model(GPDNNClassifier(...), ...)`` is attackable.

    :param features: Maps an input batch to ``(N, D)`` features.
    :param inducing_points: Initial inducing inputs ``(M, D)`` in feature space (:func:`kmeans_inducing_points` or
        :func:`train_gpdnn` sets better ones from data).
    :param num_classes: ``K``.
    :param epsilon: Robust-max ``ε``.
    :param num_quadrature: Gauss–Hermite points.
    """

    def __init__(self, features: nn.Module, inducing_points: torch.Tensor, num_classes: int = 10,
                 epsilon: float = ROBUST_MAX_EPSILON, num_quadrature: int = QUADRATURE_POINTS) -> None:
        super().__init__()
        if not isinstance(features, nn.Module):
            raise TypeError(f"features must be a torch.nn.Module, got {type(features).__name__}")
        self.features = features
        self.gp = MulticlassSVGP(inducing_points, num_classes)
        self.likelihood = RobustMaxLikelihood(num_classes, epsilon, num_quadrature)
        self.num_classes = num_classes

    @property
    def num_inducing(self) -> int:
        return int(self.gp.variational_strategy.base_variational_strategy.inducing_points.shape[-2])

    def train(self, mode: bool = True) -> "GPDNNClassifier":
        """Set the mode; the GP itself always runs in GPyTorch's training mode.

        GPyTorch caches ``chol(K_ZZ)`` in eval mode, and a cached tensor built with gradients enabled cannot be
        back-propagated through twice (every attack step would fail after the first). In training mode nothing is
        cached and ``q(f(x))`` is the same distribution, so predictions are unchanged.
        """
        super().train(mode)
        self.gp.train(True)
        self.likelihood.train(True)
        return self

    def latent(self, x: torch.Tensor):
        """``q(f(x))``: a ``MultitaskMultivariateNormal`` with ``(N, K)`` marginals."""
        return self.gp(self.features(x))

    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """``p(y = k | x)``, shape ``(N, K)``; each row sums to 1."""
        f = self.latent(x)
        return self.likelihood.predictive_probs(f.mean, f.variance.clamp_min(1e-10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``log p(y = k | x)``: the GPDNN's stand-in for logits (§8.2)."""
        return self.predict_proba(x).clamp_min(1e-30).log()


# --------------------------------------------------------------------------- training
def kmeans_inducing_points(features: torch.Tensor, num_inducing: int, *, iterations: int = 20,
                           seed: int = 0) -> torch.Tensor:
    """``num_inducing`` k-means centres of ``features`` (§8.1 [R]: inducing points initialised by k-means).

    :param features: ``(N, D)`` with ``N >= num_inducing``.
    :param iterations: Lloyd iterations after a seeded random initialisation from the data.
    """
    num_inducing = check_positive_int(num_inducing, "num_inducing")
    if features.ndim != 2 or len(features) < num_inducing:
        raise ValueError(f"features must have shape (N, D) with N >= num_inducing = {num_inducing}, got "
                         f"{tuple(features.shape)}")
    gen = torch.Generator().manual_seed(seed)
    centres = features[torch.randperm(len(features), generator=gen)[:num_inducing].to(features.device)].clone()
    for _ in range(iterations):
        assign = torch.cdist(features, centres).argmin(1)
        sums = torch.zeros_like(centres).index_add_(0, assign, features)
        counts = torch.bincount(assign, minlength=num_inducing).unsqueeze(1).to(features.dtype)
        centres = torch.where(counts > 0, sums / counts.clamp_min(1), centres)  # an empty cluster keeps its centre
    return centres


def pretrain_features(features: nn.Module, x: torch.Tensor, y: torch.Tensor, *, num_classes: int = 10,
                      epochs: int = 3, lr: float = 1e-3, batch_size: int = 128, seed: int = 0,
                      device: str | torch.device = "cpu", progress: bool = True) -> list[float]:
    """Cross-entropy pre-training of ``features`` under a temporary linear softmax head (then discarded).

    End-to-end ELBO training from random features is slow to start: ``q(u)`` begins at the prior, the predictive
    mean is flat, and Adam's normalised steps on near-zero gradients spread the features until ``k(x, Z)``
    vanishes. A few epochs of supervised pre-training (as deep kernel learning does) avoid that.

    :returns: The mean cross-entropy of each epoch.
    """
    check_positive_int(epochs, "epochs")
    check_positive_int(batch_size, "batch_size")
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"x and y must be non-empty and of equal length, got {len(x)} and {len(y)}")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    features.to(device).train()
    with torch.no_grad():
        dim = features(x[:1].to(device)).shape[-1]
    net = nn.Sequential(features, nn.Linear(dim, num_classes)).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    history = []
    for _ in tqdm(range(epochs), desc="pretrain gpdnn features", unit="epoch", leave=False, disable=not progress):
        total = 0.0
        for idx in _shuffled_batches(len(x), batch_size, gen):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(net(x[idx].to(device)), y[idx].to(device))
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        history.append(total / len(x))
    features.eval()
    return history


def build_gpdnn(features: nn.Module, x: torch.Tensor, *, num_inducing: int = 100, num_classes: int = 10,
                epsilon: float = ROBUST_MAX_EPSILON, seed: int = 0, device: str | torch.device = "cpu",
                batch_size: int = 512) -> GPDNNClassifier:
    """A :class:`GPDNNClassifier` whose inducing inputs are k-means centres of ``features(x)``.

    :param features: The feature extractor (trained or freshly initialised).
    :param x: Training inputs used for the k-means initialisation.
    """
    features = features.to(device)
    with torch.no_grad():
        was_training = features.training
        features.eval()
        feats = torch.cat([features(x[i:i + batch_size].to(device)) for i in range(0, len(x), batch_size)])
        features.train(was_training)
    z = kmeans_inducing_points(feats, num_inducing, seed=seed)
    classifier = GPDNNClassifier(features, z, num_classes, epsilon).to(device)
    # Median heuristic: with the default lengthscale (0.69) most features sit many lengthscales from every inducing
    # input, k(x, Z) underflows to 0, q(f(x)) is the prior and no gradient reaches the features.
    sub = feats[torch.randperm(len(feats), generator=torch.Generator().manual_seed(seed))[:500].to(feats.device)]
    dist = torch.pdist(sub)
    classifier.gp.covar_module.base_kernel.lengthscale = float(dist.median()) if dist.numel() else 1.0
    return classifier


def train_gpdnn(classifier: GPDNNClassifier, x: torch.Tensor, y: torch.Tensor, *, epochs: int = 20,
                lr: float = 1e-3, batch_size: int = 128, seed: int = 0, device: str | torch.device = "cpu",
                progress: bool = True, callback: Callable[[int, float], None] | None = None) -> list[float]:
    """Train features, kernel, inducing inputs and ``q(u)`` jointly on the negative ELBO (Adam, minibatches).

    The bound is GPyTorch's ``VariationalELBO`` with ``num_data = len(x)``: per minibatch, the mean expected
    log-likelihood minus ``KL(q(u) ‖ p(u)) / N``.

    :param classifier: The model (from :func:`build_gpdnn`).
    :param x: Training inputs.
    :param y: Integer labels ``(N,)``.
    :param epochs: Passes over the data.
    :param lr: Adam learning rate for all parameters.
    :param callback: Called as ``callback(epoch, mean_loss)`` after each epoch.
    :returns: The mean negative ELBO (per datum) of each epoch.
    """
    check_positive_int(epochs, "epochs")
    check_positive_int(batch_size, "batch_size")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or lr <= 0:
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"x and y must be non-empty and of equal length, got {len(x)} and {len(y)}")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    classifier.to(device).train()
    elbo = gpytorch.mlls.VariationalELBO(classifier.likelihood, classifier.gp, num_data=len(x))
    opt = torch.optim.Adam(classifier.parameters(), lr=lr)
    history = []
    for epoch in tqdm(range(epochs), desc="train gpdnn", unit="epoch", leave=False, disable=not progress):
        total = 0.0
        for idx in _shuffled_batches(len(x), batch_size, gen):
            xb, yb = x[idx].to(device), y[idx].to(device)
            opt.zero_grad()
            loss = -elbo(classifier.latent(xb), yb)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        history.append(total / len(x))
        logger.debug("gpdnn epoch %d: -ELBO %.4f", epoch, history[-1])
        if callback is not None:
            callback(epoch, history[-1])
    classifier.eval()
    return history


def fit_gpdnn(features: nn.Module, x: torch.Tensor, y: torch.Tensor, *, num_classes: int = 10,
              num_inducing: int = 100, pretrain_epochs: int = 3, epochs: int = 10, lr: float = 3e-3,
              batch_size: int = 128, epsilon: float = ROBUST_MAX_EPSILON, seed: int = 0,
              device: str | torch.device = "cpu", progress: bool = True) -> tuple[GPDNNClassifier, dict[str, list]]:
    """The whole recipe: :func:`pretrain_features` (skipped when ``pretrain_epochs == 0``), :func:`build_gpdnn`
    (k-means inducing inputs, median-heuristic lengthscale), then end-to-end :func:`train_gpdnn`.

    :returns: The trained classifier (eval mode) and ``{"pretrain": [...], "elbo": [...]}`` loss histories.
    """
    if isinstance(pretrain_epochs, bool) or not isinstance(pretrain_epochs, int) or pretrain_epochs < 0:
        raise ValueError(f"pretrain_epochs must be a non-negative integer, got {pretrain_epochs!r}")
    pre = pretrain_features(features, x, y, num_classes=num_classes, epochs=pretrain_epochs, lr=lr,
                            batch_size=batch_size, seed=seed, device=device, progress=progress) \
        if pretrain_epochs else []
    classifier = build_gpdnn(features, x, num_inducing=num_inducing, num_classes=num_classes, epsilon=epsilon,
                             seed=seed, device=device)
    elbo = train_gpdnn(classifier, x, y, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, device=device,
                       progress=progress)
    return classifier, {"pretrain": pre, "elbo": elbo}
