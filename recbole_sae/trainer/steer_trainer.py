"""The trainer of SteerableSASRec: no training; the steered test report and the strength sweep.

``fit`` trains nothing: the model loaded its SASRec and SAE from ``sae_run``; ``fit`` checks them
on the validation data (against the SASRecSAE run's own report when it has one) and saves the
checkpoint of this run, which the pipeline's test then reads.

``after_test`` (merged into the run's RESULT):

* ``steer`` (``--steer="class=Western:+6"``): RecBole's test metrics unsteered and steered, the
  target value's share in the top-k lists before and after with its change, noise and verdict,
  list coverage and diversity, and a few users' lists before and after by title
  (``steering/steer.json``);
* ``steer_sweep`` (``--steer_sweep="class=Western" --strengths=-8,-4,0,4,8``): one row per strength
  (see ``recbole_sae.analysis.steering``), written to ``steering/sweep.{csv,json,md,png}``.

An edit that moves its target's share the wrong way, or by no more than the noise (2 standard
errors over users of the per-user change, ``recbole_sae.analysis.steering.share_change``), logs
one ``warning:`` line and records it under ``warnings``. The top-k lists rank as the run's headline
protocol: with ``filter_seen`` (the default) the user's earlier items are removed, as in the
NDCG and HR beside them.

Both keys (and ``strengths``) are config keys, so the Python API passes them in ``config_dict``.
Given on the command line (values holding ``=``, split at the first ``=`` by :mod:`recbole_sae.cli`)
they are used as the text typed there (the Config's ``cmd_args``), which wins over the config files
as any command-line key does.
"""

from __future__ import annotations

import json
import os

import torch

from recbole_sae import protocol, runfiles
from recbole_sae.analysis import steering
from recbole_sae.analysis.report import write_json
from recbole_sae.errors import ConfigError
from recbole_sae.model.steerable_sasrec import LatentEdit, parse_steer
from recbole_sae.tables import round_float, round_metrics
from recbole_sae.trainer.sequence_trainer import SequenceTrainer

STEER_KEYS = ("steer", "steer_sweep", "strengths")
HISTORY_SHOWN = 5


