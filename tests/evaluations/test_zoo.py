"""Model zoo: train once, cache by config hash, load with weights_only, report accuracy."""

import pytest
import torch

from advbridge.evaluations import zoo


def test_cache_roundtrip(tmp_path, monkeypatch, mnist5k):
    monkeypatch.setenv("ADVBRIDGE_CACHE", str(tmp_path))
    first = zoo.load_model("mnist_tiny_cnn", data=mnist5k, device="cpu")
    assert first.freshly_trained and first.path.exists() and str(first.path).startswith(str(tmp_path))
    second = zoo.load_model("mnist_tiny_cnn", data=mnist5k, device="cpu")
    assert not second.freshly_trained and second.test_accuracy == first.test_accuracy
    x = mnist5k.x_test[:20]
    assert torch.equal(first.model.logits(x), second.model.logits(x))
    ckpt = torch.load(second.path, weights_only=True)  # plain tensors and numbers only
    assert set(ckpt) == {"state_dict", "metrics"}
    other_seed = zoo.load_model("mnist_tiny_cnn", data=mnist5k, device="cpu", seed=1)
    assert other_seed.path != first.path


def test_training_is_reproducible_whatever_the_global_rng(tmp_path, monkeypatch, mnist5k):
    monkeypatch.setenv("ADVBRIDGE_CACHE", str(tmp_path))
    torch.manual_seed(123)
    a = zoo.load_model("mnist_tiny_cnn", data=mnist5k, device="cpu", retrain=True)
    torch.rand(17)
    b = zoo.load_model("mnist_tiny_cnn", data=mnist5k, device="cpu", retrain=True)
    x = mnist5k.x_test[:20]
    assert torch.equal(a.model.logits(x), b.model.logits(x))


def test_tiny_model_learns(tiny, mnist5k):
    acc = (tiny.predict(mnist5k.x_test) == mnist5k.y_test).float().mean().item()
    assert acc > 0.8


def test_unknown_model_and_dataset():
    with pytest.raises(ValueError, match="unknown zoo model 'resnet'"):
        zoo.load_model("resnet")
    with pytest.raises(ValueError, match="zoo model 'mnist_cnn' is defined for datasets"):
        zoo.load_model("mnist_cnn", "cifar10")


def test_mnist_cnn_recipe_learns_in_one_epoch(mnist5k):
    """The zoo's mnist_cnn recipe (architecture, optimiser, batch size, learning rate) for one of its 10 epochs: 85%
    on one CPU thread with seed 0, against 10% for chance (the full recipe is the slow test below)."""
    from dataclasses import replace

    entry = zoo.ZOO["mnist_cnn"]
    scores = zoo._train(entry.build(), replace(entry.train, epochs=1), mnist5k, 0, torch.device("cpu"), "mnist_cnn")
    assert scores["test_accuracy"] >= 0.80


@pytest.mark.slow
def test_mnist_cnn_reaches_95_percent(mnist5k):
    """The Carlini/MagNet CNN on mnist5k (trained on first use, ~100 s on one thread, then cached): `make test-slow`."""
    model = zoo.load_model("mnist_cnn", data=mnist5k, device="cpu")
    assert model.test_accuracy >= 0.95
    measured = (model.model.predict(mnist5k.x_test) == mnist5k.y_test).float().mean().item()
    assert measured == pytest.approx(model.test_accuracy)
