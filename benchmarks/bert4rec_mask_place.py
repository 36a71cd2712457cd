"""BERT4Rec's validation and test figures with its mask token placed two ways, from finished runs.

RecBole's BERT4Rec scores the next item from a mask token after the history, but its
``reconstruct_test_data`` appends a padding column, writes the mask at index ``item_seq_len`` and then
drops the first column: every history shorter than MAX_ITEM_LIST_LENGTH loses its oldest item, and its
other items sit one position earlier than training put them. ``recbole`` is that placement (the
project's compat layer keeps it); ``append`` keeps the whole history at the positions training used
and puts the mask after it, at index ``item_seq_len`` (a full-length history has no room left, so it
drops its oldest item as RecBole does). Everything else, the weights included, is the run's.

Loads each run folder's best checkpoint (weights-only, as every load of this project), evaluates
validation and test under both protocols with each placement, appends one JSON line per run to OUT
and prints it.

usage: python benchmarks/bert4rec_mask_place.py OUT.jsonl RUN_FOLDER [RUN_FOLDER ...]
"""

import datetime
import json
import os
import platform
import sys
import time

import torch


def append_mask_full_sort_predict(self, interaction):
    """BERT4Rec's ``full_sort_predict`` with the mask after the whole history (see the module's text)."""
    item_seq, item_seq_len = interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN]
    rows = torch.arange(item_seq.size(0), device=item_seq.device)
    padded = torch.cat((item_seq, item_seq.new_zeros(item_seq.size(0), 1)), dim=-1)
    padded[rows, item_seq_len] = self.mask_token
    full = item_seq_len >= item_seq.size(1)
    sequence = torch.where(full.unsqueeze(-1), padded[:, 1:], padded[:, :-1])
    position = torch.where(full, item_seq_len - 1, item_seq_len)
    seq_output = self.gather_indexes(self.forward(sequence), position)
    return torch.matmul(seq_output, self.item_embedding.weight[: self.n_items].t()) + self.output_bias


def evaluate_run(run_dir: str) -> dict:
    from recbole.model.sequential_recommender.bert4rec import BERT4Rec

    from recbole_sae import protocol
    from recbole_sae.quick_start import load_data_and_model
    from recbole_sae.registry import get_trainer

    config, model, _, train_data, valid_data, test_data = load_data_and_model(run_dir, expected_model="BERT4Rec")
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    protocol.attach_to_run(trainer, train_data, valid_data, test_data, config)
    trainer.both_protocols = True
    lengths = test_data.dataset.inter_feat[config["ITEM_LIST_LENGTH_FIELD"]]
    recbole_predict = BERT4Rec.full_sort_predict
    out = {
        "run_dir": os.path.basename(os.path.normpath(run_dir)),
        "seed": config["seed"],
        "max_len": config["MAX_ITEM_LIST_LENGTH"],
        "test_history_mean": round(float(lengths.float().mean()), 2),
        "test_history_full_share": round(float((lengths >= config["MAX_ITEM_LIST_LENGTH"]).float().mean()), 4),
    }
    try:
        for name, predict in (("recbole", recbole_predict), ("append", append_mask_full_sort_predict)):
            BERT4Rec.full_sort_predict = predict
            start = time.perf_counter()
            for split, data in (("valid", valid_data), ("test", test_data)):
                result = trainer.evaluate(data, load_best_model=False, show_progress=False)
                out[f"{name}/{split}"] = {key: round(float(value), 4) for key, value in result.items()}
            out[f"{name}/seconds"] = round(time.perf_counter() - start, 1)
    finally:
        BERT4Rec.full_sort_predict = recbole_predict
    return out


def main(argv) -> int:
    if len(argv) < 2:
        print(
            "error: usage: python benchmarks/bert4rec_mask_place.py OUT.jsonl RUN_FOLDER [RUN_FOLDER ...]",
            file=sys.stderr,
        )
        return 2
    from recbole_sae import runfiles
    from recbole_sae.errors import RecboleSAEError

    out_file, run_dirs = argv[0], argv[1:]
    sys.argv = sys.argv[:1]
    for run_dir in run_dirs:
        if not os.path.isfile(os.path.join(run_dir, runfiles.CHECKPOINT)):
            print(
                f"error: {run_dir} holds no {runfiles.CHECKPOINT}: pass the folder of a finished BERT4Rec run",
                file=sys.stderr,
            )
            return 2
        try:
            evaluated = evaluate_run(run_dir)
        except (RecboleSAEError, OSError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        record = {
            "benchmark": "bert4rec_mask_place",
            **evaluated,
            "torch_threads": torch.get_num_threads(),
            "date": datetime.date.today().isoformat(),
            "machine": f"{platform.machine()} {os.cpu_count()} cores, python {platform.python_version()}",
        }
        with open(out_file, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        print(json.dumps(record), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
