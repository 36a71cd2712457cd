"""Markdown of steering sweeps from a results JSONL (for BENCHMARKS.md).

usage: python benchmarks/steering_table.py runs/sweeps/steering_ml100k.jsonl
A sweep's records hold the steering table in ``extra``; the first results files held it at the top.
"""

import json
import sys


def main():
    for path in sys.argv[1:]:
        for line in open(path):
            rec = json.loads(line)
            st = rec.get("steering") or (rec.get("extra") or {}).get("steering")
            if not st:  # a failed run
                continue
            base = next(r for r in st["table"] if r["strength"] == 0)
            latents = "; ".join(
                f"latent {lat['latent']} (corr {lat['corr']}, label '{lat['label']}')" for lat in st["latents"]
            )
            print(f"\n**{rec['dataset']}, {st['target']}** ({st['op']}, {st['positions']} position; {latents})\n")
            print("| strength | target share @10 | x unsteered | NDCG@10 | change | HR@10 | coverage | diversity |")
            print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
            for r in st["table"]:
                ratio = r["target_share"] / base["target_share"] if base["target_share"] else float("nan")
                change = (r["ndcg@10"] - base["ndcg@10"]) / base["ndcg@10"]
                print(
                    f"| {r['strength']:g} | {r['target_share']:.4f} | {ratio:.2f} | {r['ndcg@10']:.4f} | "
                    f"{change:+.1%} | {r['hit@10']:.4f} | {r['coverage']:.3f} | {r['diversity']:.3f} |"
                )


if __name__ == "__main__":
    main()
