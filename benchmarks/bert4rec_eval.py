"""One BERT4Rec validation pass with RecBole's mask-token loop and with the compat layer's fix.

Builds RecBole's BERT4Rec at the size of ``properties/sweep/full.yaml`` (hidden 64, inner 256, 2 layers, 2 heads,
length 50, eval batch 4096) on DATASET, untrained (the timing does not depend on the weights), and evaluates the
validation set REPS times with each version of ``reconstruct_test_data``, alternating, so that both see
the same load. Checks that both give the same metrics; appends one JSON line to OUT and prints it.

usage: python benchmarks/bert4rec_eval.py OUT.jsonl [--dataset=amazon-beauty] [--reps=3] [--key=value ...]
"""

import datetime
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

FULL_SWEEP = Path(__file__).resolve().parents[1] / "properties" / "sweep" / "full.yaml"


def main(argv):
    out, args = argv[0], dict(a[2:].split("=", 1) for a in argv[1:])
    dataset, reps = args.pop("dataset", "amazon-beauty"), int(args.pop("reps", 3))
    sys.argv = sys.argv[:1]
    from recbole.data import create_dataset, data_preparation
    from recbole.model.sequential_recommender.bert4rec import BERT4Rec
    from recbole.trainer import Trainer
    from recbole.utils import init_seed

    from recbole_sae import compat
    from recbole_sae.benchmark import load_sweep
    from recbole_sae.config import Config

    size = load_sweep(FULL_SWEEP).config  # the full profile's size, batches included
    config = Config("BERT4Rec", dataset, None, {**size, "show_progress": False, **args})
    init_seed(config["seed"], config["reproducibility"])
    data = create_dataset(config)
    train_data, valid_data, _ = data_preparation(config, data)
    model = BERT4Rec(config, train_data._dataset).to(config["device"])
    trainer = Trainer(config, model)
    versions = {"recbole_loop": compat.reconstruct_test_data.recbole_original, "fixed": compat.reconstruct_test_data}
    seconds = {name: [] for name in versions}
    results = {}
    try:
        for rep in range(reps + 1):  # the first round warms up and is not counted
            for name, method in versions.items():
                BERT4Rec.reconstruct_test_data = method
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                start = time.perf_counter()
                results[name] = trainer.evaluate(valid_data, load_best_model=False, show_progress=False)
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                elapsed = time.perf_counter() - start
                if rep:
                    seconds[name].append(elapsed)
                # each pass as it ends: a run cut off by a time limit still tells what it measured
                print(f"round {rep}{' (warm-up, not counted)' if not rep else ''} {name}: {elapsed:.2f} s", flush=True)
    finally:
        BERT4Rec.reconstruct_test_data = compat.reconstruct_test_data
    loop, fixed = (statistics.median(seconds[name]) for name in versions)
    record = {
        "benchmark": "bert4rec_eval",
        "dataset": dataset,
        "users": len(valid_data.dataset.inter_feat),
        "device": str(config["device"]),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "torch_threads": torch.get_num_threads(),
        "reps": reps,
        "seconds": {name: [round(s, 3) for s in values] for name, values in seconds.items()},
        "median_recbole_loop": round(loop, 3),
        "median_fixed": round(fixed, 3),
        "ratio": round(loop / fixed, 2),
        "same_metrics": results["recbole_loop"] == results["fixed"],
        "ndcg@10": float(results["fixed"]["ndcg@10"]),
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()} {os.cpu_count()} cores, python {platform.python_version()}",
        "load": os.getloadavg()[0],
    }
    with open(out, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
    print(json.dumps(record))
    return 0 if record["same_metrics"] else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
