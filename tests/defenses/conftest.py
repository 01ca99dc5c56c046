"""Defense fixtures: MagNet's two MNIST autoencoders, trained once per session (about 25 s), and PCA as a generator."""

import pytest
import torch
from torch import nn

from advbridge.defenses.autoencoders import MNIST_AE_I, MNIST_AE_II, DenoisingAutoEncoder, train_autoencoder


@pytest.fixture(scope="session")
def autoencoders(mnist5k):
    torch.manual_seed(0)
    ae1, ae2 = DenoisingAutoEncoder(MNIST_AE_I), DenoisingAutoEncoder(MNIST_AE_II)
    for ae in (ae1, ae2):
        history = train_autoencoder(ae, mnist5k.x_train, epochs=10, lr=3e-3, batch_size=64, seed=0)
        assert history[-1] < history[0]
    return ae1, ae2


class LinearGenerator(nn.Module):
    """``G(z) = mean + W z`` with orthonormal W: PCA as a generative model, whose projection has a closed form."""

    def __init__(self, mean: torch.Tensor, basis: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean.flatten())
        self.register_buffer("basis", basis)  # (D, d), orthonormal columns

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return (self.mean + z @ self.basis.T).reshape(len(z), 1, 28, 28)


@pytest.fixture(scope="session")
def pca(mnist5k):
    x = mnist5k.x_train[:2000].flatten(1)
    mean = x.mean(0)
    _, _, v = torch.linalg.svd(x - mean, full_matrices=False)
    return LinearGenerator(mean, v[:16].T.contiguous())
