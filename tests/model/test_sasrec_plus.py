"""SASRecPlus: full-sequence rows, the loss at every position, and the lean forward pass."""

import csv
from collections import defaultdict

import pytest
import torch
import torch.nn.functional as F
from recbole.data.interaction import Interaction
from recbole.model.sequential_recommender.sasrec import SASRec

from recbole_sae.model.layers import SDPAMultiHeadAttention
from recbole_sae.model.sasrec_plus import TARGETS_FIELD, SASRecPlus
from recbole_sae.trainer.sequence_trainer import LengthBatches, default_stride, full_sequence_rows, shifted_targets


def _user_sequences(data, data_path):
    """Each user's whole item sequence (internal ids), read from the raw atomic file."""
    seqs = defaultdict(list)
    with open(f"{data_path}/tiny/tiny.inter") as f:
        rows = list(csv.reader(f, delimiter="\t"))[1:]
    for user, item, _time in sorted(rows, key=lambda r: (r[0], float(r[2]))):
        seqs[data.token2id("user_id", user)].append(data.token2id("item_id", item))
    return seqs


@pytest.mark.parametrize("bucketing", [True, False])
def test_full_sequence_batches_count_targets_or_windows(tiny_build, bucketing):
    config, _, train_data, _, _ = tiny_build(
        "SASRecPlus", MAX_ITEM_LIST_LENGTH=8, full_sequence_stride=4, train_batch_size=7
    )
    by_targets = LengthBatches(train_data.dataset, config, full_sequence=True, bucketing=bucketing)
    rows_seen, sizes = [], []
    for batch in by_targets.epoch(3):
        n = int((batch[TARGETS_FIELD] > 0).sum())
        sizes.append(n)
        rows_seen += batch["user_id"].tolist()
    most = int(by_targets.row_targets.max())
    # every batch but one (the remainder) reaches 7 targets and stops at the row that got it there
    assert all(7 <= n < 7 + most for n in sorted(sizes)[1:])
    assert sum(sizes) == by_targets.n_targets
    assert len(rows_seen) == by_targets.n_rows
    assert len(sizes) <= len(by_targets)  # the count ceil(targets / 7) bounds the batches
    # the same data batched by windows: 7 rows per batch, fewer and larger steps
    config["full_sequence_batch"] = "windows"
    by_windows = LengthBatches(train_data.dataset, config, full_sequence=True, bucketing=bucketing)
    assert sorted(b["user_id"].numel() for b in by_windows.epoch(3))[1:] == [7] * (len(by_windows) - 1)
    assert len(by_windows) < len(by_targets)


def test_full_sequence_batch_rejects_unknown_unit(tiny_build):
    from recbole_sae.errors import ConfigError

    config, _, train_data, _, _ = tiny_build("SASRecPlus", MAX_ITEM_LIST_LENGTH=6)
    config["full_sequence_batch"] = "users"
    with pytest.raises(ConfigError, match="full_sequence_batch must be one of"):
        LengthBatches(train_data.dataset, config, full_sequence=True)


def test_full_sequence_rows_pick_window_ends():
    users = torch.tensor([1, 1, 1, 1, 1, 2, 2, 3])
    # user 1 has rows 0..4 (last 4): windows of 2 end at rows 4, 2, 0; user 2 rows 5, 6 -> 6; user 3 -> 7
    assert full_sequence_rows(users, 2).tolist() == [0, 2, 4, 6, 7]
    assert full_sequence_rows(users, 50).tolist() == [4, 6, 7]
    # stride 1: every row ends a window
    assert full_sequence_rows(users, 1).tolist() == list(range(8))


def test_new_target_mask_counts_each_target_once():
    from recbole_sae.trainer.sequence_trainer import new_target_mask

    users = torch.tensor([1, 1, 1, 1, 1, 1])  # rows 0..5: prefixes of length 1..4 (window 4)
    rows = full_sequence_rows(users, 2)  # rows 1, 3, 5
    lengths = torch.tensor([2, 4, 4])
    mask = new_target_mask(users, rows, lengths, 2, 4)
    assert mask.int().tolist() == [[1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]]


def test_shifted_targets():
    seq = torch.tensor([[5, 6, 7, 0], [8, 0, 0, 0]])
    assert shifted_targets(seq, torch.tensor([3, 1]), torch.tensor([9, 4])).tolist() == [[6, 7, 9, 0], [4, 0, 0, 0]]


