"""Pure-PyTorch sparse autoencoders (no recommender dependencies).

Public API::

    from recbole_sae.sae import SAEConfig, SparseAutoencoder, SAETrainConfig, train_sae
    cfg = SAEConfig(d_in=64, d_sae=1024, activation="topk", k=16)
    sae = SparseAutoencoder(cfg)
    history = train_sae(sae, activations, SAETrainConfig(lr=1e-3, n_steps=2000))
    metrics = evaluate_sae(sae, activations)
    sae.save("out/sae"); sae = SparseAutoencoder.load("out/sae")
"""

from .config import ACTIVATIONS, B_DEC_INITS, NORMALIZATIONS, SAEConfig
from .io import CONFIG_NAME, WEIGHTS_NAME, load_sae, save_sae
from .metrics import evaluate_sae, latent_firing_rate
from .model import SparseAutoencoder, geometric_median, topk_mask
from .training import SAETrainConfig, lr_at_step, train_sae

__all__ = [
    "ACTIVATIONS",
    "B_DEC_INITS",
    "NORMALIZATIONS",
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "SAEConfig",
    "SAETrainConfig",
    "SparseAutoencoder",
    "evaluate_sae",
    "geometric_median",
    "latent_firing_rate",
    "load_sae",
    "lr_at_step",
    "save_sae",
    "topk_mask",
    "train_sae",
]
