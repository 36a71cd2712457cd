"""SAERec: causal intent retrieval, the fused network, explanations, the run folder."""

import json
import os

import pytest
import torch
from conftest import INTENT_SMALL
from recbole.data.interaction import Interaction

from recbole_sae.errors import ConfigError
from recbole_sae.model.saerec import SAERec


@pytest.fixture
def saerec(tiny_build, tmp_path):
    def make(**overrides):
        config, data, train_data, valid_data, test_data = tiny_build(
            "SAERec", intent_cache_dir=str(tmp_path / "cache"), **{**INTENT_SMALL, **overrides}
        )
        return SAERec(config, train_data.dataset).eval(), data, test_data

    return make


def test_personal_intents_and_outputs_are_causal(saerec):
    model, _, _ = saerec()
    seq = torch.tensor([[3, 8, 13, 18, 23, 0]])
    lengths = torch.tensor([5])
    changed = seq.clone()
    changed[0, 3:5] = torch.tensor([4, 9])  # change the items after position 2
    with torch.no_grad():
        ids, _ = model.personal_intents(seq, lengths, all_positions=True)
        ids2, _ = model.personal_intents(changed, lengths, all_positions=True)
        out = model.forward(seq, lengths, all_positions=True)
        out2 = model.forward(changed, lengths, all_positions=True)
    assert torch.equal(ids[0, :3], ids2[0, :3])
    torch.testing.assert_close(out[0, :3], out2[0, :3])
    assert not torch.allclose(out[0, 3:5], out2[0, 3:5])
    # the last-position retrieval of a whole sequence is the per-position one at its end
    last, _ = model.personal_intents(seq, lengths, all_positions=False)
    assert torch.equal(last[0, 0], ids[0, 4])


def test_public_intents_and_shapes(saerec):
    model, data, test_data = saerec()
    assert model.public_ids.shape == (2,) and int(model.public_ids.max()) < model.vocabulary.n_kept
    batch = next(iter(test_data))[0]
    with torch.no_grad():
        scores = model.full_sort_predict(batch)
    assert scores.shape == (len(batch), data.item_num) and torch.isfinite(scores).all()


@pytest.mark.parametrize("fusion", ["attention", "gate"])
def test_explain_names_intents_and_fusion_weights(saerec, fusion):
    model, _, test_data = saerec(fusion=fusion)
    batch = next(iter(test_data))[0]
    explanations = model.explain(batch[:3], k=5)
    assert len(explanations) == 3
    for record in explanations:
        assert len(record["top_items"]) == 5 and 0 not in record["top_items"]
        assert len(record["personal_intents"]) == 3 and len(record["public_intents"]) == 2
        for intent in record["personal_intents"]:
            assert intent["label"] == model.intent_labels[intent["intent"]]
        weights = record["fusion"]
        assert 0.0 <= weights["personal"] <= 1.0 and 0.0 <= weights["public"] <= 1.0
        if fusion == "attention":
            assert weights["personal"] + weights["public"] == pytest.approx(1.0, abs=1e-3)
        assert sum(i["attention"] for i in record["personal_intents"]) == pytest.approx(1.0, abs=1e-3)


def test_a_training_step_lowers_the_loss(saerec):
    model, _, _ = saerec()
    model.train()
    torch.manual_seed(0)
    seq = torch.tensor([[3, 8, 13, 18, 0], [5, 10, 15, 20, 25]])
    inter = Interaction(
        {
            "item_id_list": seq,
            "item_length": torch.tensor([4, 5]),
            "target_id_list": torch.tensor([[8, 13, 18, 23, 0], [10, 15, 20, 25, 30]]),
        }
    )
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    losses = []
    for _ in range(5):
        optimizer.zero_grad()
        loss = model.calculate_loss(inter)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert model.intent_proj.weight.grad is not None and model.personal_layers[0].query.weight.grad.abs().sum() > 0


def test_bad_fusion_is_a_clear_error(saerec):
    with pytest.raises(ConfigError, match="fusion='sum': it must be one of attention, gate"):
        saerec(fusion="sum")


def _tiny_run(data_path, tmp_path, **keys) -> dict:
    """A small SAERec run's config on the tiny dataset (its intent cache under tmp_path)."""
    return {
        "data_path": data_path,
        **INTENT_SMALL,
        "hidden_size": 16,
        "inner_size": 32,
        "n_layers": 1,
        "MAX_ITEM_LIST_LENGTH": 10,
        "intent_cache_dir": str(tmp_path / "cache"),
        **keys,
    }


