"""The two-stage trainer of SASRecSAE, and the SAE evaluation and interpretation reports.

Stage 1 trains the SASRec (``SequenceTrainer``: full_sequence or prefix mode), or loads the
SASRec weights of ``sasrec_checkpoint``. Stage 2 freezes it, collects the hidden states at the
SAE's site over the training sequences (one row per user window, all real positions or the last
one), keeps ``sae_holdout_frac`` of the users out, and trains the SAE on the rest. The checkpoint
is then saved again with the SAE inside. With ``sae_run`` the model has loaded the SASRec and the
SAE of a finished run: nothing is trained, the states are collected and held out as in stage 2,
and only the reports below are computed again.

After the test, ``after_test`` reports: SAE fidelity on the held-out users' states (MSE, FVU,
L0, dead latents); the recommendation metrics on validation and test of the SASRec as is, with
the SAE reconstruction spliced in, with reconstruction plus error term, and with the site
mean-ablated, and "NDCG recovered" = (spliced - ablated) / (original - ablated); and the
interpretation of every latent against the dataset's item attributes, with the raw hidden
dimensions as the baseline (``interpretation/`` in the run folder).
"""

from __future__ import annotations

import math
import os

import torch

from recbole_sae import compat, runfiles
from recbole_sae.analysis.report import write_json
from recbole_sae.console import say
from recbole_sae.errors import CheckpointMismatchError
from recbole_sae.progress import Progress
from recbole_sae.sae import SAETrainConfig, evaluate_sae, train_sae
from recbole_sae.tables import round_metrics
from recbole_sae.trainer.sequence_trainer import LengthBatches, SequenceTrainer

SASREC_FAMILY = ("SASRec", "SASRecPlus", "SASRecSAE", "SteerableSASRec")
MODES = {"original": None, "spliced": "splice", "spliced_error": "splice_error", "ablated": "ablate"}
SAE_EPOCHS_CAP = 20  # sae_epochs: ~ = the run's epochs, at most this many


def sae_length(config, n_states: int) -> tuple[int, int, str]:
    """``(epochs, steps, what decided it)`` of the SAE stage: ``sae_steps`` when set, else
    ``sae_epochs`` passes, else as many passes as the run's ``epochs`` (at most 20): a short run
    (``--epochs=2``) has a short SAE stage."""
    batches = math.ceil(n_states / int(config["sae_batch_size"]))
    if config["sae_steps"]:
        steps = int(config["sae_steps"])
        return math.ceil(steps / batches), steps, "sae_steps"
    if config["sae_epochs"]:
        return int(config["sae_epochs"]), int(config["sae_epochs"]) * batches, "sae_epochs"
    epochs = max(1, min(SAE_EPOCHS_CAP, int(config["epochs"])))
    return epochs, epochs * batches, f"sae_epochs ~: the run's epochs, at most {SAE_EPOCHS_CAP}"


