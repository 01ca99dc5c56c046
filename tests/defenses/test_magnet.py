"""MagNet: autoencoders, threshold detectors, the differentiable reformer and the MagNet metric."""

import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon
from torch import nn

from advbridge.bridge import AttackSpec, Model, run_attack
from advbridge.defenses.autoencoders import MNIST_AE_I, MNIST_AE_II, DenoisingAutoEncoder
from advbridge.defenses.magnet import (DivergenceDetector, MagNet, RandomizedMagNet, ReconstructionErrorDetector,
                                        Reformer, graybox_random_row, jensen_shannon)
from advbridge.defenses.mid import MutualInformationDetector


def test_autoencoder_shapes_and_layers():
    ae = DenoisingAutoEncoder(MNIST_AE_I)
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        out = ae(x)
    assert out.shape == x.shape and 0 <= float(out.min()) and float(out.max()) <= 1
    convs = [m for m in ae.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [3, 3, 3, 3, 1]  # Conv3 Pool Conv3 | Conv3 Up Conv3 | Conv1
    assert DenoisingAutoEncoder((3,), channels=3)(torch.rand(1, 3, 32, 32)).shape == (1, 3, 32, 32)
    with pytest.raises(ValueError, match="structure entries must be positive ints"):
        DenoisingAutoEncoder((3, "median"))


def test_jensen_shannon_matches_scipy():
    p = torch.softmax(torch.randn(5, 10), 1)
    q = torch.softmax(torch.randn(5, 10), 1)
    ours = jensen_shannon(p, q).numpy()
    reference = np.array([jensenshannon(a, b) ** 2 for a, b in zip(p.numpy(), q.numpy())])
    np.testing.assert_allclose(ours, reference, rtol=1e-4)


def test_thresholds_keep_the_false_positive_budget(autoencoders, mnist5k, tiny):
    ae1, ae2 = autoencoders
    budget = 0.05
    detectors = [ReconstructionErrorDetector(ae1, p=2, drop_rate=budget),
                 ReconstructionErrorDetector(ae2, p=1, drop_rate=budget),
                 DivergenceDetector(tiny.module, ae1, temperature=10.0, drop_rate=budget)]
    # 3 sigma of the difference between the validation quantile and the held-out rate (two binomial samples)
    sampling = 3 * np.sqrt(budget * (1 - budget) * (1 / len(mnist5k.x_val) + 1 / len(mnist5k.x_test)))
    for det in detectors:
        det.fit(mnist5k.x_val.numpy())
        report, flagged = det.detect(mnist5k.x_test.numpy())
        assert set(report) == {"scores", "threshold"} and flagged.dtype == bool
        assert flagged.mean() <= budget + sampling
        if isinstance(det, ReconstructionErrorDetector):  # off-manifold inputs reconstruct badly
            noisy = (mnist5k.x_test[:200] + torch.rand(200, 1, 28, 28) * 0.6).clamp(0, 1)
            assert det.detect(noisy)[1].mean() > 0.5


def test_reformer_is_differentiable_for_art_and_foolbox(autoencoders, tiny, attack_set):
    ae1, _ = autoencoders
    defended = Model(tiny.module, (1, 28, 28), preprocessing=[Reformer(ae1)], device="cpu")
    x, y = attack_set
    grad = defended.art().loss_gradient(x.numpy(), np.eye(10)[y.numpy()])
    assert np.abs(grad).reshape(len(x), -1).max(1).min() > 0  # ART gets a non-zero gradient for every input
    np.testing.assert_allclose(defended.art().predict(x.numpy()), defended.foolbox()(x).detach().numpy(), atol=1e-5)
    for backend in ("art", "foolbox"):
        white_box = run_attack(defended, x, y, AttackSpec("pgd", "linf", params={"eps": 0.3, "steps": 10}), backend)
        assert white_box.success_rate > 0.3


def test_magnet_metric_and_ablations(autoencoders, tiny, attack_set, mnist5k):
    ae1, ae2 = autoencoders
    magnet = MagNet(tiny.module, [ReconstructionErrorDetector(ae1, p=2, drop_rate=0.01),
                                  ReconstructionErrorDetector(ae2, p=1, drop_rate=0.01)], Reformer(ae1))
    magnet.fit(mnist5k.x_val)
    x, y = attack_set
    adv = run_attack(tiny, x, y, AttackSpec("fgsm", "linf", params={"eps": 0.2}), "art")  # oblivious attack
    ev = magnet.evaluate(adv.x_adv, y.numpy())
    assert ev.no_defense == pytest.approx(1 - adv.success_rate)
    assert ev.with_defense >= max(ev.detector_only, ev.reformer_only) - 1e-9
    assert ev.with_defense > ev.no_defense
    clean = magnet.evaluate(x, y.numpy())
    assert clean.no_defense == 1.0 and clean.detection_rate <= 0.1


def test_graybox_random_row_is_the_column_mean():
    table = np.array([
        [0.0, 92.8, 92.5, 93.1, 91.8, 91.8, 92.5, 93.6], [92.1, 0.0, 92.0, 92.5, 91.4, 92.5, 91.3, 92.5],
        [93.2, 93.8, 0.0, 92.8, 93.3, 94.1, 92.7, 93.6], [92.8, 92.2, 91.3, 0.0, 91.7, 92.8, 91.2, 93.9],
        [93.3, 94.0, 93.4, 93.2, 0.0, 93.4, 91.0, 92.8], [92.8, 93.1, 93.2, 93.6, 92.2, 0.0, 92.8, 93.8],
        [92.5, 93.1, 92.0, 92.2, 90.5, 93.5, 0.1, 93.4], [92.3, 92.0, 91.8, 92.6, 91.4, 92.3, 92.4, 0.0]])
    paper_random = np.array([81.1, 81.4, 80.8, 81.3, 80.3, 81.3, 80.5, 81.7])
    np.testing.assert_allclose(graybox_random_row(table), paper_random, atol=0.051)
    with pytest.raises(ValueError, match="square"):
        graybox_random_row(np.ones((2, 3)))


def test_bad_inputs(autoencoders):
    ae1, _ = autoencoders
    with pytest.raises(ValueError, match="p must be 1 or 2"):
        ReconstructionErrorDetector(ae1, p=3)
    with pytest.raises(ValueError, match="drop_rate must be a float in"):
        ReconstructionErrorDetector(ae1, drop_rate=1.5)
    det = ReconstructionErrorDetector(ae1)
    with pytest.raises(ValueError, match="is not fitted"):
        det.detect(np.zeros((1, 1, 28, 28), np.float32))
    with pytest.raises(ValueError, match="contains NaN"):
        det.fit(np.full((2, 1, 28, 28), np.nan, np.float32))
    with pytest.raises(ValueError, match="x is an empty batch"):
        det.fit(np.zeros((0, 1, 28, 28), np.float32))


class _Halve(nn.Module):
    """A known "autoencoder": ``ae(x) = x / 2``, so ``x - ae(x) = x / 2``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * x


def _linear(weights: np.ndarray) -> nn.Module:
    """A classifier with known weights: ``logits = flatten(x) @ weights`` (no bias)."""
    layer = nn.Linear(weights.shape[0], weights.shape[1], bias=False)
    layer.weight.data = torch.tensor(weights.T, dtype=torch.float32)
    return nn.Sequential(nn.Flatten(), layer)


def test_reconstruction_scores_threshold_and_metric_by_hand():
    """MagNet's scores, its false-positive threshold rule (§2.3) and its metric on 1x2x2 images with ae(x) = x/2."""
    one = torch.tensor([[[[0.0, 1.0], [1.0, 0.0]]]])
    p2, p1 = ReconstructionErrorDetector(_Halve(), p=2), ReconstructionErrorDetector(_Halve(), p=1)
    assert p2.score(one)[0] == pytest.approx(0.125)  # mean of (0, 0.5, 0.5, 0)^2 = 0.5/4
    assert p1.score(one)[0] == pytest.approx(0.25)   # mean of |(0, 0.5, 0.5, 0)| = 1/4

    rng = np.random.default_rng(0)
    x_val = rng.uniform(0, 1, (200, 1, 2, 2)).astype(np.float32)
    budget = 0.05
    for det, by_hand in ((p2, 0.25 * (x_val.astype(np.float64) ** 2).mean((1, 2, 3))),
                         (p1, 0.5 * x_val.astype(np.float64).mean((1, 2, 3)))):
        det.drop_rate = budget
        det.fit(x_val)
        threshold = np.sort(by_hand)[-int(len(x_val) * budget)]  # the 10th highest clean score
        assert det.threshold == pytest.approx(threshold, rel=1e-6)
        report, flagged = det.detect(x_val)
        np.testing.assert_allclose(report["scores"], by_hand, rtol=1e-5)
        assert flagged.sum() == 10 and np.array_equal(flagged, by_hand >= threshold)

    weights = rng.normal(size=(4, 3)) * 30  # logits of a few units at T = 10
    classifier = _linear(weights)
    jsd = DivergenceDetector(classifier, _Halve(), temperature=10.0, drop_rate=budget)

    def softmax(z):
        e = np.exp(z - z.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)
    flat = x_val.reshape(len(x_val), -1).astype(np.float64)
    by_hand = np.array([jensenshannon(a, b) ** 2 for a, b in zip(softmax(flat @ weights / 10),
                                                                 softmax(0.5 * flat @ weights / 10), strict=True)])
    np.testing.assert_allclose(jsd.score(x_val), by_hand, rtol=1e-3, atol=1e-6)  # float32 vs float64

    magnet = MagNet(classifier, [ReconstructionErrorDetector(_Halve(), p=2, drop_rate=budget)], Reformer(_Halve()))
    magnet.fit(x_val)
    x, y = x_val[:50], rng.integers(0, 3, 50)
    rejected = 0.25 * (flat[:50] ** 2).mean(1) >= threshold_of(0.25 * (flat ** 2).mean(1), budget)
    raw_ok, reformed_ok = (flat[:50] @ weights).argmax(1) == y, (0.5 * flat[:50] @ weights).argmax(1) == y
    ev = magnet.evaluate(x, y)
    assert ev.with_defense == pytest.approx((rejected | reformed_ok).mean())
    assert ev.detector_only == pytest.approx((rejected | raw_ok).mean())
    assert ev.reformer_only == pytest.approx(reformed_ok.mean()) and ev.no_defense == pytest.approx(raw_ok.mean())
    assert ev.detection_rate == pytest.approx(rejected.mean())


def threshold_of(clean_scores: np.ndarray, drop_rate: float) -> float:
    """MagNet's rule written with numpy: the ``int(N·drop_rate)``-th highest clean score."""
    return float(np.sort(clean_scores)[-int(len(clean_scores) * drop_rate)])


@pytest.fixture(scope="module")
def untrained():
    """An untrained AE-II and a linear classifier: bad-input checks need no training."""
    torch.manual_seed(0)
    return DenoisingAutoEncoder(MNIST_AE_II).eval(), _linear(np.random.default_rng(0).normal(size=(784, 10)) * 0.01)


BAD_IMAGES = {
    "x255": (lambda x: x * 255, r"outside the bounds \[0, 1\] \(it looks like 0-255 pixels"),
    "wrong_hw": (lambda x: torch.nn.functional.pad(x, (2, 2, 2, 2)), r"has shape \(4, 1, 32, 32\); expected \(N, 1, 28, 28\)"),
    "channels_last": (lambda x: x.permute(0, 2, 3, 1), r"looks channels-last"),
    "three_channels": (lambda x: x.repeat(1, 3, 1, 1), r"has shape \(4, 3, 28, 28\); expected \(N, 1, 28, 28\)"),
    "nan": (lambda x: x.masked_fill(x > 0.5, float("nan")), r"contains NaN or inf"),
}


def _clean(n: int = 4) -> torch.Tensor:
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(n))


