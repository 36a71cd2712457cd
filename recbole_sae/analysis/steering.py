"""What steering does to the recommendations: top-k lists, attribute shares, sweeps over the strength.

The functions take the model, the evaluation dataloader and callables; they import nothing of the
model package (the direction of imports of the project), so any model with ``full_sort_predict``,
``item_embedding`` and a ``steer(edits, positions)`` context manager works.

Top-k lists are taken as the run's headline evaluation ranks: RecBole's full-sort evaluation
(``Trainer._full_sort_batch_eval``) sets the scores of the padding item 0 and of the items in the
dataloader's ``history_index`` to ``-inf``, then ``torch.topk``. For sequential models RecBole's
``FullSortEvalDataLoader`` gives no ``history_index`` (an item can be recommended again); under
``filter_seen: True`` (the default headline protocol, ``recbole_sae.protocol``) the items the user
saw before the target are removed too: pass that protocol's ``SeenTable`` as ``seen``, so the lists
are those NDCG and HR are computed on.

List statistics of ``k``-item lists over all test users:

* ``target_share``: share of the list slots whose item has the target attribute value (an item with
  several values of the field counts for each of them, so the shares of a field can sum to more than 1);
* ``shares``: the same for every value of the target's field;
* ``coverage``: distinct items over all lists / number of real items (padding excluded);
* ``diversity``: intra-list diversity from the item embeddings, ``1 - mean pairwise cosine``
  of the list's item embeddings (the model's own item space), averaged over users;
* ``diversity_attr``: attribute-based intra-list diversity, ``1 - mean pairwise Jaccard`` of the
  items' value sets of the target's field (two items without any value count as identical).

Did an edit do its job (``share_change``)? The change of the target share is the mean over users of
each user's own change (steered minus unsteered share of that user's k slots). The noise is
``NOISE_SE`` (2) standard errors of that mean: the sample standard deviation of the per-user changes
over the square root of the number of users. The model is deterministic, so this is the noise of
which users happened to be tested: a change within it could as well be 0 for another sample of
users. An edit that should raise the share (``edit_direction``) and lowers it beyond the noise is
``wrong_way``; any change within the noise is ``within_noise``; both give one ``warning:`` line
(``share_warning``).

A sweep (``steering_sweep``) runs, per strength, RecBole's own evaluation with the edit active (for
NDCG@k, HR@k and the other configured metrics) and one more pass over the same dataloader for the
lists, each checked against the unsteered lists; ``write_sweep`` writes the table as CSV, JSON,
markdown and a PNG plot whose lines for the unsteered values are the base rates.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Callable, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from recbole_sae.analysis.report import write_json
from recbole_sae.protocol import remove_seen
from recbole_sae.tables import markdown_table, round_float
from recbole_sae.textlist import split_list

__all__ = [
    "parse_strengths",
    "top_k_lists",
    "list_statistics",
    "steering_sweep",
    "sweep_columns",
    "write_sweep",
    "plot_sweep",
    "sweep_figure",
    "user_shares",
    "share_change",
    "share_warning",
    "sweep_warning",
    "edit_direction",
    "DEFAULT_STRENGTHS",
    "NOISE_SE",
]

DEFAULT_STRENGTHS = (-8.0, -4.0, 0.0, 4.0, 8.0)
CSV_OTHER_VALUES = 20  # the CSV lists this many other values of the field (the JSON has all)
USER_CHUNK = 4096
NOISE_SE = 2.0  # the noise band of a share change: this many standard errors of the mean per-user change
VERDICTS = ("as_expected", "wrong_way", "within_noise", "moved", "no_edit")


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
def top_k_lists(model, eval_data, k: int = 10, seen=None) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(users [U], lists [U, k])`` over a full-sort dataloader, ranked as the headline evaluation ranks.

    ``eval_data`` yields ``(interaction, history_index, positive_u, positive_i)``; the scores of
    item 0 and of ``history_index`` (when the loader gives one) are ``-inf`` before ``topk``, and,
    with ``seen`` (a ``recbole_sae.protocol.SeenTable``: ``filter_seen``), every item the user saw
    before the target. Users are the interaction's user ids, in the loader's order.
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
        batch_users = (
            interaction[model.USER_ID].cpu()
            if model.USER_ID in interaction.interaction
            else torch.full((len(interaction),), -1, dtype=torch.long)
        )
        if seen is not None:
            scores = remove_seen(scores, seen, batch_users)
        lists.append(torch.topk(scores, k, dim=-1).indices.cpu())
        users.append(batch_users)
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


def user_shares(lists: torch.Tensor, attr_matrix: torch.Tensor, target_index: int) -> torch.Tensor:
    """Per user, the share of the ``k`` slots of the list whose item has the target value: ``[U]`` float64."""
    column = attr_matrix[:, target_index].cpu().bool()
    return column[lists.cpu().long()].double().mean(dim=1)


def edit_direction(op: str, strength: float, sign: int = 1) -> Optional[int]:
    """Which way an edit should move its target's share: +1 up, -1 down, 0 no edit at all.

    SAE latents are >= 0 (TopK, BatchTopK, ReLU), so ``scale`` by more than 1 raises a latent and
    by less than 1 lowers it; ``clamp`` to a positive value counts as raising (a latent is 0 at most
    positions), ``clamp=0`` (or below) as lowering. ``sign`` is -1 for a latent that correlates
    negatively with the target value (the target of ``latent=ID`` is its best value, of either sign).
    """
    strength = float(strength)
    if op == "add":
        way = (strength > 0) - (strength < 0)
    elif op == "scale":
        way = (strength > 1) - (strength < 1)
    elif op == "clamp":
        way = 1 if strength > 0 else -1
    else:
        raise ValueError(f"unknown edit op {op!r}")
    return way * (1 if sign >= 0 else -1)


def share_change(
    before: torch.Tensor, after: torch.Tensor, attr_matrix: torch.Tensor, target_index: int, direction: Optional[int]
) -> dict:
    """The change of the target share from the lists ``before`` to ``after`` (the same users, in the
    same order), its noise and the verdict (see the module docstring).

    ``direction``: +1 / -1 the way the edit should move the share, 0 no edit, None unknown (then only
    the noise is checked). Returns ``{"change", "noise", "n_users", "expected", "verdict"}``; the
    noise is ``NOISE_SE`` standard errors of the mean per-user change (0 with a single user).
    """
    if before.shape != after.shape:
        raise ValueError(f"lists before {tuple(before.shape)} and after {tuple(after.shape)} differ in shape")
    diff = user_shares(after, attr_matrix, target_index) - user_shares(before, attr_matrix, target_index)
    n = diff.numel()
    change = float(diff.mean())
    se = float(diff.std(unbiased=True)) / math.sqrt(n) if n > 1 else 0.0
    noise = NOISE_SE * se
    if direction == 0:
        verdict = "no_edit"
    elif abs(change) <= noise:
        verdict = "within_noise"
    elif direction is None:
        verdict = "moved"
    else:
        verdict = "as_expected" if (change > 0) == (direction > 0) else "wrong_way"
    return {
        "change": round_float(change, 8),
        "noise": round_float(noise, 8),
        "n_users": n,
        "expected": direction,
        "verdict": verdict,
    }


def share_warning(edit: str, target: str, k: int, before: float, after: float, check: Mapping) -> Optional[str]:
    """One ``warning:`` line for a ``wrong_way`` or ``within_noise`` verdict of ``share_change``, else None."""
    verdict = check.get("verdict")
    if verdict not in ("wrong_way", "within_noise"):
        return None
    way = {1: "raise", -1: "lower"}.get(check.get("expected"))
    moved = f"{before:.3g} -> {after:.3g}, change {check['change']:+.3g}"
    noise = (
        f"noise +-{check['noise']:.3g} = {NOISE_SE:g} standard errors of the per-user change over "
        f"{check['n_users']} users"
    )
    if verdict == "wrong_way":
        did = "lowered" if check["change"] < 0 else "raised"
        return (
            f"warning: {edit} was meant to {way} the share of {target} in the top-{k} but {did} it "
            f"({moved}; {noise}): the latent does not steer toward {target} here; try another latent or sign"
        )
    meant = f" (meant to {way} it)" if way else ""
    return (
        f"warning: {edit} moved the share of {target} in the top-{k} by no more than the noise{meant} "
        f"({moved}; {noise}): no measurable effect; try a larger strength or another latent"
    )


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
    direction_for: Optional[Callable[[float], Optional[int]]] = None,
    seen=None,
    baseline: Optional[torch.Tensor] = None,
) -> List[dict]:
    """One row per strength: RecBole's metrics and the list statistics with the edit active.

    ``edits_for(strength)`` gives what ``model.steer`` takes; ``evaluate()`` runs RecBole's
    evaluation of the (steered) model, e.g. ``lambda: trainer.evaluate(test_data,
    load_best_model=False)``. ``direction_for(strength)``: the way the edit should move the target
    share (``edit_direction``; default: the strength's sign, as for ``add``); ``seen``: the headline
    protocol's seen items (see ``top_k_lists``); ``baseline``: the unsteered lists (computed when
    not given). Row::

        {"strength", "target_share", "ndcg@k", "hit@k", "coverage", "diversity", "diversity_attr",
         "share_change", "share_noise", "verdict", "shares": {value: share}, "metrics": {...}}

    ``share_change``, ``share_noise`` and ``verdict`` compare the row's lists with the unsteered
    ones (``share_change``).
    """
    direction_for = direction_for or (lambda s: edit_direction("add", s))
    if baseline is None:
        _, baseline = top_k_lists(model, eval_data, k, seen=seen)
    rows = []
    item_embeddings = model.item_embedding.weight
    for strength in strengths:
        with model.steer(edits_for(float(strength)), positions=positions):
            metrics = {key: round_float(val) for key, val in dict(evaluate()).items()}
            _, lists = top_k_lists(model, eval_data, k, seen=seen)
        stats = list_statistics(lists, attr_matrix, item_embeddings, model.n_items, target_index)
        check = share_change(baseline, lists, attr_matrix, target_index, direction_for(float(strength)))
        row = {
            "strength": float(strength),
            "target_share": round_float(stats["target_share"]),
            f"ndcg@{k}": metrics.get(f"ndcg@{k}"),
            f"hit@{k}": metrics.get(f"hit@{k}"),
            "coverage": round_float(stats["coverage"]),
            "diversity": round_float(stats["diversity"]),
            "diversity_attr": round_float(stats["diversity_attr"]),
            "share_change": check["change"],
            "share_noise": check["noise"],
            "verdict": check["verdict"],
            "shares": {v: round_float(s) for v, s in zip(values, stats["shares"].tolist())},
            "metrics": metrics,
        }
        rows.append(row)
        if log is not None:
            log(
                f"strength {strength:+g}: target share {row['target_share']:.4f} "
                f"(change {check['change']:+.4g}, noise +-{check['noise']:.2g}: {check['verdict']}), "
                f"NDCG@{k} {row[f'ndcg@{k}']}, HR@{k} {row[f'hit@{k}']}, coverage {row['coverage']:.4f}, "
                f"diversity {row['diversity']:.4f}"
            )
    return rows


def sweep_warning(target: str, k: int, rows: Sequence[Mapping], base_share: Optional[float]) -> Optional[str]:
    """One ``warning:`` line naming the strengths whose edit moved the target share the wrong way or
    by no more than the noise (``verdict`` of the rows), else None."""

    def at(verdict):
        return [
            f"{r['strength']:+g} ({r['target_share']:.3g}, change {r['share_change']:+.3g}, "
            f"noise +-{r['share_noise']:.3g})"
            for r in rows
            if r.get("verdict") == verdict
        ]

    wrong, flat = at("wrong_way"), at("within_noise")
    if not wrong and not flat:
        return None
    parts = ([f"the wrong way at strength {', '.join(wrong)}"] if wrong else []) + (
        [f"by no more than the noise at strength {', '.join(flat)}"] if flat else []
    )
    base = f" from the unsteered {base_share:.3g}" if base_share is not None else ""
    return (
        f"warning: steering {target}: the share in the top-{k} moved{base} {'; '.join(parts)} "
        f"(noise = {NOISE_SE:g} standard errors of the per-user change): those strengths do not steer toward {target}"
    )


def sweep_columns(
    rows: Sequence[Mapping], target_value: str, k: int = 10, n_other: int = CSV_OTHER_VALUES
) -> Tuple[List[str], List[str]]:
    """(main columns, other values) of the CSV: the other values of the field with the largest
    share at the strength closest to 0 (at most ``n_other``)."""
    main = [
        "strength",
        "target_share",
        f"ndcg@{k}",
        f"hit@{k}",
        "coverage",
        "diversity",
        "diversity_attr",
        "share_change",
        "share_noise",
        "verdict",
    ]
    if not rows:
        return main, []
    ref = min(rows, key=lambda r: abs(r["strength"]))
    others = [v for v in ref["shares"] if v != target_value]
    others.sort(key=lambda v: -(ref["shares"][v] or 0.0))
    return main, others[:n_other]


def write_sweep(result: Mapping, out_dir, k: int = 10) -> dict:
    """Write ``result`` (``{"target", "target_value", "rows", ...}``; optional: the ``"unsteered"``
    metrics and ``"unsteered_share"``, drawn as base-rate lines, and ``"warnings"``)
    as ``sweep.csv``, ``sweep.json``, ``sweep.md`` and ``sweep.png`` into ``out_dir``; returns the paths."""
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
        md.append(
            "Latents: "
            + "; ".join(
                f"{lat['latent']} ({lat.get('label') or 'unlabelled'}, corr {lat.get('corr')})"
                for lat in result["latents"]
            )
            + f". Edit: {result.get('op', 'add')} at {result.get('positions')} positions.\n\n"
        )
    md.extend(f"**{line}**\n\n" for line in result.get("warnings") or ())
    md.append(markdown_table(rows, main))
    md.append(
        f"\nshare_change: the mean over users of each user's change of the target share against the "
        f"unsteered lists; share_noise: {NOISE_SE:g} standard errors of that mean (a change within it is "
        "`within_noise`); `wrong_way`: the share moved against the edit's direction beyond the noise.\n"
    )
    md_path = out / "sweep.md"
    md_path.write_text("".join(md), encoding="utf-8")
    base = {**(result.get("unsteered") or {}), "target_share": result.get("unsteered_share")}
    png_path = plot_sweep(rows, out / "sweep.png", result["target"], k, base=base)
    return {"csv": str(csv_path), "json": str(json_path), "md": str(md_path), "png": str(png_path)}


def _csv_cell(value):
    return "" if value is None else value


def sweep_figure(rows: Sequence[Mapping], target: str, k: int = 10, base: Optional[Mapping] = None):
    """The sweep's figure: target share (left) and NDCG@k / HR@k (right) against the strength, with
    the unsteered values of ``base`` (``target_share``, ``ndcg@k``, ``hit@k``) as dashed horizontal
    lines labelled ``unsteered ...`` (the base rates an edit is measured against)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    base = base or {}
    xs = [r["strength"] for r in rows]
    fig = Figure(figsize=(9, 3.6), dpi=110)
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    left.plot(xs, [r["target_share"] for r in rows], marker="o", color="tab:purple", label="steered")
    _base_line(left, base.get("target_share"), "tab:purple", "unsteered share")
    left.set_xlabel("steering strength")
    left.set_ylabel(f"share in the top-{k}")
    left.set_title(f"{target}: share in the top-{k}")
    left.grid(alpha=0.3)
    left.legend(fontsize=8)
    for metric, colour in ((f"ndcg@{k}", "tab:blue"), (f"hit@{k}", "tab:orange")):
        name = metric.replace("hit", "HR").replace("ndcg", "NDCG")
        ys = [r.get(metric) for r in rows]
        if any(y is not None for y in ys):
            right.plot(xs, [math.nan if y is None else y for y in ys], marker="o", color=colour, label=name)
        _base_line(right, base.get(metric), colour, f"unsteered {name}")
    right.set_xlabel("steering strength")
    right.set_title("accuracy on the test users")
    right.grid(alpha=0.3)
    right.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _base_line(ax, value, colour: str, label: str) -> None:
    if value is not None and math.isfinite(float(value)):
        ax.axhline(
            float(value), color=colour, linestyle="--", linewidth=1, alpha=0.7, label=f"{label} ({float(value):.3g})"
        )


def plot_sweep(rows: Sequence[Mapping], path, target: str, k: int = 10, base: Optional[Mapping] = None) -> Path:
    """``sweep_figure`` as a PNG at ``path``."""
    fig = sweep_figure(rows, target, k, base)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(os.fspath(path))
    return path
