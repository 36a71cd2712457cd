"""SAERec's explanations: removal attributions, a faithfulness figure, HTML pages.

An intent's *attribution* to a recommended item is the item's score drop when that intent is masked
out of its branch's cross-attention (personal or public; every intent layer and the fusion
recomputed), :meth:`recbole_sae.model.saerec.SAERec.attribute`. So an explanation names the intents
that raised the item's score most, not merely those that were retrieved. With ``item_intent_codes``
each item's vector also holds its own intents (its SAE codes); their attributions are exact: the
code weight times the sequence state's dot product with the intent's embedding, what the score loses
when the intent leaves the item's vector (:func:`item_code_contributions`).
An item's explanation names the largest attributions of either kind (``branch`` 'item' for its own).

:func:`faithfulness` measures over test users whether removing the top-attributed intent lowers the
item's score more than removing another retrieved intent drawn at random (seeded). Because the
attribution *is* the single-removal drop, the share where it holds is 1 up to ties by construction;
what the figure tells is how much the intents matter at all (``mean_drop_top`` against
``mean_drop_random``; both near 0: the recommendation ignores its intents), and how often the
attention weights (the old, retrieved-list explanation: the slot with the largest attention times
its branch's fusion weight) name the same intent (``share_attention_agrees``). ``ratio`` is
``mean_drop_top / mean_drop_random``, None when the random removal does not lower the scores on
average (removing one intent gives the others more attention, which may raise an item's score).
"""

from __future__ import annotations

import html
import os
import re

import torch

from recbole_sae.fileio import write_text_atomic

__all__ = [
    "explanation_records",
    "faithfulness",
    "write_html",
    "history_exclusion",
    "item_code_contributions",
    "write_run_explanations",
]


def history_exclusion(batch, n_rows: int, n_items: int, device) -> torch.Tensor | None:
    """The items RecBole's full-sort evaluation removes from each row's ranking (its history), or None."""
    if not isinstance(batch, (tuple, list)) or len(batch) < 2 or batch[1] is None:
        return None
    rows, cols = batch[1]
    mask = torch.zeros(n_rows, n_items, dtype=torch.bool, device=device)
    mask[rows.to(device), cols.to(device)] = True
    return mask


def _intent_info(model, ident: int) -> dict:
    return {
        "intent": ident,
        "latent": int(model.vocabulary.kept[ident])
        if model.intent_directions.size(0) == model.vocabulary.n_kept
        else None,
        "label": model.intent_labels[ident],
    }


def _slot_info(model, att, row: int, slot: int) -> dict:
    ident = int(att["slot_ids"][row, slot])
    branch = "personal" if slot < att["n_personal"] else "public"
    if branch == "personal" and model.memory == "history_text":
        return {"branch": branch, "item": ident, "label": f"history item {ident}"}
    return {"branch": branch, **_intent_info(model, ident)}


@torch.no_grad()
def item_code_contributions(model, state, items):
    """``item_intent_codes``: the exact intent terms of items' scores. For sequence states [B, H]
    and items [B, k]: (intent ids [B, k, C], contributions [B, k, C]), C the most intents an item
    has (id -1, contribution 0 where it has fewer); contribution = the intent's code weight x
    state . intent embedding, what the score loses when the intent leaves the item's vector."""
    rows, cols, vals = model.code_rows, model.code_cols, model.code_vals  # row-major: rows ascending
    counts = torch.bincount(rows, minlength=model.n_items)
    slot = torch.arange(rows.numel(), device=rows.device) - (torch.cumsum(counts, 0) - counts)[rows]
    width = max(int(counts.max()), 1) if counts.numel() else 1
    ids = torch.full((model.n_items, width), -1, dtype=torch.long, device=rows.device)
    weights = torch.zeros(model.n_items, width, device=rows.device)
    ids[rows, slot], weights[rows, slot] = cols, vals
    ids, weights = ids[items.to(rows.device)].to(state.device), weights[items.to(rows.device)].to(state.device)
    dots = torch.einsum("bh,bkch->bkc", state, model.intent_embeddings()[ids.clamp_min(0)])
    return ids, torch.where(ids >= 0, weights * dots, torch.zeros_like(dots))