@pytest.mark.parametrize("kind", ["recon", "jsd", "mid"])
@pytest.mark.parametrize("bad", sorted(BAD_IMAGES))
def test_detectors_reject_bad_images(kind, bad, untrained):
    ae, classifier = untrained
    det = {"recon": lambda: ReconstructionErrorDetector(ae, p=1, drop_rate=0.1),
           "jsd": lambda: DivergenceDetector(classifier, ae, drop_rate=0.1),
           "mid": lambda: MutualInformationDetector(classifier, ae, drop_rate=0.1)}[kind]()
    det.fit(_clean(20))
    transform, message = BAD_IMAGES[bad]
    with pytest.raises(ValueError, match=message):
        det.detect(transform(_clean()))
    with pytest.raises(ValueError, match=message):
        det.score(transform(_clean()).numpy())


def test_detectors_check_a_given_input_shape_before_fit_and_learn_it_from_fit(untrained):
    ae, _ = untrained
    given = ReconstructionErrorDetector(ae, input_shape=(1, 28, 28))
    with pytest.raises(ValueError, match=r"expected \(N, 1, 28, 28\)"):
        given.score(torch.rand(2, 1, 32, 32))
    learnt = ReconstructionErrorDetector(ae, p=1, drop_rate=0.1)
    with pytest.raises(ValueError, match=r"does not fit ReconstructionErrorDetector: expected channels-first"):
        learnt.fit(_clean(8).permute(0, 2, 3, 1))  # nothing to compare with: the AE's error, explained
    learnt.fit(_clean(8))
    assert learnt.expected_shape == (1, 28, 28)
    with pytest.raises(ValueError, match="outside the bounds"):
        ReconstructionErrorDetector(ae, bounds=(-0.5, 0.5)).score(_clean())  # bounds follow the clip values


