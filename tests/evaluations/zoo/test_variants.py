"""Training variants of zoo models (``<zoo name>+<variant>``): trained on first use, cached, resolvable by name."""

import re

import pytest
import torch

from advbridge.evaluations.zoo import classifiers as zoo
from advbridge.evaluations.zoo import resolve
from advbridge.evaluations.zoo import variants as training


def test_variant_trains_caches_and_resolves(tmp_path, monkeypatch, mnist5k, tiny):
    monkeypatch.setenv("ADVBRIDGE_CACHE", str(tmp_path))
    name = "mnist_tiny_cnn+entropy"
    model, info = training.load_variant(name, data=mnist5k, device="cpu")
    path = training.variant_path(name)
    assert info["freshly_trained"] and info["cache"] == str(path) and path.exists()
    assert path.parent == tmp_path / "models" and path.name.startswith("mnist_tiny_cnn+entropy-mnist5k-")
    assert info["recipe"]["entropy_beta"] == 1.0 and info["recipe"]["attack"] is None
    assert info["train"]["epochs"] == zoo.ZOO["mnist_tiny_cnn"].train.epochs  # the zoo entry's TrainConfig
    assert len(info["history"]) == info["train"]["epochs"]
    measured = (model.predict(mnist5k.x_test) == mnist5k.y_test).float().mean().item()
    assert measured == pytest.approx(info["test_accuracy"]) and measured > 0.8
    ckpt = torch.load(path, weights_only=True)  # plain tensors, numbers and strings only
    assert set(ckpt) == {"state_dict", "metrics", "history", "provenance"}
    assert ckpt["provenance"]["threads"] == 1 and info["weights"] == "trained"

    mtime = path.stat().st_mtime_ns
    again, info2 = training.load_variant(name, data=mnist5k, device="cpu")
    assert not info2["freshly_trained"] and path.stat().st_mtime_ns == mtime  # not retrained
    assert info2["weights"] == "cache"
    assert info2["test_accuracy"] == info["test_accuracy"] and info2["history"] == info["history"]
    x = mnist5k.x_test[:50]
    assert torch.equal(model.logits(x), again.logits(x))

    resolved, info3 = resolve.resolve_model(name, "mnist5k", 0, "cpu", data=mnist5k)
    assert info3["cache"] == str(path) and not info3["freshly_trained"]
    assert torch.equal(resolved.logits(x), model.logits(x))
    assert path.stat().st_mtime_ns == mtime

    # the plain zoo model, trained from the same seeded initial weights, is a different network
    assert not torch.equal(tiny.logits(x), model.logits(x))
    # the cache key covers the seed, the variant recipe and the base model
    assert training.variant_path(name, seed=1) != path
    assert training.variant_path("mnist_tiny_cnn+adv_step_ll+entropy") != path
    assert training.variant_path("mnist_cnn+entropy") != path


def test_variant_names_and_errors():
    assert set(training.TRAINING_VARIANTS) >= {"adv_fgsm", "adv_step_ll", "entropy", "adv_step_ll+entropy"}
    assert training.is_variant("mnist_cnn+adv_fgsm") and not training.is_variant("mnist_cnn")
    assert training.validate_variant("mnist_mlp+entropy") is None
    assert training.validate_variant("mnist_tiny_cnn+adv_step_ll+entropy") is None
    assert training.split_variant("mnist_cnn+adv_step_ll+entropy") == ("mnist_cnn", "adv_step_ll+entropy")
    known = sorted(training.TRAINING_VARIANTS)
    message = f"unknown training variant 'mixup' in 'mnist_tiny_cnn+mixup'; known variants: {known}"
    assert training.validate_variant("mnist_tiny_cnn+mixup") == message
    with pytest.raises(ValueError, match=re.escape(message)):
        training.load_variant("mnist_tiny_cnn+mixup")
    with pytest.raises(ValueError, match=re.escape(message)):
        resolve.resolve_model("mnist_tiny_cnn+mixup", "mnist5k", 0, "cpu")
    base_message = f"unknown base model 'resnet' in 'resnet+entropy'; zoo models: {sorted(zoo.ZOO)}"
    assert training.validate_variant("resnet+entropy") == base_message
    with pytest.raises(ValueError, match=re.escape(base_message)):
        resolve.resolve_model("resnet+entropy", "mnist5k", 0, "cpu")
    assert "not a training variant" in training.validate_variant("mnist_cnn")
    with pytest.raises(ValueError, match=re.escape("zoo model 'mnist_tiny_cnn' is defined for datasets")):
        training.load_variant("mnist_tiny_cnn+entropy", "cifar10")


def test_adversarial_variant_recipes_build_their_attacks():
    for name in ("adv_fgsm", "adv_step_ll", "adv_step_ll+entropy"):
        variant = training.TRAINING_VARIANTS[name]
        spec = variant.spec()
        assert spec is not None and variant.alpha == 0.5 and spec.to_dict() == variant.attack
    assert training.TRAINING_VARIANTS["adv_fgsm"].spec().resolved_params()["eps"] == 0.25
    assert training.TRAINING_VARIANTS["adv_step_ll+entropy"].entropy_beta == 1.0
    assert training.TRAINING_VARIANTS["entropy"].spec() is None
