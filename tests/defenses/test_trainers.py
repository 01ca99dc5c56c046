"""Adversarial training (Goodfellow α-mix, §7.3) and entropy regularisation (§6.6) as ART trainers."""

import copy
import re

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from advbridge.bridge import Model
from advbridge.bridge.run import run_attack
from advbridge.bridge.spec import AttackSpec
from advbridge.defenses.trainers import AdversarialTraining, EntropyRegularized, predictive_entropy
from advbridge.evaluations.zoo.classifiers import mnist_tiny_cnn

FGSM = AttackSpec("fgsm", "linf", params={"eps": 0.25})
STEP_LL = AttackSpec("step_ll", params={"eps": 0.1})


def fresh(seed=0, build=mnist_tiny_cnn):
    """A freshly initialised (seeded) model and its ART classifier."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = build()
    model = Model(module, (1, 28, 28), nb_classes=10, device="cpu")
    return model, model.art()


def copy_of(tiny):
    model = Model(copy.deepcopy(tiny.module), (1, 28, 28), nb_classes=10, device="cpu")
    return model, model.art()


def weights(module):
    return torch.cat([p.detach().flatten() for p in module.parameters()])


@pytest.fixture(scope="module")
def comparison(mnist5k):
    """Plain CE, entropy-regularised and FGSM-adversarial training of one initialisation on 3,000 images, 2 epochs."""
    x, y = mnist5k.x_train[:3000], mnist5k.y_train[:3000]
    out = {}
    for kind in ("plain", "entropy", "adversarial"):
        model, clf = fresh(seed=0)
        settings = dict(epochs=2, batch_size=64, lr=3e-3, seed=0)
        if kind == "adversarial":
            trainer = AdversarialTraining(clf, FGSM, alpha=0.5, **settings)
        else:
            trainer = EntropyRegularized(clf, beta=1.0 if kind == "entropy" else 0.0, **settings)
        trainer.fit(x.numpy(), y.numpy())  # numpy in, like any ART trainer
        out[kind] = (model, trainer)
    return out


def test_entropy_regularisation_lowers_predictive_entropy(comparison, mnist5k):
    x, y = mnist5k.x_val, mnist5k.y_val  # held out
    entropy = {}
    for kind in ("plain", "entropy"):
        model, trainer = comparison[kind]
        with torch.no_grad():
            entropy[kind] = predictive_entropy(model.logits(x)).mean().item()
        assert (model.predict(x) == y).float().mean().item() > 0.8
        assert [h["epoch"] for h in trainer.history] == [1, 2]
    # measured: 0.39 → 0.21 nats
    assert entropy["entropy"] < 0.75 * entropy["plain"], entropy
    assert comparison["entropy"][1].history[-1]["entropy"] < comparison["plain"][1].history[-1]["entropy"]


def test_fgsm_adversarial_training_raises_fgsm_accuracy(comparison, mnist5k):
    x, y = mnist5k.x_test[:500], mnist5k.y_test[:500]  # held out
    acc, clean = {}, {}
    for kind in ("plain", "adversarial"):
        model = comparison[kind][0]
        result = run_attack(model, x, y, FGSM, "art", batch_size=500, progress=False)
        acc[kind] = float((torch.as_tensor(result.pred_adv) == y).float().mean())
        clean[kind] = float((model.predict(x) == y).float().mean())
    # measured with seeds 0-3: plain 0.00-0.03, adversarial 0.33-0.51 (FGSM ε = 0.25)
    assert acc["adversarial"] > acc["plain"] + 0.2, acc
    assert clean["adversarial"] > 0.8, clean
    history = comparison["adversarial"][1].history
    assert {"loss", "ce", "ce_adv", "entropy", "accuracy", "accuracy_adv", "craft_s", "time_s"} <= set(history[-1])
    assert history[-1]["accuracy_adv"] > history[0]["accuracy_adv"]


def test_alpha_mix_loss_matches_hand_computation(tiny, mnist5k):
    model, clf = copy_of(tiny)
    x, y = mnist5k.x_train[:64], mnist5k.y_train[:64]
    beta, alpha = 0.3, 0.7
    trainer = AdversarialTraining(clf, FGSM, alpha=alpha, entropy_beta=beta)
    x_adv = trainer.craft(x, y)
    # FGSM by hand: one signed gradient step of the mean CE, clipped to [0, 1]
    x_var = x.clone().requires_grad_(True)
    grad, = torch.autograd.grad(F.cross_entropy(model.module(x_var), y), x_var)
    assert torch.allclose(x_adv, (x + 0.25 * grad.sign()).clamp(0, 1), atol=1e-6)
    terms = trainer.loss_terms(x, y, x_adv)
    logits, logits_adv = model.module(x), model.module(x_adv)
    p = torch.softmax(logits.double(), 1)
    entropy = -(p * p.log()).sum(1).mean()
    ce = F.cross_entropy(logits.double(), y)
    expected = alpha * (ce + beta * entropy) + (1 - alpha) * F.cross_entropy(logits_adv.double(), y)
    assert terms["loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert terms["entropy"].item() == pytest.approx(entropy.item(), rel=1e-5)
    assert terms["ce_adv"].item() == pytest.approx(F.cross_entropy(logits_adv, y).item(), rel=1e-6)
    plain = EntropyRegularized(clf, beta=beta).loss_terms(x, y)
    assert plain["loss"].item() == pytest.approx((ce + beta * entropy).item(), rel=1e-5)


@pytest.mark.parametrize("spec, backend", [(FGSM, "art"), (STEP_LL, "art"), (STEP_LL, "native")])
def test_fast_path_equals_the_bridge_exactly(tiny, mnist5k, spec, backend):
    _, clf = copy_of(tiny)
    x, y = mnist5k.x_test[:100], mnist5k.y_test[:100]
    fast = AdversarialTraining(clf, spec, backend=backend)
    slow = AdversarialTraining(clf, spec, backend=backend, fast_path=False)
    assert fast.uses_fast_path and not slow.uses_fast_path
    x_fast = fast.craft(x, y)
    assert torch.equal(x_fast, slow.craft(x, y))
    direct = run_attack(Model(tiny.module, (1, 28, 28), device="cpu"), x, y, spec, backend, progress=False)
    assert torch.equal(x_fast, direct.x_adv)
    assert (x_fast != x).any()


def test_fast_path_training_equals_bridge_training(mnist5k):
    """The same weights whichever way x_adv is crafted (the bridge's RNG reseeding does not leak into training)."""
    x, y = mnist5k.x_train[:256], mnist5k.y_train[:256]
    trained = []
    for fast_path in (True, False):
        model, clf = fresh(seed=3)
        AdversarialTraining(clf, STEP_LL, epochs=1, batch_size=64, seed=3, fast_path=fast_path).fit(x, y)
        trained.append(weights(model.module))
    assert torch.equal(*trained)


def test_fast_path_only_where_it_is_exact(tiny):
    _, clf = copy_of(tiny)
    assert not AdversarialTraining(clf, FGSM, backend="foolbox").uses_fast_path
    assert not AdversarialTraining(clf, AttackSpec("fgsm", "l2", params={"eps": 1.0})).uses_fast_path
    assert not AdversarialTraining(clf, AttackSpec("fgsm", "linf", params={"random_start": True})).uses_fast_path
    assert not AdversarialTraining(clf, AttackSpec("fgsm", "linf", "random")).uses_fast_path
    assert not AdversarialTraining(clf, AttackSpec("pgd", "linf")).uses_fast_path


def test_bridge_attack_on_another_backend_trains(mnist5k):
    """A spec outside the fast path (PGD on Foolbox) runs through run_attack every batch."""
    x, y = mnist5k.x_train[:64], mnist5k.y_train[:64]
    model, clf = fresh(seed=0)
    before = weights(model.module)
    trainer = AdversarialTraining(clf, AttackSpec("pgd", "linf", params={"eps": 0.1, "steps": 2}),
                                  backend="foolbox", epochs=1, batch_size=32)
    assert not trainer.uses_fast_path
    trainer.fit(x, y)
    assert not torch.equal(before, weights(model.module))
    assert len(trainer.history) == 1 and trainer.history[0]["craft_s"] > 0


def test_adversarial_examples_come_from_the_current_weights(mnist5k):
    x, y = mnist5k.x_train[:160], mnist5k.y_train[:160]
    model, clf = fresh(seed=1)
    init = weights(model.module).clone()
    calls, step_modes = [], []

    def attack(module, xb, yb):
        assert module is model.module
        calls.append((weights(module).clone(), module.training))
        xb = xb.clone().requires_grad_(True)
        grad, = torch.autograd.grad(F.cross_entropy(module(xb), yb), xb)
        return (xb + 0.1 * grad.sign()).clamp(0, 1)

    hook = model.module.register_forward_pre_hook(lambda mod, inp: step_modes.append(mod.training))
    trainer = AdversarialTraining(clf, attack, epochs=2, batch_size=32, seed=0)
    trainer.fit(x, y)
    hook.remove()
    assert len(calls) == 10  # 5 batches x 2 epochs, one crafting per batch
    assert torch.equal(calls[0][0], init)
    checksums = [tuple(c[0][:50].tolist()) for c in calls]
    assert len(set(checksums)) == len(calls)  # each batch sees the weights after the previous step
    assert not torch.equal(calls[-1][0], weights(model.module))
    assert not any(training for _, training in calls)  # crafted in eval mode
    # per batch: the attack's forward (eval), then clean and adversarial forwards of the step (train)
    assert step_modes == [False, True, True] * 10
    assert not model.module.training  # eval mode after fit


def test_alpha_one_with_entropy_is_entropy_regularisation(mnist5k):
    x, y = mnist5k.x_train[:128], mnist5k.y_train[:128]
    a, clf_a = fresh(seed=2)
    b, clf_b = fresh(seed=2)

    def never(module, xb, yb):
        raise AssertionError("nothing is crafted at alpha = 1")

    AdversarialTraining(clf_a, never, alpha=1.0, entropy_beta=0.5, epochs=1, batch_size=32).fit(x, y)
    EntropyRegularized(clf_b, beta=0.5, epochs=1, batch_size=32).fit(x, y)
    assert torch.equal(weights(a.module), weights(b.module))


def dropout_net():
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, 10))


