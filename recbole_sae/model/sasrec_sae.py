r"""SASRecSAE: a SASRec whose hidden states are read through hooks and explained by a sparse autoencoder.

Klenitskiy, Polev, Denisova, Vasilev, Simakov, Gusev, "Sparse Autoencoders for Sequential
Recommendation Models: Interpretation and Flexible Control", arXiv 2507.12202 (2025).

The recommender is ``SASRecPlus`` (RecBole's SASRec network; full-sequence or prefix training).
The hidden state at ``sae_layer`` (the embedding block, a transformer block, or the last block)
and ``sae_positions`` (the last real position, or all real positions) is captured by a forward
hook; ``SASRecSAETrainer`` trains the SASRec (or loads ``sasrec_checkpoint``), freezes it, and
trains the SAE (``self.sae``, saved in the checkpoint and as safetensors) on those states.

``intervention`` switches what the site passes on during a forward pass:

* ``None``: the SASRec as is;
* ``"splice"``: the SAE reconstruction replaces the state;
* ``"splice_error"``: reconstruction plus the SAE's error term (exactly the state: a check);
* ``"ablate"``: the mean state over the SAE's training positions replaces it;
* a callable ``f -> f'`` on the latents: the edited reconstruction plus the error term
  (steering; see ``SteerableSASRec``).
"""

from __future__ import annotations

from logging import getLogger
from typing import Callable, Union

import torch

from recbole_sae.errors import ConfigError
from recbole_sae.model.hooks import HiddenSite, position_mask, replace_at
from recbole_sae.model.layers import trim
from recbole_sae.model.sasrec_plus import SASRecPlus
from recbole_sae.model.saved_run import adopt_run_config, load_run_checkpoint, load_run_weights, resolve_sae_run
from recbole_sae.sae import SAEConfig, SparseAutoencoder
from recbole_sae.textlist import split_list
from recbole_sae.validate import ABOVE_0, IN_0_1, WHOLE_AT_LEAST_0, WHOLE_AT_LEAST_1, check_ranges

logger = getLogger()

INTERVENTIONS = (None, "splice", "splice_error", "ablate")


def _int_list(value):
    """A yaml/CLI list of ints (``[32, 128]`` or ``"32,128"``) as a list; ``None`` stays ``None``."""
    if value is None:
        return None
    try:
        return [int(v) for v in split_list(value)]
    except (TypeError, ValueError):
        raise ConfigError(f"expected a list of integers such as [32,128], got {value!r}") from None


# The SAE stage's training keys (checked with the SAE's own when the config is built: they are read
# only after the SASRec stage has trained).
SAE_STAGE_RANGES = (
    (
        WHOLE_AT_LEAST_1,
        {
            "sae_expansion": 8,
            "sae_batch_size": 1024,
            "sae_epochs": 20,
            "sae_steps": 20000,
            "sae_log_every": 500,
            "sae_max_rows": 2000000,
            "interpretation_min_support": 10,
        },
    ),
    (WHOLE_AT_LEAST_0, {"sae_warmup_steps": 200}),
    (ABOVE_0, {"sae_lr": 0.001}),
    (IN_0_1, {"sae_holdout_frac": 0.1}),
)


def check_sae_settings(config) -> None:
    """The SAE's and its stage's keys, before any data is read or the SASRec stage trains."""
    check_ranges(config, SAE_STAGE_RANGES)
    sae_config_from(config, config["hidden_size"])


def sae_config_from(config, d_in: int) -> SAEConfig:
    """The SAE's config from the model's ``sae_*`` keys."""
    try:
        d_sae = config["sae_d_sae"] or int(config["sae_expansion"]) * d_in
        cfg = SAEConfig(
            d_in=d_in,
            d_sae=d_sae,
            activation=config["sae_activation"],
            k=config["sae_k"],
            l1_coeff=config["sae_l1_coeff"],
            aux_k=config["sae_aux_k"],
            aux_coeff=config["sae_aux_coeff"],
            dead_tokens_threshold=config["sae_dead_tokens_threshold"],
            normalize=config["sae_normalize"],
            b_dec_init=config["sae_b_dec_init"],
            seed=config["seed"],
            matryoshka=_int_list(config["sae_matryoshka"]),
        )
        cfg.validate()
    except ValueError as err:
        raise ConfigError(f"bad SAE setting: {err}") from None
    return cfg


