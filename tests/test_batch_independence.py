"""Batch independence across the registries (issue #13 §1).

For every deterministic attack, defense and estimator, an input's result must not depend on the batch it is in, its
position in that batch, or the batch size: each case below computes a handful of inputs three ways

- all of them in one batch (``batch_size = N``),
- permuted and split into batches of 3 and 1 (other companions, other positions, another batch size),
- one input per batch (``batch_size = 1``: each input alone),

and requires the same per-input result, exactly for labels and booleans and to float round-off (``ATOL``) for
images and scores. The reference is the input computed alone, so the check is independent of how any
implementation batches its work.

The attack cases iterate ``ATTACKS`` (every attack × norm × backend, untargeted where allowed and with explicit
targets where the backend takes them), so a newly registered attack is covered without editing this file. An attack
is run at its registry defaults (only loop counts are cut, ``FAST``); one that is random by design belongs in
``RANDOM_BY_DESIGN`` with the reason. The estimator cases iterate ``ESTIMATORS``; a new estimator fails
``test_every_estimator_has_a_check`` until it gets a check here.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from advbridge.bridge import AttackSpec, Model, run_attack
from advbridge.bridge.attacks import ATTACKS, BuildContext
from advbridge.defenses import (MNIST_AE_I, MNIST_AE_II, DenoisingAutoEncoder, DivergenceDetector, MagNet,
                                MutualInformationDetector, ReconstructionErrorDetector, Reformer)
from advbridge.defenses.generative.latent_classifier import GenerativeClassifier, LatentClassifier
from advbridge.defenses.invert_and_classify import EnhancedInvertAndClassify, InvertAndClassify
from advbridge.defenses.projection import GeneratorProjection
from advbridge.defenses.mid import ESTIMATORS as MID_ESTIMATORS
from advbridge.evaluations.analysis.domain_shift import evaluate_domain_shift
from advbridge.evaluations.estimators.base import ESTIMATORS
from advbridge.evaluations.analysis.hardness import hardness_matrix
from advbridge.evaluations.analysis.kos import as_matrices
from advbridge.evaluations.analysis.meanfield import estimate_meanfield
from advbridge.evaluations.analysis.gamma import METHODS, gamma
from advbridge.evaluations.analysis.transfer import transfer_matrix

#: Inputs per case, and the permutation the second computation sees them in (batches [2, 0, 3] and [1]).
N = 4
PERM = torch.tensor([2, 0, 3, 1])
SPLIT_BATCH = 3
#: Float round-off allowed between batchings (measured: at most 4e-6 on logits, 2e-7 on x_adv).
ATOL, RTOL = 1e-5, 1e-5
#: Loop counts cut for speed wherever an attack has the parameter (nothing else departs from the defaults).
#: (C&W L∞ on ART: one constant, c = initial_const, and six values of τ.)
FAST = {"steps": 5, "binary_search_steps": 2, "max_distortion": 0.03, "largest_const": 0.15, "decrease_factor": 0.3}
#: Parameter values that make an attack random by design (a random start drawn per batch from the toolkit's RNG):
#: those settings are not checked; the attack is checked at its deterministic default instead.
RANDOM_BY_DESIGN = {
    ("fgsm", "random_start", True): "random_start draws the start from the toolkit's RNG per batch (ART numpy, "
                                    "Foolbox torch): which draw an input gets depends on its batch by design",
    ("pgd", "random_start", True): "random_start draws the start from the toolkit's RNG per batch (ART numpy, "
                                   "Foolbox torch): which draw an input gets depends on its batch by design",
}
#: Cases whose batch dependence is a known, reported defect: (attack, norm, backend) -> reason. A fix flips them
#: (strict xfail).
_ART_DECISION_BASED = ("ART's decision-based attacks: every input runs alone with its own seed and the same shared start "
                       "whatever its batch, yet one input in four differs (by up to 0.21) between a four-input run "
                       "and runs of one; Foolbox's HopSkipJump and Boundary pass. Cause not found yet (their path turns "
                       "on model queries at the decision boundary)")
KNOWN_BATCH_DEPENDENT: dict[tuple[str, str, str], str] = {
    ("hsj", "l2", "art"): _ART_DECISION_BASED, ("hsj", "linf", "art"): _ART_DECISION_BASED,
    ("boundary", "l2", "art"): _ART_DECISION_BASED}
#: Cases that take minutes before their first step (numba compiles Brendel-Bethge's solver once per norm and
#: toolkit, ~30 s each): run by `make test-slow`; `make test` keeps one norm of each (L∞).
SLOW_TO_START = {("brendel_bethge", norm) for norm in ("l0", "l1", "l2")}
#: Loop counts cut further for the query-hungry decision-based attacks (still their defaults otherwise).
FAST_QUERIES = {"max_evals": 50, "init_evals": 10, "queries": 20, "steps": 5}


# ---------------------------------------------------------------------------------------------- comparison
def _three_ways(compute: Callable[[torch.Tensor, int], dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    """``compute(index, batch_size)`` on all inputs in one batch, permuted in batches of 3, and one per batch; each
    result is returned in the original input order."""
    together = compute(torch.arange(N), N)
    inverse = torch.argsort(PERM).numpy()
    permuted = {k: np.asarray(v)[inverse] for k, v in compute(PERM, SPLIT_BATCH).items()}
    alone = compute(torch.arange(N), 1)
    return [together, permuted, alone]


def _assert_same(results: list[dict[str, np.ndarray]], exact: tuple[str, ...] = ()) -> None:
    """Each key equal across the batchings: exactly for ``exact`` keys (labels, booleans), else to round-off."""
    names = ("one batch", f"permuted, batches of {SPLIT_BATCH}", "alone (batch_size=1)")
    reference = results[-1]
    for name, result in zip(names[:-1], results[:-1], strict=True):
        for key, want in reference.items():
            got, want = np.asarray(result[key]), np.asarray(want)
            assert got.shape == want.shape, f"{key}: shape {got.shape} ({name}) vs {want.shape} (alone)"
            if key in exact or want.dtype == bool or np.issubdtype(want.dtype, np.integer):
                bad = np.flatnonzero((got != want).reshape(len(want), -1).any(1))
                assert not len(bad), (f"{key} differs between {name} and alone for inputs {bad.tolist()}: "
                                      f"{got[bad].tolist()} vs {want[bad].tolist()}")
            else:
                g, w = got.astype(np.float64), want.astype(np.float64)
                same = np.isclose(g, w, rtol=RTOL, atol=ATOL, equal_nan=True)
                if not same.all():
                    diff = np.nan_to_num(np.abs(g - w), nan=np.inf).reshape(len(w), -1).max(1)
                    bad = np.flatnonzero(~same.reshape(len(w), -1).all(1))
                    raise AssertionError(f"{key} differs between {name} and alone: max |Δ| per input "
                                         f"{np.round(diff, 6).tolist()} (inputs {bad.tolist()})")


def _rows(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().double().numpy()


# ---------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def classifier(mnist5k) -> Model:
    """A tiny CNN trained here for two epochs on 2000 images (about 1 s), independent of the zoo's cache."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, stride=2), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2), nn.ReLU(),
                        nn.Flatten(), nn.Linear(16 * 6 * 6, 10))
    _train(net, mnist5k.x_train[:2000], lambda xb, yb: F.cross_entropy(net(xb), yb), mnist5k.y_train[:2000], 2)
    return Model(net.eval(), (1, 28, 28), device="cpu")


