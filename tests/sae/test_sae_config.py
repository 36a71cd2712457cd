import json

import pytest

from recbole_sae.sae import SAEConfig, SAETrainConfig


def test_defaults_and_aux_k_resolution():
    cfg = SAEConfig(d_in=8, d_sae=32)
    assert cfg.activation == "topk"
    assert cfg.k == 32
    assert cfg.aux_k == 32  # min(2 * k, d_sae)
    assert SAEConfig(d_in=8, d_sae=100, k=4).aux_k == 8


def test_round_trip_through_json():
    cfg = SAEConfig(
        d_in=8,
        d_sae=32,
        activation="batchtopk",
        k=4,
        aux_k=6,
        normalize="none",
        b_dec_init="mean",
        tied_init=False,
        seed=7,
        dead_tokens_threshold=123,
    )
    again = SAEConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        (dict(activation="gelu"), "activation"),
        (dict(k=65), "larger than d_sae"),
        (dict(k=0), "k must"),
        (dict(aux_k=100), "aux_k"),
        (dict(normalize="per_dim"), "normalize"),
        (dict(b_dec_init="median"), "b_dec_init"),
        (dict(l1_coeff=-1.0), "l1_coeff"),
        (dict(aux_coeff=float("nan")), "aux_coeff"),
        (dict(dead_tokens_threshold=0), "dead_tokens_threshold"),
        (dict(d_sae=0), "d_sae"),
        (dict(d_in=2.5), "d_in"),
        (dict(tied_init="yes"), "tied_init"),
    ],
)
def test_bad_values_raise_value_error(kwargs, fragment):
    base = dict(d_in=8, d_sae=64, k=4)
    base.update(kwargs)
    with pytest.raises(ValueError, match=fragment):
        SAEConfig(**base)
    with pytest.raises(ValueError, match=fragment):
        SAEConfig.from_dict(base)


def test_relu_ignores_k_bound():
    assert SAEConfig(d_in=4, d_sae=8, activation="relu", k=4).activation == "relu"


def test_from_dict_rejects_unknown_and_missing_keys():
    with pytest.raises(ValueError, match="unknown"):
        SAEConfig.from_dict({"d_in": 4, "d_sae": 8, "k": 2, "colour": "red"})
    with pytest.raises(ValueError, match="missing"):
        SAEConfig.from_dict({"d_in": 4})


@pytest.mark.parametrize(
    "kwargs", [dict(lr=0.0), dict(batch_size=0), dict(decay_frac=1.5), dict(n_steps=0), dict(warmup_steps=-1)]
)
def test_bad_train_config(kwargs):
    with pytest.raises(ValueError):
        SAETrainConfig(**kwargs)


def test_train_config_round_trip():
    cfg = SAETrainConfig(lr=1e-3, n_steps=10, betas=(0.8, 0.99))
    assert SAETrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
