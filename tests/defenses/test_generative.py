"""Generative models: shapes and ranges, the negative ELBO and gradient penalty by hand, short trainings that
must improve, PNG grids, reproducibility and argument checks (about 10 s on one thread)."""

import math

import pytest
import torch
from PIL import Image
from torch import nn

from advbridge.defenses.generative import (VAE, AlphaGAN, WGANCritic, WGANGenerator, gradient_penalty,
                                           sample_images, save_grid, save_reconstructions, train_alpha_gan,
                                           train_vae, train_wgan_gp)

SIZES = [(1, 28), (3, 32)]


def _in_unit_range(t: torch.Tensor) -> bool:
    t = t.detach()
    return bool(torch.isfinite(t).all()) and 0 <= float(t.min()) and float(t.max()) <= 1


@pytest.mark.parametrize("channels, size", SIZES)
def test_vae_shapes_and_range(channels, size):
    torch.manual_seed(0)
    vae = VAE(latent_dim=8, channels=channels, image_size=size).eval()
    x = torch.rand(3, channels, size, size)
    with torch.no_grad():
        recon, mu, logvar = vae(x)
        assert recon.shape == x.shape and mu.shape == logvar.shape == (3, 8) and _in_unit_range(recon)
        assert torch.equal(recon, vae.decode(mu))  # eval mode decodes the mean
        assert torch.allclose(torch.sigmoid(vae.decoder_logits(mu)), recon)
        assert vae.decoder(torch.randn(5, 8)).shape == (5, channels, size, size)
        assert vae.neg_elbo(x, x).shape == (3,)
        vae.train()
        assert not torch.equal(vae(x)[0], vae(x)[0])  # train mode samples z


@pytest.mark.parametrize("channels, size", SIZES)
def test_wgan_and_alpha_gan_shapes_and_range(channels, size):
    torch.manual_seed(0)
    g, critic = WGANGenerator(16, channels, size), WGANCritic(channels, size)
    images = g(torch.randn(4, 16))
    assert images.shape == (4, channels, size, size) and _in_unit_range(images)
    assert critic(images).shape == (4,)
    model = AlphaGAN(latent_dim=8, channels=channels, image_size=size).eval()
    x = torch.rand(4, channels, size, size)
    z = model.encode(x)
    assert z.shape == (4, 8) and model.latent_dim == 8
    recon = model(x)
    assert recon.shape == x.shape and _in_unit_range(recon)
    assert torch.equal(recon, model.reconstruct(x)) and torch.equal(recon, model.decode(z))
    assert model.discriminator(x).shape == (4,) and model.code_discriminator(z).shape == (4,)


def test_neg_elbo_matches_hand_computation_and_has_input_gradient():
    torch.manual_seed(0)
    vae = VAE(latent_dim=4).eval()
    x_in, x_target = torch.rand(1, 1, 28, 28), (torch.rand(1, 1, 28, 28) > 0.7).float()
    with torch.no_grad():
        mu, logvar = vae.encode(x_in)
        kl = 0.5 * float((mu ** 2 + logvar.exp() - 1 - logvar).sum())
        p = torch.sigmoid(vae.decoder_logits(mu)).double()
        bce = -float((x_target * p.log() + (1 - x_target) * (1 - p).log()).sum())
        value = vae.neg_elbo(x_in, x_target)
    assert value.shape == (1,) and float(value) == pytest.approx(kl + bce, rel=1e-4)

    vae.likelihood = "gaussian"
    with torch.no_grad():
        sq = float(((x_target - p.float()) ** 2).sum()) / (2 * VAE.gaussian_variance)
        assert float(vae.neg_elbo(x_in, x_target)) == pytest.approx(kl + sq, rel=1e-4)
    vae.likelihood = "bernoulli"

    x_adv = x_in.clone().requires_grad_(True)
    grad, = torch.autograd.grad(vae.neg_elbo(x_adv, x_target).sum(), x_adv)
    assert float(grad.abs().sum()) > 0

    # sample=True: reproducible with a seeded generator, different from the mean-z value
    draw = [vae.neg_elbo(x_in, x_target, sample=True, generator=torch.Generator().manual_seed(1)) for _ in range(2)]
    assert torch.equal(draw[0], draw[1]) and not torch.equal(draw[0], value)


def test_gradient_penalty_matches_hand_autograd():
    torch.manual_seed(0)
    critic = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 1), nn.Flatten(0))
    real, fake = torch.rand(5, 1, 2, 2), torch.rand(5, 1, 2, 2)
    gp = gradient_penalty(critic, real, fake, generator=torch.Generator().manual_seed(3))

    alpha = torch.rand((5, 1, 1, 1), generator=torch.Generator().manual_seed(3))
    terms = []
    for i in range(5):
        point = (alpha[i] * real[i] + (1 - alpha[i]) * fake[i]).unsqueeze(0).requires_grad_(True)
        g, = torch.autograd.grad(critic(point).sum(), point)
        terms.append((g.norm() - 1) ** 2)
    assert float(gp.detach()) == pytest.approx(float(torch.stack(terms).mean()), rel=1e-5)
    gp.backward()  # double backprop reaches the critic's weights
    assert all(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in critic.parameters()
               if p.dim() == 2)

    linear = nn.Sequential(nn.Flatten(), nn.Linear(4, 1), nn.Flatten(0))  # gradient = w everywhere
    expected = (float(linear[1].weight.detach().norm()) - 1) ** 2
    assert float(gradient_penalty(linear, real, fake).detach()) == pytest.approx(expected, rel=1e-5)