def test_run_writes_intents_and_reloads_them_without_cache_or_text_model(tiny_dataset, in_tmp, tmp_path, monkeypatch):
    from recbole.trainer import Trainer

    from recbole_sae.intents import encoder, pipeline
    from recbole_sae.quick_start import load_data_and_model, run_recbole_sae

    data_path, name, yaml_file = tiny_dataset
    result = run_recbole_sae("SAERec", name, [yaml_file], _tiny_run(data_path, tmp_path, epochs=2))
    intents = result["intents"]
    assert intents["n_kept"] <= intents["n_alive"] <= intents["n_latents"] == 64
    folder = intents["intents_dir"]
    for path in [
        "stage.json",
        "item_embeddings.safetensors",
        "index.faiss",
        "index.faiss.meta.json",
        "vocabulary/intents.json",
        "vocabulary/directions.safetensors",
        "vocabulary/sae/sae.safetensors",
        "vocabulary/sae/cfg.json",
        "intents.md",
        "explanations.json",
    ]:
        assert os.path.isfile(os.path.join(folder, path)), path
    explanations = json.load(open(os.path.join(folder, "explanations.json")))
    users = explanations["users"]
    assert len(users) == 3 and all(len(e["top_titles"]) == 10 for e in users)
    for record in users:
        assert os.path.isfile(os.path.join(folder, record["page"]))
        assert len(record["items"]) == 10 and all(len(item["intents"]) == 3 for item in record["items"])
    page = open(os.path.join(folder, users[0]["page"]), encoding="utf-8").read()
    assert users[0]["top_titles"][0] in page and users[0]["history_titles"][-1] in page
    faith = explanations["faithfulness"]
    assert faith["users"] == 80 and faith["items"] == 800 and faith == intents["faithfulness"]

    # reload: the intents come from the run folder only, never from a cache or a text model
    def no_text_model(*args, **kwargs):
        raise AssertionError("the reload built intents or a text model")

    monkeypatch.setattr(encoder.TextEncoder, "__init__", no_text_model)
    monkeypatch.setattr(pipeline, "build_intents", no_text_model)
    empty = tmp_path / "empty-cache"
    empty.mkdir()
    import shutil

    shutil.rmtree(tmp_path / "cache")
    config, model, *_, test_data = load_data_and_model(
        result["run_dir"], expected_model="SAERec", config_dict={"intent_cache_dir": str(empty)}
    )
    again = Trainer(config, model).evaluate(test_data, load_best_model=False)
    # RecBole's own Trainer ranks with seen items kept
    assert {k: round(float(v), 6) for k, v in again.items()} == result["seen_kept"]["test"]
    assert list(empty.iterdir()) == []
    assert model.stage.folder is not None and str(model.stage.folder) == folder


def test_stage_round_trip_and_item_check(tiny_build, tmp_path):
    from recbole_sae.errors import CheckpointMismatchError
    from recbole_sae.intents.stage import IntentStage

    config, data, train_data, *_ = tiny_build("SAERec", intent_cache_dir=str(tmp_path / "cache"), **INTENT_SMALL)
    stage = IntentStage.build(config, train_data.dataset)
    stage.save(tmp_path / "intents")
    back = IntentStage.load(tmp_path / "intents", train_data.dataset, use_gpu=False)
    assert torch.equal(back.item_embeddings, stage.item_embeddings)
    assert torch.equal(back.directions, stage.directions)
    assert torch.equal(back.index.directions, stage.index.directions)
    assert torch.equal(back.public_ids, stage.public_ids)
    assert back.vocabulary.labels == stage.vocabulary.labels
    # a stage for other items is refused
    train_data.dataset.field2id_token[train_data.dataset.iid_field][1] = "not-an-item"
    with pytest.raises(CheckpointMismatchError, match="other items"):
        IntentStage.load(tmp_path / "intents", train_data.dataset)


def test_a_stage_save_that_fails_writing_its_manifest_leaves_no_manifest(tiny_build, tmp_path):
    """The manifest marks the stage folder complete: written straight into the file, a save that
    failed half-way left a truncated manifest, which the next run took for a finished stage."""
    from recbole_sae import runfiles
    from recbole_sae.intents.stage import IntentStage

    config, data, train_data, *_ = tiny_build("SAERec", intent_cache_dir=str(tmp_path / "cache"), **INTENT_SMALL)
    stage = IntentStage.build(config, train_data.dataset)
    stage.settings = {**stage.settings, "zz_unwritable": object()}  # json fails after the other keys
    with pytest.raises(TypeError):
        stage.save(tmp_path / "intents")
    assert not (tmp_path / "intents" / runfiles.INTENT_STAGE_MANIFEST).exists()
    assert [p.name for p in (tmp_path / "intents").iterdir() if p.name.endswith(".tmp")] == []


