"""SAERec's trainer: SequenceTrainer plus the intent table, explanations and faithfulness in the run folder."""

from __future__ import annotations

import os

from recbole_sae import runfiles
from recbole_sae.analysis.report import write_json
from recbole_sae.fileio import write_text_atomic
from recbole_sae.trainer.sequence_trainer import SequenceTrainer


class SAERecTrainer(SequenceTrainer):
    def after_test(self, train_data, valid_data, test_data) -> dict:
        """Write ``intents/``: the stage (when not yet there), ``intents.md``, ``explanations.json``
        (example users and the faithfulness figure) and one HTML page per example user."""
        from recbole_sae.data.item_text import item_titles
        from recbole_sae.intents.explain import explanation_records, faithfulness, history_exclusion, write_html
        from recbole_sae.intents.stage import stage_folder

        model = self.model
        run_dir = self.config["run_dir"] or os.path.dirname(self.saved_model_file)
        folder = str(stage_folder(run_dir))
        if not os.path.isfile(os.path.join(folder, runfiles.INTENT_STAGE_MANIFEST)):
            model.stage.save(folder)
        table = model.vocabulary.table(n=int(self.config["intent_table_rows"] or 20))
        write_text_atomic(table + "\n", os.path.join(folder, "intents.md"))
        dataset = train_data.dataset
        titles = item_titles(dataset, self.config)
        batch = next(iter(test_data))
        n = int(self.config["explain_users"] or 3)
        interaction = batch[0].to(self.device)
        exclude = history_exclusion(batch, len(interaction), model.n_items, self.device)
        records = explanation_records(model, interaction[:n], k=10, exclude=None if exclude is None else exclude[:n])
        pages = os.path.join(folder, "explanations")
        for record in records:
            record["top_titles"] = [titles[i] for i in record["top_items"]]
            record["history_titles"] = [titles[i] for i in record["history"]]
            if record["user"] is not None:
                record["user_token"] = str(dataset.id2token(dataset.uid_field, record["user"]))
            record["page"] = os.path.relpath(write_html(record, titles, pages), folder)
        faith = faithfulness(
            model, test_data, n_users=int(self.config["faithfulness_users"] or 1000), seed=int(self.config["seed"])
        )
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
        self.logger.info("intent table:\n" + table)
        self.logger.info(f"explanation faithfulness: {faith}")
        return {"intents": summary}

    def result_summary(self, extra: dict) -> dict:
        """The intents in the RESULT line: how many, the retrieval, the explanations' faithfulness."""
        intents = extra.get("intents") or {}
        faith = intents.get("faithfulness") or {}
        summary = {key: intents.get(key) for key in ("n_latents", "n_alive", "n_kept", "retrieval")}
        # the ratio of mean drops is undefined (None) when removing a random intent raises the score on
        # average; the share of items whose top-attributed intent drops it more is always defined
        summary["faithfulness_ratio"] = faith.get("ratio")
        summary["faithfulness_share"] = faith.get("share_top_above_random")
        return {"intents": summary}
