"""Markdown tables from the benchmark JSONL files (for BENCHMARKS.md).

usage: python benchmarks/summarize.py benchmarks/results/fast_training.jsonl [...]
Epoch times: the mean and the median over the run's epochs (read from its run.log); the median
is robust to epochs slowed by other jobs on a shared machine.
"""

import json
import re
import statistics
import sys
from pathlib import Path

EPOCH = re.compile(r"epoch (\d+) training \[time: ([0-9.]+)s")


def epoch_seconds(run_dir: str) -> list[float]:
    log = Path(run_dir) / "run.log"
    if not log.is_file():
        return []
    return [float(m.group(2)) for m in EPOCH.finditer(log.read_text())]


def row(rec: dict) -> str:
    secs = epoch_seconds(rec["run_dir"])
    median = statistics.median(secs) if secs else rec.get("seconds_per_epoch")
    test, valid = rec["test"], rec["best_valid"]
    return (f"| {rec['model']} | {rec['dataset']} | {rec.get('seconds_per_epoch')} | {median:.2f} | "
            f"{rec.get('best_epoch')} / {rec.get('epochs_run')} | {valid['ndcg@10']:.4f} | {test['ndcg@10']:.4f} | "
            f"{test['hit@10']:.4f} | {test['ndcg@20']:.4f} | {test['hit@20']:.4f} | {rec['seconds']:.0f} |")


def main():
    print("| model | dataset | s/epoch (mean) | s/epoch (median) | best epoch / epochs run | valid NDCG@10 | "
          "test NDCG@10 | test HR@10 | test NDCG@20 | test HR@20 | total s |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for path in sys.argv[1:]:
        for line in open(path):
            print(row(json.loads(line)))


if __name__ == "__main__":
    main()