def load_sasrec_weights(model, checkpoint: str, trust: bool = False) -> dict:
    """Load the SASRec part of a SASRec-family checkpoint into ``model``; returns the checkpoint.
    ``trust``: unpickle a checkpoint that holds more than weights (``trust_checkpoint``)."""
    state = compat.load_checkpoint(checkpoint, trust=trust)
    source = state.get("config", {})["model"] if isinstance(state, dict) and "config" in state else None
    if source not in SASREC_FAMILY:
        raise CheckpointMismatchError(
            f"sasrec_checkpoint {checkpoint} holds a {source or 'non-RecBole'} model; "
            f"it must be one of {', '.join(SASREC_FAMILY)}"
        )
    weights = {k: v for k, v in state["state_dict"].items() if not k.startswith(("sae.", "ablation_mean"))}
    missing, unexpected = model.load_state_dict(weights, strict=False)
    missing = [k for k in missing if not k.startswith(("sae.", "ablation_mean"))]
    if missing or unexpected:
        raise CheckpointMismatchError(
            f"sasrec_checkpoint {checkpoint} does not fit this model (hidden_size, n_layers, "
            f"dataset?): missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    return state


class SASRecSAETrainer(SequenceTrainer):
    """Stage 1: the SASRec; stage 2: the SAE on its hidden states; then the reports."""

    def __init__(self, config, model):
        super().__init__(config, model)
        self.sae_history: list[dict] = []
        self.holdout = None  # (states, items) of the held-out users

    # -- stage 1 + 2 ---------------------------------------------------------------------------------
    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        if self.model.checkpoint:  # sae_run: the SASRec and the SAE are loaded; only the reports remain
            self.logger.info(f"stages 1 and 2: SASRec and SAE loaded from {self.model.checkpoint}; nothing is trained")
            score, result = self._valid_epoch(valid_data, show_progress=show_progress)
            self.best_valid_score, self.best_valid_result = score, result
            self._collect_and_hold_out(train_data)
            if saved:
                self._save_checkpoint(self.start_epoch, verbose=verbose)
            return score, result
        checkpoint = self.config["sasrec_checkpoint"]
        if checkpoint:
            load_sasrec_weights(self.model, checkpoint, trust=bool(self.config["trust_checkpoint"]))
            self.logger.info(f"stage 1: SASRec weights loaded from {checkpoint}")
            score, result = self._valid_epoch(valid_data, show_progress=show_progress)
            self.best_valid_score, self.best_valid_result = score, result
        else:
            score, result = super().fit(train_data, valid_data, verbose, saved, show_progress, callback_fn)
            if saved and os.path.isfile(self.saved_model_file):
                best = compat.load_checkpoint(self.saved_model_file, map_location=self.device)
                self.model.load_state_dict(best["state_dict"])
        self.train_stage_two(train_data, show_progress)
        if saved:
            self._save_checkpoint(self.start_epoch if checkpoint else self.cur_step, verbose=verbose)
        return score, result

    @torch.no_grad()
    def collect_states(self, train_data):
        """(states [N, H], items [N], users [N]) at the SAE site over the training sequences."""
        self.model.eval()
        batches = LengthBatches(train_data.dataset, self.config, full_sequence=True, bucketing=True)
        states, items, users = [], [], []
        with Progress("SAE stage: hidden states", len(batches), "batches") as meter:
            for batch in batches.epoch(0):
                batch = batch.to(self.device)
                s, i, rows = self.model.site_states(batch[self.model.ITEM_SEQ], batch[self.model.ITEM_SEQ_LEN])
                states.append(s.float().cpu())
                items.append(i.cpu())
                users.append(batch[batches.user_field][rows].cpu())
                meter.update()
        return torch.cat(states), torch.cat(items), torch.cat(users)

    def _collect_and_hold_out(self, train_data) -> torch.Tensor:
        """Collect the states, keep the held-out users' for the reports; the SAE's training states."""
        states, items, users = self.collect_states(train_data)
        held = self._holdout_mask(users)
        self.holdout = (states[held], items[held])
        return states[~held]

    def train_stage_two(self, train_data, show_progress=False):
        model = self.model
        for p in model.parameters():
            p.requires_grad_(False)
        train_states = self._collect_and_hold_out(train_data)
        cap = self.config["sae_max_rows"]
        if cap and train_states.size(0) > cap:
            pick = torch.randperm(train_states.size(0), generator=torch.Generator().manual_seed(self.config["seed"]))
            train_states = train_states[pick[:cap]]
        epochs, steps, source = sae_length(self.config, train_states.size(0))
        self._sae_steps = steps
        self.logger.info(
            f"stage 2: SAE {model.sae.cfg.d_in}->{model.sae.cfg.d_sae} ({model.sae.cfg.activation}) on "
            f"{train_states.size(0)} states at {model.site.name} ({model.sae_positions} positions); "
            f"{self.holdout[0].size(0)} states of held-out users for the reports"
        )
        say(
            f"SAE stage: {model.sae.cfg.d_in}->{model.sae.cfg.d_sae} {model.sae.cfg.activation} SAE on "
            f"{train_states.size(0):,} states at {model.site.name}, {epochs} epochs = {steps:,} steps ({source})"
        )
        model.ablation_mean.copy_(train_states.mean(0).to(model.ablation_mean))
        for p in model.sae.parameters():
            p.requires_grad_(True)
        cfg = SAETrainConfig(
            lr=self.config["sae_lr"],
            batch_size=self.config["sae_batch_size"],
            epochs=epochs,
            n_steps=steps,
            warmup_steps=self.config["sae_warmup_steps"],
            seed=self.config["seed"],
            device=str(self.device),
            show_progress=show_progress,
            log_every=self.config["sae_log_every"],
        )
        with Progress("SAE stage", steps, "steps") as meter:
            self.sae_history = train_sae(
                model.sae, train_states.to(self.device), cfg, log_fn=self._log_sae, progress_fn=meter
            )
        for p in model.sae.parameters():
            p.requires_grad_(False)
        model.eval()

    def _log_sae(self, record: dict):
        step = f"step={record['step']}/{getattr(self, '_sae_steps', '?')} "
        self.logger.info(
            "sae "
            + step
            + " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items() if k != "step")
        )

    def _holdout_mask(self, users: torch.Tensor) -> torch.Tensor:
        frac = float(self.config["sae_holdout_frac"])
        unique = torch.unique(users)
        gen = torch.Generator().manual_seed(self.config["seed"] + 17)
        n_held = max(1, int(round(frac * unique.numel()))) if frac > 0 else 0
        held_users = unique[torch.randperm(unique.numel(), generator=gen)[:n_held]]
        return torch.isin(users, held_users)

    # -- reports ------------------------------------------------------------------------------------
    def intervention_metrics(self, eval_data) -> dict:
        """Metrics of the SASRec as is / spliced / spliced + error / ablated on ``eval_data``."""
        out = {}
        try:
            for name, mode in MODES.items():
                self.model.intervention = mode
                result = self.evaluate(eval_data, load_best_model=False, show_progress=False)
                out[name] = round_metrics(result)
        finally:
            self.model.intervention = None
        return out

    def after_test(self, train_data, valid_data, test_data) -> dict:
        """Fidelity, intervention metrics and interpretation; written to the run folder."""
        run_dir = self.config["run_dir"] or os.path.dirname(self.saved_model_file)
        model = self.model
        model.sae.save(os.path.join(run_dir, runfiles.SAE_DIR))
        states, items = self.holdout
        fidelity = evaluate_sae(model.sae, states.to(self.device))
        interventions = {"valid": self.intervention_metrics(valid_data), "test": self.intervention_metrics(test_data)}
        metric = self.config["valid_metric"].lower()
        recovered = {split: ndcg_recovered(res, metric) for split, res in interventions.items()}
        fidelity = round_metrics(fidelity)
        interpretation = self.interpret(
            train_data.dataset,
            states,
            items,
            os.path.join(run_dir, runfiles.INTERPRETATION_DIR),
            fidelity={"fidelity": fidelity, "recovered": recovered},
        )
        report = {
            "site": model.site.name,
            "positions": model.sae_positions,
            "d_sae": model.sae.cfg.d_sae,
            "fidelity": fidelity,
            "interventions": interventions,
            "recovered": recovered,
            "interpretation": interpretation,
        }
        write_json(report, os.path.join(run_dir, runfiles.SAE_REPORT))
        return {"sae": report}

    def result_summary(self, extra: dict) -> dict:
        """The SAE report in the RESULT line: fidelity, NDCG recovered, monosemanticity ratio per field."""
        report = extra.get("sae") or {}
        fidelity = report.get("fidelity") or {}
        summary = {key: fidelity.get(key) for key in ("fvu", "l0", "dead_frac")}
        summary["recovered"] = {split: r.get("recovered") for split, r in (report.get("recovered") or {}).items()}
        summary["monosemanticity_ratio"] = {
            field: s.get("monosemanticity_ratio") for field, s in (report.get("interpretation") or {}).items()
        }
        return {"sae": summary}

    @torch.no_grad()
    def interpret(self, dataset, states, items, out_dir, fidelity=None) -> dict:
        """Latents vs the item attributes named by ``item_attributes``; summary per field. The reports
        show ``fidelity`` (the SAE's metrics and NDCG recovered) beside the interpretation."""
        from recbole_sae.analysis.interpretation import interpret
        from recbole_sae.analysis.report import write_interpretation_report
        from recbole_sae.data.item_text import item_attribute_matrix, item_titles

        fields = list(self.config["item_attributes"] or [])
        if not fields:
            self.logger.warning("no item_attributes configured: interpretation skipped")
            return {}
        model = self.model
        attributes = {field: item_attribute_matrix(dataset, field) for field in fields}
        acts = model.sae.encode(states.to(self.device)).cpu()
        result = interpret(
            acts,
            states,
            items,
            attributes,
            titles=item_titles(dataset, self.config),
            decoder_directions=model.decoder_directions.cpu(),
            item_embeddings=model.item_embedding.weight.detach().cpu(),
            min_support=self.config["interpretation_min_support"],
        )
        write_interpretation_report(
            result, out_dir, title=f"{self.config['model']} on {self.config['dataset']}", fidelity=fidelity
        )
        summary = {}
        for field, data in result["fields"].items():
            s = data["summary"]
            summary[field] = {
                "n_values": s["n_values"],
                "raw_mean_best_abs_corr": s["raw"]["mean_best_abs_corr"],
                "sae_mean_best_abs_corr": s["sae"]["mean_best_abs_corr"],
                "monosemanticity_ratio": s["ratio_corr"],
                "raw_mean_best_auc": s["raw"]["mean_best_auc"],
                "sae_mean_best_auc": s["sae"]["mean_best_auc"],
                "probe_mean_corr": s.get("probe_mean_corr"),
                "ratio_rare_values": s["by_frequency"]["rare"]["ratio_corr"],
                "ratio_common_values": s["by_frequency"]["common"]["ratio_corr"],
                "ratio_held_out": s.get("ratio_held_out"),
            }
        return summary


def ndcg_recovered(results: dict, metric: str = "ndcg@10") -> dict:
    """(spliced - ablated) / (original - ablated) of ``metric``; None when ablation costs nothing."""
    original, spliced, ablated = (results[k][metric] for k in ("original", "spliced", "ablated"))
    gap = original - ablated
    return {
        "metric": metric,
        "original": original,
        "spliced": spliced,
        "spliced_error": results["spliced_error"][metric],
        "ablated": ablated,
        "recovered": round((spliced - ablated) / gap, 4) if abs(gap) > 1e-12 else None,
    }
