"""mask_with_target: masked-item training (BERT4Rec) over histories that end with their target."""

import pytest
import torch
from conftest import SMALL
from recbole.data.interaction import Interaction
from recbole.data.transform import MaskItemSequence

from recbole_sae import resume
from recbole_sae.data import masking
from recbole_sae.errors import ConfigError
from recbole_sae.quick_start import run_recbole_sae


def test_the_target_joins_the_right_padded_history_and_a_full_one_loses_its_oldest():
    batch = Interaction(
        {
            "item_id_list": torch.tensor([[5, 6, 0, 0], [7, 0, 0, 0], [1, 2, 3, 4]]),
            "item_length": torch.tensor([2, 1, 4]),
            "item_id": torch.tensor([9, 8, 5]),
        }
    )
    out = masking.with_target(batch, "item_id_list", "item_length", "item_id")
    assert out["item_id_list"].tolist() == [[5, 6, 9, 0], [7, 8, 0, 0], [2, 3, 4, 5]]
    assert out["item_length"].tolist() == [3, 2, 4]
    assert out["item_id"].tolist() == [9, 8, 5]  # the target itself stays


def test_only_the_training_loader_sees_targets_and_every_training_item_can_be_masked(tiny_build):
    """RecBole's transform never reads the target: each user's last training item was in no
    training sequence. With mask_with_target the training batches end with it; the evaluation
    loaders (which apply the transform too) are left as RecBole makes them."""
    config, data, train, valid, test = tiny_build("BERT4Rec", mask_with_target=True, train_batch_size=10_000)
    masking.attach(config, train)
    assert isinstance(train.transform, masking.MaskWithTarget)
    assert isinstance(valid.transform, MaskItemSequence) and isinstance(test.transform, MaskItemSequence)
    batch = next(iter(train))
    seq, length, target = batch["item_id_list"], batch["item_length"], batch["item_id"]
    last = seq[torch.arange(len(seq)), length - 1]
    assert torch.equal(last, target)
    # the masked sequences hold what RecBole's transform made of these histories
    masked = batch["Mask_item_id_list"]
    mask_token = data.item_num
    kept = masked != mask_token
    assert torch.equal(masked[kept], seq[kept])

    _, _, plain, _, _ = tiny_build("BERT4Rec", train_batch_size=10_000)
    rows = next(iter(plain))
    # RecBole's own: the sequences end with the item before the target (equal only where repeated)
    ends = rows["item_id_list"][torch.arange(len(rows)), rows["item_length"] - 1]
    assert float((ends == rows["item_id"]).float().mean()) < 0.2


def test_a_model_without_masked_item_training_refuses_the_setting(tiny_dataset, in_tmp):
    data_path, name, yaml_file = tiny_dataset
    with pytest.raises(ConfigError, match=r"mask_with_target=True: SASRec trains without RecBole's masked-item"):
        run_recbole_sae("SASRec", name, [yaml_file], {"data_path": data_path, **SMALL, "mask_with_target": True})


def test_bert4rec_trains_on_its_targets_and_is_reproducible(tiny_dataset, in_tmp):
    data_path, name, yaml_file = tiny_dataset
    settings = {"data_path": data_path, **SMALL, "epochs": 2}
    plain = run_recbole_sae("BERT4Rec", name, [yaml_file], settings)
    first = run_recbole_sae("BERT4Rec", name, [yaml_file], {**settings, "mask_with_target": True})
    again = run_recbole_sae("BERT4Rec", name, [yaml_file], {**settings, "mask_with_target": True})
    assert first["curve"]["train_loss"] != plain["curve"]["train_loss"]
    assert first["test"] == again["test"] and first["curve"]["train_loss"] == again["curve"]["train_loss"]


def test_a_setting_added_since_a_run_started_resumes_it_at_its_default():
    """A run's resume state from before mask_with_target existed was refused ('mask_with_target: run
    unset, now False'): every unfinished run would have restarted after an upgrade."""
    state = {"settings": {"epochs": "200"}, "command": "c"}
    default = {"epochs": "100", "mask_with_target": "False"}
    resume.check_settings(state, {"epochs": "200", "mask_with_target": "False"}, "r", default)
    with pytest.raises(ConfigError, match=r"mask_with_target: run unset, now True"):
        resume.check_settings(state, {"epochs": "200", "mask_with_target": "True"}, "r", default)
    with pytest.raises(ConfigError, match=r"epochs: run 200, now 100"):
        resume.check_settings(state, {"epochs": "100", "mask_with_target": "False"}, "r", default)