def test_same_seed_same_weights_and_global_rng_untouched(mnist5k):
    x, y = mnist5k.x_train[:192], mnist5k.y_train[:192]
    one_hot = np.eye(10, dtype=np.float32)[y.numpy()]
    runs = []
    for seed, labels in ((5, y), (5, one_hot), (6, y)):
        model, clf = fresh(seed=0, build=dropout_net)
        torch.manual_seed(1234)
        expected = torch.rand(3)
        torch.manual_seed(1234)
        AdversarialTraining(clf, FGSM, epochs=2, batch_size=64, seed=seed, entropy_beta=0.1).fit(x, labels)
        assert torch.equal(torch.rand(3), expected)  # the caller's RNG is restored
        runs.append(weights(model.module))
    assert torch.equal(runs[0], runs[1])  # indices or one-hot: the same training
    assert not torch.equal(runs[0], runs[2])  # the seed decides shuffling and dropout
    entropy_runs = []
    for _ in range(2):
        model, clf = fresh(seed=0, build=dropout_net)
        EntropyRegularized(clf, epochs=1, batch_size=64, seed=7).fit(x, y)
        entropy_runs.append(weights(model.module))
    assert torch.equal(*entropy_runs)


def test_fit_overrides_epochs_and_batch_size(mnist5k):
    x, y = mnist5k.x_train[:100], mnist5k.y_train[:100]
    _, clf = fresh()
    trainer = EntropyRegularized(clf, epochs=5)
    trainer.fit(x, y, nb_epochs=1, batch_size=50)
    assert len(trainer.history) == 1


