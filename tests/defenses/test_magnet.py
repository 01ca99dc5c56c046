"""MagNet: autoencoders, threshold detectors, the differentiable reformer and the MagNet metric."""

import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon

from advbridge.bridge import AttackSpec, Model, run_attack
from advbridge.defenses.autoencoders import MNIST_AE_I, DenoisingAutoEncoder
from advbridge.defenses.magnet import (DivergenceDetector, MagNet, ReconstructionErrorDetector, Reformer,
                                        graybox_random_row, jensen_shannon)


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
    with pytest.raises(ValueError, match="non-empty NCHW batch"):
        det.fit(np.zeros((0, 1, 28, 28), np.float32))
