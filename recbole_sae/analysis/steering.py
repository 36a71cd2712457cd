"""What steering does to the recommendations: top-k lists, attribute shares, sweeps over the strength.

The functions take the model, the evaluation dataloader and callables; they import nothing of the
model package (the direction of imports of the project), so any model with ``full_sort_predict``,
``item_embedding`` and a ``steer(edits, positions)`` context manager works.

Top-k lists are taken exactly as RecBole's full-sort evaluation ranks (``Trainer._full_sort_batch_eval``):
the scores of the padding item 0 and of the items in the dataloader's ``history_index`` are set to
``-inf``, then ``torch.topk``. For sequential models RecBole's ``FullSortEvalDataLoader`` gives no
``history_index`` (the protocol is ``repeatable``: an item can be recommended again), so an item of
the user's history can be in a list, as it can in the lists NDCG and HR are computed on.

List statistics of ``k``-item lists over all test users:

* ``target_share``: share of the list slots whose item has the target attribute value (an item with
  several values of the field counts for each of them, so the shares of a field can sum to more than 1);
* ``shares``: the same for every value of the target's field;
* ``coverage``: distinct items over all lists / number of real items (padding excluded);
* ``diversity``: intra-list diversity from the item embeddings, ``1 - mean pairwise cosine``
  of the list's item embeddings (the model's own item space), averaged over users;
* ``diversity_attr``: attribute-based intra-list diversity, ``1 - mean pairwise Jaccard`` of the
  items' value sets of the target's field (two items without any value count as identical).

A sweep (``steering_sweep``) runs, per strength, RecBole's own evaluation with the edit active (for
NDCG@k, HR@k and the other configured metrics) and one more pass over the same dataloader for the
lists; ``write_sweep`` writes the table as CSV, JSON, markdown and a PNG plot.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Callable, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from recbole_sae.analysis.report import markdown_table, write_json
from recbole_sae.textlist import split_list

__all__ = [
    "parse_strengths",
    "top_k_lists",
    "list_statistics",
    "steering_sweep",
    "sweep_columns",
    "write_sweep",
    "plot_sweep",
    "DEFAULT_STRENGTHS",
]

DEFAULT_STRENGTHS = (-8.0, -4.0, 0.0, 4.0, 8.0)
CSV_OTHER_VALUES = 20  # the CSV lists this many other values of the field (the JSON has all)
USER_CHUNK = 4096


def parse_strengths(value) -> List[float]:
    """``"-8,-4,0,4,8"``, ``"[-8, 8]"``, a number or a sequence of numbers -> a list of floats."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return list(DEFAULT_STRENGTHS)
    if isinstance(value, bool) or not isinstance(value, (int, float, str, list, tuple)):
        raise ValueError(f"strengths must be numbers like -8,-4,0,4,8, got {value!r}")
    items = split_list(value)
    out = []
    for item in items:
        try:
            number = float(str(item).strip())
        except ValueError:
            raise ValueError(f"strengths must be numbers like -8,-4,0,4,8, got {value!r}") from None
        if not math.isfinite(number):
            raise ValueError(f"strengths must be finite numbers, got {item!r}")
        out.append(number)
    if not out:
        raise ValueError(f"strengths must hold at least one number, got {value!r}")
    return out