def test_precomputed_personal_intents_give_the_same_loss(saerec):
    from recbole_sae.model.saerec import PERSONAL_FIELD

    model, _, _ = saerec()
    seq = torch.tensor([[3, 8, 13, 18, 0], [5, 10, 15, 20, 25]])
    lengths = torch.tensor([4, 5])
    fields = {
        "item_id_list": seq,
        "item_length": lengths,
        "target_id_list": torch.tensor([[8, 13, 18, 23, 0], [10, 15, 20, 25, 30]]),
    }
    with torch.no_grad():
        plain = model.calculate_loss(Interaction(fields))
        pre = model.precompute_rows(seq, lengths)
        cached = model.calculate_loss(Interaction({**fields, **pre}))
    assert pre[PERSONAL_FIELD].shape == (2, 5, 3)
    assert cached.item() == pytest.approx(plain.item(), rel=1e-6)


def test_the_result_line_gives_the_faithfulness_share_when_the_ratio_is_undefined():
    """A random intent's removal raised the scores on average (ratio None): the summary still says how
    often the top-attributed intent's removal dropped the score more."""
    from recbole_sae.trainer.saerec_trainer import SAERecTrainer

    faith = {"ratio": None, "share_top_above_random": 0.97, "mean_drop_top": 0.1, "mean_drop_random": -0.01}
    extra = {"intents": {"n_latents": 8, "n_alive": 7, "n_kept": 5, "retrieval": "text", "faithfulness": faith}}
    summary = SAERecTrainer.result_summary(None, extra)["intents"]
    assert summary["faithfulness_ratio"] is None and summary["faithfulness_share"] == 0.97


def test_explain_writes_a_finished_runs_explanations_again(tiny_dataset, in_tmp, tmp_path, capsys):
    """`recbole-sae explain --run=RUN`: a run's explanations with the code of today (e.g. the item-code
    attributions of item_intent_codes runs trained before they existed), without training again."""
    from recbole_sae.cli import main
    from recbole_sae.quick_start import run_recbole_sae

    data_path, name, yaml_file = tiny_dataset
    codes_only = {"item_intent_codes": True, "intent_personal": False, "intent_public": False}
    result = run_recbole_sae("SAERec", name, [yaml_file], _tiny_run(data_path, tmp_path, epochs=1, **codes_only))
    folder = result["intents"]["intents_dir"]
    before = json.load(open(os.path.join(folder, "explanations.json")))
    os.remove(os.path.join(folder, "explanations.json"))
    capsys.readouterr()
    # --data_path may name the dataset's parent folder, as for a run (it used to be taken as the folder itself)
    assert main(["explain", f"--run={result['run_dir']}", "--faithfulness_users=7", f"--data_path={data_path}"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("EXPLAINED ")
    printed = json.loads(line.split(" ", 1)[1])
    again = json.load(open(os.path.join(folder, "explanations.json")))
    assert printed == {"intents_dir": folder, "faithfulness": again["faithfulness"]}
    assert again["faithfulness"]["users"] == 7 and again["faithfulness"]["items"] > 0
    assert [u["top_items"] for u in again["users"]] == [u["top_items"] for u in before["users"]]
    assert all(it["branch"] == "item" for u in again["users"] for item in u["items"] for it in item["intents"])
    # bad input: one error line, exit code 2
    assert main(["explain", f"--run={tmp_path / 'nothing'}"]) == 2
    assert capsys.readouterr().err.startswith(f"error: {tmp_path / 'nothing'} is not a finished run")
    assert main(["explain"]) == 2 and "--run is required (explain --help" in capsys.readouterr().err
    assert main(["explain", f"--run={result['run_dir']}", f"--data_path={tmp_path / 'elsewhere'}"]) == 2
    assert capsys.readouterr().err.startswith(f"error: dataset '{name}' not found")


def test_the_default_saerec_puts_text_and_intents_in_the_items_and_leaves_the_branches_off(tiny_build, tmp_path):
    """The shipped defaults are the configuration measured best at the paper's size (BENCHMARKS.md);
    the tests elsewhere pin the paper's architecture (conftest.INTENT_SMALL)."""
    small = {
        k: v
        for k, v in INTENT_SMALL.items()
        if k not in ("intent_personal", "intent_public", "item_text", "item_intent_codes")
    }
    config, _, train_data, *_ = tiny_build("SAERec", intent_cache_dir=str(tmp_path / "cache"), **small)
    assert (config["item_text"], config["item_intent_codes"]) == (True, True)
    assert (config["intent_personal"], config["intent_public"]) == (False, False)
    model = SAERec(config, train_data.dataset)
    assert model.item_text and model.item_codes and not model.use_personal and not model.use_public
    inter = Interaction({"item_id_list": torch.tensor([[3, 8, 13, 0]]), "item_length": torch.tensor([3])})
    with torch.no_grad():
        scores = model.eval().full_sort_predict(inter)
        state = model.forward(inter["item_id_list"], inter["item_length"])
        torch.testing.assert_close(scores, state @ model.item_matrix().t())  # the fusion passes the state through
    assert model.explain(inter, k=5)[0]["items"][0]["intents"][0]["branch"] == "item"
