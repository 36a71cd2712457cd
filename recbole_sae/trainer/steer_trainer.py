"""The trainer of SteerableSASRec: no training; the steered test report and the strength sweep.

``fit`` trains nothing: the model loaded its SASRec and SAE from ``sae_run``; ``fit`` checks them
on the validation data (against the SASRecSAE run's own report when it has one) and saves the
checkpoint of this run, which the pipeline's test then reads.

``after_test`` (merged into the run's RESULT):

* ``steer`` (``--steer="class=Western:+6"``): RecBole's test metrics unsteered and steered, the
  target value's share in the top-k lists before and after, list coverage and diversity, and a few
  users' lists before and after by title (``steering/steer.json``);
* ``steer_sweep`` (``--steer_sweep="class=Western" --strengths=-8,-4,0,4,8``): one row per strength
  (see ``recbole_sae.analysis.steering``), written to ``steering/sweep.{csv,json,md,png}``.

Both keys (and ``strengths``) are config keys, so the Python API passes them in ``config_dict``.
On the command line their values hold ``=``, which RecBole's own command-line reader drops, so
they are read from the command line here (``--key=value``, split at the first ``=``), which wins
over the config files as any command-line key does.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Optional

import torch

from recbole_sae.analysis.report import write_json
from recbole_sae.analysis.steering import list_statistics, parse_strengths, steering_sweep, top_k_lists, write_sweep
from recbole_sae.errors import ConfigError
from recbole_sae.model.steerable_sasrec import LatentEdit, parse_steer
from recbole_sae.trainer.sequence_trainer import SequenceTrainer

STEER_KEYS = ("steer", "steer_sweep", "strengths")
HISTORY_SHOWN = 5


def command_line_value(key: str, argv=None) -> Optional[str]:
    """The value of ``--key=value`` on the command line (split at the first ``=``), else None."""
    prefix = f"--{key}="
    for arg in (sys.argv[1:] if argv is None else argv):
        if isinstance(arg, str) and arg.startswith(prefix):
            return arg[len(prefix):]
    return None


def checked_strengths(value) -> list:
    """``--strengths`` as numbers, or a :class:`ConfigError` that says what is wrong."""
    try:
        return parse_strengths(value)
    except ValueError as err:
        raise ConfigError(f"--strengths: {err}") from None


def _round(metrics) -> dict:
    return {k: round(float(v), 6) for k, v in dict(metrics or {}).items()}


class SteerableTrainer(SequenceTrainer):
    """Loads and validates (no training); steered test metrics and sweeps after the test."""

    # -- no training -------------------------------------------------------------------------------
    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        model = self.model
        checked_strengths(self.setting("strengths"))  # a bad --strengths fails now, not after the evaluation
        self.logger.info(f"SteerableSASRec: no training; SASRec + SAE of the run {model.run_dir}")
        score, result = None, None
        if valid_data:
            score, result = self._valid_epoch(valid_data, show_progress=show_progress)
            self._compare_with_run(result)
        self.best_valid_score, self.best_valid_result = score, result
        if saved:
            self._save_checkpoint(0, verbose=verbose)
        return score, result

    def _compare_with_run(self, result) -> None:
        report_path = os.path.join(self.model.run_dir, "sae_report.json")
        if not result or not os.path.isfile(report_path):
            return
        with open(report_path, encoding="utf-8") as f:
            report = json.load(f)
        metric = self.valid_metric
        try:
            before = float(report["interventions"]["valid"]["original"][metric])
        except (KeyError, TypeError, ValueError):
            return
        now = float(result[metric])
        if abs(now - before) > 1e-4:
            self.logger.warning(
                f"validation {metric} of the loaded model is {now:.4f}, the SASRecSAE run reported {before:.4f}: "
                "are the data settings (dataset, filtering, eval_args) the same as the run's?"
            )
        else:
            self.logger.info(f"validation {metric} {now:.4f} matches the SASRecSAE run's report")

    # -- settings ----------------------------------------------------------------------------------
    def setting(self, key: str):
        """A steering key: from the command line when given there, else from the config."""
        value = command_line_value(key)
        return value if value is not None else self.config[key]

    def topk(self) -> int:
        k = int(self.config["steer_topk"] or 10)
        cutoffs = [int(c) for c in (self.config["topk"] or [])]
        if k not in cutoffs:
            raise ConfigError(f"steer_topk={k} must be one of the metric cut-offs topk={cutoffs} (or add it to topk)")
        return k

    @property
    def run_dir(self) -> str:
        return self.config["run_dir"] or os.path.dirname(os.path.abspath(self.saved_model_file))

    def _evaluate(self, data) -> dict:
        return _round(self.evaluate(data, load_best_model=False, show_progress=False))

    # -- after the test ----------------------------------------------------------------------------
    def after_test(self, train_data, valid_data, test_data) -> dict:
        steer, sweep = self.setting("steer"), self.setting("steer_sweep")
        out = {}
        if steer:
            out["steer"] = self.steer_report(str(steer), test_data)
        if sweep:
            out["steering"] = self.sweep(str(sweep), self.setting("strengths"), test_data)
        if not out:
            self.logger.info(
                "no --steer or --steer_sweep given: the test metrics are those of the unsteered model "
                "(e.g. --steer=\"class=Western:+6\" or --steer_sweep=\"class=Western\" --strengths=-8,-4,0,4,8)"
            )
        return out

    def steer_report(self, spec: str, test_data) -> dict:
        """Unsteered vs steered: RecBole's test metrics, target shares, list statistics, examples."""
        model = self.model
        k = self.topk()
        terms = parse_steer(spec)
        edits = model.resolve(terms)
        unsteered = self._evaluate(test_data)
        users, before = top_k_lists(model, test_data, k)
        with model.steer(edits):
            steered = self._evaluate(test_data)
            _, after = top_k_lists(model, test_data, k)
        targets = list(dict.fromkeys(t for t in (model.target_of(term) for term in terms) if t is not None))
        shares, lists = {}, {}
        emb = model.item_embedding.weight
        for field, value in targets:
            values, matrix = model.attribute(field)
            index = values.index(value) if value in values else None
            b = list_statistics(before, matrix, emb, model.n_items, index)
            a = list_statistics(after, matrix, emb, model.n_items, index)
            shares[f"{field}={value}"] = {"unsteered": _r(b["target_share"]), "steered": _r(a["target_share"])}
        no_attribute = torch.zeros(model.n_items, 0, dtype=torch.bool)
        for name, top in (("unsteered", before), ("steered", after)):
            stats = list_statistics(top, no_attribute, emb, model.n_items)
            lists[name] = {"coverage": _r(stats["coverage"]), "diversity": _r(stats["diversity"])}
        report = {
            "steer": spec,
            "edits": [str(e) for e in edits],
            "positions": model.steer_positions,
            "k": k,
            "latents": {term.target: self._latent_records(term) for term in terms},
            "unsteered": unsteered,
            "steered": steered,
            "delta": {m: round(steered[m] - unsteered[m], 6) for m in steered if m in unsteered},
            "target_share": shares,
            "lists": lists,
            "examples": self._examples(test_data, users, before, after),
        }
        path = write_json(report, os.path.join(self.run_dir, "steering", "steer.json"))
        report["file"] = str(path)
        self._log_steer(report, k)
        return report

    def _latent_records(self, term) -> list:
        model = self.model
        if term.is_latent:
            return [{"latent": int(term.value), "label": model.latent_label(int(term.value))}]
        return model.latents_for(term.field, term.value)

    def _examples(self, test_data, users, before, after) -> list:
        model = self.model
        n = int(self.config["steer_examples"] if self.config["steer_examples"] is not None else 3)
        if n <= 0:
            return []
        titles = model._titles_or_none()
        name = (lambda i: titles[i]) if titles else str
        interaction = next(iter(test_data))[0]
        seqs, lengths = interaction[model.ITEM_SEQ], interaction[model.ITEM_SEQ_LEN]
        tokens = test_data._dataset.field2id_token[model.USER_ID]
        out = []
        for b in range(min(n, len(interaction), users.numel())):
            history = seqs[b, : int(lengths[b])].tolist()[-HISTORY_SHOWN:]
            out.append({
                "user": str(tokens[int(users[b])]),
                "history_last": [name(i) for i in history],
                "unsteered": [name(i) for i in before[b].tolist()],
                "steered": [name(i) for i in after[b].tolist()],
            })
        return out

    def _log_steer(self, report: dict, k: int) -> None:
        log = self.logger.info
        ndcg, hit = f"ndcg@{k}", f"hit@{k}"
        log(
            f"steer {report['steer']} ({', '.join(report['edits'])}; {report['positions']} positions): "
            f"NDCG@{k} {report['unsteered'].get(ndcg)} -> {report['steered'].get(ndcg)}, "
            f"HR@{k} {report['unsteered'].get(hit)} -> {report['steered'].get(hit)}"
        )
        for target, share in report["target_share"].items():
            log(f"share of {target} in the top-{k}: {share['unsteered']} -> {share['steered']}")
        for ex in report["examples"]:
            log(f"user {ex['user']} (last: {' | '.join(ex['history_last'])})")
            log(f"  unsteered: {' | '.join(ex['unsteered'])}")
            log(f"  steered:   {' | '.join(ex['steered'])}")

    def sweep(self, spec: str, strengths, test_data) -> dict:
        """The strength sweep of one target (see ``recbole_sae.analysis.steering``)."""
        model = self.model
        terms = parse_steer(spec, require_strength=False)
        if len(terms) != 1:
            raise ConfigError(f"steer_sweep takes one target (e.g. class=Western), got {len(terms)}: '{spec}'")
        term = terms[0]
        if term.strength is not None:
            raise ConfigError(
                f"steer_sweep '{spec}' names a strength; the strengths come from --strengths: "
                f"write --steer_sweep=\"{term.target}\" (or {term.target}:clamp / {term.target}:scale)"
            )
        op = term.op or "add"
        strengths = checked_strengths(strengths)
        k = self.topk()
        latents = model.term_latents(term)
        target = model.target_of(term)
        if target is None:
            raise ConfigError(
                f"latent {term.value} has no attribute value in the interpretation of {model.run_dir}, so its "
                "share cannot be measured: sweep an attribute value instead (e.g. class=Western)"
            )
        field, value = target
        values, matrix = model.attribute(field)
        if value not in values:
            raise ConfigError(f"{field}={value} is not a value of the dataset's {field}")
        self.logger.info(
            f"steering sweep of {term.target} ({op} on latents {latents} at {model.steer_positions} positions; "
            f"share of {field}={value}) over strengths {strengths}"
        )
        unsteered = self._evaluate(test_data)
        rows = steering_sweep(
            model, test_data, strengths,
            edits_for=lambda s: [LatentEdit(latent, op, s) for latent in latents],
            evaluate=lambda: self._evaluate(test_data),
            values=values, attr_matrix=matrix, target_index=values.index(value),
            k=k, positions=model.steer_positions, log=self.logger.info,
        )
        result = {
            "target": term.target,
            "target_field": field,
            "target_value": value,
            "op": op,
            "positions": model.steer_positions,
            "k": k,
            "latents": self._latent_records(term),
            "strengths": strengths,
            "unsteered": unsteered,
            "rows": rows,
        }
        files = write_sweep(result, os.path.join(self.run_dir, "steering"), k)
        self.logger.info(f"steering sweep written to {files['csv']} (+ .json, .md, .png)")
        main = ["strength", "target_share", f"ndcg@{k}", f"hit@{k}", "coverage", "diversity", "diversity_attr"]
        return {
            **{key: result[key] for key in ("target", "target_field", "target_value", "op", "positions", "k", "latents")},
            "unsteered": {m: unsteered.get(m) for m in (f"ndcg@{k}", f"hit@{k}")},
            "table": [{c: row[c] for c in main} for row in rows],
            "files": files,
        }


def _r(x):
    return None if x is None else round(float(x), 6)
