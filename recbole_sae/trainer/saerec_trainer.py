"""SAERec's trainer: SequenceTrainer plus the intent table and example explanations in the run folder."""

from __future__ import annotations

import os

from recbole_sae.analysis.report import write_json
from recbole_sae.trainer.sequence_trainer import SequenceTrainer


class SAERecTrainer(SequenceTrainer):
    def after_test(self, train_data, valid_data, test_data) -> dict:
        """Save the intents (vocabulary, index, table) and explain a few test users."""
        model = self.model
        run_dir = self.config["run_dir"] or os.path.dirname(self.saved_model_file)
        folder = os.path.join(run_dir, "intents")
        model.vocabulary.save(os.path.join(folder, "vocabulary"))
        model.index.save(os.path.join(folder, "index.faiss"))
        table = model.vocabulary.table(n=int(self.config["intent_table_rows"] or 20))
        with open(os.path.join(folder, "intents.md"), "w", encoding="utf-8") as f:
            f.write(table + "\n")
        batch = next(iter(test_data))[0].to(self.device)
        n = int(self.config["explain_users"] or 3)
        explanations = model.explain(batch[:n], k=10)
        titles = _titles(train_data.dataset, self.config)
        for record in explanations:
            record["top_titles"] = [titles[i] for i in record["top_items"]]
            if record["user"] is not None:
                record["user_token"] = str(train_data.dataset.id2token(train_data.dataset.uid_field, record["user"]))
        write_json(explanations, os.path.join(folder, "explanations.json"))
        public = [{"intent": int(i), "label": model.intent_labels[i]} for i in model.public_ids.tolist()]
        summary = {
            "n_latents": model.vocabulary.n_latents,
            "n_alive": model.vocabulary.n_alive,
            "n_kept": model.vocabulary.n_kept,
            "public_intents": public,
            "faiss_on_gpu": bool(model.index.on_gpu),
            "intents_dir": folder,
        }
        self.logger.info("intent table:\n" + table)
        return {"intents": summary}


def _titles(dataset, config):
    from recbole_sae.data.item_text import item_titles

    return item_titles(dataset, config)