def _message(exc_info) -> str:
    return str(exc_info.value)


@pytest.mark.parametrize("kwargs, message", [
    ({"alpha": 1.5}, "alpha must be a number in [0, 1], got 1.5"),
    ({"alpha": True}, "alpha must be a number in [0, 1], got True"),
    ({"entropy_beta": -1}, "entropy_beta must be a non-negative finite number, got -1"),
    ({"epochs": 0}, "epochs must be a positive integer, got 0"),
    ({"batch_size": 2.5}, "batch_size must be a positive integer, got 2.5"),
    ({"lr": 0}, "lr must be a positive finite number, got 0"),
    ({"lr": float("nan")}, "lr must be a positive finite number, got nan"),
    ({"optimizer": "rmsprop"}, "optimizer must be one of ['adam', 'sgd'], got 'rmsprop'"),
    ({"weight_decay": -0.1}, "weight_decay must be a non-negative finite number, got -0.1"),
    ({"seed": "zero"}, "seed must be an integer, got 'zero'"),
    ({"backend": "cleverhans"}, "backend must be one of ['art', 'foolbox', 'native', 'advlib'], got 'cleverhans'"),
    ({"fast_path": "yes"}, "fast_path must be True or False, got 'yes'"),
    ({"attack": 42}, "attack must be an AttackSpec or a callable (module, x, y) -> x_adv, got int"),
    ({"backend": "native"}, ("backend 'native' does not implement attack 'fgsm' at norm 'linf'; "
                             "backends for it: ['art', 'foolbox']")),
])
def test_adversarial_training_bad_params(kwargs, message):
    _, clf = fresh()
    kwargs = {"attack": FGSM, **kwargs}
    with pytest.raises(ValueError, match=re.escape(message)) as exc_info:
        AdversarialTraining(clf, **kwargs)
    assert _message(exc_info) == message


