"""MagNet and MID used from inside ART and Foolbox, with the toolkits' own classes (issue 4, section 4)."""

import foolbox as fb
import numpy as np
import pytest
import torch
from art.attacks.evasion import CarliniL2Method, ProjectedGradientDescent
from art.estimators.classification import DetectorClassifier, PyTorchClassifier

from advbridge.bridge import Model
from advbridge.defenses.art_clients import DetectorMargin, art_detector
from advbridge.defenses.magnet import DivergenceDetector, MagNet, ReconstructionErrorDetector, Reformer
from advbridge.defenses.mid import MutualInformationDetector


@pytest.fixture(scope="module")
def art_defended(autoencoders, tiny):
    ae1, _ = autoencoders
    return PyTorchClassifier(model=tiny.module, loss=torch.nn.CrossEntropyLoss(), input_shape=(1, 28, 28),
                             nb_classes=10, clip_values=(0.0, 1.0), preprocessing_defences=[Reformer(ae1)])


def test_reformer_gradient_in_art_matches_autograd(art_defended, autoencoders, tiny, attack_set):
    ae1, _ = autoencoders
    x, y = attack_set[0][:8], attack_set[1][:8]
    art_grad = art_defended.loss_gradient(x.numpy(), np.eye(10, dtype=np.float32)[y.numpy()])
    xg = x.clone().requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(tiny.module(ae1(xg).clamp(0, 1)), y)  # ART averages over the batch
    reference, = torch.autograd.grad(loss, xg)
    assert np.abs(art_grad).reshape(len(x), -1).max(1).min() > 0
    np.testing.assert_allclose(art_grad, reference.numpy(), rtol=1e-4, atol=1e-7)


def test_art_attacks_run_through_the_reformer(art_defended, autoencoders, tiny, attack_set):
    ae1, _ = autoencoders
    x, y = attack_set[0].numpy(), attack_set[1].numpy()
    defended = lambda z: art_defended.predict(z).argmax(1)  # noqa: E731
    keep = defended(x) == y  # the 10-epoch test autoencoder costs the tiny CNN some clean accuracy
    x, y = x[keep][:16], y[keep][:16]
    assert len(x) >= 12
    pgd = ProjectedGradientDescent(art_defended, eps=0.3, eps_step=0.05, max_iter=20, verbose=False)
    x_pgd = pgd.generate(x, y=y)
    assert np.abs(x_pgd - x).max() <= 0.3 + 1e-6
    assert (defended(x_pgd) != y).mean() >= 0.5  # white-box through the reformer breaks most inputs
    cw = CarliniL2Method(art_defended, max_iter=40, binary_search_steps=1, learning_rate=0.1, initial_const=20.0,
                         batch_size=16, verbose=False)
    x_cw = cw.generate(x[:8])
    broken = defended(x_cw) != y[:8]
    assert broken.mean() >= 0.5 and np.abs(x_cw - x[:8])[broken].max() > 0


def test_foolbox_attacks_the_defended_bridge_model(autoencoders, tiny, attack_set):
    ae1, _ = autoencoders
    defended = Model(tiny.module, (1, 28, 28), preprocessing=[Reformer(ae1)], device="cpu")
    x, y = attack_set[0][:16], attack_set[1][:16]
    _, x_adv, success = fb.attacks.LinfPGD(steps=20)(defended.foolbox(), x, y, epsilons=0.3)
    assert float(success.float().mean()) >= 0.5
    with torch.no_grad():
        assert torch.equal(defended.logits(x_adv).argmax(1) != y, success)


@pytest.mark.parametrize("kind", ["recon", "jsd", "mid"])
def test_detectors_inside_art_detector_classifier(kind, autoencoders, tiny, mnist5k):
    ae1, ae2 = autoencoders
    detector = {"recon": lambda: ReconstructionErrorDetector(ae2, p=1, drop_rate=0.05),
                "jsd": lambda: DivergenceDetector(tiny.module, ae1, temperature=10.0, drop_rate=0.05),
                "mid": lambda: MutualInformationDetector(tiny.module, ae1, drop_rate=0.05)}[kind]()
    detector.fit(mnist5k.x_val)
    clean = mnist5k.x_test[:100]
    noisy = (clean + 0.5 * torch.rand(clean.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    x = torch.cat([clean, noisy]).numpy()
    _, flagged = detector.detect(x)
    assert 0 < flagged.sum() < len(x)  # both outcomes occur, so the comparison below can fail
    classifier = Model(tiny.module, (1, 28, 28), device="cpu").art(probabilities=True)
    combined = DetectorClassifier(classifier, art_detector(detector, (1, 28, 28)))
    assert combined.nb_classes == 11
    rejected_by_art = combined.predict(x).argmax(1) == 10
    np.testing.assert_array_equal(rejected_by_art, flagged)


def test_magnet_system_and_detector_margin_errors(autoencoders, tiny):
    ae1, _ = autoencoders
    with pytest.raises(ValueError, match="is not fitted"):
        DetectorMargin(ReconstructionErrorDetector(ae1))
    with pytest.raises(TypeError, match="must be a MagNet or MID detector"):
        DetectorMargin(ae1)
    with pytest.raises(TypeError, match="must be a MagNet or MID detector"):
        MagNet(tiny.module, {"a": ae1}, None)
    with pytest.raises(ValueError, match="is not fitted: call MagNet.fit"):
        MagNet(tiny.module, [ReconstructionErrorDetector(ae1)], Reformer(ae1)).detect(torch.rand(2, 1, 28, 28))


def test_art_detector_checks_its_input_and_agrees_with_the_detector(autoencoders, mnist5k):
    _, ae2 = autoencoders
    detector = ReconstructionErrorDetector(ae2, p=1, drop_rate=0.05)
    detector.fit(mnist5k.x_val[:200])
    margin = DetectorMargin(detector)
    with pytest.raises(ValueError, match=r"outside the bounds \[0, 1\] \(it looks like 0-255 pixels"):
        margin(mnist5k.x_test[:4] * 255)
    with pytest.raises(ValueError, match=r"expected \(N, 1, 28, 28\)"):
        margin(torch.nn.functional.pad(mnist5k.x_test[:4], (2, 2, 2, 2)))
    with pytest.raises(ValueError, match=r"clip_values \(-0.5, 0.5\) differ from the detector's bounds \(0.0, 1.0\)"):
        art_detector(detector, (1, 28, 28), clip_values=(-0.5, 0.5))
    with pytest.raises(ValueError, match=r"input_shape \(1, 32, 32\) differs from the detector's input shape"):
        art_detector(detector, (1, 32, 32))