@pytest.mark.parametrize("max_len,stride", [(4, None), (50, None), (6, 3), (6, 1), (5, 5)])
def test_full_sequence_rows_hold_exactly_the_training_part(tiny_build, tiny_dataset, max_len, stride):
    config, data, train_data, _, _ = tiny_build("SASRecPlus", MAX_ITEM_LIST_LENGTH=max_len, full_sequence_stride=stride)
    batches = LengthBatches(train_data.dataset, config, full_sequence=True)
    sequences = _user_sequences(data, tiny_dataset[0])
    user_of_row = train_data.dataset.inter_feat["user_id"][
        full_sequence_rows(train_data.dataset.inter_feat["user_id"], stride or default_stride(max_len))
    ]
    seen = defaultdict(list)
    for row in range(batches.n_rows):
        n = int(batches.item_len[row])
        inputs = batches.item_seq[row, :n].tolist()
        targets = batches.targets[row, :n].tolist()
        counted = [t for t in range(n) if targets[t] > 0]
        assert counted == list(range(counted[0], n)), "the counted targets are the window's last positions"
        assert batches.targets[row, n:].eq(0).all()
        seen[int(user_of_row[row])].append((inputs, batches.target[row].item(), counted, targets))
    for user, windows in seen.items():
        whole = sequences[user]
        training = whole[:-2]  # the last two items are the validation and test targets
        all_targets = sorted(ts[t] for _, _, counted, ts in windows for t in counted)
        assert all_targets == sorted(training[1:]), "every training target exactly once, nothing else"
        for inputs, last_target, counted, targets in windows:
            span = inputs + [last_target]
            assert any(training[i : i + len(span)] == span for i in range(len(training))), "a contiguous piece"
            assert all(targets[t] == span[t + 1] for t in counted)
            if len(inputs) < max_len:  # a short window starts at the beginning: the whole history is seen
                assert training[: len(span)] == span
            elif counted[0] > 0:  # a full later window: its counted targets keep max_len - stride items of context
                assert counted[0] == max_len - (stride or default_stride(max_len))
    assert batches.n_targets == len(train_data.dataset)


def test_loss_at_every_position_equals_hand_computed_cross_entropy(tiny_build):
    config, data, train_data, _, _ = tiny_build("SASRecPlus")
    model = SASRecPlus(config, train_data.dataset).eval()
    seq = torch.tensor([[3, 5, 7, 0], [2, 4, 0, 0]])
    lengths = torch.tensor([3, 2])
    targets = torch.tensor([[5, 7, 9, 0], [4, 6, 0, 0]])
    inter = Interaction({"item_id_list": seq, "item_length": lengths, TARGETS_FIELD: targets})
    loss = model.calculate_loss(inter)
    hidden = model.forward(seq, lengths, all_positions=True)
    terms = []
    for b, t in [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]:
        logits = hidden[b, t] @ model.item_embedding.weight.t()
        terms.append(-F.log_softmax(logits, dim=0)[targets[b, t]])
    assert loss.item() == pytest.approx(torch.stack(terms).mean().item(), rel=1e-6)


def test_lean_forward_matches_recbole_sasrec_for_the_same_weights(tiny_build):
    config, data, train_data, _, test_data = tiny_build("SASRecPlus", n_layers=2, n_heads=2)
    plus = SASRecPlus(config, train_data.dataset).eval()
    assert all(type(layer.multi_head_attention) is SDPAMultiHeadAttention for layer in plus.trm_encoder.layer)
    stock = SASRec(config, train_data.dataset).eval()
    stock.load_state_dict(plus.state_dict())
    batch = next(iter(test_data))[0]
    with torch.no_grad():
        ours = plus.full_sort_predict(batch)
        theirs = stock.full_sort_predict(batch)
    assert ours.shape == theirs.shape
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_same_initialisation_as_recbole_sasrec(tiny_build):
    from recbole.utils import init_seed

    config, _, train_data, _, _ = tiny_build("SASRecPlus")
    init_seed(config["seed"], True)
    plus = SASRecPlus(config, train_data.dataset)
    init_seed(config["seed"], True)
    stock = SASRec(config, train_data.dataset)
    for (name, a), (_, b) in zip(plus.state_dict().items(), stock.state_dict().items()):
        assert torch.equal(a, b), name


def test_batches_are_trimmed_grouped_and_reproducible(tiny_build):
    config, _, train_data, _, _ = tiny_build("SASRecPlus", train_batch_size=16)
    batches = LengthBatches(train_data.dataset, config, full_sequence=False, bucketing=True)
    first = [b["item_id_list"] for b in batches.epoch(0)]
    again = [b["item_id_list"] for b in batches.epoch(0)]
    other = [b["item_id_list"] for b in batches.epoch(1)]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not all(a.shape == b.shape and torch.equal(a, b) for a, b in zip(first, other))
    assert sum(b.size(0) for b in first) == len(train_data.dataset)
    for b in batches.epoch(0):
        assert (b["item_id_list"][:, -1] != 0).any(), "no all-padding column"
        assert int(b["item_length"].max()) - int(b["item_length"].min()) <= 1 or b.length < 16


