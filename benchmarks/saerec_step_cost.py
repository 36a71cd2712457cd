"""Training cost of SAERec against its backbone SASRecPlus, in one process, on the same batches.

Each model takes the same N training batches (forward, backward and an Adam step), one torch
thread; the models take turns batch by batch, each batch's time is its best of ``--reps``, and a
model's time is the sum over the batches; the ratio is to SASRecPlus. Two ways to get the models:

    # from a config, without a finished run (the intent stage is built, or read from
    # ~/.cache/recbole-sae: the first build of a dataset's text embeddings takes minutes)
    python benchmarks/saerec_step_cost.py --dataset=amazon-beauty --hidden_size=64 --inner_size=256 \
        --n_layers=2 --n_heads=2 --MAX_ITEM_LIST_LENGTH=50 --train_batch_size=2048 \
        --hidden_dropout_prob=0.5 --attn_dropout_prob=0.5 [--variant="intent_layers=1" ...] [--profile]

    # from finished run folders (the first is the baseline of the ratios; forward + backward only)
    python benchmarks/saerec_step_cost.py BASELINE_RUN RUN [RUN ...]

``--key=value`` sets a config key of both models; each ``--variant="k=v k=v"`` adds a SAERec with
those keys (the default SAERec is always measured). SAERec's batches carry its precomputed
per-row fields (``precompute_rows``, as its trainer adds them); SASRecPlus ignores them.
``--profile`` prints torch.profiler's top operators of one default-SAERec repetition.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time

import torch

from recbole_sae.config import literal


def _parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="*", help="finished run folders (the first is the baseline)")
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--batches", type=int, default=30, help="training batches per repetition")
    parser.add_argument("--reps", type=int, default=3, help="repetitions (the best counts)")
    parser.add_argument("--variant", action="append", default=[], help="'k=v k=v': a SAERec variant")
    parser.add_argument("--profile", action="store_true", help="profile one SAERec repetition")
    args, rest = parser.parse_known_args(argv)
    keys = {}
    for item in rest:
        if not item.startswith("--") or "=" not in item:
            parser.error(f"expected --key=value, got '{item}'")
        key, value = item[2:].split("=", 1)
        keys[key] = literal(value)
    return args, keys


def _pairs(text: str) -> dict:
    return {k: literal(v) for k, v in (item.split("=", 1) for item in text.split())}


def build_setups(dataset: str, keys: dict, variants: list[dict], n_batches: int):
    """``{label: (model, optimizer)}`` and the shared batches; SASRecPlus first."""
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import init_seed

    from recbole_sae.config import Config
    from recbole_sae.model.build import build_model
    from recbole_sae.trainer.sequence_trainer import LengthBatches

    setups, batches, extra = {}, None, {}
    named = [("SASRecPlus", "SASRecPlus", {})] + [
        (" ".join(f"{k}={value}" for k, value in keys_.items()) or "SAERec", "SAERec", keys_) for keys_ in variants
    ]
    for label, model_name, overrides in named:
        config = Config(model_name, dataset, None, {**keys, **overrides})
        init_seed(config["seed"], config["reproducibility"])
        if batches is None:  # one dataset and one batch order for every model
            data = create_dataset(config)
            train = data_preparation(config, data)[0]
            rows = LengthBatches(train.dataset, config, full_sequence=True)
            batches = list(itertools.islice(rows.epoch(0), n_batches))
            cells = sum(b["target_id_list"].numel() for b in batches)
            targets = sum(int((b["target_id_list"] > 0).sum()) for b in batches)
            print(
                f"{dataset}: {len(rows)} batches per epoch, {rows.n_targets} targets; timing {len(batches)} "
                f"batches, {targets} of their {cells} positions with a target"
            )
        init_seed(config["seed"], config["reproducibility"])
        start = time.perf_counter()
        model = build_model(config, train.dataset)
        if hasattr(model, "precompute_rows"):  # as SequenceTrainer adds them to its batches
            extra[label] = model.precompute_rows(rows.item_seq, rows.item_len)
        print(f"built {label} in {time.perf_counter() - start:.1f} s")
        setups[label] = (model.train(), torch.optim.Adam(model.parameters(), lr=config["learning_rate"]))
    return setups, batches, extra, rows


def _with_extra(batches, rows, fields):
    """The batches with a model's precomputed per-row fields added (as SequenceTrainer adds them)."""
    if not fields:
        return batches
    rows.extra = fields
    gen = list(itertools.islice(rows.epoch(0), len(batches)))
    rows.extra = {}
    return gen


def step(model, optimizer, interaction) -> float:
    start = time.perf_counter()
    optimizer.zero_grad()
    model.calculate_loss(interaction).backward()
    optimizer.step()
    return time.perf_counter() - start


def best_steps(setups, feeds, reps: int) -> dict:
    """Seconds per model: the sum over the batches of each batch's best of ``reps`` steps. The models
    take turns batch by batch, so a burst of load on a shared machine hits them alike."""
    best = {label: [float("inf")] * len(feed) for label, feed in feeds.items()}
    for _ in range(reps):
        for i in range(len(next(iter(feeds.values())))):
            for label, (model, optimizer) in setups.items():
                best[label][i] = min(best[label][i], step(model, optimizer, feeds[label][i]))
    return {label: sum(seconds) for label, seconds in best.items()}


def compare(args, keys) -> None:
    variants = [{}] + [_pairs(v) for v in args.variant]
    setups, batches, extra, rows = build_setups(args.dataset, keys, variants, args.batches)
    feeds = {label: _with_extra(batches, rows, extra.get(label)) for label in setups}
    times = best_steps(setups, feeds, args.reps)
    for label, seconds in times.items():
        print(
            f"{label:32s} {len(batches)} steps, each the best of {args.reps}: {seconds:.2f} s "
            f"({1000 * seconds / len(batches):.0f} ms/step), ratio {seconds / times['SASRecPlus']:.2f}"
        )
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        model, optimizer = setups["SAERec"]
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for interaction in feeds["SAERec"][: max(1, len(batches) // 3)]:
                step(model, optimizer, interaction)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


def compare_runs(runs: list[str], n_batches: int, reps: int) -> None:
    """Forward + backward of the same batches of each finished run (its own trainer's batches)."""
    from recbole_sae.quick_start import load_data_and_model
    from recbole_sae.registry import get_trainer

    setups = {}
    for run in runs:
        config, model, _, train, _, _ = load_data_and_model(run)
        trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
        model.train()
        batches = list(itertools.islice(trainer.batches(train).epoch(0), n_batches))
        setups[os.path.basename(os.path.normpath(run))] = (model, batches)
    times = {name: [] for name in setups}
    for _ in range(reps):
        for name, (model, batches) in setups.items():
            start = time.perf_counter()
            for interaction in batches:
                model.calculate_loss(interaction).backward()
            times[name].append(time.perf_counter() - start)
    base = min(next(iter(times.values())))
    for name, seconds in times.items():
        print(
            f"{name:16s} {n_batches} training batches: best of {reps} {min(seconds):.2f} s, "
            f"ratio {min(seconds) / base:.2f}"
        )


def main(argv: list[str]) -> None:
    torch.set_num_threads(1)
    args, keys = _parse(argv)
    sys.argv = sys.argv[:1]  # the project's Config also reads --key=value from the command line
    if args.runs:
        compare_runs(args.runs, args.batches, args.reps)
    else:
        compare(args, keys)


if __name__ == "__main__":
    main(sys.argv[1:])
