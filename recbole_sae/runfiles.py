"""The names of the files and folders in a run folder, spelled once.

A run folder holds what one run of ``run_recbole_sae`` wrote; other code (reloading a run, locking
and cleaning it up, resuming it, the sweeps that key runs by their inputs) finds the files by these
names. Standard library only.
"""

from __future__ import annotations

# Written into every run folder this project creates; also the file a run locks, which then names its process.
MARKER = ".recbole-sae-run"
CHECKPOINT = "model.pth"  # the trained model (RecBole's checkpoint, weights-only loadable)
CONFIG = "config.yaml"  # the run's resolved configuration
LOG = "run.log"  # the run's full log
RESULT = "result.json"  # the run's result; written last, when the run finishes
RESUME = "resume.pth"  # the training state last saved (validations, resume_every); deleted when the run finishes
FAILED = "FAILED"  # a failed run's error

# SASRecSAE's outputs (SteerableSASRec reads them from its sae_run)
SAE_DIR = "sae"  # the trained SAE (recbole_sae.sae.io)
SAE_REPORT = "sae_report.json"  # fidelity, interventions and interpretation summary
INTERPRETATION_DIR = "interpretation"  # the interpretation reports
INTERPRETATION_JSON = "interpretation.json"  # in INTERPRETATION_DIR

STEERING_DIR = "steering"  # SteerableSASRec's steering reports

# SAERec's intent stage (recbole_sae.intents.stage), a folder of the run
INTENT_STAGE_DIR = "intents"
INTENT_STAGE_MANIFEST = "stage.json"  # written last: marks the folder complete
INTENT_VOCABULARY_DIR = "vocabulary"
INTENT_INDEX = "index.faiss"
INTENT_ITEM_EMBEDDINGS = "item_embeddings.safetensors"
