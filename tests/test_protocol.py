"""Both evaluation protocols: seen items kept rankable (RecBole's) and removed (the papers')."""

import pytest
import torch
from conftest import SMALL
from recbole.evaluator import Collector, Evaluator

from recbole_sae import protocol
from recbole_sae.protocol import SEEN_KEPT, SEEN_REMOVED, SeenTable
from recbole_sae.quick_start import load_data_and_model, run_recbole_sae


def test_seen_table_lists_each_users_items_once():
    users = torch.tensor([0, 2, 2, 2, 1, 2])
    items = torch.tensor([5, 3, 1, 3, 0, 4])  # item 0 is padding: never seen
    table = SeenTable(users, items, n_users=3, n_items=6)
    rows, seen = table.mask_indices(torch.tensor([2, 1, 0]))
    assert rows.tolist() == [0, 0, 0, 2] and seen.tolist() == [1, 3, 4, 5]
    assert table.contains(torch.tensor([2, 2, 0, 1]), torch.tensor([3, 5, 5, 5])).tolist() == [True, False, True, False]


def _ndcg10(scores, targets, config):
    collector, evaluator = Collector(config), Evaluator(config)
    collector.eval_batch_collect(scores, None, torch.arange(len(targets)), targets)
    return float(evaluator.evaluate(collector.get_data_struct())["ndcg@10"])


def test_a_seen_item_above_the_target_stops_counting_against_it(tiny_build):
    config, *_ = tiny_build("SASRec")
    # user 0 saw items 1 and 2, which outrank its target 3; user 1 saw nothing; 25 items
    row = [0.0, 9, 8, 7] + [1.0] * 21
    scores = torch.tensor([row, row])
    table = SeenTable(torch.tensor([0, 0]), torch.tensor([1, 2]), n_users=2, n_items=25)
    targets = torch.tensor([3, 3])
    removed = protocol.remove_seen(scores, table, torch.tensor([0, 1]))
    assert torch.isinf(removed[0, 1:3]).all() and torch.equal(removed[1], scores[1])
    assert torch.equal(scores, torch.tensor([row, row]))  # the input is not changed
    third = 1 / torch.log2(torch.tensor(4.0)).item()
    assert _ndcg10(scores, targets, config) == pytest.approx(third, abs=1e-4)
    assert _ndcg10(removed, targets, config) == pytest.approx((1 + third) / 2, abs=1e-4)


def test_a_target_seen_before_is_removed_with_the_rest(tiny_build):
    config, *_ = tiny_build("SASRec")
    scores = torch.tensor([[0.0, 9, 8, 7] + [1.0] * 21])
    table = SeenTable(torch.tensor([0, 0]), torch.tensor([1, 3]), n_users=1, n_items=25)
    removed = protocol.remove_seen(scores, table, torch.tensor([0]))
    assert torch.isinf(removed[0, 3])
    assert _ndcg10(removed, torch.tensor([3]), config) == 0.0  # a miss at every cut-off
    assert table.contains(torch.tensor([0]), torch.tensor([3])).tolist() == [True]


def test_seen_before_is_the_whole_history_not_the_window(tiny_build):
    """With a window of 3 items, the seen set still holds every earlier item of the user."""
    config, data, train_data, valid_data, test_data = tiny_build("SASRec", MAX_ITEM_LIST_LENGTH=3)
    tables = protocol.seen_tables(train_data, valid_data, test_data, config)
    uid, iid = config["USER_ID_FIELD"], config["ITEM_ID_FIELD"]
    full = {}  # user -> items in time order, from the training rows' first item and every target
    for split in (train_data, valid_data, test_data):
        feat = split.dataset.inter_feat
        for u, first, target in zip(feat[uid].tolist(), feat[iid + "_list"][:, 0].tolist(), feat[iid].tolist()):
            full.setdefault(u, [first] if u not in full else full[u]).append(target)
    for loader, cut in ((valid_data, 2), (test_data, 1)):
        users = loader.dataset.inter_feat[uid]
        rows, items = tables[id(loader)].mask_indices(users)
        for r, u in enumerate(users.tolist()):
            assert sorted(items[rows == r].tolist()) == sorted(set(full[u][:-cut]))
    assert max(len(v) for v in full.values()) > 5  # histories longer than the window


