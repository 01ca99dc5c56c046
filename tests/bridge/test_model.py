"""Model.art() and Model.foolbox() compute the identical function; unmodified toolkit pipelines run on them."""

import numpy as np
import pytest
import torch


def _logits_both(model, x):
    art_logits = model.art().predict(x.numpy(), batch_size=64)
    fb_logits = model.foolbox()(x).detach().cpu().numpy()
    return art_logits, fb_logits


@pytest.mark.parametrize("which", ["tiny", "defended"])
def test_art_and_foolbox_logits_equal(which, request, attack_set):
    model = request.getfixturevalue(which)
    x, _ = attack_set
    art_logits, fb_logits = _logits_both(model, x)
    assert art_logits.shape == (len(x), 10)
    np.testing.assert_allclose(art_logits, fb_logits, atol=1e-5, rtol=0)
    np.testing.assert_allclose(model.logits(x).cpu().numpy(), fb_logits, atol=1e-5, rtol=0)


def test_preprocessor_changes_the_function(tiny, defended, attack_set):
    x, _ = attack_set
    assert not torch.allclose(tiny.logits(x), defended.logits(x), atol=1e-3)


def test_unmodified_art_pipeline_on_defended_model(defended, attack_set):
    from art.attacks.evasion import FastGradientMethod, ProjectedGradientDescent

    x, y = attack_set
    x_np = x.numpy()
    clf = defended.art()
    assert len(clf.preprocessing_defences) == 1
    clean = clf.predict(x_np).argmax(1)
    fgm = FastGradientMethod(clf, eps=0.3).generate(x_np, y=y.numpy())
    pgd = ProjectedGradientDescent(clf, eps=0.3, eps_step=0.05, max_iter=10, verbose=False).generate(x_np, y=y.numpy())
    for adv in (fgm, pgd):
        assert adv.shape == x_np.shape and np.isfinite(adv).all()
        assert np.abs(adv - x_np).max() <= 0.3 + 1e-6
        assert (clf.predict(adv).argmax(1) != clean).mean() > 0.2  # the gradient reaches through the preprocessor


def test_unmodified_foolbox_attack_on_defended_model(defended, attack_set):
    import foolbox as fb

    x, y = attack_set
    raw, clipped, success = fb.attacks.LinfPGD(steps=10)(defended.foolbox(), x, fb.criteria.Misclassification(y),
                                                        epsilons=0.3)
    assert float((clipped - x).abs().max()) <= 0.3 + 1e-6
    assert float(success.float().mean()) > 0.2
    assert torch.equal(defended.predict(clipped) != y, success.cpu())


def test_model_rejects_bad_construction(tiny):
    from advbridge.bridge import Model

    with pytest.raises(TypeError, match="module must be a torch.nn.Module"):
        Model("not a module", (1, 28, 28))
    with pytest.raises(ValueError, match="input_shape must be"):
        Model(tiny.module, (28, 28))
    with pytest.raises(ValueError, match="bounds must be"):
        Model(tiny.module, (1, 28, 28), bounds=(1, 0))
    with pytest.raises(ValueError, match="mean and std must be given together"):
        Model(tiny.module, (1, 28, 28), mean=[0.5])
    with pytest.raises(TypeError, match=r"preprocessing\[0\]"):
        Model(tiny.module, (1, 28, 28), preprocessing=[lambda x: x])


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize("kwargs,match", [
    ({"input_shape": (0, 28, 28)}, r"input_shape must be \(C, H, W\) of positive integers, got \(0, 28, 28\)"),
    ({"input_shape": (1, -28, 28)}, r"input_shape must be \(C, H, W\) of positive integers"),
    ({"nb_classes": 0}, "nb_classes must be a positive integer, got 0"),
    ({"nb_classes": -3}, "nb_classes must be a positive integer, got -3"),
    ({"bounds": (0.0, INF)}, r"bounds\[1\] must be a finite number, got inf"),
    ({"bounds": (-INF, 1.0)}, r"bounds\[0\] must be a finite number, got -inf"),
    ({"bounds": (NAN, 1.0)}, r"bounds\[0\] must be a finite number, got nan"),
    ({"bounds": (0.5, 0.5)}, r"bounds must be \(low, high\) with low < high"),
    ({"mean": [0.1], "std": [0.0]}, r"std\[0\] must be a positive finite number, got 0.0"),
    ({"mean": [0.1], "std": [-0.3]}, r"std\[0\] must be a positive finite number, got -0.3"),
    ({"mean": [0.1], "std": [NAN]}, r"std\[0\] must be a positive finite number, got nan"),
    ({"mean": [0.1], "std": [INF]}, r"std\[0\] must be a positive finite number, got inf"),
    ({"mean": [NAN], "std": [0.3]}, r"mean\[0\] must be a finite number, got nan"),
    ({"mean": [INF], "std": [0.3]}, r"mean\[0\] must be a finite number, got inf"),
    ({"mean": [0.1, 0.2], "std": [0.3]}, "mean must have 1 entry, got 2"),
    ({"mean": [0.1], "std": [0.3, 0.3]}, "std must have 1 entry, got 2"),
])
def test_model_rejects_bad_arguments_naming_them(tiny, kwargs, match):
    """Each bad argument is refused at construction (nb_classes given, so no forward pass could catch it)."""
    from advbridge.bridge import Model

    args = {"input_shape": (1, 28, 28), "nb_classes": 10, **kwargs}
    with pytest.raises(ValueError, match=match):
        Model(tiny.module, args.pop("input_shape"), device="cpu", **args)