def _device_of(model) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def top_k_lists(model, eval_data, k: int = 10) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(users [U], lists [U, k])`` over a full-sort dataloader, ranked as RecBole ranks.

    ``eval_data`` yields ``(interaction, history_index, positive_u, positive_i)``; the scores of
    item 0 and of ``history_index`` (when the loader gives one) are ``-inf`` before ``topk``.
    Users are the interaction's user ids, in the loader's order.
    """
    model.eval()
    device = _device_of(model)
    users, lists = [], []
    for interaction, history_index, _, _ in eval_data:
        interaction = interaction.to(device)
        scores = model.full_sort_predict(interaction)
        scores = scores.view(len(interaction), -1).clone()
        scores[:, 0] = -math.inf
        if history_index is not None:
            scores[history_index] = -math.inf
        lists.append(torch.topk(scores, k, dim=-1).indices.cpu())
        users.append(interaction[model.USER_ID].cpu() if model.USER_ID in interaction.interaction
                     else torch.full((len(interaction),), -1, dtype=torch.long))
    if not lists:
        raise ValueError("the evaluation dataloader is empty")
    return torch.cat(users), torch.cat(lists)


def _mean_off_diagonal(sim: torch.Tensor) -> torch.Tensor:
    """Mean of the off-diagonal entries of each [k, k] matrix of ``sim [U, k, k]`` -> [U]."""
    k = sim.shape[-1]
    if k < 2:
        return torch.zeros(sim.shape[0], dtype=sim.dtype)
    eye = torch.eye(k, dtype=torch.bool)
    return sim.masked_fill(eye, 0.0).sum(dim=(1, 2)) / (k * (k - 1))


@torch.no_grad()
def list_statistics(
    lists: torch.Tensor,
    attr_matrix: torch.Tensor,
    item_embeddings: torch.Tensor,
    n_items: int,
    target_index: Optional[int] = None,
) -> dict:
    """Statistics of top-k lists (see the module docstring).

    Args:
        lists: ``[U, k]`` item ids.
        attr_matrix: ``[n_items, V]`` bool, the values of the target's field per item.
        item_embeddings: ``[n_items, H]`` the model's item embeddings (for ``diversity``).
        n_items: item count including the padding item 0 (RecBole's ``item_num``).
        target_index: column of the target value in ``attr_matrix`` (``None``: no target).

    Returns ``{"target_share", "shares" [V] tensor, "coverage", "diversity", "diversity_attr",
    "n_users", "k"}``.
    """
    if lists.dim() != 2 or lists.numel() == 0:
        raise ValueError(f"lists must be a non-empty [users, k] tensor, got {tuple(lists.shape)}")
    lists = lists.cpu().long()
    attr = attr_matrix.cpu().bool()
    emb = F.normalize(item_embeddings.detach().cpu().float(), dim=-1)
    n_users, k = lists.shape
    counts = torch.zeros(attr.shape[1], dtype=torch.float64)
    div_emb = torch.zeros((), dtype=torch.float64)
    div_attr = torch.zeros((), dtype=torch.float64)
    for lo in range(0, n_users, USER_CHUNK):
        chunk = lists[lo : lo + USER_CHUNK]
        a = attr[chunk].float()  # [u, k, V]
        counts += a.sum(dim=(0, 1)).double()
        e = emb[chunk]  # [u, k, H]
        div_emb += (1.0 - _mean_off_diagonal(e @ e.transpose(1, 2))).double().sum()
        inter = a @ a.transpose(1, 2)
        sizes = a.sum(dim=-1)
        union = sizes[:, :, None] + sizes[:, None, :] - inter
        jaccard = torch.where(union > 0, inter / union.clamp_min(1.0), torch.ones_like(inter))
        div_attr += (1.0 - _mean_off_diagonal(jaccard)).double().sum()
    slots = n_users * k
    shares = (counts / slots).float()
    n_real = max(int(n_items) - 1, 1)
    return {
        "target_share": float(shares[target_index]) if target_index is not None else None,
        "shares": shares,
        "coverage": torch.unique(lists[lists > 0]).numel() / n_real,
        "diversity": float(div_emb / n_users),
        "diversity_attr": float(div_attr / n_users),
        "n_users": int(n_users),
        "k": int(k),
    }


def _r(x, nd: int = 6):
    if x is None:
        return None
    x = float(x)
    return round(x, nd) if math.isfinite(x) else None


def steering_sweep(
    model,
    eval_data,
    strengths: Sequence[float],
    edits_for: Callable[[float], object],
    evaluate: Callable[[], Mapping[str, float]],
    values: Sequence[str],
    attr_matrix: torch.Tensor,
    target_index: int,
    k: int = 10,
    positions: Optional[str] = None,
    log: Optional[Callable[[str], None]] = None,
) -> List[dict]:
    """One row per strength: RecBole's metrics and the list statistics with the edit active.

    ``edits_for(strength)`` gives what ``model.steer`` takes; ``evaluate()`` runs RecBole's
    evaluation of the (steered) model, e.g. ``lambda: trainer.evaluate(test_data,
    load_best_model=False)``. Row::

        {"strength", "target_share", "ndcg@k", "hit@k", "coverage", "diversity", "diversity_attr",
         "shares": {value: share}, "metrics": {every metric of evaluate()}}
    """
    rows = []
    item_embeddings = model.item_embedding.weight
    for strength in strengths:
        with model.steer(edits_for(float(strength)), positions=positions):
            metrics = {key: _r(val) for key, val in dict(evaluate()).items()}
            _, lists = top_k_lists(model, eval_data, k)
        stats = list_statistics(lists, attr_matrix, item_embeddings, model.n_items, target_index)
        row = {
            "strength": float(strength),
            "target_share": _r(stats["target_share"]),
            f"ndcg@{k}": metrics.get(f"ndcg@{k}"),
            f"hit@{k}": metrics.get(f"hit@{k}"),
            "coverage": _r(stats["coverage"]),
            "diversity": _r(stats["diversity"]),
            "diversity_attr": _r(stats["diversity_attr"]),
            "shares": {v: _r(s) for v, s in zip(values, stats["shares"].tolist())},
            "metrics": metrics,
        }
        rows.append(row)
        if log is not None:
            log(
                f"strength {strength:+g}: target share {row['target_share']:.4f}, "
                f"NDCG@{k} {row[f'ndcg@{k}']}, HR@{k} {row[f'hit@{k}']}, coverage {row['coverage']:.4f}, "
                f"diversity {row['diversity']:.4f}"
            )
    return rows


def sweep_columns(rows: Sequence[Mapping], target_value: str, k: int = 10,
                  n_other: int = CSV_OTHER_VALUES) -> Tuple[List[str], List[str]]:
    """(main columns, other values) of the CSV: the other values of the field with the largest
    share at the strength closest to 0 (at most ``n_other``)."""
    main = ["strength", "target_share", f"ndcg@{k}", f"hit@{k}", "coverage", "diversity", "diversity_attr"]
    if not rows:
        return main, []
    ref = min(rows, key=lambda r: abs(r["strength"]))
    others = [v for v in ref["shares"] if v != target_value]
    others.sort(key=lambda v: -(ref["shares"][v] or 0.0))
    return main, others[:n_other]


def write_sweep(result: Mapping, out_dir, k: int = 10) -> dict:
    """Write ``result`` (``{"target", "target_value", "rows", ...}``) as ``sweep.csv``,
    ``sweep.json``, ``sweep.md`` and ``sweep.png`` into ``out_dir``; returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = result["rows"]
    main, others = sweep_columns(rows, result["target_value"], k)
    csv_path = out / "sweep.csv"
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(main + [f"share:{v}" for v in others])
        for row in rows:
            writer.writerow([_csv_cell(row.get(c)) for c in main] + [_csv_cell(row["shares"].get(v)) for v in others])
    json_path = write_json(result, out / "sweep.json")
    md = [f"# Steering sweep: {result['target']}\n\n"]
    if result.get("latents"):
        md.append("Latents: " + "; ".join(
            f"{lat['latent']} ({lat.get('label') or 'unlabelled'}, corr {lat.get('corr')})" for lat in result["latents"]
        ) + f". Edit: {result.get('op', 'add')} at {result.get('positions')} positions.\n\n")
    md.append(markdown_table(rows, main))
    md_path = out / "sweep.md"
    md_path.write_text("".join(md), encoding="utf-8")
    png_path = plot_sweep(rows, out / "sweep.png", result["target"], k)
    return {"csv": str(csv_path), "json": str(json_path), "md": str(md_path), "png": str(png_path)}


def _csv_cell(value):
    return "" if value is None else value


def plot_sweep(rows: Sequence[Mapping], path, target: str, k: int = 10) -> Path:
    """Target share (left) and NDCG@k / HR@k (right) against the strength, as a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    xs = [r["strength"] for r in rows]
    fig = Figure(figsize=(9, 3.6), dpi=110)
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    left.plot(xs, [r["target_share"] for r in rows], marker="o", color="tab:purple")
    left.set_xlabel("steering strength")
    left.set_ylabel(f"share in the top-{k}")
    left.set_title(f"{target}: share in the top-{k}")
    left.grid(alpha=0.3)
    for metric, colour in ((f"ndcg@{k}", "tab:blue"), (f"hit@{k}", "tab:orange")):
        ys = [r.get(metric) for r in rows]
        if any(y is not None for y in ys):
            right.plot(xs, [math.nan if y is None else y for y in ys], marker="o", color=colour,
                       label=metric.replace("hit", "HR").replace("ndcg", "NDCG"))
    right.set_xlabel("steering strength")
    right.set_title("accuracy on the test users")
    right.grid(alpha=0.3)
    right.legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(os.fspath(path))
    return path