def _train(module: nn.Module, x: torch.Tensor, loss_fn, y: torch.Tensor, epochs: int) -> None:
    opt = torch.optim.Adam(module.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x), 64):
            idx = perm[start:start + 64]
            loss = loss_fn(x[idx], y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()


@pytest.fixture(scope="module")
def data(classifier, mnist5k):
    """N test images (one of them misclassified, at position 1), their labels and explicit targets (never the
    label)."""
    x, y = mnist5k.x_test[:500], mnist5k.y_test[:500]
    right = classifier.predict(x) == y
    correct, wrong = right.nonzero().flatten(), (~right).nonzero().flatten()
    keep = torch.cat([correct[:1], wrong[:1], correct[1:N - 1]])
    x, y = x[keep], y[keep]
    return x, y, (y + 1 + torch.arange(N) * 2) % 10


class SmallVAE(nn.Module):
    """MLP VAE with a Bernoulli decoder; ``neg_elbo`` at z = mu (deterministic), as the Kos attacks need."""

    def __init__(self, latent_dim: int = 8, hidden: int = 64) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.enc = nn.Sequential(nn.Flatten(), nn.Linear(784, hidden), nn.ReLU())
        self.mu, self.logvar = nn.Linear(hidden, latent_dim), nn.Linear(hidden, latent_dim)
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


@pytest.fixture(scope="module")
def generative(mnist5k) -> Model:
    """The reconstruction-feedback generative classifier the Kos attacks need (briefly trained, about 1 s)."""
    torch.manual_seed(0)
    x, y = mnist5k.x_train[:1000], mnist5k.y_train[:1000]
    vae, clf = SmallVAE(), LatentClassifier(8, hidden=32)

    _train(vae, x, lambda xb, _: vae.neg_elbo(xb, xb).mean(), y, 2)
    vae.eval().requires_grad_(False)
    _train(clf, x, lambda xb, yb: F.cross_entropy(clf(vae.encode(xb)[0]), yb), y, 3)
    gc = GenerativeClassifier(vae, clf.eval(), feedback=True)
    gc.fit_targets(x, y)
    return Model(gc, (1, 28, 28), device="cpu")


@pytest.fixture(scope="module")
def autoencoders():
    """MagNet's two MNIST autoencoders, untrained (seeded): batching, not quality, is under test."""
    torch.manual_seed(0)
    return DenoisingAutoEncoder(MNIST_AE_I).eval(), DenoisingAutoEncoder(MNIST_AE_II).eval()


@pytest.fixture(scope="module")
def generator():
    """A tiny seeded generator z (8) -> 28x28 image for Invert-and-Classify."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 64), nn.ReLU(), nn.Linear(64, 784), nn.Sigmoid(),
                         nn.Unflatten(1, (1, 28, 28))).eval()


# ---------------------------------------------------------------------------------------------- attacks
def _attack_cases():
    for name, attack in sorted(ATTACKS.items()):
        for norm in attack.norms:
            for backend in attack.backends(norm):
                modes = []
                if not attack.requires_target:
                    modes.append(attack.fixed_target or "none")
                if attack.can_target(backend, norm) and attack.fixed_target is None:
                    modes.append("explicit")
                for mode in modes:
                    reason = KNOWN_BATCH_DEPENDENT.get((name, norm, backend))
                    marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
                    if (name, norm) in SLOW_TO_START:
                        marks.append(pytest.mark.slow)
                    yield pytest.param(name, norm, backend, mode, id=f"{name}-{norm}-{backend}-{mode}", marks=marks)
    for (name, key, value), reason in sorted(RANDOM_BY_DESIGN.items()):
        yield pytest.param(name, None, None, f"{key}={value}", id=f"{name}-{key}={value}",
                           marks=pytest.mark.skip(reason=reason))


def _fast_params(name: str, norm: str) -> dict:
    defaults = ATTACKS[name].param_defaults(norm)
    fast = {**FAST, **FAST_QUERIES} if ATTACKS[name].stochastic else FAST
    return {key: value for key, value in fast.items() if key in defaults}


def _attacked_model(name: str, norm: str, backend: str, params: dict, targeted: bool, candidates: dict) -> str:
    """The first test model (``classifier``, then ``generative``) the attack's builder accepts."""
    resolved = ATTACKS[name].resolve(norm, params)
    errors = []
    for key, model in candidates.items():
        try:
            ATTACKS[name].build[backend](BuildContext(model, norm, resolved, targeted, 1))
            return key
        except ValueError as err:
            errors.append(f"{key}: {err}")
    pytest.fail(f"no test model here can run attack {name!r} on {backend}: {errors}; add one to this module")


@pytest.fixture(scope="module")
def attack_runs(classifier, generative, data, mnist5k):
    """``run(name, norm, backend, mode)``: the three batchings of one attack case, memoised for the module."""
    candidates = {"classifier": classifier, "generative": generative}
    gen_x, gen_y = None, None

    @functools.cache
    def run(name: str, norm: str, backend: str, mode: str):
        nonlocal gen_x, gen_y
        attack = ATTACKS[name]
        params = _fast_params(name, norm)
        key = _attacked_model(name, norm, backend, params, mode != "none", candidates)
        model = candidates[key]
        x, y, targets = data
        if key == "generative":
            if gen_x is None:
                xs, ys = mnist5k.x_test[:200], mnist5k.y_test[:200]
                keep = (model.predict(xs) == ys).nonzero().flatten()[:N]
                gen_x, gen_y = xs[keep], ys[keep]
            x, y = gen_x, gen_y
            targets = (y + 1 + torch.arange(N) * 2) % 10

        def compute(index: torch.Tensor, batch_size: int) -> dict[str, np.ndarray]:
            targeted = tuple(int(t) for t in targets[index]) if mode == "explicit" else mode
            spec = AttackSpec(name, norm, targeted, params)
            r = run_attack(model, x[index], y[index], spec, backend, seed=0, batch_size=batch_size, progress=False)
            out = {"x_adv": _rows(r.x_adv), "success": np.asarray(r.success), "pred_adv": np.asarray(r.pred_adv)}
            for field in ("targets", "pred_clean", "nonfinite", "already_misclassified", "robust"):
                value = getattr(r, field, None)
                if value is not None:
                    out[field] = np.asarray(value)
            out.update({f"norm_{k}": np.asarray(v) for k, v in r.norms.items() if k != "l0"})
            return out

        assert attack.requires_target or mode != "explicit" or attack.can_target(backend, norm)
        return _three_ways(compute), y.numpy()
    return run


@pytest.mark.parametrize("name, norm, backend, mode", list(_attack_cases()))
def test_attack_output_does_not_depend_on_the_batch(attack_runs, name, norm, backend, mode):
    results, _ = attack_runs(name, norm, backend, mode)
    _assert_same(results)


def test_random_targets_do_not_depend_on_the_batch_size(classifier, data):
    """``targeted="random"`` draws one seeded target per position in the whole input set (by design, so a permuted
    set gets other targets); the batch size must change neither the targets nor the outputs."""
    x, y, _ = data
    spec = AttackSpec("fgsm", "linf", "random")
    runs = [run_attack(classifier, x, y, spec, "art", seed=3, batch_size=bs, progress=False)
            for bs in (1, SPLIT_BATCH, N)]
    for r in runs[:-1]:
        np.testing.assert_array_equal(r.targets, runs[-1].targets)
        np.testing.assert_array_equal(r.pred_adv, runs[-1].pred_adv)
        np.testing.assert_allclose(_rows(r.x_adv), _rows(runs[-1].x_adv), rtol=0, atol=ATOL)
    assert (runs[-1].targets != y.numpy()).all()


def test_kos_matrices_do_not_depend_on_the_batch(attack_runs):
    """The Kos (source, target) matrices of the kos_* attacks' outputs, from each batching."""
    kos = [name for name, a in ATTACKS.items() if name.startswith("kos")]
    assert kos, "the Kos attacks are registered"
    for name in kos:
        attack = ATTACKS[name]
        norm = attack.default_norm
        results, labels = attack_runs(name, norm, attack.backends(norm)[0], "explicit")
        matrices = [as_matrices(labels, r["targets"], r["pred_adv"]) for r in results]
        for m in matrices[:-1]:
            for key in ("as_ignore_target", "as_target", "counts"):
                np.testing.assert_array_equal(m[key], matrices[-1][key], err_msg=f"{name} {key}")


# ---------------------------------------------------------------------------------------------- defenses
def _over(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, batch_size: int) -> torch.Tensor:
    return torch.cat([fn(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])


def test_reformer_does_not_depend_on_the_batch(classifier, autoencoders, data):
    x = data[0]
    reformer = Reformer(autoencoders[0])
    defended = Model(classifier.module, (1, 28, 28), preprocessing=[reformer], device="cpu")
    _assert_same(_three_ways(lambda i, bs: {
        "reformed": _rows(_over(lambda xb: reformer.forward(xb)[0], x[i], bs)),
        "logits": _rows(defended.logits(x[i], bs)), "pred": defended.predict(x[i], bs).numpy()}))


def _detectors(classifier: Model, autoencoders) -> dict:
    ae1, ae2 = autoencoders
    clf = classifier.module
    detectors = {"reconstruction_p1": ReconstructionErrorDetector(ae1, p=1, drop_rate=0.1),
                 "reconstruction_p2": ReconstructionErrorDetector(ae2, p=2, drop_rate=0.1),
                 "divergence_T10": DivergenceDetector(clf, ae1, temperature=10.0, drop_rate=0.1)}
    for estimator in MID_ESTIMATORS:
        detectors[f"mid_{estimator}"] = MutualInformationDetector(clf, ae1, estimator=estimator, temperature=10.0,
                                                                  drop_rate=0.1)
    return detectors


@pytest.mark.parametrize("kind", ["reconstruction_p1", "reconstruction_p2", "divergence_T10"]
                         + [f"mid_{e}" for e in MID_ESTIMATORS])
def test_detector_does_not_depend_on_the_batch(classifier, autoencoders, data, mnist5k, kind):
    detector = _detectors(classifier, autoencoders)[kind]
    detector.fit(mnist5k.x_train[:64], batch_size=16)
    x = data[0]

    def compute(i, bs):
        report, flagged = detector.detect(x[i], batch_size=bs)
        return {"scores": np.asarray(report["scores"], np.float64), "flagged": np.asarray(flagged, bool)}
    _assert_same(_three_ways(compute))


def test_magnet_does_not_depend_on_the_batch(classifier, autoencoders, data, mnist5k):
    magnet = MagNet(classifier.module, _detectors(classifier, autoencoders), Reformer(autoencoders[0]))
    magnet.fit(mnist5k.x_train[:64], batch_size=16)
    x, y = data[0], data[1].numpy()

    def compute(i, bs):
        out = magnet.run(x[i], bs)
        return {"rejected": out.rejected, "pred_raw": out.pred_raw, "pred_reformed": out.pred_reformed,
                "predict": magnet.predict(x[i], bs), **{f"score[{k}]": v for k, v in out.scores.items()},
                **{f"flag[{k}]": v for k, v in out.flags.items()}}
    results = _three_ways(compute)
    _assert_same(results)
    # The metric over the same inputs does not depend on batch_size either.
    evaluations = {bs: magnet.evaluate(x, y, bs).to_dict() for bs in (1, SPLIT_BATCH, N)}
    assert evaluations[1] == evaluations[SPLIT_BATCH] == evaluations[N]


INC_SETTINGS = {"steps": 10, "restarts": 3}


def test_invert_and_classify_projection_does_not_depend_on_the_batch(classifier, generator, data):
    """The projection G(argmin_z ‖G(z) − x‖²) of an image is a function of the image alone (§1: z₀ per
    image)."""
    x = data[0]

    def compute(i, bs):
        # A fresh projection per call: its memo of recent batches must not be what makes the batchings agree.
        projection = GeneratorProjection(generator, 8, **INC_SETTINGS)
        parts = [projection.project(x[i][s:s + bs]) for s in range(0, len(i), bs)]
        return {"z": _rows(torch.cat([p.z for p in parts])), "images": _rows(torch.cat([p.images for p in parts])),
                "mse": _rows(torch.cat([p.mse for p in parts]))}
    _assert_same(_three_ways(compute))


def test_invert_and_classify_defense_does_not_depend_on_the_batch(classifier, generator, data):
    """What the judge, ART (its batch_size) and MagNet see of an Invert-and-Classify-defended classifier."""
    x = data[0]

    def compute(i, bs):
        inc = InvertAndClassify(generator, 8, **INC_SETTINGS)
        defended = Model(classifier.module, (1, 28, 28), preprocessing=[inc], device="cpu")
        art_logits = defended.art().predict(x[i].numpy(), batch_size=bs)
        return {"reformed": _rows(_over(lambda xb: inc.forward(xb)[0], x[i], bs)),
                "logits": _rows(defended.logits(x[i], bs)), "art_logits": np.asarray(art_logits, np.float64),
                "magnet_predict": MagNet(classifier.module, {}, inc).predict(x[i], bs)}
    _assert_same(_three_ways(compute))


def test_enhanced_invert_and_classify_projection_does_not_depend_on_the_batch(classifier, generator, data):
    x = data[0]

    def compute(i, bs):
        trainer = EnhancedInvertAndClassify(classifier.art(), GeneratorProjection(generator, 8, **INC_SETTINGS))
        z, images = trainer.project_dataset(x[i], batch_size=bs)
        return {"z": _rows(z), "images": _rows(images)}
    _assert_same(_three_ways(compute))


def test_gpdnn_does_not_depend_on_the_batch(mnist5k, data):
    pytest.importorskip("gpytorch")
    from advbridge.defenses.gpdnn import build_gpdnn

    torch.manual_seed(0)
    features = nn.Sequential(nn.Conv2d(1, 4, 5, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 12 * 12, 8))
    model = Model(build_gpdnn(features, mnist5k.x_train[:64], num_inducing=8).eval(), (1, 28, 28), device="cpu")
    x = data[0]
    _assert_same(_three_ways(lambda i, bs: {"log_probs": _rows(model.logits(x[i], bs)),
                                            "pred": model.predict(x[i], bs).numpy()}))


# ---------------------------------------------------------------------------------------------- estimators
def _check_hardness(classifier, data):
    x, y, _ = data
    pairs = len(classifier.logits(x[:1])[0]) - 1

    def compute(i, bs):
        # batch_size counts (sample, target) pairs: 1, 3 and N pairs split one input's pairs across batches.
        r = hardness_matrix(classifier, x[i], y[i], levels=[0.01, 0.02], headline_distortion=0.02, batch_size=bs,
                            progress=False)
        return {k: np.asarray(r.per_pair[k]).reshape(len(i), pairs)
                for k in ("target", "success_iter", "stop_iter", "adversarial_distance")}
    _assert_same(_three_ways(compute))


def _check_meanfield(classifier, data):
    x, y, _ = data
    for direction in ("l2", "sign"):
        for method in [m for m in METHODS if m != "auto"]:
            def compute(i, bs, direction=direction, method=method):
                logits, gam = gamma(classifier, x[i], y[i], direction=direction, batch_size=bs, method=method)
                return {"logits": _rows(logits), "gamma": _rows(gam)}
            _assert_same(_three_ways(compute))

        def estimate(i, bs, direction=direction):
            est = estimate_meanfield(classifier, x[i], y[i], direction=direction, batch_size=bs)
            return {"eps_lin": np.asarray(est.eps_lin, float), "delta12": np.asarray(est.delta12, float),
                    "used": np.asarray(est.used, bool)}
        _assert_same(_three_ways(estimate))
        # ε̂_MF divides by the population's mean Γ by rank: it depends on the set by definition, never on batch_size.
        sets = [estimate_meanfield(classifier, x, y, direction=direction, batch_size=bs) for bs in (1, SPLIT_BATCH, N)]
        for est in sets[:-1]:
            np.testing.assert_allclose(est.eps_mf, sets[-1].eps_mf, rtol=RTOL, atol=ATOL)
            np.testing.assert_allclose(est.gamma_mean_by_rank, sets[-1].gamma_mean_by_rank, rtol=RTOL, atol=ATOL)


def _check_transfer(classifier, data, autoencoders):
    x, y, _ = data
    models = {"plain": classifier,
              "reformed": Model(classifier.module, (1, 28, 28), preprocessing=[Reformer(autoencoders[0])],
                                device="cpu")}
    spec = AttackSpec("fgsm", "l2")

    def compute(i, bs):
        r = transfer_matrix(models, spec, x[i], y[i], backend="art", batch_size=bs, noise_sigmas=(), progress=False)
        return {"distortion": r.sample_distortion.T}
    _assert_same(_three_ways(compute))


def _check_domain_shift(classifier, data):
    """Aggregates over a set, so only batch_size can move them."""
    x, y, _ = data
    tables = [evaluate_domain_shift({"m": classifier}, {"s": (x, y)}, batch_size=bs) for bs in (1, SPLIT_BATCH, N)]
    for table in tables[:-1]:
        assert table["s"]["m"]["accuracy"] == tables[-1]["s"]["m"]["accuracy"]
        assert table["s"]["m"]["log_likelihood"] == pytest.approx(tables[-1]["s"]["m"]["log_likelihood"], abs=ATOL)


ESTIMATOR_CHECKS: dict[str, Callable] = {
    "hardness": lambda f: _check_hardness(f["classifier"], f["data"]),
    "meanfield": lambda f: _check_meanfield(f["classifier"], f["data"]),
    "transfer": lambda f: _check_transfer(f["classifier"], f["data"], f["autoencoders"]),
    "domain_shift": lambda f: _check_domain_shift(f["classifier"], f["data"]),
}


def test_every_estimator_has_a_check():
    missing = sorted(set(ESTIMATORS) - set(ESTIMATOR_CHECKS))
    assert not missing, f"estimator(s) {missing} have no batch-independence check in {__name__}: add one"


@pytest.mark.parametrize("name", sorted(ESTIMATOR_CHECKS))
def test_estimator_does_not_depend_on_the_batch(classifier, data, autoencoders, name):
    assert name in ESTIMATORS
    ESTIMATOR_CHECKS[name]({"classifier": classifier, "data": data, "autoencoders": autoencoders})
