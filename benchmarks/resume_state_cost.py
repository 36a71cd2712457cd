"""Time the write of a run's resume state (what recbole_sae.resume.save writes after every validation).

usage: python benchmarks/resume_state_cost.py RUN_FOLDER [--reps=N]
The model and optimizer state come from the folder's model.pth (the same tensors resume.pth holds);
each write goes to a temporary file and is renamed over the previous one, as resume.save does.
"""

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch


def main(argv):
    folder = Path(argv[0])
    reps = int(next((a.split("=", 1)[1] for a in argv[1:] if a.startswith("--reps=")), 10))
    saved = torch.load(folder / "model.pth", map_location="cpu", weights_only=True)
    state = {"state_dict": saved["state_dict"], "optimizer": saved["optimizer"], "rng": torch.get_rng_state()}
    with tempfile.TemporaryDirectory() as tmp:
        path, partial = Path(tmp) / "resume.pth", Path(tmp) / "resume.pth.tmp"
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            torch.save(state, partial)
            os.replace(partial, path)
            times.append(time.perf_counter() - start)
        size = path.stat().st_size
    print(
        f"{size / 2**20:.1f} MiB, median {statistics.median(times) * 1000:.1f} ms, "
        f"max {max(times) * 1000:.1f} ms over {reps} writes"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
