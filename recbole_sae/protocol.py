"""Two evaluation protocols in one evaluation: seen items kept rankable (RecBole's) or removed (the papers').

RecBole's sequential evaluation ranks every item, the user's earlier items included. The papers on
amazon-beauty (S3Rec, ICLRec, ICSRec, BSARec, SAERec) remove the items the user interacted with before
the target from the ranking. Both are computed from the same scores in one pass: ``attach`` wraps a
trainer (RecBole's or the plugin's, the same code for both) so that each evaluation ranks twice; the
protocol named by ``filter_seen`` is the evaluation's result (it drives early stopping, model
selection and the headline), the other one rides along under keys ``<protocol>/<metric>``.

"Seen before the target" is the user's whole history before it, not only the last
``MAX_ITEM_LIST_LENGTH`` items the model sees: every training item of the user, and for the test
target also the validation item. A target that occurs earlier in the user's history is removed with
the rest, as the papers' code does: that user counts as a miss at every cut-off. How often it
happens is counted (``target_seen_before`` in the result) and logged.
"""

from __future__ import annotations

from logging import getLogger

import torch

SEEN_KEPT = "seen_kept"  # RecBole's protocol: earlier items stay rankable
SEEN_REMOVED = "seen_removed"  # the papers' protocol: earlier items are removed from the ranking
PROTOCOLS = (SEEN_REMOVED, SEEN_KEPT)
TITLES = {
    SEEN_REMOVED: "seen items removed (the papers' protocol)",
    SEEN_KEPT: "seen items kept rankable (RecBole's protocol)",
}
SEP = "/"


def is_sequential(config) -> bool:
    from recbole.utils import ModelType

    return config["MODEL_TYPE"] == ModelType.SEQUENTIAL


def headline(config) -> str:
    """The protocol that drives early stopping and the headline metrics.

    RecBole's general (non-sequential) models always rank with the user's training items removed
    (its own ``history_index``): for them there is only ``seen_removed``.
    """
    if not is_sequential(config):
        return SEEN_REMOVED
    return SEEN_REMOVED if config["filter_seen"] else SEEN_KEPT


def other(protocol: str) -> str:
    return SEEN_KEPT if protocol == SEEN_REMOVED else SEEN_REMOVED


