import pytest
import torch

from recbole_sae.sae import SAEConfig, SparseAutoencoder, geometric_median, topk_mask


def make(**kw):
    base = dict(d_in=16, d_sae=64, k=4, seed=0)
    base.update(kw)
    return SparseAutoencoder(SAEConfig(**base))


def data(n=128, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g) * 3.0 + 1.0


# ---------------------------------------------------------------- activations
def test_topk_keeps_exactly_k_nonzeros():
    sae = make(k=5)
    with torch.no_grad():
        sae.b_enc.fill_(100.0)  # all pre-activations positive -> exactly k survive ReLU
    x = data()
    f = sae.encode(x)
    assert f.shape == (128, 64)
    assert torch.equal((f != 0).sum(dim=1), torch.full((128,), 5))
    # the kept entries are the 5 largest pre-activations of each row
    pre = sae.pre_activations(x)
    top = torch.topk(pre, 5, dim=1).indices
    expected = torch.zeros_like(f, dtype=torch.bool).scatter(1, top, True)
    assert torch.equal(f != 0, expected)
    assert torch.allclose(f.gather(1, top), pre.gather(1, top))


def test_topk_at_most_k_and_nonnegative_with_default_init():
    sae = make(k=6)
    f = sae.encode(data())
    assert ((f != 0).sum(dim=1) <= 6).all()
    assert (f >= 0).all()


