"""SASRecSAE: hooks, interventions, the two-stage pipeline and its reports."""

import json
import os

import pytest
import torch

from recbole_sae.errors import CheckpointMismatchError, ConfigError
from recbole_sae.model.sasrec_sae import SASRecSAE

SAE_SMALL = {
    "sae_expansion": 4,
    "sae_k": 4,
    "sae_epochs": 3,
    "sae_batch_size": 128,
    "sae_warmup_steps": 5,
    "sae_log_every": 50,
    "n_layers": 2,
    "n_heads": 1,
}


def _model(tiny_build, **overrides):
    config, data, train_data, valid_data, test_data = tiny_build("SASRecSAE", **{**SAE_SMALL, **overrides})
    return SASRecSAE(config, train_data.dataset).eval(), test_data


def _batch(test_data):
    return next(iter(test_data))[0]


@pytest.mark.parametrize("layer", ["embedding", 0, 1, "last"])
def test_hook_capture_equals_a_manual_forward(tiny_build, layer):
    model, test_data = _model(tiny_build, sae_layer=layer)
    batch = _batch(test_data)
    seq, lengths = batch["item_id_list"], batch["item_length"]
    states, items, rows = model.site_states(seq, lengths, positions="all")
    seq = seq[:, : int(lengths.max())]
    with torch.no_grad():
        hidden = model.embed(seq)
        mask = model.get_attention_mask(seq)
        blocks = {"embedding": 0, 0: 1, 1: 2, "last": 2}[layer]
        for block in model.trm_encoder.layer[:blocks]:
            hidden = block(hidden, mask)
    real = torch.arange(seq.size(1)).unsqueeze(0) < lengths.unsqueeze(1)
    torch.testing.assert_close(states, hidden[real], rtol=0, atol=0)
    assert torch.equal(items, seq[real]) and torch.equal(rows, torch.nonzero(real)[:, 0])


def test_reconstruction_plus_error_term_is_the_original(tiny_build):
    model, test_data = _model(tiny_build)
    batch = _batch(test_data)
    with torch.no_grad():
        original = model.full_sort_predict(batch)
        model.intervention = "splice_error"
        with_error = model.full_sort_predict(batch)
        model.intervention = "splice"
        spliced = model.full_sort_predict(batch)
        model.intervention = "ablate"
        ablated = model.full_sort_predict(batch)
    assert torch.equal(original, with_error)
    assert not torch.allclose(original, spliced) and not torch.allclose(original, ablated)


def test_ablation_writes_the_mean_state_at_the_site(tiny_build):
    model, test_data = _model(tiny_build, sae_layer="last", sae_positions="last")
    model.ablation_mean.fill_(0.5)
    batch = _batch(test_data)
    model.intervention = "ablate"
    with model.site.capture() as outputs, torch.no_grad():
        out = model.forward(batch["item_id_list"], batch["item_length"])
    # the hook replaced the last block's output at the last position: the sequence output is the mean
    assert torch.equal(out, torch.full_like(out, 0.5))
    assert outputs[-1].shape[-1] == model.hidden_size


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("sae_layer", 7, "out of range"),
        ("sae_layer", "middle", "sae_layer"),
        ("sae_positions", "first", "positions"),
        ("sae_k", 999, "SAE"),
        ("sae_matryoshka", [64, 8], "matryoshka"),
        ("sae_matryoshka", "8,x", "list of integers"),
    ],
)
def test_bad_settings_are_clear_errors(tiny_build, key, value, message):
    with pytest.raises(ConfigError, match=message):
        _model(tiny_build, **{key: value})


