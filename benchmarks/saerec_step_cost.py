"""Training cost of SAERec variants against SASRecPlus, in one process: the same 60 training batches
(forward + backward) of each finished run, best of 3 repetitions, one torch thread.

    python benchmarks/saerec_step_cost.py BASELINE_RUN RUN [RUN ...]

Each argument is a run folder (its folder name labels it); the first is the baseline of the ratios.
"""

from __future__ import annotations

import itertools
import os
import sys
import time

import torch

from recbole_sae.quick_start import load_data_and_model
from recbole_sae.registry import get_trainer


def main(runs: list[str]) -> None:
    torch.set_num_threads(1)
    setups = {}
    for run in runs:
        config, model, _, train, _, _ = load_data_and_model(run)
        trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
        model.train()
        setups[os.path.basename(os.path.normpath(run))] = (model, list(itertools.islice(trainer.batches(train).epoch(0), 60)))
    times = {name: [] for name in setups}
    for _ in range(3):
        for name, (model, batches) in setups.items():
            start = time.perf_counter()
            for interaction in batches:
                model.calculate_loss(interaction).backward()
            times[name].append(time.perf_counter() - start)
    base = min(next(iter(times.values())))
    for name, seconds in times.items():
        print(f"{name:16s} 60 training batches: best of 3 {min(seconds):.2f} s, ratio {min(seconds) / base:.2f}")


if __name__ == "__main__":
    main(sys.argv[1:])
