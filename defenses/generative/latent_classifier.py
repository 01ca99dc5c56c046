"""A classifier on a VAE's latent means, and the generative classifier the Kos attacks target (algorithms.md §4).

Kos, Fischer & Song (2017) attack a VAE through a small classifier ``f_class`` trained on the latent means
``μ(x)`` of the training set with the encoder frozen (§4.1 item 1), and evaluate with "reconstruction
feedback": ``ŷ = f_class(μ(f_dec(μ(x))))`` (§4.3).

`GenerativeClassifier` is that system as one ``nn.Module`` returning logits, so it can be wrapped in a bridge
``Model``. It also exposes, duck-typed, the pieces the Kos attacks (``advbridge.bridge.attacks.kos_*``) need:
``encode_mean``, ``decode``, ``classify_latent``, ``neg_elbo`` and ``target_image``.

The VAE is any module with ``encode(x) -> (mu, logvar)``, ``decode(z) -> images``,
``neg_elbo(x_in, x_target) -> (B,)`` and ``latent_dim``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol, cast

import torch
from torch import nn
from torch.nn import functional as F

logger = logging.getLogger(__name__)

_VAE_METHODS = ("encode", "decode", "neg_elbo")


class _VAELike(Protocol):
    """What `GenerativeClassifier` uses of its VAE (checked, duck-typed, in its ``__init__``)."""

    latent_dim: int

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def decode(self, z: torch.Tensor) -> torch.Tensor: ...

    def neg_elbo(self, x_in: torch.Tensor, x_target: torch.Tensor) -> torch.Tensor: ...


class LatentClassifier(nn.Module):
    """A small MLP on latent means: ``latent_dim → hidden → hidden → nb_classes`` with ReLU, returning logits.

    :param latent_dim: Size of the latent code.
    :param nb_classes: Number of classes.
    :param hidden: Width of the two hidden layers.
    """

    def __init__(self, latent_dim: int, nb_classes: int = 10, hidden: int = 128) -> None:
        super().__init__()
        for name, value in (("latent_dim", latent_dim), ("nb_classes", nb_classes), ("hidden", hidden)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if nb_classes < 2:
            raise ValueError(f"nb_classes must be at least 2, got {nb_classes}")
        self.latent_dim = latent_dim
        self.nb_classes = nb_classes
        self.net = nn.Sequential(nn.Linear(latent_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, nb_classes))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


def _owner_module(fn: Callable) -> nn.Module | None:
    owner = getattr(fn, "__self__", None)
    return owner if isinstance(owner, nn.Module) else None


@torch.no_grad()
def _encode_means(encode: Callable, x: torch.Tensor, device: torch.device, batch_size: int = 512) -> torch.Tensor:
    """``encode(x)[0]`` in batches, without gradient, on ``device`` (the encoder's module in eval mode)."""
    owner = _owner_module(encode)
    was_training = owner.training if owner is not None else False
    if owner is not None:
        owner.eval()
    try:
        return torch.cat([encode(x[s:s + batch_size].to(device, torch.float32))[0].flatten(1)
                          for s in range(0, len(x), batch_size)])
    finally:
        if owner is not None:
            owner.train(was_training)


def train_latent_classifier(classifier: nn.Module, encode: Callable, x: torch.Tensor, y: torch.Tensor, *,
                            epochs: int = 20, batch_size: int = 128, lr: float = 1e-3, seed: int = 0,
                            device: str | torch.device = "cpu") -> list[float]:
    """Train ``classifier`` on the latent means ``μ = encode(x)[0]`` with the encoder frozen (§4.1 item 1).

    The means are computed once, without gradient (the encoder gets none, and a module owning ``encode`` is
    evaluated in eval mode), then the classifier is trained with Adam and cross-entropy on shuffled batches.

    :param classifier: The latent classifier (e.g. `LatentClassifier`); trained in place, left in eval mode.
    :param encode: ``x -> (mu, logvar)``, e.g. ``vae.encode``.
    :param x: Training images.
    :param y: Their labels, shape ``(N,)``.
    :param epochs: Passes over the data.
    :param batch_size: Samples per step.
    :param lr: Adam learning rate.
    :param seed: Seeds the initial shuffle generator (the classifier's own initialisation is the caller's).
    :param device: Where to train.
    :return: Mean training loss of each epoch.
    """
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr!r}")
    x = torch.as_tensor(x)
    y = torch.as_tensor(y).long().flatten()
    if len(x) != len(y):
        raise ValueError(f"x and y must have the same length, got {len(x)} and {len(y)}")
    device = torch.device(device)
    mu = _encode_means(encode, x, device)
    y = y.to(device)
    classifier.to(device).train()
    opt = torch.optim.Adam(classifier.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    history = []
    for epoch in range(epochs):
        perm = torch.randperm(len(mu), generator=gen).to(device)
        total = 0.0
        for start in range(0, len(mu), batch_size):
            idx = perm[start:start + batch_size]
            loss = F.cross_entropy(classifier(mu[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        history.append(total / len(mu))
        logger.debug("latent classifier epoch %d: loss %.4f", epoch, history[-1])
    classifier.eval()
    return history


class GenerativeClassifier(nn.Module):
    """A VAE and a latent classifier as one classifier returning logits (Kos et al. §4.1, §4.3).

    ``forward(x)`` is ``f_class(μ(x))``, or with ``feedback=True`` the reconstruction-feedback prediction
    ``f_class(μ(f_dec(μ(x))))`` of §4.3. Encodings always use the mean ``μ``, never a sample.

    :param vae: Module with ``encode(x) -> (mu, logvar)``, ``decode(z) -> images``,
        ``neg_elbo(x_in, x_target) -> (B,)`` and ``latent_dim``.
    :param latent_classifier: Module mapping latent means ``(B, latent_dim)`` to logits ``(B, K)``.
    :param feedback: Classify the re-encoded reconstruction rather than the input's latent mean.
    :param target_images: One exemplar image per class, ``(K, C, H, W)``, for the latent and VAE attacks;
        `fit_targets` picks them from training data.
    """

    def __init__(self, vae: nn.Module, latent_classifier: nn.Module, feedback: bool = True,
                 target_images: torch.Tensor | None = None) -> None:
        super().__init__()
        missing = [m for m in _VAE_METHODS if not callable(getattr(vae, m, None))]
        missing += [] if hasattr(vae, "latent_dim") else ["latent_dim"]
        if missing:
            raise TypeError(f"vae must have encode, decode, neg_elbo and latent_dim; "
                            f"{type(vae).__name__} lacks {', '.join(missing)}")
        if not isinstance(latent_classifier, nn.Module):
            raise TypeError(f"latent_classifier must be a torch.nn.Module, got {type(latent_classifier).__name__}")
        self.vae = vae
        self.latent_classifier = latent_classifier
        self.feedback = bool(feedback)
        self.register_buffer("target_images", None)
        if target_images is not None:
            self.set_target_images(target_images)

    @property
    def _vae_api(self) -> _VAELike:
        # The VAE as the duck type __init__ checked it for (encode, decode, neg_elbo, latent_dim).
        return cast(_VAELike, self.vae)

    @property
    def latent_dim(self) -> int:
        return int(self._vae_api.latent_dim)

    # ------------------------------------------------------------ pieces used by the attacks
    def encode_mean(self, x: torch.Tensor) -> torch.Tensor:
        """Latent mean ``μ(x)``, shape ``(B, latent_dim)``."""
        return self._vae_api.encode(x)[0].flatten(1)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Decoded images ``f_dec(z)``."""
        return self._vae_api.decode(z)

    def classify_latent(self, z: torch.Tensor) -> torch.Tensor:
        """Logits ``f_class(z)``."""
        return self.latent_classifier(z)

    def neg_elbo(self, x_in: torch.Tensor, x_target: torch.Tensor) -> torch.Tensor:
        """The VAE's negative ELBO of ``x_target`` under the encoding of ``x_in``, shape ``(B,)``."""
        return self._vae_api.neg_elbo(x_in, x_target)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """``f_dec(μ(x))``, reshaped like ``x``."""
        return self.decode(self.encode_mean(x)).reshape(x.shape)

    def target_image(self, t: torch.Tensor) -> torch.Tensor:
        """The exemplar image of each class in ``t`` (LongTensor ``(B,)``), shape ``(B, C, H, W)``."""
        if self.target_images is None:
            raise RuntimeError("GenerativeClassifier has no target images: call fit_targets(x, y) or pass "
                               "target_images=")
        t = torch.as_tensor(t, device=self.target_images.device).long()
        return self.target_images[t]

    # ------------------------------------------------------------ classifier
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.encode_mean(x)
        if self.feedback:
            z = self.encode_mean(self.decode(z).reshape(x.shape))
        return self.classify_latent(z)

    # ------------------------------------------------------------ targets
    def set_target_images(self, images: torch.Tensor) -> None:
        """Store one exemplar per class, ``(K, C, H, W)``."""
        images = torch.as_tensor(images, dtype=torch.float32)
        if images.ndim != 4:
            raise ValueError(f"target_images must have shape (K, C, H, W), got {tuple(images.shape)}")
        device = next(iter(self.parameters()), images).device
        self.target_images = images.detach().clone().to(device)

    @torch.no_grad()
    def fit_targets(self, x: torch.Tensor, y: torch.Tensor, nb_classes: int | None = None,
                    batch_size: int = 512) -> torch.Tensor:
        """Pick, for each class, the image of ``x`` whose latent mean is closest (L2) to the class's mean latent.

        Deterministic: ties go to the lowest index. Every class in ``0..K-1`` must occur in ``y``.

        :param x: Candidate images (e.g. the training set).
        :param y: Their labels.
        :param nb_classes: ``K``; the latent classifier's ``nb_classes`` or ``max(y) + 1`` when ``None``.
        :return: The chosen indices into ``x``, shape ``(K,)``.
        """
        x = torch.as_tensor(x)
        y = torch.as_tensor(y).long().flatten().cpu()
        if len(x) != len(y):
            raise ValueError(f"x and y must have the same length, got {len(x)} and {len(y)}")
        k = nb_classes or getattr(self.latent_classifier, "nb_classes", None) or int(y.max()) + 1
        device = next(iter(self.parameters()), x).device
        mu = _encode_means(self._vae_api.encode, x, device, batch_size).cpu().double()
        chosen = []
        for cls in range(k):
            idx = (y == cls).nonzero().flatten()
            if len(idx) == 0:
                raise ValueError(f"fit_targets: class {cls} has no images in y")
            dist = (mu[idx] - mu[idx].mean(0)).pow(2).sum(1)
            chosen.append(int(idx[int(dist.argmin())]))
        index = torch.tensor(chosen)
        self.set_target_images(x[index])
        return index

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:
        # A None buffer is absent from state_dict(); accept saved exemplars into an instance without them.
        key = prefix + "target_images"
        if self.target_images is None and key in state_dict:
            saved = state_dict[key]
            self.target_images = saved.detach().clone().float().to(next(iter(self.parameters()), saved).device)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