def _item_codes(model, att):
    """``item_intent_codes``: each top item's own intents and their exact score terms, else None."""
    if not getattr(model, "item_codes", False):
        return None
    return item_code_contributions(model, att["state"], att["top_items"])


def _candidates(att, codes):
    """Per top item, every intent whose removal is measured: the memory's slots (drops [B, k, S]) then
    the item's own intents (drops [B, k, C]); (drops [B, k, S + C], valid [B, k, S + C])."""
    drops = att["drops"]
    valid = torch.ones_like(drops, dtype=torch.bool)
    if codes is not None:
        ids, contributions = codes
        drops, valid = torch.cat([drops, contributions], -1), torch.cat([valid, ids >= 0], -1)
    return drops, valid


def explanation_records(model, interaction, k: int = 10, n_intents: int = 3, exclude=None) -> list[dict]:
    """One record per row: its top-``k`` items with their ``n_intents`` most-attributed intents (from
    the memory, and with ``item_intent_codes`` from the item's own intents: ``branch`` 'item'), the
    retrieved personal and public intents with their attention, and the fusion weights."""
    seq, lengths = interaction[model.ITEM_SEQ], interaction[model.ITEM_SEQ_LEN]
    att = model.attribute(seq, lengths, k=k, exclude=exclude)
    users = interaction[model.USER_ID].tolist() if model.USER_ID in interaction.interaction else [None] * len(seq)
    n_k, n_slots = att["n_personal"], att["slot_ids"].size(1)
    codes = _item_codes(model, att)
    drops, valid = _candidates(att, codes)
    records = []
    for row, user in enumerate(users):
        slots = []
        for s in range(n_slots):
            info = {**_slot_info(model, att, row, s), "attention": round(float(att["attention"][row, s]), 4)}
            if s < n_k and att["personal_scores"] is not None:
                info["retrieval_score"] = round(float(att["personal_scores"][row, s]), 4)
            slots.append(info)
        items = []
        for i in range(k):
            found = slots + (
                []
                if codes is None
                else [
                    {"branch": "item", **_intent_info(model, int(j))} if j >= 0 else None
                    for j in codes[0][row, i].tolist()
                ]
            )
            order = torch.sort(drops[row, i].masked_fill(~valid[row, i], -torch.inf), descending=True, stable=True)
            chosen = [c for c in order.indices.tolist() if valid[row, i, c]][:n_intents]
            items.append(
                {
                    "item": int(att["top_items"][row, i]),
                    "score": round(float(att["top_scores"][row, i]), 4),
                    "intents": [{**found[c], "attribution": round(float(drops[row, i, c]), 4)} for c in chosen],
                }
            )
        fusion = att["fusion"][row]
        records.append(
            {
                "user": user,
                "history": seq[row, : int(lengths[row])].tolist(),
                "top_items": [it["item"] for it in items],
                "items": items,
                "personal_intents": slots[:n_k],
                "public_intents": slots[n_k:],
                "fusion": {"personal": round(float(fusion[0]), 4), "public": round(float(fusion[1]), 4)},
            }
        )
    return records


def _top_and_random(drops, valid, generator):
    """Per item: the top-attributed candidate and one other valid candidate drawn at random, and
    which items have two candidates to compare. When every candidate is valid the draw is
    ``randint(0, n - 1)`` as it always was (the same figures for memory-only models)."""
    n_valid = valid.sum(-1)
    if drops.size(-1) < 2:
        nothing = torch.zeros(drops.shape[:-1], dtype=torch.long)
        return nothing, nothing, n_valid >= 2
    top = drops.masked_fill(~valid, -torch.inf).argmax(-1)
    if bool(valid.all()):
        other = torch.randint(0, max(drops.size(-1) - 1, 1), top.shape, generator=generator)
    else:
        u = torch.rand(top.shape, generator=generator)
        other = (u * (n_valid - 1).clamp_min(1)).long()
    others = valid & (torch.arange(drops.size(-1)) != top.unsqueeze(-1))
    pick = (torch.cumsum(others.long(), -1) == (other + 1).unsqueeze(-1)) & others
    return top, pick.long().argmax(-1), n_valid >= 2


