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
