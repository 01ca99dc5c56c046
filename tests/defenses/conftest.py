"""Defense fixtures: MagNet's two MNIST autoencoders, trained once per session (about 25 s)."""

import pytest
import torch

from advbridge.defenses.autoencoders import MNIST_AE_I, MNIST_AE_II, DenoisingAutoEncoder, train_autoencoder


@pytest.fixture(scope="session")
def autoencoders(mnist5k):
    torch.manual_seed(0)
    ae1, ae2 = DenoisingAutoEncoder(MNIST_AE_I), DenoisingAutoEncoder(MNIST_AE_II)
    for ae in (ae1, ae2):
        history = train_autoencoder(ae, mnist5k.x_train, epochs=10, lr=3e-3, batch_size=64, seed=0)
        assert history[-1] < history[0]
    return ae1, ae2