class SASRecSAE(SASRecPlus):
    """SASRec + an SAE on one of its hidden states (see the module docstring)."""

    parent_model = "SASRec"
    # Whether the model only exists as a finished SASRecSAE run (sae_run) loaded: SteerableSASRec.
    requires_sae_run = False

    @classmethod
    def check_config(cls, config) -> None:
        """The SAE's keys, checked when the config is built, when this run trains the SAE (a loaded
        ``sae_run`` brings its own)."""
        if not (cls.requires_sae_run or config["sae_run"]):
            check_sae_settings(config)

    def __init__(self, config, dataset):
        run = None
        self.run_dir = self.checkpoint = None  # the sae_run loaded, if any
        if config["sae_run"] or self.requires_sae_run:
            if config["sasrec_checkpoint"]:
                raise ConfigError(
                    "sae_run and sasrec_checkpoint are both set: sae_run already loads the run's SASRec "
                    "(and its SAE); drop --sasrec_checkpoint, or drop --sae_run to train a new SAE on that SASRec"
                )
            run_dir, checkpoint = resolve_sae_run(config["sae_run"], config["model"])
            state = load_run_checkpoint(run_dir, checkpoint, config["model"], trust=bool(config["trust_checkpoint"]))
            # seed: the users held out of the SAE's training are drawn from it (SASRecSAE's reports)
            copied = adopt_run_config(config, state["config"], run_dir, extra_keys=("seed",))
            run = (run_dir, checkpoint, state, copied)
        super().__init__(config, dataset)
        self.site = HiddenSite(self, config["sae_layer"])
        self.sae_positions = config["sae_positions"]
        position_mask(torch.zeros(1, 1, dtype=torch.long), torch.ones(1, dtype=torch.long), self.sae_positions)
        self.sae = SparseAutoencoder(sae_config_from(config, self.hidden_size))
        self.register_buffer("ablation_mean", torch.zeros(self.hidden_size))
        self.intervention: Union[None, str, Callable] = None
        if run is not None:
            run_dir, checkpoint, state, copied = run
            load_run_weights(self, state, run_dir, checkpoint)
            self.run_dir, self.checkpoint = run_dir, checkpoint
            logger.info(
                f"{type(self).__name__}: SASRec + SAE ({self.sae.cfg.d_in}->{self.sae.cfg.d_sae}, "
                f"{self.sae.cfg.activation}) at {self.site.name} loaded from {checkpoint}; settings of the run: "
                + ", ".join(f"{k}={v}" for k, v in copied.items())
            )

    # -- forward with an optional edit at the site -------------------------------------------------
    def forward(self, item_seq, item_seq_len, all_positions: bool = False):
        self.site.positions = position_mask(trim(item_seq, item_seq_len), item_seq_len, self.sae_positions)
        if self.intervention is None:
            return super().forward(item_seq, item_seq_len, all_positions)
        with self.site.intervene(self._edit()):
            return super().forward(item_seq, item_seq_len, all_positions)

    def _edit(self):
        mode = self.intervention
        sae = self.sae
        if mode == "splice":
            return lambda out, pos: replace_at(out, pos, lambda x: sae(x)[0])
        if mode == "splice_error":
            return lambda out, pos: replace_at(out, pos, sae.reconstruct_with_error)
        if mode == "ablate":
            return lambda out, pos: replace_at(out, pos, lambda x: self.ablation_mean.expand_as(x))
        if callable(mode):
            return lambda out, pos: replace_at(out, pos, lambda x: sae.reconstruct_with_error(x, mode(sae.encode(x))))
        raise ConfigError(f"intervention must be one of {INTERVENTIONS} or a latent edit function, got {mode!r}")

    # -- reading the site --------------------------------------------------------------------------
    @torch.no_grad()
    def site_states(self, item_seq, item_seq_len, positions: str | None = None):
        """(states [N, H], items [N], rows [N]) at the site, at ``positions`` (default: the model's)."""
        positions = positions or self.sae_positions
        trimmed = trim(item_seq, item_seq_len)
        with self.site.capture() as outputs:
            SASRecPlus.forward(self, item_seq, item_seq_len, all_positions=True)
        mask = position_mask(trimmed, item_seq_len, positions)
        rows = torch.nonzero(mask)[:, 0]
        return outputs[-1][mask], trimmed[mask], rows

    @property
    def decoder_directions(self) -> torch.Tensor:
        """[d_sae, H] latent directions in the site's (raw) hidden space."""
        return self.sae.decoder_directions(raw=True)
