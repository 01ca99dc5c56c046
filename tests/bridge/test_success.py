"""The one definition of success (bridge.result.judge_success), checked on a hand-weighted linear model whose
predictions are worked out by hand, and on the target modes (bridge.run.resolve_targets) against brute force."""

import numpy as np
import pytest
import torch
from advbridge.bridge import AttackSpec, Model, run_attack
from advbridge.bridge.run import resolve_targets
from torch import nn

# Three classes on a 1×1×2 input: z = W x + b.
W = np.array([[10.0, 0.0], [0.0, 1.0], [0.0, 2.0]])
B = np.array([0.0, -5.0, 0.0])


def linear_model() -> Model:
    layer = nn.Linear(2, 3)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(W, dtype=torch.float32))
        layer.bias.copy_(torch.tensor(B, dtype=torch.float32))
    return Model(nn.Sequential(nn.Flatten(), layer), (1, 1, 2), nb_classes=3, device="cpu")


def images(*pixels):
    return torch.tensor(pixels, dtype=torch.float32).reshape(-1, 1, 1, 2)


# a = (0.9, 0.1): z = (9, -4.9, 0.2) -> class 0, labelled 2: already misclassified.
# b = (0.2, 0.8): z = (2, -4.2, 1.6) -> class 0, labelled 0: correct.
# c = (0.1, 0.9): z = (1, -4.1, 1.8) -> class 2, labelled 2: correct.
X = images((0.9, 0.1), (0.2, 0.8), (0.1, 0.9))
Y = torch.tensor([2, 0, 2])


def test_hand_model_predicts_what_the_comments_say():
    z = X.reshape(3, 2).numpy() @ W.T + B
    np.testing.assert_array_equal(z.argmax(1), [0, 0, 2])
    np.testing.assert_array_equal(linear_model().predict(X).numpy(), [0, 0, 2])


@pytest.mark.parametrize("backend", ["art", "foolbox"])
def test_misclassified_input_is_not_a_success_and_is_reported_apart(backend):
    # Untargeted FGSM ε = 0.1 (gradient signs by hand): a -> (1.0, 0.0), z = (10, -5, 0): still class 0, wrong, as
    # it was clean; b -> (0.1, 0.9), z = (1, -4.1, 1.8): class 2, broken; c -> (0.2, 0.8): class 0, broken.
    result = run_attack(linear_model(), X, Y, AttackSpec("fgsm", "linf", params={"eps": 0.1}), backend,
                        progress=False)
    np.testing.assert_array_equal(result.pred_adv, [0, 2, 0])
    assert result.success.tolist() == [False, True, True]  # d798862: a counted as a success with nothing done
    assert result.already_misclassified.tolist() == [True, False, False]
    assert result.n_correct == 2 and result.success_rate == 1.0  # 2 of the 2 correctly classified inputs
    assert result.robust_accuracy == 0.0
    records = result.to_records()
    assert [r["already_misclassified"] for r in records] == [True, False, False]
    assert result.summary()["already_misclassified"] == 1


def test_robust_accuracy_counts_an_already_misclassified_input_as_wrong():
    # Targeted FGSM ε = 1 toward class 1 (signs by hand: ∂CE/∂x ≈ (10 p0, p1 + 2 p2 - 1)):
    # a (label 2, clean class 0) -> (0, 1), z = (0, -4, 2): class 2, "correct" after the attack, wrong when clean;
    # c (label 2, clean class 2) -> (0, 0), z = (0, -5, 0): class 0 (first of the tie), wrong.
    x, y = X[[0, 2]], Y[[0, 2]]
    result = run_attack(linear_model(), x, y, AttackSpec("fgsm", "linf", targeted=(1, 1), params={"eps": 1.0}),
                        "art", progress=False)
    np.testing.assert_array_equal(result.pred_adv, [2, 0])
    assert not result.success.any()
    assert result.robust_accuracy == 0.0  # a is right after the attack only by accident: it was wrong when clean


def test_explicit_target_equal_to_the_true_label_is_refused():
    spec = AttackSpec("fgsm", "linf", targeted=(1, 2, 0), params={"eps": 0.1})
    with pytest.raises(ValueError, match=r"targeted\[1\] = 2 equals the true label y\[1\]"):
        run_attack(linear_model(), X, torch.tensor([2, 2, 2]), spec, "art", progress=False)
    with pytest.raises(ValueError, match=r"targeted\[1\] = 2 equals the true label y\[1\]"):
        resolve_targets(spec, linear_model(), X, torch.tensor([2, 2, 2]), seed=0)


def test_least_likely_target_is_never_the_true_label_brute_force():
    model = linear_model()
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(400, 1, 1, 2, generator=gen)
    z = x.reshape(-1, 2).double().numpy() @ W.T + B
    y = torch.from_numpy(z.argmin(1))  # every input labelled with its own least-likely class
    targets = resolve_targets(AttackSpec("fgsm", "linf", targeted="least_likely"), model, x, y, seed=0).numpy()
    masked = z.copy()
    masked[np.arange(len(z)), y.numpy()] = np.inf
    np.testing.assert_array_equal(targets, masked.argmin(1))  # the least likely of the other classes
    assert (targets != y.numpy()).all()
    # With ordinary labels the least-likely class is unchanged.
    y_true = torch.from_numpy(z.argmax(1))
    plain = resolve_targets(AttackSpec("fgsm", "linf", targeted="least_likely"), model, x, y_true, seed=0).numpy()
    np.testing.assert_array_equal(plain, z.argmin(1))


def test_step_ll_runs_toward_a_class_other_than_the_label():
    # a = (0.9, 0.1): its least-likely class is 1; labelled 1 it must be attacked toward class 2 instead.
    result = run_attack(linear_model(), X[:1], torch.tensor([1]), AttackSpec("step_ll", params={"eps": 0.1}),
                        "native", progress=False)
    assert result.targets.tolist() == [2]


def test_random_targets_never_draw_the_label_and_cover_the_other_classes():
    model = linear_model()
    x = torch.rand(60, 1, 1, 2, generator=torch.Generator().manual_seed(1))
    y = torch.arange(60) % 3
    seen = np.zeros((3, 3), int)
    for seed in range(40):
        t = resolve_targets(AttackSpec("fgsm", "linf", targeted="random"), model, x, y, seed=seed).numpy()
        assert (t != y.numpy()).all()
        np.add.at(seen, (y.numpy(), t), 1)
    assert (np.diag(seen) == 0).all()
    off = seen[~np.eye(3, dtype=bool)]
    assert off.min() > 0.35 * off.mean()  # roughly uniform over the two other classes (800 draws per label)