class SeenTable:
    """Per user (by internal id), the sorted items seen before one split's targets, as CSR arrays."""

    def __init__(self, users: torch.Tensor, items: torch.Tensor, n_users: int, n_items: int):
        keep = items > 0
        pairs = torch.unique(users[keep] * n_items + items[keep])  # sorted by user, then item
        self.users, self.items = pairs // n_items, pairs % n_items
        self.indptr = torch.zeros(n_users + 1, dtype=torch.long)
        self.indptr[1:] = torch.cumsum(torch.bincount(self.users, minlength=n_users), 0)

    def mask_indices(self, batch_users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(rows, items)``: row ``r`` of the batch has seen ``items`` where ``rows == r``."""
        batch_users = batch_users.cpu()
        start, end = self.indptr[batch_users], self.indptr[batch_users + 1]
        counts = end - start
        rows = torch.repeat_interleave(torch.arange(batch_users.numel()), counts)
        offsets = torch.arange(int(counts.sum())) - torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
        return rows, self.items[start[rows] + offsets]

    def contains(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Per pair, whether ``items[i]`` is among the items seen by ``users[i]``."""
        rows, seen = self.mask_indices(users)
        hit = torch.zeros(users.numel(), dtype=torch.bool)
        hit[rows[seen == items.cpu()[rows]]] = True
        return hit


def _split_pairs(dataset, config) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(users, history items) of every row's item list, and (users, targets) of every row."""
    feat = dataset.inter_feat
    user, target = feat[config["USER_ID_FIELD"]], feat[config["ITEM_ID_FIELD"]]
    seq = feat[config["ITEM_ID_FIELD"] + config["LIST_SUFFIX"]]
    rows, cols = torch.nonzero(seq, as_tuple=True)
    return user[rows], seq[rows, cols], user, target


def seen_tables(train_data, valid_data, test_data, config) -> dict:
    """``{loader: SeenTable}`` for the validation and test loaders.

    Before a validation target: the item lists and targets of the user's training rows and the
    validation row's own item list (a user may have no training row). Before a test target: all of
    that, the validation target and the test row's item list.
    """
    n_users, n_items = train_data.dataset.user_num, train_data.dataset.item_num
    train_hist_u, train_hist_i, train_u, train_t = _split_pairs(train_data.dataset, config)
    valid_hist_u, valid_hist_i, valid_u, valid_t = _split_pairs(valid_data.dataset, config)
    test_hist_u, test_hist_i, _, _ = _split_pairs(test_data.dataset, config)
    before_valid = [(train_hist_u, train_hist_i), (train_u, train_t), (valid_hist_u, valid_hist_i)]
    before_test = before_valid + [(valid_u, valid_t), (test_hist_u, test_hist_i)]

    def table(parts):
        return SeenTable(torch.cat([u for u, _ in parts]), torch.cat([i for _, i in parts]), n_users, n_items)

    return {id(valid_data): table(before_valid), id(test_data): table(before_test)}


def target_seen_share(table: SeenTable, loader, config) -> float:
    """Share of the loader's targets that the user had seen before (they cannot be hit with seen items removed)."""
    feat = loader.dataset.inter_feat
    users, targets = feat[config["USER_ID_FIELD"]], feat[config["ITEM_ID_FIELD"]]
    if users.numel() == 0:
        return 0.0
    return round(float(table.contains(users, targets).float().mean()), 6)


def remove_seen(scores: torch.Tensor, table: SeenTable, batch_users: torch.Tensor) -> torch.Tensor:
    """A copy of ``scores`` [B, n_items] with every item seen before the target at -inf."""
    rows, items = table.mask_indices(batch_users)
    out = scores.clone()
    out[rows.to(scores.device), items.to(scores.device)] = -torch.inf
    return out


def attach(trainer, tables: dict, protocol: str) -> None:
    """Make ``trainer.evaluate`` rank under ``protocol`` and, while ``trainer.both_protocols`` is
    true, also under the other one, for the loaders in ``tables``.

    The result holds ``protocol``'s metrics under RecBole's names and the other protocol's under
    ``<other>/<metric>``. Validation during training needs only the headline (it costs a second
    ranking of every user), so the pipeline switches ``both_protocols`` on after training and
    evaluates the best checkpoint on validation and test. Loaders without a table evaluate as before.
    """
    from recbole.evaluator import Collector

    evaluate, batch_eval = trainer.evaluate, trainer._full_sort_batch_eval
    second = Collector(trainer.config)
    uid = trainer.config["USER_ID_FIELD"]
    current: dict = {}

    def both_batch_eval(batched_data):
        interaction, scores, positive_u, positive_i = batch_eval(batched_data)
        table = current.get("table")
        if table is None or (protocol == SEEN_KEPT and not trainer.both_protocols):
            return interaction, scores, positive_u, positive_i
        removed = remove_seen(scores, table, interaction[uid])
        headline_scores, other_scores = (removed, scores) if protocol == SEEN_REMOVED else (scores, removed)
        if trainer.both_protocols:
            second.eval_batch_collect(other_scores, interaction, positive_u, positive_i)
        return interaction, headline_scores, positive_u, positive_i

    def both_evaluate(eval_data, *args, **kwargs):
        current["table"] = tables.get(id(eval_data))
        try:
            result = evaluate(eval_data, *args, **kwargs)
        finally:
            table, current["table"] = current.get("table"), None
        if table is None or result is None or not trainer.both_protocols:
            return result
        second.model_collect(trainer.model)
        extra = trainer.evaluator.evaluate(second.get_data_struct())
        result.update({f"{other(protocol)}{SEP}{key}": value for key, value in extra.items()})
        return result

    trainer.both_protocols = True
    trainer._full_sort_batch_eval = both_batch_eval
    trainer.evaluate = both_evaluate


def attach_to_run(trainer, train_data, valid_data, test_data, config) -> dict:
    """Attach both protocols to ``trainer`` for this run's loaders (``filter_seen`` names the headline);
    returns the share of validation and test targets the user had seen before, and logs it.
    A general (non-sequential) model keeps RecBole's evaluation, which removes seen items: None."""
    if not is_sequential(config):
        trainer.both_protocols = True
        return None
    tables = seen_tables(train_data, valid_data, test_data, config)
    attach(trainer, tables, headline(config))
    shares = {
        name: target_seen_share(tables[id(loader)], loader, config)
        for name, loader in (("valid", valid_data), ("test", test_data))
    }
    getLogger().info(
        "targets the user had seen before (a miss with seen items removed): "
        + ", ".join(f"{split} {share:.2%}" for split, share in shares.items())
    )
    return shares


def split_result(result) -> tuple[dict, dict]:
    """``(headline metrics, other protocol's metrics)`` of a result from an attached trainer."""
    head, rest = {}, {}
    for key, value in dict(result or {}).items():
        if SEP in key:
            rest[key.split(SEP, 1)[1]] = value
        else:
            head[key] = value
    return head, rest


def metrics(record: dict, protocol: str, split: str) -> dict | None:
    """A result record's ``split`` (``best_valid`` or ``test``) metrics under ``protocol``, or None.

    Records written before both protocols were reported hold RecBole's protocol only.
    """
    own = record.get("protocol", SEEN_KEPT)
    if own == protocol:
        return record.get(split)
    for holder in (record, record.get("extra") or {}):
        if isinstance(holder.get(protocol), dict):
            return holder[protocol].get(split)
    return None