@pytest.mark.parametrize("model", ["SASRec", "SASRecPlus"])
def test_recbole_and_plugin_models_go_through_the_same_filter(model, tiny_dataset, in_tmp, monkeypatch):
    data_path, name, yaml_file = tiny_dataset
    calls = []
    remove_seen = protocol.remove_seen
    monkeypatch.setattr(protocol, "remove_seen", lambda *a: calls.append(1) or remove_seen(*a))
    removed = run_recbole_sae(model, name, [yaml_file], {"data_path": data_path, **SMALL, "epochs": 2})
    assert calls  # both models rank through protocol.remove_seen
    kept = run_recbole_sae(
        model, name, [yaml_file], {"data_path": data_path, **SMALL, "epochs": 2, "filter_seen": False}
    )
    assert removed["protocol"] == SEEN_REMOVED and kept["protocol"] == SEEN_KEPT
    # the same training either way here (the choice of the best epoch may differ in general):
    # each protocol's figures are the same whichever one is the headline
    assert removed["test"] == kept[SEEN_REMOVED]["test"] and kept["test"] == removed[SEEN_KEPT]["test"]
    # the tiny data repeats items: over half the targets were seen before, and each is a miss once removed
    share = removed["target_seen_before"]["test"]
    assert 0.5 < share < 1.0 and share == kept["target_seen_before"]["test"]
    assert removed["test"]["hit@20"] <= 1 - share < kept["test"]["hit@20"]


def test_without_filter_seen_nothing_changes(tiny_dataset, in_tmp):
    """filter_seen False: the headline is RecBole's own evaluation of the same checkpoint."""
    from recbole.trainer import Trainer

    data_path, name, yaml_file = tiny_dataset
    result = run_recbole_sae(
        "SASRec", name, [yaml_file], {"data_path": data_path, **SMALL, "epochs": 2, "filter_seen": False}
    )
    config, model, _, train_data, valid_data, test_data = load_data_and_model(result["run_dir"])
    plain = Trainer(config, model).evaluate(test_data, load_best_model=False)
    assert {k: round(float(v), 6) for k, v in plain.items()} == result["test"]
    both = Trainer(config, model)
    protocol.attach_to_run(both, train_data, valid_data, test_data, config)
    head, rest = protocol.split_result(both.evaluate(test_data, load_best_model=False))
    assert {k: round(float(v), 6) for k, v in head.items()} == result["test"]
    assert {k: round(float(v), 6) for k, v in rest.items()} == result[SEEN_REMOVED]["test"]


def test_metrics_of_a_record_under_each_protocol():
    new = {"protocol": SEEN_REMOVED, "test": {"ndcg@10": 0.5}, SEEN_KEPT: {"test": {"ndcg@10": 0.3}}}
    swept = {"protocol": SEEN_REMOVED, "test": {"ndcg@10": 0.5}, "extra": {SEEN_KEPT: {"test": {"ndcg@10": 0.3}}}}
    old = {"test": {"ndcg@10": 0.2}}  # written before both protocols were reported: RecBole's
    for record in (new, swept):
        assert protocol.metrics(record, SEEN_REMOVED, "test") == {"ndcg@10": 0.5}
        assert protocol.metrics(record, SEEN_KEPT, "test") == {"ndcg@10": 0.3}
    assert protocol.metrics(old, SEEN_KEPT, "test") == {"ndcg@10": 0.2}
    assert protocol.metrics(old, SEEN_REMOVED, "test") is None


def test_run_keys_follow_the_protocol(tmp_path):
    from recbole_sae.benchmark import spec as sweep_spec

    settings = {"hidden_size": 16}
    default = sweep_spec.run_key("SASRec", "d", 1, settings)  # overall.yaml: filter_seen True
    assert sweep_spec.run_key("SASRec", "d", 1, {**settings, "filter_seen": True}) == default
    kept = sweep_spec.run_key("SASRec", "d", 1, {**settings, "filter_seen": False})
    assert kept != default
    # a run that ranked with seen items kept keeps the key it had before the protocol was a setting
    import hashlib
    import json

    before = {"model": "SASRec", "dataset": "d", "seed": 1, "overrides": settings, "config_files": []}
    text = json.dumps(before, sort_keys=True, default=str, separators=(",", ":"))
    assert kept == hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
    config = tmp_path / "kept.yaml"
    config.write_text("filter_seen: False\n")
    assert sweep_spec.run_protocol(settings, [str(config)]) == SEEN_KEPT
    assert sweep_spec.run_protocol({"filter_seen": "true"}, [str(config)]) == SEEN_REMOVED


def test_a_general_model_keeps_recboles_evaluation(tiny_dataset, in_tmp):
    """RecBole's general models rank with the training items removed already: one protocol, no error."""
    data_path, name, yaml_file = tiny_dataset
    result = run_recbole_sae("Pop", name, [yaml_file], {"data_path": data_path, "epochs": 1})
    assert result["protocol"] == SEEN_REMOVED and SEEN_KEPT not in result and "target_seen_before" not in result
    assert 0 < result["test"]["hit@20"] <= 1