@pytest.mark.parametrize("temperature", [float("nan"), float("inf"), 0.0, -1.0])
def test_temperatures_must_be_positive_and_finite(temperature, untrained):
    ae, classifier = untrained
    with pytest.raises(ValueError, match="temperature must be a positive finite number"):
        DivergenceDetector(classifier, ae, temperature=temperature)
    with pytest.raises(ValueError, match="temperature must be a positive finite number"):
        MutualInformationDetector(classifier, ae, temperature=temperature)


@pytest.mark.parametrize("bad", sorted(BAD_IMAGES))
def test_reformer_rejects_bad_images(bad, untrained):
    ae, _ = untrained
    transform, message = BAD_IMAGES[bad]
    with pytest.raises(ValueError, match=message):
        Reformer(ae, input_shape=(1, 28, 28)).forward(transform(_clean()))


def test_reformer_check_keeps_autograd_and_device(untrained):
    ae, _ = untrained
    reformer = Reformer(ae)
    with pytest.raises(ValueError, match="outside the bounds"):
        reformer.forward(_clean() * 255)
    with pytest.raises(ValueError, match="does not fit the reformer's autoencoder: expected channels-first"):
        reformer.forward(_clean().permute(0, 2, 3, 1))
    x = _clean().requires_grad_(True)
    out, _ = reformer.forward(x)
    assert out.requires_grad and out.device == x.device
    out.sum().backward()
    xr = x.detach().clone().requires_grad_(True)
    ae(xr).clamp(0, 1).sum().backward()
    assert torch.equal(x.grad, xr.grad)  # the check leaves the graph as it was


