"""SteerableSASRec: loading a SASRecSAE run, latent edits, attribute resolution, explanations, sweeps."""

import copy
import json
import os
import shutil

import pytest
import torch
from conftest import build, write_tiny_dataset

from recbole_sae import checkpoint
from recbole_sae.errors import CheckpointMismatchError, ConfigError
from recbole_sae.model.steerable_sasrec import LatentEdit, LatentEdits, SteerableSASRec, parse_steer

# The SAE reads the last block's output, where the logit lens is exact.
RUN_SETTINGS = {
    "n_layers": 2,
    "n_heads": 1,
    "sae_layer": "last",
    "sae_positions": "all",
    "sae_expansion": 4,
    "sae_k": 4,
    "hidden_size": 16,
    "inner_size": 32,
    "MAX_ITEM_LIST_LENGTH": 10,
}


@pytest.fixture(scope="module")
def sae_run(tmp_path_factory):
    """A finished SASRecSAE run folder (untrained SASRec, briefly trained SAE, real interpretation)."""
    from recbole_sae.analysis.interpretation import interpret
    from recbole_sae.analysis.report import write_json
    from recbole_sae.data.item_text import item_attribute_matrix, item_titles
    from recbole_sae.model.sasrec_sae import SASRecSAE
    from recbole_sae.sae import SAETrainConfig, train_sae

    root = tmp_path_factory.mktemp("steer")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        folder = write_tiny_dataset(root / "data")
        yaml_file = str(folder / "tiny.yaml")
        config, data, train_data, valid_data, test_data = build(
            "SASRecSAE", "tiny", str(folder.parent), [yaml_file], **RUN_SETTINGS
        )
        torch.manual_seed(0)
        model = SASRecSAE(config, train_data.dataset).eval()
        batch = next(iter(test_data))[0]
        states, items, _ = model.site_states(batch["item_id_list"], batch["item_length"])
        train_sae(
            model.sae,
            states,
            SAETrainConfig(lr=1e-2, batch_size=256, n_steps=40, warmup_steps=2, show_progress=False, log_every=100),
        )
        model.ablation_mean.copy_(states.mean(0))
        run_dir = root / "runs" / "SASRecSAE-tiny"
        run_dir.mkdir(parents=True)
        checkpoint.save(
            {"config": config, "state_dict": model.state_dict(), "other_parameter": None}, run_dir / "model.pth"
        )
        model.sae.save(run_dir / "sae")
        dataset = train_data.dataset
        result = interpret(
            model.sae.encode(states),
            states,
            items,
            {"genre": item_attribute_matrix(dataset, "genre")},
            titles=item_titles(dataset, config),
            decoder_directions=model.decoder_directions,
            item_embeddings=model.item_embedding.weight.detach(),
            min_support=2,
        )
        write_json(result, run_dir / "interpretation" / "interpretation.json")
    return {
        "root": root,
        "run_dir": str(run_dir),
        "data_path": str(folder.parent),
        "yaml": yaml_file,
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "config": config,
    }


@pytest.fixture(scope="module")
def steerable(sae_run):
    """(model, config, dataset, test_data) of a SteerableSASRec on the run, built through Config."""
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(sae_run["root"])
        # hidden_size=64 and n_layers=1 must be overridden by the run's 16 and 2
        config, data, train_data, valid_data, test_data = build(
            "SteerableSASRec",
            "tiny",
            sae_run["data_path"],
            [sae_run["yaml"]],
            sae_run=sae_run["run_dir"],
            MAX_ITEM_LIST_LENGTH=10,
            hidden_size=64,
            n_layers=1,
        )
        model = SteerableSASRec(config, train_data.dataset).eval()
    return model, config, train_data.dataset, test_data


def _batch(test_data):
    return next(iter(test_data))[0]


def _run_copy(sae_run, tmp_path, name="run"):
    target = tmp_path / name
    shutil.copytree(sae_run["run_dir"], target)
    return target


def _model_on(steerable, run_dir, **keys):
    model, config, dataset, _ = steerable
    config = copy.deepcopy(config)
    config["sae_run"] = str(run_dir)
    for key, value in keys.items():
        config[key] = value
    return SteerableSASRec(config, dataset).eval()


# --------------------------------------------------------------------------- loading
def test_loads_the_run_with_its_settings(steerable, sae_run):
    model, config, _, test_data = steerable
    assert model.hidden_size == 16 and len(model.trm_encoder.layer) == 2 and config["hidden_size"] == 16
    assert model.site.name == "block1" and model.sae.cfg.d_sae == 64
    state = model.state_dict()
    for key, value in sae_run["state"].items():
        assert torch.equal(state[key], value), key
    assert not any(p.requires_grad for p in model.parameters())


