"""Kos et al. (2017) attacks on a generative classifier (algorithms.md §4): classifier, latent and VAE attacks.

A tiny MLP VAE (defined here, with the duck-typed interface encode/decode/neg_elbo/latent_dim) and a latent
classifier are trained for a few seconds on a slice of mnist5k; the reconstruction-feedback classifier of §4.3
is wrapped in a bridge Model and attacked through ``run_attack``.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from advbridge.bridge import AttackSpec, Model, run_attack
from advbridge.bridge.attacks import ATTACKS, KosClassifierAttack, KosLatentAttack, KosVAEAttack
from advbridge.defenses.generative.latent_classifier import (GenerativeClassifier, LatentClassifier,
                                                            train_latent_classifier)

LATENT = 8


class TinyVAE(nn.Module):
    """MLP VAE, Bernoulli decoder; ``neg_elbo`` uses z = mu (deterministic)."""

    def __init__(self, latent_dim: int = LATENT, hidden: int = 256) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.enc = nn.Sequential(nn.Flatten(), nn.Linear(784, hidden), nn.ReLU())
        self.mu = nn.Linear(hidden, latent_dim)
        self.logvar = nn.Linear(hidden, latent_dim)
        self.dec = nn.Sequential(nn.Linear(latent_dim, hidden), nn.ReLU(), nn.Linear(hidden, 784))

    def encode(self, x):
        h = self.enc(x)
        return self.mu(h), self.logvar(h)

    def decode_logits(self, z):
        return self.dec(z).view(-1, 1, 28, 28)

    def decode(self, z):
        return torch.sigmoid(self.decode_logits(z))

    def neg_elbo(self, x_in, x_target):
        mu, logvar = self.encode(x_in)
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)
        rec = F.binary_cross_entropy_with_logits(self.decode_logits(mu), x_target, reduction="none")
        return kl + rec.flatten(1).sum(1)


def _train_vae(vae: TinyVAE, x: torch.Tensor, epochs: int, seed: int = 0) -> list[float]:
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(vae.parameters(), lr=2e-3)
    history = []
    for _ in range(epochs):
        perm, total = torch.randperm(len(x), generator=gen), 0.0
        for start in range(0, len(x), 64):
            xb = x[perm[start:start + 64]]
            mu, logvar = vae.encode(xb)
            z = mu + (0.5 * logvar).exp() * torch.randn(mu.shape, generator=gen)
            kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)
            rec = F.binary_cross_entropy_with_logits(vae.decode_logits(z), xb, reduction="none").flatten(1).sum(1)
            loss = (kl + rec).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(xb)
        history.append(total / len(x))
    vae.eval()
    return history


@pytest.fixture(scope="module")
def generative(mnist5k):
    """(GenerativeClassifier with feedback, its bridge Model): about 3 s on one thread."""
    torch.manual_seed(0)
    x, y = mnist5k.x_train[:2000], mnist5k.y_train[:2000]
    vae = TinyVAE()
    history = _train_vae(vae, x, epochs=8)
    assert history[-1] < 0.6 * history[0]
    clf = LatentClassifier(LATENT)
    vae.zero_grad(set_to_none=True)
    encoder_before = [p.detach().clone() for p in vae.parameters()]
    clf_history = train_latent_classifier(clf, vae.encode, x, y, epochs=20)
    assert clf_history[-1] < 0.3 * clf_history[0]
    # The encoder is frozen: no gradient reached it and its weights did not move.
    assert all(p.grad is None for p in vae.parameters())
    assert all(torch.equal(a, b) for a, b in zip(encoder_before, vae.parameters()))
    gc = GenerativeClassifier(vae, clf, feedback=True)
    gc.fit_targets(x, y)
    return gc, Model(gc, (1, 28, 28), device="cpu")


@pytest.fixture(scope="module")
def kos_set(generative, mnist5k):
    """30 test images the feedback classifier gets right."""
    _, model = generative
    x, y = mnist5k.x_test, mnist5k.y_test
    pred = model.predict(x)
    assert (pred == y).float().mean() > 0.75  # the reconstruction-feedback classifier works
    keep = (pred == y).nonzero().flatten()[:30]
    return x[keep], y[keep]


@pytest.fixture(scope="module")
def results(generative, kos_set):
    """Each attack once, random targets, small λ, 100 steps."""
    _, model = generative
    x, y = kos_set
    return {name: run_attack(model, x, y, AttackSpec(name, "l2", "random",
                                                     {"steps": 100, "lam": 0.01, "learning_rate": 0.02}),
                             backend="native", seed=0, progress=False)
            for name in ("kos_classifier", "kos_latent", "kos_vae")}


# ------------------------------------------------------------------ the generative classifier
def test_generative_classifier_feedback_and_targets(generative, mnist5k):
    gc, _ = generative
    x = mnist5k.x_test[:5]
    with torch.no_grad():
        mu = gc.vae.encode(x)[0]
        feedback = gc.latent_classifier(gc.vae.encode(gc.vae.decode(mu))[0])
        assert torch.allclose(gc(x), feedback, atol=1e-5)
        gc.feedback = False
        try:
            assert torch.allclose(gc(x), gc.latent_classifier(mu), atol=1e-5)
        finally:
            gc.feedback = True
    # fit_targets: per class, the image whose latent mean is nearest to that class's mean latent.
    xs, ys = mnist5k.x_train[:2000], mnist5k.y_train[:2000]
    index = gc.fit_targets(xs, ys)
    assert torch.equal(index, gc.fit_targets(xs, ys))  # deterministic
    assert torch.equal(ys[index], torch.arange(10))
    with torch.no_grad():
        mu3 = gc.vae.encode(xs[ys == 3])[0].double()
    nearest = (mu3 - mu3.mean(0)).pow(2).sum(1).argmin()
    assert torch.equal(gc.target_images[3], xs[ys == 3][nearest])
    assert torch.equal(gc.target_image(torch.tensor([3, 3, 0])), xs[index[[3, 3, 0]]])
    assert tuple(gc.target_images.shape) == (10, 1, 28, 28)
    # target_images survive a state_dict round trip into a fresh instance.
    fresh = GenerativeClassifier(TinyVAE(), LatentClassifier(LATENT))
    fresh.load_state_dict(gc.state_dict())
    assert torch.equal(fresh.target_images, gc.target_images)


# ------------------------------------------------------------------ (a) and (d): success
def test_latent_attack_moves_feedback_prediction_to_targets(generative, kos_set, results):
    gc, model = generative
    x, y = kos_set
    r = results["kos_latent"]
    targets = torch.as_tensor(r.targets)
    assert (r.targets != y.numpy()).all()
    assert r.success_rate > 0.6  # chance is 1/9
    # Success is the reconstruction-feedback prediction f_class(μ(f_dec(μ(x*)))).
    with torch.no_grad():
        z = gc.vae.encode(gc.vae.decode(gc.vae.encode(r.x_adv)[0]))[0]
        assert np.array_equal(gc.latent_classifier(z).argmax(1).numpy(), r.pred_adv)
    assert float(r.x_adv.min()) >= 0.0 and float(r.x_adv.max()) <= 1.0
    # The objective decreased: ‖z_t − μ(x*)‖² well below ‖z_t − μ(x)‖².
    attack = KosLatentAttack(model.art(), gc, lam=0.01)
    with torch.no_grad():
        before = attack.objective(x, x, targets)
        after = attack.objective(r.x_adv, x, targets)
    assert float(after.mean()) < 0.5 * float(before.mean())
    assert (after < before).float().mean() > 0.9


def test_objective_decreases_during_optimisation(generative, kos_set):
    gc, model = generative
    x, y = kos_set
    t = (y[:10] + 3) % 10
    for cls in (KosClassifierAttack, KosLatentAttack, KosVAEAttack):
        attack = cls(model.art(), gc, lam=0.01, steps=40, learning_rate=0.02)
        attack.generate(x[:10].numpy(), t.numpy())
        history = attack.loss_history[0]
        assert len(history) == 40
        assert history[-1] < 0.7 * history[0], cls.__name__


def test_as_target_at_most_as_ignore_target(generative, kos_set, results):
    gc, _ = generative
    _, y = kos_set
    for name, r in results.items():
        # The returned images, classified by a plain forward pass of the generative classifier (not the judge).
        with torch.no_grad():
            pred = gc(r.x_adv).argmax(1).numpy()
        np.testing.assert_array_equal(r.pred_adv, pred, err_msg=name)
        hit = pred == r.targets
        moved = pred != y.numpy()
        assert (r.targets != y.numpy()).all(), name  # random targets are never the true class
        assert np.all(moved[hit]), name  # per sample: reaching the target means leaving the source
        assert hit.mean() <= moved.mean(), name
        assert hit.mean() > 0.3, name
        assert np.array_equal(r.success, hit), name  # AS-target: success is reaching the target, not moving


# ------------------------------------------------------------------ (b): the λ trade-off
def test_larger_lambda_gives_smaller_distortion(generative, kos_set):
    _, model = generative
    x, y = kos_set
    x, y = x[:20], y[:20]
    for name, lams in (("kos_latent", (0.01, 1.0, 10.0)), ("kos_classifier", (0.01, 1.0, 3.0))):
        l2, success = [], []
        for lam in lams:
            r = run_attack(model, x, y, AttackSpec(name, "l2", "random",
                                                   {"steps": 60, "lam": lam, "learning_rate": 0.02}),
                           backend="native", seed=0, progress=False)
            l2.append(r.norms["l2"].mean())
            success.append(r.success_rate)
        assert l2[0] > l2[1] > l2[2], (name, l2)
        assert l2[0] > 2 * l2[2], (name, l2)
        assert success[0] >= success[2], (name, success)


# ------------------------------------------------------------------ (c): gradients
def _hand_objective(name: str, gc: GenerativeClassifier, x_adv: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    vae = gc.vae
    mu, logvar = vae.encode(x_adv)
    if name == "classifier":
        return -torch.log_softmax(gc.latent_classifier(mu), 1)[torch.arange(len(t)), t]
    x_t = gc.target_images[t]
    if name == "latent":
        z_t = vae.encode(x_t)[0].detach()
        return ((z_t - mu) ** 2).sum(1)
    logits = vae.decode_logits(mu)
    log_p = x_t * F.logsigmoid(logits) + (1 - x_t) * F.logsigmoid(-logits)
    kl = 0.5 * (mu ** 2 + torch.exp(logvar) - 1 - logvar).sum(1)
    return kl - log_p.flatten(1).sum(1)


@pytest.mark.parametrize("cls,name", [(KosClassifierAttack, "classifier"), (KosLatentAttack, "latent"),
                                      (KosVAEAttack, "vae")])
def test_gradient_matches_hand_computation(generative, kos_set, cls, name):
    gc, model = generative
    x, y = kos_set
    lam = 0.3
    attack = cls(model.art(), gc, lam=lam, steps=1, learning_rate=0.01, check_every=1)
    x0 = x[:3].clone()
    t = (y[:3] + 1) % 10
    gen = torch.Generator().manual_seed(1)
    x_adv = (x0 + 0.05 * torch.randn(x0.shape, generator=gen)).clamp(0, 1).requires_grad_(True)

    loss = attack.loss(x_adv, x0, t)
    grad, = torch.autograd.grad(loss.sum(), x_adv)
    # One sample, by hand: objective + lam·‖x − x*‖₂, its gradient by autograd of the explicit formula.
    one = x_adv[:1].detach().clone().requires_grad_(True)
    hand = _hand_objective(name, gc, one, t[:1]) + lam * ((one - x0[:1]) ** 2).sum().sqrt()
    hand_grad, = torch.autograd.grad(hand.sum(), one)
    assert torch.allclose(loss[:1].detach(), hand.detach(), rtol=1e-5, atol=1e-4)
    assert torch.allclose(grad[:1], hand_grad, rtol=1e-4, atol=1e-6)
    # Separable: the sample's gradient does not depend on the rest of the batch.
    assert grad[:1].abs().sum() > 0 and grad[1:].abs().sum() > 0
    # The λ term's gradient is lam·(x* − x)/‖x* − x‖₂.
    obj_grad, = torch.autograd.grad(attack.objective(x_adv, x0, t).sum(), x_adv)
    delta = (x_adv - x0).detach()
    expected = lam * delta / delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    assert torch.allclose(grad - obj_grad, expected, atol=1e-6)

    # One Adam step from x* = x (where the penalty's subgradient is 0): x − lr·g/(|g| + 1e-8), clipped.
    start = x0.clone().requires_grad_(True)
    g0, = torch.autograd.grad(_hand_objective(name, gc, start, t).sum(), start)
    stepped = (x0 - 0.01 * g0 / (g0.abs() + 1e-8)).clamp(0, 1)
    out = attack.generate(x0.numpy(), t.numpy())
    assert np.allclose(out, stepped.numpy(), atol=1e-6)


# ------------------------------------------------------------------ (e), (f): errors
def test_plain_classifier_model_is_refused(generative, kos_set):
    x, y = kos_set
    plain = Model(nn.Sequential(nn.Flatten(), nn.Linear(784, 10)), (1, 28, 28), device="cpu")
    for name in ("kos_classifier", "kos_latent"):
        message = (f"attack '{name}' needs a generative classifier model (a module with encode_mean, decode, "
                   "classify_latent, target_image), got Sequential")
        with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
            run_attack(plain, x[:2], y[:2], AttackSpec(name, "l2", "random", {"steps": 2}), backend="native")
    message = ("attack 'kos_vae' needs a generative classifier model (a module with encode_mean, decode, "
               "classify_latent, target_image, neg_elbo), got Sequential")
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        run_attack(plain, x[:2], y[:2], AttackSpec("kos_vae", "l2", "random", {"steps": 2}), backend="native")
    gc, _ = generative
    normalised = Model(gc, (1, 28, 28), mean=[0.1], std=[0.3], device="cpu")
    with pytest.raises(ValueError, match="applies the generative model to raw inputs"):
        run_attack(normalised, x[:2], y[:2], AttackSpec("kos_latent", "l2", "random", {"steps": 2}), "native")


def test_bad_parameters_raise(generative, kos_set):
    gc, model = generative
    x, y = kos_set
    cases = [({"lam": -1.0}, "parameter 'lam' of attack 'kos_latent' must be > 0, got -1.0"),
             ({"steps": 0}, "parameter 'steps' of attack 'kos_latent' must be > 0, got 0"),
             ({"learning_rate": 0.0}, "parameter 'learning_rate' of attack 'kos_latent' must be > 0, got 0.0")]
    for params, message in cases:
        with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
            AttackSpec("kos_latent", "l2", "random", params)
    with pytest.raises(ValueError, match=re.escape("attack 'kos_vae' is targeted only")):
        AttackSpec("kos_vae", "l2")
    with pytest.raises(ValueError, match=re.escape("unknown parameter(s) ['eps']")):
        AttackSpec("kos_classifier", "l2", "random", {"eps": 1.0})
    with pytest.raises(ValueError, match=re.escape("attack 'kos_latent' does not support norm 'linf'")):
        AttackSpec("kos_latent", "linf", "random")
    with pytest.raises(ValueError, match=re.escape("backend 'art' does not implement attack 'kos_latent'")):
        run_attack(model, x[:2], y[:2], AttackSpec("kos_latent", "l2", "random"), backend="art")

    est = model.art()
    direct = [({"lam": 0}, "lam must be a positive number, got 0"),
              ({"lam": True}, "lam must be a positive number, got True"),
              ({"learning_rate": -0.1}, "learning_rate must be a positive number, got -0.1"),
              ({"steps": 1.5}, "steps must be a positive integer, got 1.5"),
              ({"batch_size": 0}, "batch_size must be a positive integer, got 0"),
              ({"check_every": 0}, "check_every must be a positive integer or None, got 0")]
    for kwargs, message in direct:
        with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
            KosLatentAttack(est, gc, **kwargs)
    with pytest.raises(ValueError, match=re.escape(
            "generative must be a torch module with encode_mean, decode, classify_latent, target_image, "
            "got Linear")):
        KosClassifierAttack(est, nn.Linear(2, 2))

    class NoElbo(nn.Module):
        encode_mean = decode = classify_latent = target_image = staticmethod(lambda v: v)

    with pytest.raises(ValueError, match=re.escape(
            "generative must be a torch module with encode_mean, decode, classify_latent, target_image, neg_elbo, "
            "got NoElbo")):
        KosVAEAttack(est, NoElbo())
    attack = KosLatentAttack(est, gc, steps=2)
    with pytest.raises(ValueError, match=re.escape("y (target labels) is required: KosLatentAttack is a targeted")):
        attack.generate(x[:2].numpy())
    with pytest.raises(ValueError, match=re.escape("target labels must lie in [0, 10), got 3..10")):
        attack.generate(x[:2].numpy(), np.array([3, 10]))
    # One-hot targets are read as their argmax.
    onehot = np.eye(10, dtype=np.float32)[[4, 7]]
    assert np.array_equal(attack.generate(x[:2].numpy(), onehot), attack.generate(x[:2].numpy(), np.array([4, 7])))


def test_registry_entries():
    for name in ("kos_classifier", "kos_latent", "kos_vae"):
        a = ATTACKS[name]
        assert a.backends() == ("native",) and a.requires_target and a.targeted_backends == {"native"}
        assert a.param_defaults("l2") == {"lam": 0.1, "steps": 500, "learning_rate": 0.01}


# ------------------------------------------------------------------ (g): reproducibility
def test_same_seed_same_output(generative, kos_set):
    _, model = generative
    x, y = kos_set
    spec = AttackSpec("kos_vae", "l2", "random", {"steps": 15, "learning_rate": 0.02})
    a = run_attack(model, x[:8], y[:8], spec, backend="native", seed=3, progress=False)
    b = run_attack(model, x[:8], y[:8], spec, backend="native", seed=3, progress=False)
    c = run_attack(model, x[:8], y[:8], spec, backend="native", seed=4, progress=False)
    assert torch.equal(a.x_adv, b.x_adv) and np.array_equal(a.targets, b.targets)
    assert not np.array_equal(a.targets, c.targets)
    # Batching does not change a sample's result (the loss is separable, Adam is per-coordinate).
    d = run_attack(model, x[:8], y[:8], spec, backend="native", seed=3, batch_size=3, progress=False)
    assert torch.allclose(a.x_adv, d.x_adv, atol=1e-6)


# ------------------------------------------------------------------ the project's convolutional VAE
def test_with_the_project_vae(mnist5k):
    vae_module = pytest.importorskip("advbridge.defenses.generative.vae")
    torch.manual_seed(0)
    x, y = mnist5k.x_train[:400], mnist5k.y_train[:400]
    vae = vae_module.VAE(latent_dim=LATENT)
    vae_module.train_vae(vae, x, epochs=1, batch_size=32, lr=2e-3)  # barely trained: checks the interface
    clf = LatentClassifier(LATENT)
    train_latent_classifier(clf, vae.encode, x, y, epochs=2)
    gc = GenerativeClassifier(vae, clf)
    gc.fit_targets(x, y)
    model = Model(gc, (1, 28, 28), device="cpu")
    xs, ys = mnist5k.x_test[:4], mnist5k.y_test[:4]
    for name in ("kos_latent", "kos_vae", "kos_classifier"):
        r = run_attack(model, xs, ys, AttackSpec(name, "l2", "random", {"steps": 5}), "native", progress=False)
        assert r.x_adv.shape == xs.shape and float(r.x_adv.min()) >= 0 and float(r.x_adv.max()) <= 1
        assert np.isfinite(r.norms["l2"]).all()
    t = torch.tensor(r.targets)
    attack = KosVAEAttack(model.art(), gc, steps=10, learning_rate=0.02)
    x_adv = torch.from_numpy(attack.generate(xs.numpy(), t.numpy()))
    assert attack.loss_history[0][-1] < attack.loss_history[0][0]
    with torch.no_grad():
        assert torch.allclose(attack.objective(x_adv, xs, t), vae.neg_elbo(x_adv, gc.target_images[t]))