@pytest.mark.parametrize("kwargs, message", [
    ({"beta": -0.5}, "beta must be a non-negative finite number, got -0.5"),
    ({"beta": float("inf")}, "beta must be a non-negative finite number, got inf"),
    ({"epochs": -1}, "epochs must be a positive integer, got -1"),
    ({"optimizer": "SGD"}, "optimizer must be one of ['adam', 'sgd'], got 'SGD'"),
])
def test_entropy_regularized_bad_params(kwargs, message):
    _, clf = fresh()
    with pytest.raises(ValueError, match=re.escape(message)) as exc_info:
        EntropyRegularized(clf, **kwargs)
    assert _message(exc_info) == message


def test_bad_fit_arguments(mnist5k):
    _, clf = fresh()
    trainer = EntropyRegularized(clf, epochs=1)
    x, y = mnist5k.x_train[:10], mnist5k.y_train[:10]
    cases = [
        (dict(x=x, y=y[:9]), "x and y must have the same length, got 10 and 9"),
        (dict(x=x, y=torch.tensor([0] * 9 + [12])), "y must hold class indices in [0, 10), got range [0, 12]"),
        (dict(x=x, y=y, nb_epochs=0), "nb_epochs must be a positive integer, got 0"),
        (dict(x=x, y=y, batch_size=0), "batch_size must be a positive integer, got 0"),
        (dict(x=x.long(), y=y), "x must be floating point, got dtype torch.int64"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError) as exc_info:
            trainer.fit(**kwargs)
        assert _message(exc_info) == message
    assert trainer.history == []


def test_classifier_without_clip_values_cannot_run_a_bridge_attack():
    from art.estimators.classification import PyTorchClassifier

    clf = PyTorchClassifier(mnist_tiny_cnn(), nn.CrossEntropyLoss(), (1, 28, 28), 10)
    message = "classifier must have clip_values (the data range) to run a bridge attack"
    with pytest.raises(ValueError) as exc_info:
        AdversarialTraining(clf, FGSM)
    assert _message(exc_info) == message
    AdversarialTraining(clf, lambda module, x, y: x)  # a callable attack needs no bounds


def test_standardising_classifier_trains_the_standardised_function(tiny, mnist5k):
    """With mean/std on the classifier, the bridge model and the fast path see the same standardised function."""
    model = Model(copy.deepcopy(tiny.module), (1, 28, 28), mean=[0.1307], std=[0.3081], nb_classes=10, device="cpu")
    clf = model.art()
    x, y = mnist5k.x_test[:50], mnist5k.y_test[:50]
    fast = AdversarialTraining(clf, FGSM)
    assert torch.equal(fast.craft(x, y), AdversarialTraining(clf, FGSM, fast_path=False).craft(x, y))
    with torch.no_grad():
        assert torch.allclose(fast.forward_module()(x), model.logits(x))