def test_two_stage_run_reports_and_reloads(tiny_dataset, in_tmp):
    from recbole_sae.quick_start import load_data_and_model, run_recbole_sae

    data_path, name, yaml_file = tiny_dataset
    cfg = {
        "data_path": data_path,
        **SAE_SMALL,
        "epochs": 2,
        "hidden_size": 16,
        "inner_size": 32,
        "MAX_ITEM_LIST_LENGTH": 10,
        "train_batch_size": 32,
        "sae_holdout_frac": 0.25,
        "interpretation_min_support": 5,
    }
    result = run_recbole_sae("SASRecSAE", name, [yaml_file], cfg)
    report = result["sae"]
    run_dir = result["run_dir"]
    for path in [
        "sae/sae.safetensors",
        "sae/cfg.json",
        "sae_report.json",
        "interpretation/interpretation.json",
        "interpretation/latents.html",
        "interpretation/interpretation.png",
        "model.pth",
    ]:
        assert os.path.isfile(os.path.join(run_dir, path)), path
    assert 0.0 <= report["fidelity"]["fvu"] < 1.0 and report["fidelity"]["l0"] <= 4 + 1e-6
    test = report["interventions"]["test"]
    assert test["spliced_error"] == test["original"] == result["test"]
    rec = report["recovered"]["test"]
    assert rec["original"] == result["test"]["ndcg@10"]
    if rec["recovered"] is not None:
        assert rec["recovered"] == pytest.approx(
            (rec["spliced"] - rec["ablated"]) / (rec["original"] - rec["ablated"]), abs=1e-4
        )
    genre = report["interpretation"]["genre"]
    assert genre["n_values"] == 5 and genre["monosemanticity_ratio"] > 0
    split = json.load(open(os.path.join(run_dir, "interpretation/interpretation.json")))["fields"]["genre"]["summary"]
    for group in ("rare", "common"):  # the RESULT summary carries the by-frequency ratios of the report
        assert genre[f"ratio_{group}_values"] == split["by_frequency"][group]["ratio_corr"]
    assert genre["ratio_held_out"] == split["ratio_held_out"]
    # the markdown and HTML reports show the run's fidelity beside the interpretation
    md = open(os.path.join(run_dir, "interpretation/interpretation.md")).read()
    page = open(os.path.join(run_dir, "interpretation/latents.html")).read()
    fvu = f"FVU {report['fidelity']['fvu']:.4f}"
    assert "## SAE fidelity" in md and fvu in md and "<h2>SAE fidelity</h2>" in page and fvu in page
    assert f"| test | {rec['original']:.4f} | {rec['spliced']:.4f} |" in md

    # the checkpoint holds the trained SAE
    config, model, *_ = load_data_and_model(run_dir, expected_model="SASRecSAE")
    from recbole_sae.sae import SparseAutoencoder

    saved = SparseAutoencoder.load(os.path.join(run_dir, "sae"))
    assert torch.equal(model.sae.W_dec, saved.W_dec) and torch.equal(model.sae.norm_scale, saved.norm_scale)

    # sae_run: nothing trained, the run's settings adopted (even against other flags), the same reports
    redo = run_recbole_sae(
        "SASRecSAE",
        name,
        [yaml_file],
        {**cfg, "sae_run": run_dir, "seed": 7, "sae_k": 2, "hidden_size": 32, "epochs": 5},
    )
    assert redo["run_dir"] != run_dir and redo["best_epoch"] is None and redo["epochs_run"] == 0
    for key in ("fidelity", "interventions", "recovered", "interpretation", "d_sae", "site"):
        assert redo["sae"][key] == report[key], key
    assert redo["test"] == result["test"]
    plus = run_recbole_sae("SASRecPlus", name, [yaml_file], {**cfg, "epochs": 1})
    with pytest.raises(ConfigError, match="sae_run and sasrec_checkpoint are both set"):
        run_recbole_sae(
            "SASRecSAE",
            name,
            [yaml_file],
            {**cfg, "sae_run": run_dir, "sasrec_checkpoint": os.path.join(run_dir, "model.pth")},
        )
    with pytest.raises(CheckpointMismatchError, match="holds a SASRecPlus model; SASRecSAE needs a SASRecSAE run"):
        run_recbole_sae("SASRecSAE", name, [yaml_file], {**cfg, "sae_run": plus["run_dir"]})

    # stage 1 can be skipped by loading a SASRec checkpoint ...
    again = run_recbole_sae(
        "SASRecSAE", name, [yaml_file], {**cfg, "sasrec_checkpoint": os.path.join(run_dir, "model.pth")}
    )
    assert again["sae"]["interventions"]["test"]["original"] == test["original"]
    # ... but not a checkpoint of another model
    other = run_recbole_sae(
        "GRU4Rec",
        name,
        [yaml_file],
        {"data_path": data_path, "epochs": 1, "hidden_size": 16, "embedding_size": 16, "MAX_ITEM_LIST_LENGTH": 10},
    )
    with pytest.raises(CheckpointMismatchError, match="holds a GRU4Rec model"):
        run_recbole_sae(
            "SASRecSAE", name, [yaml_file], {**cfg, "sasrec_checkpoint": os.path.join(other["run_dir"], "model.pth")}
        )


@pytest.mark.parametrize("value", [[8, 32], "[8,32]", "8,32"])
def test_matryoshka_sizes_from_yaml_or_command_line(tiny_build, value):
    model, _ = _model(tiny_build, sae_matryoshka=value)
    assert model.sae.cfg.matryoshka == [8, 32]
