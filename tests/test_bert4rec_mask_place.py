"""benchmarks/bert4rec_mask_place.py: where its ``append`` placement puts the mask token and reads it,
against RecBole's placement (the oldest item dropped), on planted histories."""

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import torch
from recbole.model.abstract_recommender import SequentialRecommender

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bert4rec_mask_place.py"
MASK = 9


def _module():
    spec = importlib.util.spec_from_file_location("bert4rec_mask_place", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _planted_model(seen: list):
    """A stand-in BERT4Rec whose encoder output at position p is p in every dimension and whose item
    embeddings are ones: an item's score is 4 x the position read, so the scores tell the position."""

    def forward(sequence):
        seen.append(sequence.clone())
        positions = torch.arange(sequence.size(1), dtype=torch.float).view(1, -1, 1)
        return positions.expand(sequence.size(0), -1, 4)

    return SimpleNamespace(
        ITEM_SEQ="item_list",
        ITEM_SEQ_LEN="item_length",
        mask_token=MASK,
        n_items=3,
        item_embedding=SimpleNamespace(weight=torch.ones(MASK + 1, 4)),
        output_bias=torch.zeros(3),
        forward=forward,
        gather_indexes=lambda output, index: SequentialRecommender.gather_indexes(None, output, index),
    )


def test_append_keeps_the_whole_history_and_reads_the_mask_after_it():
    seen = []
    histories = torch.tensor([[5, 6, 0, 0], [5, 6, 7, 8]])  # length 2 (room left), length 4 (full)
    interaction = {"item_list": histories, "item_length": torch.tensor([2, 4])}
    scores = _module().append_mask_full_sort_predict(_planted_model(seen), interaction)
    assert seen[0].tolist() == [[5, 6, MASK, 0], [6, 7, 8, MASK]]
    assert scores.tolist() == [[8.0] * 3, [12.0] * 3]  # read at positions 2 and 3


def test_recbole_placement_drops_the_oldest_item_of_a_short_history():
    """What the ``recbole`` placement (the compat layer's vectorised copy of RecBole's) does, for contrast."""
    from recbole_sae import compat

    model = SimpleNamespace(mask_token=MASK)
    sequence = compat.reconstruct_test_data(model, torch.tensor([[5, 6, 0, 0], [5, 6, 7, 8]]), torch.tensor([2, 4]))
    assert sequence.tolist() == [[6, MASK, 0, 0], [6, 7, 8, MASK]]


def test_without_run_folders_it_is_one_error_line_and_exit_code_2(tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "out.jsonl")], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip().startswith("error: usage:") and len(done.stderr.strip().splitlines()) == 1


def test_a_folder_without_a_checkpoint_is_one_error_line_and_exit_code_2(tmp_path):
    out = tmp_path / "out.jsonl"
    done = subprocess.run([sys.executable, str(SCRIPT), str(out), str(tmp_path)], capture_output=True, text=True)
    assert done.returncode == 2 and not out.exists()
    assert done.stderr.strip() == f"error: {tmp_path} holds no model.pth: pass the folder of a finished BERT4Rec run"