def test_vae_training_lowers_the_negative_elbo(mnist5k):
    torch.manual_seed(0)
    vae = VAE(latent_dim=8)
    history = train_vae(vae, mnist5k.x_train[:512], epochs=2, batch_size=64, lr=2e-3)
    assert len(history) == 2 and history[-1] < history[0] and not vae.training
    x = mnist5k.x_test[:64]
    with torch.no_grad():
        assert float(vae.neg_elbo(x, x).mean()) < float(VAE(latent_dim=8).neg_elbo(x, x).mean())


def test_wgan_gp_runs_with_finite_losses(mnist5k):
    torch.manual_seed(0)
    g, critic = WGANGenerator(16, width=16), WGANCritic(width=16)
    before = [p.detach().clone() for p in g.parameters()]
    history = train_wgan_gp(g, critic, mnist5k.x_train[:64], iterations=20, critic_iters=2, batch_size=8)
    assert len(history) == 20 and all(math.isfinite(h) for h in history)
    assert any(not torch.equal(a, b) for a, b in zip(before, g.parameters()))
    assert not g.training and not critic.training and all(p.requires_grad for p in critic.parameters())


def test_alpha_gan_epoch_improves_reconstruction(mnist5k):
    torch.manual_seed(0)
    model = AlphaGAN(latent_dim=8)
    x = mnist5k.x_train[:256]
    with torch.no_grad():
        untrained = float((model(x) - x).abs().mean())
    history = train_alpha_gan(model, x, epochs=1, batch_size=32)
    with torch.no_grad():
        trained = float((model(x) - x).abs().mean())
    assert len(history) == 1 and trained < 0.6 * untrained and not model.training


def test_grids_are_readable_pngs_of_the_right_size(tmp_path):
    torch.manual_seed(0)
    g = WGANGenerator(16).eval()
    path = save_grid(sample_images(g, 16, n=12, seed=0), tmp_path / "new" / "grid.png", nrow=4)
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size == (4 * 30 + 2, 3 * 30 + 2)

    x, recon = torch.zeros(5, 1, 28, 28), torch.ones(5, 1, 28, 28)
    path = save_reconstructions(x, recon, tmp_path / "recon.png", nrow=4)
    with Image.open(path) as im:
        pixels = torch.tensor(list(im.convert("L").getdata()), dtype=torch.float32).view(im.size[1], im.size[0])
    assert pixels.shape == (4 * 30 + 2, 4 * 30 + 2)  # 2 blocks of (originals row, reconstructions row)

    def cell(row, col):
        return pixels[2 + 30 * row:30 * (row + 1), 2 + 30 * col:30 * (col + 1)]

    assert float(cell(0, 0).max()) == 0 and float(cell(1, 0).min()) == 255  # original above reconstruction
    assert float(cell(2, 0).max()) == 0 and float(cell(3, 0).min()) == 255
    assert float(cell(3, 1).max()) == 0  # padding after the 5th pair


def test_same_seed_same_weights_and_samples(mnist5k):
    x = mnist5k.x_train[:64]
    states = []
    for seed in (0, 0, 1):
        torch.manual_seed(0)
        vae = VAE(latent_dim=4)
        train_vae(vae, x, epochs=1, batch_size=32, seed=seed)
        states.append(vae.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(states[0].values(), states[1].values()))
    assert not all(torch.equal(a, b) for a, b in zip(states[0].values(), states[2].values()))
    samples = [sample_images(vae.decode, 4, n=6, seed=s) for s in (7, 7, 8)]
    assert torch.equal(samples[0], samples[1]) and not torch.equal(samples[0], samples[2])


def test_bad_arguments_raise():
    x = torch.rand(8, 1, 28, 28)
    with pytest.raises(ValueError, match="latent_dim must be a positive integer"):
        VAE(latent_dim=0)
    with pytest.raises(ValueError, match="likelihood must be one of"):
        VAE(likelihood="poisson")
    with pytest.raises(ValueError, match="image_size must be one of"):
        WGANGenerator(image_size=30)
    with pytest.raises(ValueError, match="channels must be a positive integer"):
        AlphaGAN(channels=0)
    with pytest.raises(ValueError, match=r"x must be a \(B, 1, 28, 28\) tensor"):
        VAE().encode(torch.rand(2, 3, 32, 32))
    with pytest.raises(ValueError, match="epochs must be a positive integer"):
        train_vae(VAE(), x, epochs=0)
    with pytest.raises(ValueError, match=r"x must lie in \[0, 1\]"):
        train_alpha_gan(AlphaGAN(), x * 2, epochs=1)
    with pytest.raises(ValueError, match="critic_iters must be a positive integer"):
        train_wgan_gp(WGANGenerator(), WGANCritic(), x, critic_iters=0)
    with pytest.raises(ValueError, match="critic must score the generator's images"):
        train_wgan_gp(WGANGenerator(), WGANCritic(channels=3, image_size=32), x, iterations=1)
    with pytest.raises(ValueError, match="real and fake must be batches of the same shape"):
        gradient_penalty(WGANCritic(), x, x[:4])
    with pytest.raises(ValueError, match="images must be a non-empty"):
        save_grid(torch.rand(28, 28), "unused.png")
    with pytest.raises(ValueError, match="recon must have the shape of x"):
        save_reconstructions(x, x[:4], "unused.png")
