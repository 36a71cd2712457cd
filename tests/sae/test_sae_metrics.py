import pytest
import torch

from recbole_sae.sae import SAEConfig, SparseAutoencoder, evaluate_sae, latent_firing_rate


def setup(activation="relu"):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 8, generator=g) * 2 + 1
    sae = SparseAutoencoder(SAEConfig(d_in=8, d_sae=24, k=4, activation=activation))
    sae.fit_normalization(x)
    sae.init_b_dec(x)
    return sae, x


def test_evaluate_matches_manual_computation():
    sae, x = setup("topk")
    m = evaluate_sae(sae, x, batch_size=64)
    with torch.no_grad():
        x_hat, f = sae(x)
    x64, xh64 = x.double(), x_hat.double()
    sse = (x64 - xh64).pow(2).sum()
    sst = (x64 - x64.mean(dim=0)).pow(2).sum()
    assert m["fvu"] == pytest.approx((sse / sst).item(), rel=1e-6)
    assert m["explained_variance"] == pytest.approx(1 - m["fvu"])
    assert m["mse"] == pytest.approx((sse / x.numel()).item(), rel=1e-6)
    assert m["l0"] == pytest.approx((f > 0).sum(dim=1).double().mean().item())
    fired = (f > 0).any(dim=0)
    assert m["n_dead"] == int((~fired).sum())
    assert m["dead_frac"] == pytest.approx(m["n_dead"] / 24)
    assert m["n_rows"] == 300


def test_dead_latents_and_firing_rate():
    sae, x = setup("relu")
    with torch.no_grad():
        sae.b_enc[:5] = -1e6  # never fire
        sae.b_enc[5:7] = 1e6  # always fire
    rate = latent_firing_rate(sae, x, batch_size=50)
    assert rate.shape == (24,)
    assert torch.equal(rate[:5], torch.zeros(5))
    assert torch.equal(rate[5:7], torch.ones(2))
    with torch.no_grad():
        f = sae.encode(x)
    assert torch.allclose(rate, (f > 0).float().mean(dim=0))
    m = evaluate_sae(sae, x)
    assert m["n_dead"] == int((rate == 0).sum()) >= 5
    assert m["dead_frac"] == pytest.approx(m["n_dead"] / 24)


def test_perfect_reconstruction_gives_zero_fvu():
    # identity-like SAE: d_sae = 2 * d_in with +/- unit directions, relu, no normalisation
    d = 4
    sae = SparseAutoencoder(SAEConfig(d_in=d, d_sae=2 * d, activation="relu", normalize="none"))
    eye = torch.eye(d)
    with torch.no_grad():
        sae.W_dec.copy_(torch.cat([eye, -eye]))
        sae.W_enc.copy_(sae.W_dec.t())
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    x = torch.randn(100, d, generator=torch.Generator().manual_seed(2))
    m = evaluate_sae(sae, x)
    assert m["fvu"] == pytest.approx(0.0, abs=1e-10)
    assert m["explained_variance"] == pytest.approx(1.0)


def test_evaluate_restores_training_mode():
    sae, x = setup("batchtopk")
    sae.train()
    evaluate_sae(sae, x)
    assert sae.training