def checked_strengths(value) -> list:
    """``--strengths`` as numbers, or a :class:`ConfigError` that says what is wrong."""
    try:
        return steering.parse_strengths(value)
    except ValueError as err:
        raise ConfigError(f"--strengths: {err}") from None


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
        report_path = os.path.join(self.model.run_dir, runfiles.SAE_REPORT)
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
        """A steering key: the text typed on the command line when given there, else the config's value."""
        value = (getattr(self.config, "cmd_args", None) or {}).get(key)
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
        return round_metrics(self.evaluate(data, load_best_model=False, show_progress=False))

    # -- after the test ----------------------------------------------------------------------------
    def after_test(self, train_data, valid_data, test_data) -> dict:
        steer, sweep = self.setting("steer"), self.setting("steer_sweep")
        out = {}
        self.seen = None  # the headline protocol's seen items of the test users (filter_seen), for the lists
        if (
            (steer or sweep)
            and protocol.is_sequential(self.config)
            and protocol.headline(self.config) == protocol.SEEN_REMOVED
        ):
            self.seen = protocol.seen_tables(train_data, valid_data, test_data, self.config)[id(test_data)]
        if steer:
            out["steer"] = self.steer_report(str(steer), test_data)
        if sweep:
            out["steering"] = self.sweep(str(sweep), self.setting("strengths"), test_data)
        if not out:
            self.logger.info(
                "no --steer or --steer_sweep given: the test metrics are those of the unsteered model "
                '(e.g. --steer="class=Western:+6" or --steer_sweep="class=Western" --strengths=-8,-4,0,4,8)'
            )
        return out

    def steer_report(self, spec: str, test_data) -> dict:
        """Unsteered vs steered: RecBole's test metrics, target shares, list statistics, examples.
        The lists rank without the seen items of ``self.seen`` (set by ``after_test`` under ``filter_seen``)."""
        model = self.model
        k = self.topk()
        terms = parse_steer(spec)
        edits = model.resolve(terms)
        seen = getattr(self, "seen", None)
        unsteered = self._evaluate(test_data)
        users, before = steering.top_k_lists(model, test_data, k, seen=seen)
        with model.steer(edits):
            steered = self._evaluate(test_data)
            _, after = steering.top_k_lists(model, test_data, k, seen=seen)
        shares, warnings = self._share_checks(spec, terms, before, after, k)
        lists = {}
        emb = model.item_embedding.weight
        no_attribute = torch.zeros(model.n_items, 0, dtype=torch.bool)
        for name, top in (("unsteered", before), ("steered", after)):
            stats = steering.list_statistics(top, no_attribute, emb, model.n_items)
            lists[name] = {key: round_float(stats[key], nonfinite_none=False) for key in ("coverage", "diversity")}
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
            "warnings": warnings,
            "lists": lists,
            "examples": self._examples(test_data, users, before, after),
        }
        path = write_json(report, os.path.join(self.run_dir, runfiles.STEERING_DIR, "steer.json"))
        report["file"] = str(path)
        self._log_steer(report, k)
        return report

    def _share_checks(self, spec: str, terms, before, after, k: int) -> tuple[dict, list]:
        """Per target value of the terms: its share before and after, the change, its noise and the
        verdict (``share_change``); and the ``warning:`` lines of those that did not do their job."""
        model = self.model
        targets = list(dict.fromkeys(t for t in (model.target_of(term) for term in terms) if t is not None))
        shares, warnings = {}, []
        emb = model.item_embedding.weight
        for field, value in targets:
            values, matrix = model.attribute(field)
            index = values.index(value) if value in values else None
            b = steering.list_statistics(before, matrix, emb, model.n_items, index)
            a = steering.list_statistics(after, matrix, emb, model.n_items, index)
            record = {
                "unsteered": round_float(b["target_share"], nonfinite_none=False),
                "steered": round_float(a["target_share"], nonfinite_none=False),
            }
            if index is not None:
                aimed = [term for term in terms if model.target_of(term) == (field, value)]
                record.update(steering.share_change(before, after, matrix, index, self._direction(aimed)))
                line = steering.share_warning(
                    spec, f"{field}={value}", k, record["unsteered"], record["steered"], record
                )
                if line:
                    warnings.append(line)
            shares[f"{field}={value}"] = record
        return shares, warnings

    def _direction(self, terms):
        """The way the terms together should move their target's share: +1, -1, 0 (no edit) or None
        (terms that pull both ways)."""
        ways = {steering.edit_direction(t.op or "add", t.strength, self.model.target_sign(t)) for t in terms}
        ways.discard(0)
        return 0 if not ways else (ways.pop() if len(ways) == 1 else None)

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
            out.append(
                {
                    "user": str(tokens[int(users[b])]),
                    "history_last": [name(i) for i in history],
                    "unsteered": [name(i) for i in before[b].tolist()],
                    "steered": [name(i) for i in after[b].tolist()],
                }
            )
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
            check = (
                f" (change {share['change']:+.3g}, noise +-{share['noise']:.3g}: {share['verdict']})"
                if "verdict" in share
                else ""
            )
            log(f"share of {target} in the top-{k}: {share['unsteered']} -> {share['steered']}{check}")
        for line in report["warnings"]:
            self.logger.warning(line)
        for ex in report["examples"]:
            log(f"user {ex['user']} (last: {' | '.join(ex['history_last'])})")
            log(f"  unsteered: {' | '.join(ex['unsteered'])}")
            log(f"  steered:   {' | '.join(ex['steered'])}")

    def sweep(self, spec: str, strengths, test_data) -> dict:
        """The strength sweep of one target (see ``recbole_sae.analysis.steering``)."""
        model = self.model
        term, op, latents, (field, value) = self._sweep_target(spec)
        strengths = checked_strengths(strengths)
        k = self.topk()
        values, matrix = model.attribute(field)
        index, seen = values.index(value), getattr(self, "seen", None)
        self.logger.info(
            f"steering sweep of {term.target} ({op} on latents {latents} at {model.steer_positions} positions; "
            f"share of {field}={value}) over strengths {strengths}"
        )
        unsteered = self._evaluate(test_data)
        _, baseline = steering.top_k_lists(model, test_data, k, seen=seen)
        base = steering.list_statistics(baseline, matrix, model.item_embedding.weight, model.n_items, index)
        base_share = round_float(base["target_share"], nonfinite_none=False)
        sign = model.target_sign(term)
        rows = steering.steering_sweep(
            model,
            test_data,
            strengths,
            edits_for=lambda s: [LatentEdit(latent, op, s) for latent in latents],
            evaluate=lambda: self._evaluate(test_data),
            values=values,
            attr_matrix=matrix,
            target_index=index,
            k=k,
            positions=model.steer_positions,
            log=self.logger.info,
            direction_for=lambda s: steering.edit_direction(op, s, sign),
            seen=seen,
            baseline=baseline,
        )
        warning = steering.sweep_warning(term.target, k, rows, base_share)
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
            "unsteered_share": base_share,
            "warnings": [warning] if warning else [],
            "rows": rows,
        }
        files = steering.write_sweep(result, os.path.join(self.run_dir, runfiles.STEERING_DIR), k)
        self.logger.info(f"steering sweep written to {files['csv']} (+ .json, .md, .png)")
        if warning:
            self.logger.warning(warning)
        main, _ = steering.sweep_columns(rows, value, k)
        return {
            **{
                key: result[key]
                for key in (
                    "target",
                    "target_field",
                    "target_value",
                    "op",
                    "positions",
                    "k",
                    "latents",
                    "unsteered_share",
                    "warnings",
                )
            },
            "unsteered": {m: unsteered.get(m) for m in (f"ndcg@{k}", f"hit@{k}")},
            "table": [{c: row[c] for c in main} for row in rows],
            "files": files,
        }

    def _sweep_target(self, spec: str):
        """``(term, op, latents, (field, value))`` of a ``steer_sweep`` text, or a ConfigError."""
        model = self.model
        terms = parse_steer(spec, require_strength=False)
        if len(terms) != 1:
            raise ConfigError(f"steer_sweep takes one target (e.g. class=Western), got {len(terms)}: '{spec}'")
        term = terms[0]
        if term.strength is not None:
            raise ConfigError(
                f"steer_sweep '{spec}' names a strength; the strengths come from --strengths: "
                f'write --steer_sweep="{term.target}" (or {term.target}:clamp / {term.target}:scale)'
            )
        latents = model.term_latents(term)
        target = model.target_of(term)
        if target is None:
            raise ConfigError(
                f"latent {term.value} has no attribute value in the interpretation of {model.run_dir}, so its "
                "share cannot be measured: sweep an attribute value instead (e.g. class=Western)"
            )
        field, value = target
        if value not in model.attribute(field)[0]:
            raise ConfigError(f"{field}={value} is not a value of the dataset's {field}")
        return term, term.op or "add", latents, target