@pytest.mark.parametrize("bad", sorted(BAD_IMAGES))
def test_magnet_rejects_bad_images(bad, untrained):
    ae, classifier = untrained
    magnet = MagNet(classifier, [ReconstructionErrorDetector(ae, p=1, drop_rate=0.1)], Reformer(ae))
    magnet.fit(_clean(20))
    transform, message = BAD_IMAGES[bad]
    x = transform(_clean())
    for call in (lambda: magnet.run(x), lambda: magnet.predict(x), lambda: magnet.detect(x),
                 lambda: magnet.evaluate(x, np.zeros(4, np.int64))):
        with pytest.raises(ValueError, match=message):
            call()
    reformer_only = MagNet(classifier, {}, Reformer(ae, input_shape=(1, 28, 28)))  # no fit needed
    with pytest.raises(ValueError, match=message):
        reformer_only.predict(x)
    randomized = RandomizedMagNet([magnet, reformer_only], seed=0)
    for call in (lambda: randomized.run(x), lambda: randomized.predict(x),
                 lambda: randomized.evaluate(x, np.zeros(4, np.int64))):
        with pytest.raises(ValueError, match=message):
            call()


@pytest.mark.parametrize(("labels", "error", "message"), [
    (np.array([0, 1, 2, 10]), ValueError, r"y has labels in \[0, 10\]; expected 0 <= y < 10"),
    (np.array([0, 1, 2, -1]), ValueError, r"y has labels in \[-1, 2\]; expected 0 <= y < 10"),
    (np.array([0.0, 1.0, 2.0, 3.0]), TypeError, r"y must hold integer class indices"),
    (np.array([0, 1, 2]), ValueError, r"y has length 3 but x has 4 inputs"),
])
def test_magnet_evaluate_checks_labels(labels, error, message, untrained):
    ae, classifier = untrained
    systems = [MagNet(classifier, [ReconstructionErrorDetector(ae, p=1, drop_rate=0.1)], Reformer(ae)).fit(_clean(20))
               for _ in range(2)]
    with pytest.raises(error, match=message):
        systems[0].evaluate(_clean(), labels)
    with pytest.raises(error, match=message):
        RandomizedMagNet(systems, seed=0).evaluate(_clean(), labels)