def test_python_api_through_load_data_and_model(steerable, sae_run, in_tmp):
    from recbole_sae.quick_start import load_data_and_model

    run = sae_run["run_dir"]
    config, model, _, _, _, test_data = load_data_and_model(
        run, config_dict={"model": "SteerableSASRec", "sae_run": run}
    )
    reference = steerable[0]
    batch = _batch(test_data)
    assert isinstance(model, SteerableSASRec)
    with torch.no_grad(), model.steer("latent=3:+2"):
        steered = model.full_sort_predict(batch)
    with torch.no_grad(), reference.steer("latent=3:+2"):
        assert torch.equal(steered, reference.full_sort_predict(batch))


# --------------------------------------------------------------------------- edits
@pytest.mark.parametrize("positions", ["last", "all"])
def test_empty_and_zero_edits_are_bit_identical(steerable, positions):
    model, _, _, test_data = steerable
    batch = _batch(test_data)
    with torch.no_grad():
        original = model.full_sort_predict(batch)
        for edits in ([], "latent=3:+0", [LatentEdit(5, "scale", 1.0)]):
            with model.steer(edits, positions=positions) as fn:
                assert callable(model.intervention) and isinstance(fn, LatentEdits)
                assert torch.equal(model.full_sort_predict(batch), original)
        assert model.intervention is None and model.steer_positions == "last"
        with model.steer("latent=3:+5", positions=positions):
            assert not torch.equal(model.full_sort_predict(batch), original)


def test_planted_latent_raises_its_item_the_most(steerable):
    model, _, _, test_data = steerable
    batch = _batch(test_data)
    emb = model.item_embedding.weight
    item = int(torch.linalg.vector_norm(emb[1:], dim=1).argmax()) + 1  # no other item can outscore it
    latent = 11
    saved = model.sae.W_dec[latent].clone()
    try:
        model.sae.W_dec[latent] = emb[item] / torch.linalg.vector_norm(emb[item])
        with torch.no_grad():
            before = model.full_sort_predict(batch)
            with model.steer(f"latent={latent}:+6"):
                up = model.full_sort_predict(batch) - before
            with model.steer(LatentEdit(latent, "add", -6.0)):
                down = model.full_sort_predict(batch) - before
    finally:
        model.sae.W_dec[latent] = saved
    assert torch.all(up[:, 1:].argmax(dim=1) + 1 == item) and torch.all(up[:, item] > 0)
    assert torch.all(down[:, 1:].argmin(dim=1) + 1 == item) and torch.all(down[:, item] < 0)
    # exact size of the rise at the last-layer site: strength * direction . embedding
    expected = 6.0 * (emb[item] / torch.linalg.vector_norm(emb[item]) / model.sae.norm_scale) @ emb.t()
    torch.testing.assert_close(up, expected.expand_as(up), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "spec,expect",
    [
        ("latent=5:clamp=10", lambda f: torch.full_like(f, 10.0)),
        ("latent=5:scale=2", lambda f: 2 * f),
        ("latent=5:-1.5", lambda f: f - 1.5),
    ],
)
def test_edit_ops_on_the_latents_seen_by_the_edit(steerable, spec, expect):
    model, _, _, test_data = steerable
    batch = _batch(test_data)
    seen = []
    with torch.no_grad(), model.steer(spec) as fn:

        def recorder(f):
            g = fn(f)
            seen.append((f.clone(), g.clone()))
            return g

        model.intervention = recorder
        with model.site.capture() as states:
            out = model.forward(batch["item_id_list"], batch["item_length"])
    ((f, g),) = seen
    assert f.shape == (len(batch), 64)  # one row per user: the last position
    assert torch.equal(g[:, 5], expect(f[:, 5]))
    assert torch.equal(g[:, :5], f[:, :5]) and torch.equal(g[:, 6:], f[:, 6:])
    x = states[-1][torch.arange(len(batch)), batch["item_length"] - 1]
    shift = (g[:, 5] - f[:, 5])[:, None] * model.decoder_directions[5]
    torch.testing.assert_close(out, x + shift, rtol=1e-5, atol=1e-6)


def test_several_edits_apply_in_order():
    f = torch.tensor([[1.0, 2.0, 3.0]])
    g = LatentEdits([LatentEdit(0, "add", 1.0), LatentEdit(0, "scale", 3.0), LatentEdit(2, "clamp", 0.0)])(f)
    assert torch.equal(g, torch.tensor([[6.0, 2.0, 0.0]])) and torch.equal(f, torch.tensor([[1.0, 2.0, 3.0]]))


