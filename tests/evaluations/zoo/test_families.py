"""The model-family registry: every family resolves one of its models on a tiny case (shipped weights, or a user's
factory), names it in ``model_names`` and accepts it in ``model_error``; duplicates are refused."""

from __future__ import annotations

import json

import pytest

from advbridge.evaluations.core.cache import WEIGHTS_DIR
from advbridge.evaluations.zoo.family import FAMILIES, ModelFamily
from advbridge.evaluations.zoo.resolve import family_of, model_checkpoints, model_error, model_names, resolve_model

#: One model per family; all but the user factory are shipped, so nothing trains here.
CASES = {"zoo": "mnist_tiny_cnn", "variant": "mnist_mlp+adv_fgsm", "generative": "mnist_vae",
         "gpdnn": "mnist_gpdnn", "import": "user_models:masked"}


def test_the_registered_families():
    assert list(FAMILIES) == ["zoo", "variant", "generative", "gpdnn", "import"]


@pytest.mark.parametrize("family", list(CASES))
def test_every_family_resolves_its_model(family, mnist5k):
    name = CASES[family]
    assert family_of(name) is FAMILIES[family]
    assert model_error(name) is None
    model, info = resolve_model(name, "mnist5k", 0, "cpu", data=mnist5k)
    x, y = mnist5k.x_test[:200], mnist5k.y_test[:200]
    pred = model.predict(x)
    assert pred.shape == y.shape
    if family != "import":  # trained models: far above the 10% of chance; the user factory is an untrained probe
        assert (pred == y).float().mean().item() > 0.7
        assert info.get("model", name) == name
        manifest = json.loads((WEIGHTS_DIR / "weights.json").read_text())["checkpoints"]
        assert set(model_checkpoints(name)) <= set(manifest)
        assert any(row[0] == name and row[1] == family for row in model_names())


def test_a_duplicate_family_is_refused():
    with pytest.raises(ValueError, match="model family 'zoo' is registered twice"):
        FAMILIES.add(ModelFamily("zoo", owns=bool, load=resolve_model, listing=list, hint=""))


def test_unknown_names_get_one_message_naming_every_family():
    message = model_error("resnet")
    assert message.startswith("unknown model 'resnet'; zoo models: [")
    assert "generative models: ['mnist_vae', 'mnist_vae_tiny'], GPDNN models: ['mnist_gpdnn'], trained variants" in message
    assert message.endswith("(or package.module:function)")
    with pytest.raises(ValueError, match="unknown model 'resnet'"):
        model_checkpoints("resnet")
    with pytest.raises(ValueError, match="unknown zoo model 'resnet'"):
        resolve_model("resnet", "mnist5k", 0, "cpu")
