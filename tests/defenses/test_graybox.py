"""MagNet graybox: diversity training of several autoencoders and the randomized defense."""

import numpy as np
import pytest
import torch

from advbridge.defenses.autoencoders import MNIST_AE_II, DenoisingAutoEncoder, train_diverse_autoencoders
from advbridge.defenses.magnet import MagNet, RandomizedMagNet, ReconstructionErrorDetector, Reformer


def _pair(seed):
    torch.manual_seed(seed)
    return [DenoisingAutoEncoder(MNIST_AE_II), DenoisingAutoEncoder(MNIST_AE_II)]


def _spread(aes, x):
    with torch.no_grad():
        outs = torch.stack([ae(x) for ae in aes])
    return float((outs - outs.mean(0)).pow(2).mean())


@pytest.fixture(scope="module")
def pairs(mnist5k):
    x = mnist5k.x_train[:1000]
    plain, diverse = _pair(0), _pair(0)
    train_diverse_autoencoders(plain, x, alpha=0.0, pre_epochs=1, epochs=2, seed=0)
    train_diverse_autoencoders(diverse, x, alpha=0.5, pre_epochs=1, epochs=2, seed=0)
    return plain, diverse


def test_diversity_term_makes_autoencoders_disagree(pairs, mnist5k):
    plain, diverse = pairs
    held_out = mnist5k.x_test[:200]
    assert _spread(diverse, held_out) > _spread(plain, held_out)
    with pytest.raises(ValueError, match="at least 2 autoencoders"):
        train_diverse_autoencoders(plain[:1], mnist5k.x_train[:10])


def test_randomized_magnet_draws_reproducibly(pairs, tiny, mnist5k):
    _, diverse = pairs
    systems = [MagNet(tiny.module, [ReconstructionErrorDetector(ae, p=1, drop_rate=0.01)], Reformer(ae))
               for ae in diverse]
    x, y = mnist5k.x_test[:50], mnist5k.y_test[:50].numpy()

    def draws(seed):
        defense = RandomizedMagNet(systems, seed=seed).fit(mnist5k.x_val)
        picks = []
        for _ in range(12):
            defense.evaluate(x, y)
            picks.append(defense.last_choice)
        return picks

    first = draws(3)
    assert first == draws(3) and len(set(first)) == 2
    defense = RandomizedMagNet(systems, seed=1)
    assert np.array_equal(defense.predict(x), systems[defense.last_choice].predict(x))
    with pytest.raises(ValueError, match="at least 2 MagNet instances"):
        RandomizedMagNet(systems[:1])