def test_magnet_components_must_agree_on_bounds_and_shape(untrained):
    ae, classifier = untrained
    with pytest.raises(ValueError, match=r"bounds \(0.0, 1.0\) differ from the bounds \(-0.5, 0.5\)"):
        MagNet(classifier, [ReconstructionErrorDetector(ae, bounds=(-0.5, 0.5))], Reformer(ae))
    with pytest.raises(ValueError, match=r"input_shape \(1, 28, 28\) differs from the input shape \(1, 32, 32\)"):
        MagNet(classifier, [ReconstructionErrorDetector(ae, input_shape=(1, 32, 32))],
               Reformer(ae, input_shape=(1, 28, 28)))


def test_magnet_evaluate_counts_already_misclassified_inputs_as_not_handled():
    """One definition of success: an input the system gets wrong when clean is never 'handled' (hand-computed)."""
    from advbridge.defenses.magnet import MagNetOutputs

    def outputs(rejected, pred_raw, pred_reformed):
        return MagNetOutputs(scores={}, flags={}, rejected=np.array(rejected), pred_raw=np.array(pred_raw),
                             pred_reformed=np.array(pred_reformed))

    y = np.array([0, 1, 2, 3])
    # Input 0: right when clean, its adversarial version rejected -> handled.
    # Input 1: wrong when clean after reforming (already misclassified), adversarial rejected -> NOT handled.
    # Input 2: right when clean, adversarial reformed back to 2 -> handled.
    # Input 3: right when clean, adversarial accepted and wrong -> not handled.
    clean = outputs([False] * 4, [0, 1, 2, 3], [0, 7, 2, 3])
    adv = outputs([True, True, False, False], [5, 5, 5, 5], [5, 5, 2, 9])
    ev = adv.evaluate(y, clean)
    assert ev.with_defense == 0.5 and ev.already_misclassified == 1
    assert ev.detector_only == 0.5  # raw clean predictions are all right: inputs 0 and 1 rejected
    assert ev.reformer_only == 0.25 and ev.no_defense == 0.0 and ev.detection_rate == 0.5
    # Without the clean outputs, input 1 would count as handled: the old, inflated number.
    assert adv.evaluate(y).with_defense == 0.75