def test_parse_steer():
    terms = parse_steer("latent=12:+6, latent=3:clamp=10;genre=Western:-4,categories=Hair Care, Styling:scale=0.5")
    assert [(t.field, t.value, t.op, t.strength) for t in terms] == [
        ("latent", "12", "add", 6.0),
        ("latent", "3", "clamp", 10.0),
        ("genre", "Western", "add", -4.0),
        ("categories", "Hair Care, Styling", "scale", 0.5),
    ]
    assert parse_steer("class=Western", require_strength=False)[0].strength is None
    assert parse_steer("class=Western:clamp", require_strength=False)[0].op == "clamp"
    for bad, message in [
        ("latent=12", "no strength"),
        ("latent=x:+1", "integer"),
        ("genre=Western:boost=3", "boost"),
        ("Western:+3", "expected"),
        ("", "empty"),
        ("latent=1:scale=1e309", "not a finite number"),  # was accepted as inf: NaN scores
    ]:
        with pytest.raises(ConfigError, match=message):
            parse_steer(bad)


# --------------------------------------------------------------------------- attribute values
def test_attribute_resolution_picks_the_planted_latent(steerable, sae_run, tmp_path, caplog):
    run = _run_copy(sae_run, tmp_path)
    path = run / "interpretation" / "interpretation.json"
    interp = json.loads(path.read_text())
    for value in interp["fields"]["genre"]["values"]:
        if value["value"] == "Western":
            value["sae"] = {"latent": 7, "corr": 0.9, "auc": 0.95, "precision": 0.8, "recall": 0.7}
            value["sae_auc"] = {"latent": 7, "corr": 0.9, "auc": 0.95, "precision": 0.8, "recall": 0.7}
    for lat in interp["latents"]:
        lat["best_values"] = [bv for bv in lat["best_values"] if bv["value"] != "Western"]
    interp["latents"] = [lat for lat in interp["latents"] if lat["id"] not in (3, 7, 9)] + [
        {
            "id": 7,
            "label": "Western (0.90)",
            "best_values": [{"field": "genre", "value": "Western", "corr": 0.9, "auc": 0.95, "precision": 0.8}],
        },
        {
            "id": 3,
            "label": "Western (0.50)",
            "best_values": [{"field": "genre", "value": "Western", "corr": 0.5, "auc": 0.7, "precision": 0.6}],
        },
        {
            "id": 9,
            "label": "Drama (0.30)",
            "best_values": [{"field": "genre", "value": "Western", "corr": -0.2, "auc": 0.4, "precision": 0.1}],
        },
    ]
    path.write_text(json.dumps(interp))
    caplog.set_level("INFO")
    model = _model_on(steerable, run)
    assert model.resolve("genre=Western:+6") == [LatentEdit(7, "add", 6.0)]
    assert "latent 7 (corr 0.9, AUC 0.95, precision 0.8" in caplog.text and "Western (0.90)" in caplog.text
    assert [r["latent"] for r in model.latents_for("genre", "Western", n=3)] == [7, 3]
    two = _model_on(steerable, run, steer_latents_per_value=2)
    assert two.resolve("genre=Western:clamp=5") == [LatentEdit(7, "clamp", 5.0), LatentEdit(3, "clamp", 5.0)]
    assert two.target_of(parse_steer("latent=7:+1")[0]) == ("genre", "Western")


def test_unknown_values_and_latents_are_clear_errors(steerable):
    model = steerable[0]
    with pytest.raises(ConfigError, match=r"genre=Westrn is not in .* Close matches: Western"):
        model.resolve("genre=Westrn:+6")
    with pytest.raises(ConfigError, match=r"'genr' is not in the interpretation.*Did you mean genre"):
        model.resolve("genr=Western:+6")
    with pytest.raises(ConfigError, match=r"latent 64 is out of range: the SAE has 64 latents \(valid ids 0..63\)"):
        model.resolve("latent=64:+1")
    with pytest.raises(ConfigError, match="out of range"):
        with model.steer(LatentEdit(-1, "add", 1.0)):
            pass
    with pytest.raises(ConfigError, match="op must be one of"):
        LatentEdit(1, "multiply", 2.0)
    with pytest.raises(ConfigError, match="positions"):
        with model.steer([], positions="first"):
            pass
    assert model.intervention is None