def test_three_channel_mean_std_wrong_length_is_refused():
    from advbridge.bridge import Model

    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 5))
    with pytest.raises(ValueError, match=r"std must have 1 entry or 3 \(one per channel\), got 2"):
        Model(net, (3, 4, 4), mean=[0.1, 0.2, 0.3], std=[0.2, 0.2], nb_classes=5, device="cpu")


def test_with_device_leaves_the_original_and_its_wrappers_alone(tiny, attack_set):
    """A clone on another device ("meta" here) must not move the module the original's cached wrappers use."""
    import copy

    from advbridge.bridge import Model

    x, _ = attack_set
    x = x[:8]
    blur = torch.nn.AvgPool2d(3, stride=1, padding=1)
    model = Model(copy.deepcopy(tiny.module), (1, 28, 28), preprocessing=[blur], mean=[0.1307], std=[0.3081],
                  nb_classes=10, device="cpu")
    art_before, fb_before = _logits_both(model, x)  # caches both wrappers
    logits_before = model.logits(x).numpy()

    moved = model.with_device("meta")
    assert moved.device == torch.device("meta") and model.device == torch.device("cpu")
    assert all(p.device.type == "meta" for p in moved.pipeline.parameters())  # the clone is built and moved

    art_after, fb_after = _logits_both(model, x)
    np.testing.assert_array_equal(art_after, art_before)
    np.testing.assert_array_equal(fb_after, fb_before)
    np.testing.assert_array_equal(model.logits(x).numpy(), logits_before)
    assert torch.equal(model.predict(x), torch.from_numpy(logits_before.argmax(1)))
    assert all(p.device.type == "cpu" for p in model.module.parameters())
    assert moved.module is not model.module
    # A fresh wrapper of the original is still on its device too.
    np.testing.assert_allclose(Model(model.module, (1, 28, 28), preprocessing=[blur], mean=[0.1307], std=[0.3081],
                                     device="cpu").logits(x).numpy(), logits_before, atol=1e-6, rtol=0)

    same = model.with_device("cpu")  # nothing moves: the module is shared, the wrappers are fresh
    assert same.module is model.module
    assert same.art() is not model.art() and same.foolbox() is not model.foolbox()
    np.testing.assert_allclose(same.art().predict(x.numpy()), art_before, atol=1e-6, rtol=0)


def test_three_channel_mean_std_equals_a_hand_normalised_forward_pass():
    """Per-channel mean/std on three channels: ART, Foolbox and Model.logits equal net((x - mean_c) / std_c)."""
    from art.utils import to_categorical

    from advbridge.bridge import Model

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                              torch.nn.Linear(4 * 6 * 6, 5)).eval()
    mean, std = [0.2, 0.5, 0.7], [0.1, 0.25, 0.4]
    model = Model(net, (3, 8, 8), mean=mean, std=std, device="cpu")
    assert model.nb_classes == 5
    x = torch.rand(6, 3, 8, 8)
    m_t, s_t = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        by_hand = net((x - m_t) / s_t).numpy()
        swapped = net((x - m_t.flip(1)) / s_t.flip(1)).numpy()  # the wrong channel order
    art_logits, fb_logits = _logits_both(model, x)
    for logits in (art_logits, fb_logits, model.logits(x).numpy()):
        np.testing.assert_allclose(logits, by_hand, atol=1e-5, rtol=0)
    assert np.abs(swapped - by_hand).max() > 1e-2  # the check can tell the channels apart

    # The gradient ART's attacks use goes through the same normalisation.
    y = torch.arange(6) % 5
    xg = x.clone().requires_grad_(True)
    torch.nn.functional.cross_entropy(net((xg - m_t) / s_t), y).backward()
    art_grad = model.art().loss_gradient(x.numpy(), to_categorical(y.numpy(), 5))
    np.testing.assert_allclose(art_grad, xg.grad.numpy(), atol=1e-6, rtol=1e-4)
