"""SAERec's trainer: SequenceTrainer plus the intent table, explanations and faithfulness in the run folder."""

from __future__ import annotations

import os

from recbole_sae.trainer.sequence_trainer import SequenceTrainer


class SAERecTrainer(SequenceTrainer):
    def after_test(self, train_data, valid_data, test_data) -> dict:
        """Write ``intents/`` in the run folder (:func:`recbole_sae.intents.explain.write_run_explanations`)."""
        from recbole_sae.intents.explain import write_run_explanations

        run_dir = self.config["run_dir"] or os.path.dirname(self.saved_model_file)
        summary, table = write_run_explanations(self.config, self.model, train_data, test_data, self.device, run_dir)
        self.logger.info("intent table:\n" + table)
        self.logger.info(f"explanation faithfulness: {summary['faithfulness']}")
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