# --------------------------------------------------------------------------- loading errors
def test_checkpoint_of_another_model_is_rejected(steerable, sae_run, tmp_path):
    run = _run_copy(sae_run, tmp_path)
    state = torch.load(run / "model.pth", weights_only=True)
    state["config"]["model"] = "SASRecPlus"
    torch.save(state, run / "model.pth")
    with pytest.raises(
        CheckpointMismatchError, match="holds a SASRecPlus model; SteerableSASRec needs a SASRecSAE run"
    ):
        _model_on(steerable, run)


def test_missing_sae_interpretation_or_run_are_clear_errors(steerable, sae_run, tmp_path):
    run = _run_copy(sae_run, tmp_path, "no_sae")
    shutil.rmtree(run / "sae")
    with pytest.raises(CheckpointMismatchError, match="has no trained SAE.*run SASRecSAE to the end first"):
        _model_on(steerable, run)
    run = _run_copy(sae_run, tmp_path, "no_interpretation")
    shutil.rmtree(run / "interpretation")
    model = _model_on(steerable, run / "model.pth")  # a checkpoint path works as well as the folder
    assert model.resolve("latent=2:+1") == [LatentEdit(2, "add", 1.0)]  # latents by id need no interpretation
    with pytest.raises(ConfigError, match="interpretation.json.*run SASRecSAE with item_attributes"):
        model.resolve("genre=Western:+6")
    with pytest.raises(CheckpointMismatchError, match="does not exist"):
        _model_on(steerable, tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="needs sae_run"):
        _model_on(steerable, "")
    with pytest.raises(ConfigError, match="MAX_ITEM_LIST_LENGTH=10, this run MAX_ITEM_LIST_LENGTH=20"):
        _model_on(steerable, sae_run["run_dir"], MAX_ITEM_LIST_LENGTH=20)


# --------------------------------------------------------------------------- explanations
def test_logit_lens_terms_sum_to_the_score_at_the_last_layer(steerable):
    model, _, _, test_data = steerable
    batch = _batch(test_data)
    with torch.no_grad():
        scores = model.full_sort_predict(batch)
        for edits in ([], "latent=3:+4; latent=8:clamp=2"):
            with model.steer(edits):
                parts = model.logit_contributions(batch)
                assert parts["exact"]
                total = parts["latents"].sum(dim=1) + parts["bias"] + parts["error"]
                torch.testing.assert_close(total, parts["score"], rtol=1e-4, atol=1e-5)
                torch.testing.assert_close(parts["score"], model.full_sort_predict(batch), rtol=1e-5, atol=1e-6)
        assert torch.equal(scores, model.full_sort_predict(batch))


def test_explain_lists_top_items_and_their_latents(steerable):
    model, _, _, test_data = steerable
    batch = _batch(test_data)
    users = model.explain(batch, k=5, n_latents=3)
    with torch.no_grad():
        scores = model.full_sort_predict(batch)
    scores[:, 0] = -float("inf")
    assert len(users) == len(batch) and users[0]["exact"]
    for b, user in enumerate(users):
        assert [it["item"] for it in user["items"]] == torch.topk(scores[b], 5).indices.tolist()
        for it in user["items"]:
            assert it["title"].startswith("Movie ")
            contribs = [lat["contribution"] for lat in it["latents"]]
            assert len(contribs) <= 3 and all(c > 0 for c in contribs) and contribs == sorted(contribs, reverse=True)
            assert all(isinstance(lat["label"], str) for lat in it["latents"])
            rebuilt = sum(contribs) + it["other_latents"] + it["bias"] + it["error"]
            assert rebuilt == pytest.approx(it["score"], abs=1e-4)
    seen = model.explain(batch, k=5, exclude_seen=True)
    history = set(batch["item_id_list"][0].tolist())
    assert not history & {it["item"] for it in seen[0]["items"]}


# --------------------------------------------------------------------------- the pipeline
def _steered_run(sae_run, config: dict, cmd_args=None) -> dict:
    """SteerableSASRec on the tiny data through the pipeline, steering ``genre=Western:+4``."""
    from recbole_sae.quick_start import run_recbole_sae

    base = {
        "data_path": sae_run["data_path"],
        "sae_run": sae_run["run_dir"],
        "MAX_ITEM_LIST_LENGTH": 10,
        "steer": "genre=Western:+4",
        "show_progress": False,
    }
    return run_recbole_sae("SteerableSASRec", "tiny", [sae_run["yaml"]], {**base, **config}, cmd_args=cmd_args)