def test_topk_ties_broken_by_lowest_index():
    scores = torch.tensor([[1.0, 3.0, 3.0, 3.0, 0.0, 3.0], [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    mask = topk_mask(scores, 2)
    assert mask.tolist() == [
        [False, True, True, False, False, False],
        [True, True, False, False, False, False],
    ]
    scores = torch.zeros(3, 1000)
    assert torch.equal(topk_mask(scores, 7).nonzero()[:, 1].view(3, 7), torch.arange(7).expand(3, 7))


def test_encode_accepts_leading_dims():
    sae = make()
    x = data(24).view(2, 3, 4, 16)
    f = sae.encode(x)
    assert f.shape == (2, 3, 4, 64)
    assert torch.equal(f.reshape(24, 64), sae.encode(x.reshape(24, 16)))
    x_hat, f2 = sae(x)
    assert x_hat.shape == x.shape and torch.equal(f, f2)


def test_batchtopk_keeps_k_times_batch_in_training():
    sae = make(activation="batchtopk", k=3)
    with torch.no_grad():
        sae.b_enc.fill_(100.0)
    sae.train()
    x = data(50)
    f = sae.encode(x)
    assert int((f != 0).sum()) == 3 * 50
    # the kept values are the 150 largest pre-activations of the batch
    pre = sae.pre_activations(x).flatten()
    kth = torch.topk(pre, 150).values.min()
    assert (f.flatten()[f.flatten() != 0] >= kth).all()


def test_batchtopk_threshold_estimate_and_inference():
    sae = make(activation="batchtopk", k=3)
    x = data(64)
    sae.train()
    assert sae.batchtopk_threshold.item() < 0  # not estimated yet
    out = sae.loss(x)
    f_train = sae.encode(x)
    first_min = f_train[f_train > 0].min()
    assert torch.allclose(sae.batchtopk_threshold, first_min)
    sae.loss(x)  # EMA of identical batch minima keeps the same value
    assert torch.allclose(sae.batchtopk_threshold, first_min)
    sae.eval()
    f = sae.encode(x)
    pre = sae.pre_activations(x)
    thr = sae.batchtopk_threshold
    assert torch.equal(f != 0, pre > thr)
    assert torch.equal(f[f != 0], pre[pre > thr])
    assert out["l0"].item() == pytest.approx(3.0)


def test_batchtopk_eval_falls_back_to_topk_before_estimate():
    sae = make(activation="batchtopk", k=3).eval()
    with torch.no_grad():
        sae.b_enc.fill_(100.0)
    assert torch.equal((sae.encode(data()) != 0).sum(dim=1), torch.full((128,), 3))


def test_relu_and_l1():
    sae = make(activation="relu", l1_coeff=0.5, aux_coeff=0.0)
    x = data()
    pre = sae.pre_activations(x)
    f = sae.encode(x)
    assert torch.equal(f, torch.relu(pre))
    out = sae.loss(x, update_stats=False)
    norms = sae.W_dec.norm(dim=1)
    expected_l1 = (f * norms).sum(dim=1).mean()
    assert torch.allclose(out["l1"], expected_l1)
    assert torch.allclose(out["total"], out["mse"] + 0.5 * out["l1"])


# ------------------------------------------------------------- normalisation
def test_global_normalisation_statistics():
    sae = make(normalize="global")
    x = data(4096)
    sae.fit_normalization(x)
    xn = sae.normalize_input(x)
    assert torch.allclose(xn.mean(dim=0), torch.zeros(16), atol=1e-5)
    assert xn.pow(2).sum(dim=1).mean().item() == pytest.approx(16.0, rel=1e-4)
    assert torch.allclose(sae.denormalize(xn), x, atol=1e-5)


def test_none_normalisation_is_identity():
    sae = make(normalize="none")
    x = data()
    sae.fit_normalization(x)
    assert torch.equal(sae.normalize_input(x), x)


def test_decode_returns_raw_space_and_raw_directions():
    sae = make(normalize="global")
    x = data(512)
    sae.fit_normalization(x)
    sae.init_b_dec(x)
    f = sae.encode(x)
    x_n_hat = f @ sae.W_dec + sae.b_dec
    assert torch.allclose(sae.decode(f), x_n_hat / sae.norm_scale + sae.norm_mean, atol=1e-5)
    dirs = sae.decoder_directions(raw=True)
    assert dirs.shape == (64, 16)
    zero = torch.zeros_like(f)
    assert torch.allclose(sae.decode(f) - sae.decode(zero), f @ dirs, atol=1e-4)
    assert torch.allclose(sae.decoder_directions(raw=False).norm(dim=1), torch.ones(64), atol=1e-6)


def test_b_dec_init_modes():
    x = data(256)
    sae = make(b_dec_init="mean", normalize="none")
    sae.init_b_dec(x)
    assert torch.allclose(sae.b_dec, x.mean(dim=0), atol=1e-5)
    sae = make(b_dec_init="zeros", normalize="none")
    sae.init_b_dec(x)
    assert torch.equal(sae.b_dec, torch.zeros(16))
    sae = make(b_dec_init="geometric_median", normalize="none")
    sae.init_b_dec(x)
    assert torch.allclose(sae.b_dec, geometric_median(x), atol=1e-5)


def test_tied_init():
    sae = make(tied_init=True)
    assert torch.equal(sae.W_enc, sae.W_dec.t())
    assert sae.W_enc.data_ptr() != sae.W_dec.data_ptr()
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(64), atol=1e-6)
    assert not torch.equal(make(tied_init=False).W_enc, sae.W_dec.t())


# ---------------------------------------------------------- geometric median
def test_geometric_median_of_symmetric_planted_set():
    center = torch.tensor([2.0, -1.0, 0.5])
    offsets = torch.cat([torch.eye(3), -torch.eye(3), 5 * torch.eye(3), -5 * torch.eye(3)])
    pts = center + offsets
    assert torch.allclose(geometric_median(pts), center, atol=1e-5)


def test_geometric_median_is_robust_to_outliers():
    g = torch.Generator().manual_seed(0)
    center = torch.tensor([1.0, 2.0, 3.0, 4.0])
    inliers = center + 0.01 * torch.randn(200, 4, generator=g)
    outliers = torch.full((40, 4), 1000.0)
    pts = torch.cat([inliers, outliers])
    gm = geometric_median(pts)
    assert (gm - center).norm() < 0.05
    assert (pts.mean(dim=0) - center).norm() > 100  # the mean is dragged away


def test_geometric_median_at_a_data_point_with_majority():
    center = torch.tensor([0.0, 0.0])
    pts = torch.cat([center.expand(5, 2), torch.tensor([[1.0, 0.0], [0.0, 1.0], [3.0, 3.0], [-2.0, 0.5]])])
    assert (geometric_median(pts) - center).norm() < 1e-3


# --------------------------------------------------- reconstruction with error
def test_reconstruct_with_error_no_edit_is_exact():
    sae = make()
    x = data()
    sae.fit_normalization(x)
    out = sae.reconstruct_with_error(x)
    assert out is x
    assert torch.equal(sae.reconstruct_with_error(x, sae.encode(x)), x)


def test_reconstruct_with_error_edit_changes_output_by_decoded_difference():
    sae = make().double()
    x = data().double()
    sae.fit_normalization(x)
    sae.init_b_dec(x)
    f = sae.encode(x)
    f_edit = f.clone()
    f_edit[:, 3] += 2.0
    f_edit[:, 10] = 0.0
    out = sae.reconstruct_with_error(x, f_edit)
    assert torch.allclose(out - x, sae.decode(f_edit) - sae.decode(f), atol=1e-12, rtol=0)
    # same thing with precomputed latents and the literal formula of the brief
    literal = sae.decode(f_edit) + (x - sae.decode(sae.encode(x)))
    assert torch.allclose(sae.reconstruct_with_error(x, f_edit, f=f), literal, atol=1e-12, rtol=0)
    assert not torch.allclose(out, x)


# ------------------------------------------------------------- decoder upkeep
def test_gradient_parallel_component_removed():
    sae = make()
    x = data()
    sae.loss(x, update_stats=False)["total"].backward()
    sae.remove_parallel_decoder_grad()
    dots = (sae.W_dec.grad * sae.W_dec).sum(dim=1)
    assert dots.abs().max() < 1e-6
    assert sae.W_dec.grad.abs().sum() > 0


def test_decoder_rows_unit_norm_after_steps():
    sae = make()
    x = data(256)
    opt = torch.optim.Adam(sae.parameters(), lr=1e-2)
    for _ in range(10):
        opt.zero_grad()
        sae.loss(x)["total"].backward()
        sae.remove_parallel_decoder_grad()
        opt.step()
        sae.normalize_decoder()
        assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(64), atol=1e-6)


# --------------------------------------------------------------------- AuxK
def test_aux_loss_exactly_zero_without_dead_latents():
    sae = make(dead_tokens_threshold=10_000)
    x = data()
    sae.train()
    out = sae.loss(x)
    assert not sae.dead_mask().any()
    assert out["aux"].item() == 0.0
    assert torch.equal(out["total"], out["mse"])


def test_aux_loss_positive_with_forced_dead_latents_and_reaches_only_dead():
    sae = make(dead_tokens_threshold=100, aux_k=8, aux_coeff=0.5)
    x = data()
    dead = torch.zeros(64, dtype=torch.bool)
    dead[:20] = True
    with torch.no_grad():
        sae.rows_since_fired[dead] = 1000
    out = sae.loss(x, update_stats=False)
    assert out["aux"].item() > 0
    assert torch.allclose(out["total"], out["mse"] + 0.5 * out["aux"])
    # the aux loss alone sends gradient to dead latents' encoder columns only
    sae.zero_grad()
    out["aux"].backward()
    g = sae.W_enc.grad.abs().sum(dim=0)
    assert (g[~dead] == 0).all()
    assert g[dead].sum() > 0


def test_dead_counters_update():
    sae = make(k=2, dead_tokens_threshold=50)
    sae.train()
    x = data(30)
    f = sae.encode(x)
    sae.loss(x)
    fired = (f > 0).any(dim=0)
    assert torch.equal(sae.rows_since_fired[fired], torch.zeros(int(fired.sum()), dtype=torch.int64))
    assert (sae.rows_since_fired[~fired] == 30).all()
    sae.loss(x)
    assert torch.equal(sae.dead_mask(), ~fired)
    sae.eval()
    before = sae.rows_since_fired.clone()
    sae.loss(x)  # eval mode: statistics untouched
    assert torch.equal(sae.rows_since_fired, before)


def test_bad_input_shape():
    sae = make()
    with pytest.raises(ValueError, match="16"):
        sae.encode(torch.zeros(3, 15))
    with pytest.raises(ValueError, match="64"):
        sae.decode(torch.zeros(3, 15))


# ------------------------------------------------------------------ matryoshka
def test_matryoshka_loss_is_the_mean_of_the_nested_reconstruction_errors():
    sae = make(d_sae=64, k=6, matryoshka=[8, 24])
    x = data()
    sae.fit_normalization(x)
    sae.init_b_dec(x)
    out = sae.loss(x, update_stats=False)
    x_n = sae.normalize_input(x)
    f = sae.encode(x)
    # by hand: reconstruct from latents [0, m) only, for m = 8, 24 and the whole dictionary
    by_hand = []
    for m in (8, 24, 64):
        keep = torch.zeros(64)
        keep[:m] = 1.0
        by_hand.append((x_n - ((f * keep) @ sae.W_dec + sae.b_dec)).pow(2).mean())
    assert torch.allclose(out["mse"], by_hand[-1], atol=1e-6)  # "mse" stays the full dictionary's
    assert torch.allclose(out["total"], torch.stack(by_hand).mean(), atol=1e-6)
    # the nested terms weigh the first latents more: their gradient is larger than without nesting
    flat = make(d_sae=64, k=6)
    flat.load_state_dict(sae.state_dict())
    g_nested = torch.autograd.grad(out["total"], sae.W_dec)[0]
    g_flat = torch.autograd.grad(flat.loss(x, update_stats=False)["total"], flat.W_dec)[0]
    assert torch.allclose(g_nested[24:], g_flat[24:] / 3, atol=1e-6)  # only the full term sees them
    assert not torch.allclose(g_nested[:8], g_flat[:8] / 3, atol=1e-6)


def test_matryoshka_does_not_change_encoding_or_decoding():
    nested, flat = make(matryoshka=[8, 32]), make()
    x = data()
    assert torch.equal(nested(x)[0], flat(x)[0])


@pytest.mark.parametrize("sizes", [[], [32, 16], [16, 16], [0, 8], [8, 64], [4.5], "8,16"])
def test_matryoshka_sizes_are_validated(sizes):
    with pytest.raises(ValueError, match="matryoshka"):
        make(matryoshka=sizes)