@torch.no_grad()
def faithfulness(model, data, n_users: int = 1000, k: int = 10, seed: int = 0) -> dict:
    """Top-attributed vs random intent removal over the first ``n_users`` rows of ``data`` (a
    RecBole evaluation loader, or an iterable of interactions). The candidates of an item are the
    retrieved intents and, with ``item_intent_codes``, the item's own; items with fewer than two
    are left out."""
    generator = torch.Generator().manual_seed(int(seed))
    top_drops, random_drops, attention_drops, agree = [], [], [], []
    users = 0
    for batch in data:
        interaction = batch[0] if isinstance(batch, (tuple, list)) else batch
        interaction = interaction.to(model.item_embedding.weight.device)
        take = min(len(interaction), n_users - users)
        exclude = history_exclusion(batch, len(interaction), model.n_items, interaction[model.ITEM_SEQ].device)
        seq = interaction[model.ITEM_SEQ][:take]
        lengths = interaction[model.ITEM_SEQ_LEN][:take]
        att = model.attribute(seq, lengths, k=k, exclude=None if exclude is None else exclude[:take])
        drops, valid = (x.cpu() for x in _candidates(att, _item_codes(model, att)))
        top, other, compared = _top_and_random(drops, valid, generator)
        if not bool(compared.any()):
            return {"users": 0, "note": "fewer than two intents to remove per item: nothing to compare"}
        top_drops.append(drops.gather(-1, top.unsqueeze(-1)).squeeze(-1)[compared])
        random_drops.append(drops.gather(-1, other.unsqueeze(-1)).squeeze(-1)[compared])
        n_slots = att["drops"].size(-1)
        if n_slots:
            weight = att["attention"].cpu().clone()
            fusion = att["fusion"].cpu()
            weight[:, : att["n_personal"]] *= fusion[:, :1]
            weight[:, att["n_personal"] :] *= fusion[:, 1:]
            by_attention = weight.argmax(-1)  # [B]: the same slot for all items of a row
            index = by_attention.view(-1, 1, 1).expand(-1, drops.size(1), 1)  # the memory's slots come first
            attention_drops.append(drops.gather(-1, index).squeeze(-1)[compared])
            agree.append((by_attention.unsqueeze(1) == top)[compared])
        users += take
        if users >= n_users:
            break
    if not users:
        return {"users": 0}
    top_d, rand_d = torch.cat(top_drops).double(), torch.cat(random_drops).double()
    mean_top, mean_rand = float(top_d.mean()), float(rand_d.mean())
    return {
        "users": users,
        "items": int(top_d.numel()),
        "k": k,
        "seed": int(seed),
        "mean_drop_top": round(mean_top, 6),
        "mean_drop_random": round(mean_rand, 6),
        "mean_drop_attention_top": round(float(torch.cat(attention_drops).double().mean()), 6) if agree else None,
        "ratio": round(mean_top / mean_rand, 4) if mean_rand > 0 else None,
        "share_top_above_random": round(float((top_d > rand_d).double().mean()), 4),
        "share_attention_agrees": round(float(torch.cat(agree).double().mean()), 4) if agree else None,
    }


def _safe(name) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", str(name))[:80] or "user"