def test_steer_and_sweep_through_the_pipeline(sae_run, in_tmp, monkeypatch):
    from recbole_sae.cli import parse_args

    # the sweep as on the command line (its '=' values as typed there), the edit in config_dict
    result = _steered_run(
        sae_run, {"steer_examples": 2}, cmd_args=parse_args(["--steer_sweep=genre=Western", "--strengths=-4,0,4"])
    )
    test = result["test"]
    sweep = result["steering"]
    assert [row["strength"] for row in sweep["table"]] == [-4.0, 0.0, 4.0]
    zero = sweep["table"][1]
    assert zero["ndcg@10"] == test["ndcg@10"] and zero["hit@10"] == test["hit@10"]
    assert sweep["unsteered"] == {"ndcg@10": test["ndcg@10"], "hit@10": test["hit@10"]}
    assert isinstance(sweep["latents"][0]["latent"], int) and sweep["target_value"] == "Western"
    for row in sweep["table"]:
        assert 0 <= row["target_share"] <= 1 and 0 < row["coverage"] <= 1 and 0 <= row["diversity"] <= 2
    steering = os.path.join(result["run_dir"], "steering")
    for name in ("sweep.csv", "sweep.json", "sweep.md", "sweep.png", "steer.json"):
        assert os.path.isfile(os.path.join(steering, name)), name
    with open(os.path.join(steering, "sweep.json")) as f:
        full = json.load(f)
    assert full["rows"][1]["metrics"] == test and full["unsteered"] == test
    assert full["rows"][1]["target_share"] == full["rows"][1]["shares"]["Western"]
    with open(os.path.join(steering, "sweep.csv")) as f:
        header = f.readline().strip().split(",")
    assert header[:4] == ["strength", "target_share", "ndcg@10", "hit@10"] and "share:Drama" in header

    steer = result["steer"]
    assert steer["unsteered"] == test and steer["edits"] == [f"latent={sweep['latents'][0]['latent']}:+4"]
    row4 = sweep["table"][2]
    assert steer["steered"]["ndcg@10"] == row4["ndcg@10"]
    share = steer["target_share"]["genre=Western"]
    assert (share["unsteered"], share["steered"]) == (zero["target_share"], row4["target_share"])
    assert share["change"] == pytest.approx(row4["share_change"]) and share["noise"] == pytest.approx(
        row4["share_noise"]
    )
    assert share["verdict"] == row4["verdict"] and share["expected"] == 1 and share["n_users"] == 80
    assert zero["verdict"] == "no_edit" and sweep["unsteered_share"] == zero["target_share"]
    # a warning exactly when the edit did not do its job, recorded in the RESULT and in the files
    assert bool(steer["warnings"]) == (share["verdict"] in ("wrong_way", "within_noise"))
    failed = [row["strength"] for row in sweep["table"] if row["verdict"] in ("wrong_way", "within_noise")]
    assert len(sweep["warnings"]) == (1 if failed else 0) and full["warnings"] == sweep["warnings"]
    with open(os.path.join(steering, "steer.json")) as f:
        assert json.load(f)["warnings"] == steer["warnings"]
    assert len(steer["examples"]) == 2 and len(steer["examples"][0]["steered"]) == 10


def _seen_titles(data_path):
    """Per user token, the titles of the items before the user's last (test) interaction; and all titles."""
    folder = os.path.join(data_path, "tiny")
    with open(os.path.join(folder, "tiny.item")) as f:
        titles = dict(line.rstrip("\n").split("\t")[:2] for line in list(f)[1:])
    items = {}
    with open(os.path.join(folder, "tiny.inter")) as f:
        for line in list(f)[1:]:
            user, item, _ = line.split("\t")
            items.setdefault(user, []).append(item)  # written in time order
    return {user: {titles[i] for i in seq[:-1]} for user, seq in items.items()}


@pytest.mark.parametrize("filter_seen", [True, False])
def test_steering_lists_rank_as_the_headline_protocol(sae_run, in_tmp, filter_seen):
    """The steering lists ignored filter_seen: with seen items removed (the default headline, which NDCG
    and HR follow) no list may hold an item the user saw before; with RecBole's protocol they may."""

    result = _steered_run(sae_run, {"steer_examples": 80, "filter_seen": filter_seen})
    seen = _seen_titles(sae_run["data_path"])
    examples = result["steer"]["examples"]
    assert len(examples) == 80
    repeats = sum(len(seen[ex["user"]] & set(ex[name])) for ex in examples for name in ("unsteered", "steered"))
    if filter_seen:
        assert result["protocol"] == "seen_removed" and repeats == 0
    else:
        assert result["protocol"] == "seen_kept" and repeats > 0
    assert result["steer"]["unsteered"] == result["test"]  # the accuracy beside the shares: the headline's
