"""Shared fixtures: a tiny atomic dataset, the shared amazon-beauty folder."""

from __future__ import annotations

import os
import random
import signal
from pathlib import Path

import pytest
import torch
import yaml

# The tests use tiny tensors: one thread avoids the oversubscription that makes them many times
# slower on a busy 2-core machine.
torch.set_num_threads(1)

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets"
if not os.environ.get("RECBOLE_SAE_DATA") and SHARED_DATA.is_dir():
    os.environ["RECBOLE_SAE_DATA"] = str(SHARED_DATA)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

GENRES = ["Western", "Horror", "Comedy", "Drama", "SciFi"]

# A small intent vocabulary for SAERec on the tiny dataset.
INTENT_SMALL = {
    "intent_sae_d_sae": 64,
    "intent_sae_k": 4,
    "intent_sae_epochs": 30,
    "intent_min_items": 2,
    "intent_max_items_frac": 0.5,
    "n_personal_intents": 3,
    "n_public_intents": 2,
    "intent_layers": 1,
    "n_heads": 1,
    # the paper's architecture (the tests exercise its branches; the shipped default adds the items'
    # text and intents and leaves the branches off: tests/model/test_saerec.py checks that default)
    "intent_personal": True,
    "intent_public": True,
    "item_text": False,
    "item_intent_codes": False,
}

# A small model for pipeline tests: fast on a 2-core CPU.
SMALL = {
    "hidden_size": 16,
    "inner_size": 32,
    "n_layers": 1,
    "n_heads": 1,
    "MAX_ITEM_LIST_LENGTH": 10,
    "epochs": 1,
    "train_batch_size": 128,
    "eval_batch_size": 256,
    "show_progress": False,
}


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread in every test, whatever an earlier test or a library call set."""
    torch.set_num_threads(1)
    yield


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run in a temporary folder: RecBole writes log/, log_tensorboard/ and saved/ relative to it."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_tiny_dataset(root: Path, name: str = "tiny", n_users: int = 80, n_items: int = 40, seed: int = 0) -> Path:
    """Atomic files of a small sequential dataset whose users prefer one genre each.

    Item i has genre GENRES[i % 5]; each user draws mostly from one genre, so there is structure
    for a recommender and an SAE to find.
    """
    rng = random.Random(seed)
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{name}.item", "w") as f:
        f.write("item_id:token\ttitle:token\tgenre:token_seq\n")
        for i in range(1, n_items + 1):
            genre = GENRES[i % len(GENRES)]
            extra = " Drama" if i % 7 == 0 and genre != "Drama" else ""
            f.write(f"{i}\tMovie {i} of {genre}\t{genre}{extra}\n")
    with open(folder / f"{name}.inter", "w") as f:
        f.write("user_id:token\titem_id:token\ttimestamp:float\n")
        for u in range(1, n_users + 1):
            favourite = u % len(GENRES)
            own = [i for i in range(1, n_items + 1) if i % len(GENRES) == favourite]
            length = rng.randint(8, 14)
            seq = [rng.choice(own) if rng.random() < 0.8 else rng.randint(1, n_items) for _ in range(length)]
            for t, item in enumerate(seq):
                f.write(f"{u}\t{item}\t{t}\n")
    with open(folder / f"{name}.yaml", "w") as f:
        f.write(
            "load_col: {inter: [user_id, item_id, timestamp], item: [item_id, title, genre]}\n"
            "item_attributes: [genre]\n"
            "item_text_fields: [title, genre]\n"
            "item_text_template: '{title}. Genre: {genre}.'\n"
            "item_title_field: title\n"
        )
    return folder


@pytest.fixture
def tiny_dataset(tmp_path):
    """(data_path, dataset name, config file) of the tiny dataset."""
    folder = write_tiny_dataset(tmp_path / "data")
    return str(folder.parent), "tiny", str(folder / "tiny.yaml")


def shared_dataset_available(name: str = "amazon-beauty") -> bool:
    base = os.environ.get("RECBOLE_SAE_DATA")
    return bool(base) and (Path(base) / name / f"{name}.inter").is_file()


def build(model: str, dataset: str = "tiny", data_path: str | None = None, config_files=None, **overrides):
    """(config, dataset, train_data, valid_data, test_data) through the project's Config."""
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import init_seed

    from recbole_sae.config import Config

    config_dict = {**SMALL, **overrides}
    if data_path:
        config_dict["data_path"] = data_path
    config = Config(model, dataset, config_files, config_dict)
    init_seed(config["seed"], config["reproducibility"])
    data = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, data)
    return config, data, train_data, valid_data, test_data


@pytest.fixture
def tiny_build(tiny_dataset, in_tmp):
    """``build`` bound to the tiny dataset."""
    data_path, name, yaml_file = tiny_dataset

    def make(model: str, **overrides):
        return build(model, name, data_path, [yaml_file], **overrides)

    return make


@pytest.fixture
def saerec_of(tiny_build, tmp_path):
    """``make(**overrides) -> SAERec`` on the tiny dataset (training mode), over one intent stage per
    (directions, seed), built once."""
    from recbole_sae.intents.stage import IntentStage
    from recbole_sae.model.saerec import SAERec

    stages = {}

    def make(**overrides):
        cfg, _, train, *_ = tiny_build(
            "SAERec", intent_cache_dir=str(tmp_path / "cache"), **{**INTENT_SMALL, **overrides}
        )
        key = (cfg["intent_directions"], cfg["seed"])
        if key not in stages:
            stages[key] = IntentStage.build(cfg, train.dataset)
        torch.manual_seed(0)
        return SAERec(cfg, train.dataset, stages[key])

    return make


@pytest.fixture
def sweep_file(tiny_dataset, in_tmp):
    """Write a sweep over the tiny dataset; keyword arguments replace or add sweep keys."""
    data_path, name, yaml_file = tiny_dataset

    def write(**keys) -> Path:
        data = {
            "name": "t",
            "models": ["SASRec"],
            "datasets": [name],
            "seeds": [1],
            "config_files": [yaml_file],
            "config": {**SMALL, "data_path": data_path, "stopping_step": 1},
            "model_config": {"GRU4Rec": {"embedding_size": 16}},
            "torch_threads": 1,
            **keys,
        }
        path = in_tmp / "sweep.yaml"
        path.write_text(yaml.safe_dump(data), encoding="utf-8")
        return path

    return write


@pytest.fixture
def ctrl_c():
    """SIGINT raises KeyboardInterrupt during the test, as Ctrl-C in a terminal does. A process that a
    shell without job control starts in the background (``cmd &`` in a script) inherits SIGINT
    ignored; Python then keeps it ignored, and neither a SIGINT nor ``_thread.interrupt_main()``
    reaches the code under test."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)