def write_html(record: dict, titles, folder, history_shown: int = 20) -> str:
    """One page for one explained user: history, recommendations with their intents, the memory."""
    e = html.escape
    os.makedirs(folder, exist_ok=True)
    name = record.get("user_token", record.get("user"))
    history = record["history"][-history_shown:]
    rows = []
    for rank, item in enumerate(record["items"], 1):
        intents = "<br>".join(
            f"{e(it['label'])} <small>({it['branch']}, attribution {it['attribution']:+.4f}"
            + (f", attention {it['attention']:.3f}" if "attention" in it else "")
            + ")</small>"
            for it in item["intents"]
        )
        rows.append(
            f"<tr><td>{rank}</td><td>{e(titles[item['item']])}</td><td>{item['score']:.3f}</td><td>{intents}</td></tr>"
        )
    memory = "".join(
        f"<li>{e(s['branch'])}: {e(s['label'])} <small>(attention {s['attention']:.3f})</small></li>"
        for s in record["personal_intents"] + record["public_intents"]
    )
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>SAERec explanation: user {e(str(name))}</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto}}td,th{{border-bottom:1px solid #ddd;
padding:4px 8px;vertical-align:top;text-align:left}}table{{border-collapse:collapse}}</style></head><body>
<h1>User {e(str(name))}</h1>
<h2>History (last {len(history)} of {len(record["history"])}, oldest first)</h2>
<ol>{"".join(f"<li>{e(titles[i])}</li>" for i in history)}</ol>
<h2>Recommended, with the intents that raised each score most</h2>
<p>Attribution: the item's score drop when the intent is removed from the cross-attention memory
(personal, public) or, for the item's own intents (item), from the item's vector.
Fusion weights: personal {record["fusion"]["personal"]:.3f}, public {record["fusion"]["public"]:.3f}.</p>
<table><tr><th>#</th><th>item</th><th>score</th><th>intents (attribution)</th></tr>
{"".join(rows)}</table>
<h2>The memory: retrieved intents</h2><ul>{memory}</ul>
</body></html>
"""
    path = os.path.join(folder, f"user-{_safe(name)}.html")
    write_text_atomic(page, path)
    return path


def write_run_explanations(config, model, train_data, test_data, device, run_dir) -> tuple[dict, str]:
    """Write ``intents/`` in the run folder ``run_dir``: the stage (when not yet there), ``intents.md``,
    ``explanations.json`` (``explain_users`` example test users and the faithfulness figure over
    ``faithfulness_users``) and one HTML page per example user. Returns (the summary the run's
    result holds, the intent table)."""
    from recbole_sae import runfiles
    from recbole_sae.analysis.report import write_json
    from recbole_sae.data.item_text import item_titles
    from recbole_sae.intents.stage import stage_folder

    folder = str(stage_folder(run_dir))
    if not os.path.isfile(os.path.join(folder, runfiles.INTENT_STAGE_MANIFEST)):
        model.stage.save(folder)
    table = model.vocabulary.table(n=int(config["intent_table_rows"] or 20))
    write_text_atomic(table + "\n", os.path.join(folder, "intents.md"))
    dataset = train_data.dataset
    titles = item_titles(dataset, config)
    batch = next(iter(test_data))
    n = int(config["explain_users"] or 3)
    interaction = batch[0].to(device)
    exclude = history_exclusion(batch, len(interaction), model.n_items, device)
    records = explanation_records(model, interaction[:n], k=10, exclude=None if exclude is None else exclude[:n])
    pages = os.path.join(folder, "explanations")
    for record in records:
        record["top_titles"] = [titles[i] for i in record["top_items"]]
        record["history_titles"] = [titles[i] for i in record["history"]]
        if record["user"] is not None:
            record["user_token"] = str(dataset.id2token(dataset.uid_field, record["user"]))
        record["page"] = os.path.relpath(write_html(record, titles, pages), folder)
    faith = faithfulness(model, test_data, n_users=int(config["faithfulness_users"] or 1000), seed=int(config["seed"]))
    write_json({"faithfulness": faith, "users": records}, os.path.join(folder, "explanations.json"))
    public = [{"intent": int(i), "label": model.intent_labels[i]} for i in model.current_public_ids().tolist()]
    summary = {
        "n_latents": model.vocabulary.n_latents,
        "n_alive": model.vocabulary.n_alive,
        "n_kept": model.vocabulary.n_kept,
        "retrieval": model.retrieval,
        "public_intents": public,
        "faithfulness": faith,
        "faiss_on_gpu": bool(model.index.on_gpu),
        "intents_dir": folder,
    }
    return summary, table
