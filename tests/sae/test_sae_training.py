import math

import pytest
import torch

from recbole_sae.sae import (
    SAEConfig,
    SAETrainConfig,
    SparseAutoencoder,
    evaluate_sae,
    lr_at_step,
    train_sae,
)

N_DIRS, D_IN, D_SAE = 20, 16, 64


def planted(n=4096, active=3, seed=0):
    """Rows = sparse positive combinations of 20 planted unit directions."""
    g = torch.Generator().manual_seed(seed)
    dirs = torch.randn(N_DIRS, D_IN, generator=g)
    dirs = dirs / dirs.norm(dim=1, keepdim=True)
    idx = torch.argsort(torch.rand(n, N_DIRS, generator=g), dim=1)[:, :active]
    coef = torch.rand(n, active, generator=g) + 0.5
    x = (coef[:, :, None] * dirs[idx]).sum(dim=1) + 0.3  # constant offset exercises b_dec / normalisation
    return x, dirs


@pytest.fixture(scope="module")
def planted_run():
    x, dirs = planted()
    sae = SparseAutoencoder(SAEConfig(d_in=D_IN, d_sae=D_SAE, k=3, dead_tokens_threshold=2000, seed=0))
    logs = []
    history = train_sae(
        sae,
        x,
        SAETrainConfig(lr=4e-3, batch_size=256, n_steps=600, warmup_steps=30, log_every=100, show_progress=False),
        log_fn=logs.append,
    )
    return sae, x, dirs, history, logs


def test_planted_directions_recovered(planted_run):
    sae, x, dirs, history, _ = planted_run
    metrics = evaluate_sae(sae, x)
    assert metrics["fvu"] < 0.1
    assert metrics["l0"] <= 3.0
    learned = sae.decoder_directions(raw=True)
    learned = learned / learned.norm(dim=1, keepdim=True)
    best = (dirs @ learned.t()).max(dim=1).values
    assert (best > 0.9).sum() >= 17, best


def test_history_and_log_fn(planted_run):
    sae, _, _, history, logs = planted_run
    assert [h["step"] for h in history] == [100, 200, 300, 400, 500, 600]
    assert logs == history
    for key in ("step", "loss", "mse", "aux", "l1", "fvu", "l0", "dead_frac", "lr"):
        assert key in history[0]
    assert history[-1]["fvu"] < history[0]["fvu"]
    assert all(h["l0"] <= 3.0 for h in history)
    assert 0.0 <= history[-1]["dead_frac"] <= 1.0
    assert not sae.training
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(D_SAE), atol=1e-5)


def test_same_seed_gives_identical_weights():
    x, _ = planted(n=1024, seed=3)

    def run(seed):
        sae = SparseAutoencoder(SAEConfig(d_in=D_IN, d_sae=32, k=3, dead_tokens_threshold=100, seed=seed))
        train_sae(
            sae, x, SAETrainConfig(lr=3e-3, batch_size=100, n_steps=40, warmup_steps=5, seed=seed, show_progress=False)
        )
        return sae.state_dict()

    a, b, c = run(0), run(0), run(1)
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert not torch.equal(a["W_dec"], c["W_dec"])


def test_nan_data_raises_floating_point_error():
    x, _ = planted(n=256)
    x[17, 3] = float("nan")
    sae = SparseAutoencoder(SAEConfig(d_in=D_IN, d_sae=32, k=3))
    with pytest.raises(FloatingPointError, match="NaN"):
        train_sae(sae, x, SAETrainConfig(n_steps=5, batch_size=64, show_progress=False))
    # without the data-driven init the bad batch is caught by the loss check
    sae = SparseAutoencoder(SAEConfig(d_in=D_IN, d_sae=32, k=3))
    with pytest.raises(FloatingPointError, match="input batch"):
        train_sae(sae, x, SAETrainConfig(n_steps=5, batch_size=256, init_from_data=False, show_progress=False))


def test_divergence_message_mentions_lr():
    x, _ = planted(n=256)
    sae = SparseAutoencoder(SAEConfig(d_in=D_IN, d_sae=32, k=3, normalize="none"))
    with pytest.raises(FloatingPointError, match="learning rate"):
        train_sae(sae, x * 1e30, SAETrainConfig(n_steps=5, batch_size=64, lr=1e30, warmup_steps=0, show_progress=False))


def test_iterable_and_callable_sources():
    x, _ = planted(n=512)
    batches = list(x.split(128))
    sae = SparseAutoencoder(SAEConfig(d_in=D_IN, d_sae=32, k=3))
    hist = train_sae(sae, batches, SAETrainConfig(epochs=2, log_every=3, show_progress=False))
    assert [h["step"] for h in hist] == [3, 6, 8]

    # tuples (as a DataLoader over a TensorDataset yields) and a generator with n_steps
    gen = ((b,) for b in batches)
    hist = train_sae(sae, gen, SAETrainConfig(n_steps=10, log_every=100, show_progress=False))
    assert hist[-1]["step"] == 4  # the generator ran out after 4 batches

    g = torch.Generator().manual_seed(0)
    hist = train_sae(
        sae,
        lambda: x[torch.randint(0, 512, (64,), generator=g)],
        SAETrainConfig(n_steps=5, log_every=5, show_progress=False),
    )
    assert [h["step"] for h in hist] == [5]

    with pytest.raises(ValueError, match="n_steps"):
        train_sae(sae, iter(batches), SAETrainConfig(show_progress=False))


def test_lr_schedule():
    cfg = SAETrainConfig(lr=1.0, warmup_steps=10, decay_frac=0.2)
    lrs = [lr_at_step(s, 100, cfg) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1)
    assert lrs[9] == 1.0 and lrs[50] == 1.0 and lrs[79] == 1.0
    assert lrs[80] == pytest.approx(1.0) and lrs[90] == pytest.approx(0.5) and lrs[99] == pytest.approx(0.05)
    assert all(a >= b for a, b in zip(lrs[80:], lrs[81:]))
    no_sched = SAETrainConfig(lr=0.5, warmup_steps=0, decay_frac=0.0)
    assert {lr_at_step(s, 10, no_sched) for s in range(10)} == {0.5}


def test_history_aux_tracks_dead_latents():
    x, _ = planted(n=2048)
    cfg = SAETrainConfig(lr=4e-3, batch_size=256, n_steps=60, log_every=10, show_progress=False)
    # a short dead window: some of the 64 latents go unused for 256 rows -> AuxK active
    sae = SparseAutoencoder(SAEConfig(d_in=D_IN, d_sae=D_SAE, k=3, dead_tokens_threshold=256))
    hist = train_sae(sae, x, cfg)
    assert all(h["dead_frac"] > 0 and h["aux"] > 0 for h in hist)
    assert all(math.isfinite(h["loss"]) for h in hist)
    # a window longer than the run: nothing can be dead -> AuxK exactly 0
    sae = SparseAutoencoder(SAEConfig(d_in=D_IN, d_sae=D_SAE, k=3, dead_tokens_threshold=10**9))
    hist = train_sae(sae, x, cfg)
    assert all(h["dead_frac"] == 0 and h["aux"] == 0.0 for h in hist)