def test_full_sequence_training_improves_and_is_reproducible(tiny_build):
    from recbole_sae.quick_start import run_recbole_sae

    config, *_ = tiny_build("SASRecPlus")
    args = dict(
        config_file_list=None,
        config_dict={
            "data_path": config["data_path"].rsplit("/", 1)[0],
            "epochs": 3,
            "hidden_size": 16,
            "n_layers": 1,
            "n_heads": 1,
            "inner_size": 32,
            "MAX_ITEM_LIST_LENGTH": 10,
            "train_batch_size": 32,
            "learning_rate": 0.01,
            "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        },
    )
    first = run_recbole_sae("SASRecPlus", "tiny", **args)
    second = run_recbole_sae("SASRecPlus", "tiny", **args)
    assert first["test"] == second["test"]
    # users draw 80% of their items from one genre (8 items of 40): well above random (20/40)
    assert first["seen_kept"]["test"]["hit@20"] > 0.6  # (with seen items removed, the repeated targets are misses)


def test_positions_from_end_put_each_rows_last_item_at_the_last_position(tiny_build):
    config, _, train_data, _, _ = tiny_build("SASRecPlus", MAX_ITEM_LIST_LENGTH=6, positions="from_end")
    model = SASRecPlus(config, train_data.dataset).eval()
    seq = torch.tensor([[3, 5, 7, 0], [2, 4, 0, 0], [1, 2, 3, 4]])
    assert model.position_ids(seq).tolist() == [[3, 4, 5, 5], [4, 5, 5, 5], [2, 3, 4, 5]]
    # the prediction reads the same position embedding next to the last item whatever the length
    with torch.no_grad():
        emb = model.embed(seq)
        expected = model.LayerNorm(model.item_embedding.weight[7] + model.position_embedding.weight[5])
        torch.testing.assert_close(emb[0, 2], expected)
        # padding added to the right changes nothing at the real positions
        padded = torch.cat([seq, torch.zeros(3, 2, dtype=torch.long)], 1)
        torch.testing.assert_close(model.embed(padded)[:, :4][seq > 0], emb[seq > 0])
    plain_config, *_ = tiny_build("SASRecPlus", MAX_ITEM_LIST_LENGTH=6)
    assert SASRecPlus(plain_config, train_data.dataset).position_ids(seq).tolist() == [[0, 1, 2, 3]]
    with pytest.raises(Exception, match="positions must be one of"):
        bad, *_ = tiny_build("SASRecPlus", positions="middle")
        SASRecPlus(bad, train_data.dataset)


def _query_pre_ln_by_hand(layer, x, mask):
    """One query-pre-LN block written out with explicit softmax attention (1 head, no dropout)."""
    q = layer.query(layer.attn_norm(x))
    k, v = layer.key(x), layer.value(x)
    scores = q @ k.transpose(-1, -2) / x.size(-1) ** 0.5 + mask[:, 0]
    x = x + layer.dense(torch.softmax(scores, -1) @ v)
    y = layer.ffn_norm(x)
    return y + layer.ffn_out(torch.relu(layer.ffn_in(y)))


def test_query_pre_ln_block_is_the_published_formula(tiny_build):
    config, _, train_data, _, _ = tiny_build(
        "SASRecPlus", transformer_block="query_pre_ln", n_heads=1, hidden_size=8, inner_size=8, hidden_act="relu"
    )
    model = SASRecPlus(config, train_data.dataset).eval()
    assert not hasattr(model, "LayerNorm")  # no LayerNorm on the embeddings
    seq = torch.tensor([[3, 5, 7, 0], [2, 4, 6, 8]])
    mask = model.get_attention_mask(seq)
    with torch.no_grad():
        emb = model.embed(seq)
        # items scaled by sqrt(hidden_size), positions added, nothing normalised
        torch.testing.assert_close(
            emb[1, 0], model.item_embedding.weight[2] * 8**0.5 + model.position_embedding.weight[0]
        )
        hidden = emb
        for layer in model.trm_encoder.layer:
            hidden = _query_pre_ln_by_hand(layer, hidden, mask)
        torch.testing.assert_close(model.encode(seq), model.final_norm(hidden))
        # causal: a later item changes nothing before it
        changed = seq.clone()
        changed[1, 3] = 9
        torch.testing.assert_close(model.encode(changed)[:, :3], model.encode(seq)[:, :3])
    # xavier-normal init: the item table's spread is sqrt(2 / (n_items + hidden)), not RecBole's 0.02
    expected_std = (2 / sum(model.item_embedding.weight.shape)) ** 0.5
    assert abs(model.item_embedding.weight.std().item() - expected_std) < 0.25 * expected_std


def test_query_pre_ln_trains_and_rejects_unknown_blocks(tiny_build):
    config, _, train_data, _, _ = tiny_build("SASRecPlus", transformer_block="query_pre_ln", MAX_ITEM_LIST_LENGTH=8)
    torch.manual_seed(0)
    model = SASRecPlus(config, train_data.dataset)
    batch = next(iter(LengthBatches(train_data.dataset, config, full_sequence=True, bucketing=True).epoch(0)))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(20):
        loss = model.calculate_loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]
    with pytest.raises(Exception, match="transformer_block must be one of"):
        bad, *_ = tiny_build("SASRecPlus", transformer_block="pre_ln")
        SASRecPlus(bad, train_data.dataset)
