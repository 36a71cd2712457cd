"""Stock RecBole SASRec (recbole.quick_start.run_recbole) vs the same model through the plugin.

Both runs use the plugin's protocol files (properties/overall.yaml + the dataset yaml) and the same
seed. The stock run is RecBole as users run it: its get_model imports RecBole's SINE model, which
switches torch's anomaly detection on for the rest of the process (switching it off after
importing quick_start does not help). The plugin's compat layer switches it off, for the rest of
the process too, so with PLUGIN_FIRST=1 (plugin first) the stock run shows RecBole's pipeline
without anomaly detection. Each record holds whether anomaly detection was on during its epochs.
Prints one JSON line per run and appends them to OUT.

usage: [PLUGIN_FIRST=1] python benchmarks/stock_vs_plugin.py OUT.jsonl --dataset=ml-100k --epochs=1 [--key=value ...]
"""

import datetime
import json
import os
import platform
import sys
import time

import torch


def timed_epochs():
    from recbole.trainer import Trainer

    seconds, anomaly = [], []
    original = Trainer._train_epoch

    def wrapper(self, *args, **kwargs):
        start = time.perf_counter()
        out = original(self, *args, **kwargs)
        seconds.append(time.perf_counter() - start)
        anomaly.append(torch.is_anomaly_enabled())
        return out

    Trainer._train_epoch = wrapper
    return seconds, anomaly, lambda: setattr(Trainer, "_train_epoch", original)


def main():
    out = sys.argv[1]
    overrides = dict(arg[2:].split("=", 1) for arg in sys.argv[2:])
    dataset = overrides.pop("dataset", "ml-100k")
    sys.argv = sys.argv[:1] + [f"--{k}={v}" for k, v in overrides.items()]
    from recbole_sae.config import PROPERTIES

    files = [str(PROPERTIES / "overall.yaml"), str(PROPERTIES / "dataset" / f"{dataset}.yaml")]
    records = []

    # stock RecBole (its quick_start imports ray: needs setuptools < 81 and numpy < 2)
    from recbole_sae import compat

    compat.numpy_aliases()
    from recbole.quick_start import run_recbole

    def stock():
        seconds, anomaly, restore = timed_epochs()
        start = time.perf_counter()
        result = run_recbole(
            model="SASRec", dataset=dataset, config_file_list=files, config_dict={"checkpoint_dir": "runs/stock"}
        )
        restore()
        return {
            "pipeline": "stock RecBole run_recbole",
            "seconds": time.perf_counter() - start,
            "epoch_seconds": seconds[:],
            "anomaly_during_training": anomaly[:],
            "test": dict(result["test_result"]),
        }

    def plugin():
        from recbole_sae.quick_start import run_recbole_sae

        seconds, anomaly, restore = timed_epochs()  # the same wrapper: both pipelines use RecBole's Trainer
        start = time.perf_counter()
        result = run_recbole_sae(model="SASRec", dataset=dataset)
        restore()
        return {
            "pipeline": "recbole-sae run_recbole_sae",
            "seconds": time.perf_counter() - start,
            "epoch_seconds": seconds[:],
            "anomaly_during_training": anomaly[:],
            "test": result["test"],
        }

    # PLUGIN_FIRST=1: the plugin first, whose compat layer leaves anomaly detection off for the stock run
    order = [plugin, stock] if os.environ.get("PLUGIN_FIRST") else [stock, plugin]
    for run in order:
        rec = run()
        rec["position"] = len(records) + 1
        records.append(rec)

    with open(out, "a") as f:
        for rec in records:
            rec.update(
                {
                    "dataset": dataset,
                    "overrides": overrides,
                    "date": datetime.date.today().isoformat(),
                    "machine": f"{platform.machine()} {os.cpu_count()} cores",
                    "torch": torch.__version__,
                    "anomaly_enabled": torch.is_anomaly_enabled(),
                }
            )
            rec["test"] = {k: round(float(v), 6) for k, v in rec["test"].items()}
            f.write(json.dumps(rec) + "\n")
            print(
                json.dumps({k: rec[k] for k in ("pipeline", "seconds", "epoch_seconds")}),
                "test ndcg@10",
                rec["test"]["ndcg@10"],
            )


if __name__ == "__main__":
    main()
