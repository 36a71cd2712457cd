"""Training one run on several processes (recbole_sae.distributed): 2 processes with gloo on the CPU.

Two processes train the same model as one process: the same batches, each split between them, the
gradients all-reduced. Without dropout the only difference is the order of floating-point sums (each
process sums the loss over its rows, then the two gradients are averaged), so the weights agree to
float32 rounding and the metrics (RecBole rounds them to 4 decimals) to the last decimal. The
tolerances below (weights 1e-4, metrics 1e-3) leave room for that rounding, not for a different
optimisation: one user more or less among the tiny dataset's 80 moves a metric by >= 0.0125.
"""

from __future__ import annotations

import json
import os

import pytest
import torch
from conftest import SMALL
from torch.utils.data.distributed import DistributedSampler

from recbole_sae.distributed import interleave, share

NO_DROPOUT = {"hidden_dropout_prob": 0.0, "attn_dropout_prob": 0.0}


def test_interleave_gives_one_process_order():
    """Rows that RecBole's DistributedSampler hands out (padded to a multiple of the processes) come
    back in the order of one process, without the padding."""
    for n in (1, 5, 7, 8):
        for world in (2, 3):
            parts = [
                torch.tensor(list(DistributedSampler(list(range(n)), num_replicas=world, rank=r, shuffle=False)))
                for r in range(world)
            ]
            assert interleave(parts, n).tolist() == list(range(n))
            rows = interleave([torch.stack([p, -p], 1) for p in parts], n)
            assert rows[:, 0].tolist() == list(range(n)) and rows[:, 1].tolist() == [-i for i in range(n)]


def test_each_batch_is_shared_out_disjointly(tiny_build):
    from recbole_sae.trainer.sequence_trainer import LengthBatches

    config, _, train_data, _, _ = tiny_build("SASRecPlus", train_batch_size=64)
    batches = LengthBatches(train_data.dataset, config, full_sequence=True)
    index_batches = batches.index_batches(0)
    assert len(index_batches) > 3
    for index in index_batches:
        parts = [share(index, rank, 2) for rank in range(2)]
        assert torch.equal(torch.cat(parts), index)
        assert sum(batches.count(p) for p in parts) == batches.count(index) > 0
    assert [b.tolist() for b in index_batches] == [
        b.tolist() for b in batches.index_batches(0)
    ]  # same in every process
    single = share(torch.tensor([7]), 1, 2)
    assert single.numel() == 0 and batches.count(single) == 0  # a process without rows in a batch


def _run(tiny_dataset, tmp, **overrides) -> dict:
    from recbole_sae.quick_start import run_recbole_sae

    data_path, name, yaml_file = tiny_dataset
    config = {
        **SMALL,
        **NO_DROPOUT,
        "data_path": data_path,
        "epochs": 2,
        "train_batch_size": 64,
        "checkpoint_dir": str(tmp / "runs"),
        **overrides,
    }
    return run_recbole_sae("SASRecPlus", name, [yaml_file], config)


def _weights(run_dir) -> dict:
    from recbole_sae import compat

    return compat.load_checkpoint(os.path.join(run_dir, "model.pth"))["state_dict"]


def test_two_processes_train_as_one(tiny_dataset, in_tmp):
    one = _run(tiny_dataset, in_tmp)
    two = _run(tiny_dataset, in_tmp, nproc=2)
    assert two["processes"] == 2 and "processes" not in one
    for split in ("best_valid", "test"):
        for protocol_metrics in (lambda r, s=split: r[s], lambda r, s=split: r["seen_kept"][s]):  # both protocols
            expected, got = protocol_metrics(one), protocol_metrics(two)
            assert expected.keys() == got.keys()
            for key in expected:
                assert got[key] == pytest.approx(expected[key], abs=1e-3), (split, key)
    assert two["best_epoch"] == one["best_epoch"] and two["epochs_run"] == one["epochs_run"] == 2
    assert two["target_seen_before"] == one["target_seen_before"]
    a, b = _weights(one["run_dir"]), _weights(two["run_dir"])
    for key in a:
        # not the attention's key biases: adding one number to all of a query's scores leaves the softmax
        # as it is, so their gradient is 0 but for float rounding, which Adam scales up to lr-sized steps
        # (on ml-100k they differ by up to 9e-3 after 10 epochs, every other weight by < 4e-5)
        if not key.endswith("key.bias"):
            assert torch.allclose(a[key], b[key], atol=1e-4), key
    # one run folder, written once: its result is the result returned
    assert len(os.listdir(in_tmp / "runs")) == 2
    with open(os.path.join(two["run_dir"], "result.json"), encoding="utf-8") as f:
        assert json.load(f) == two
    assert {"config.yaml", "run.log", "model.pth"} <= set(os.listdir(two["run_dir"]))
    assert not os.path.exists(os.path.join(two["run_dir"], "resume.pth"))
    log = open(os.path.join(two["run_dir"], "run.log"), encoding="utf-8").read()
    assert log.count("epoch 1 training") == 1  # rank 0 only


def _two_process_argv(tiny_dataset, *extra: str, model: str = "SASRecPlus") -> list:
    """The command line of a two-process run of ``model`` on the tiny data, run folders under ./runs."""
    data_path, name, yaml_file = tiny_dataset
    return [
        f"--model={model}",
        f"--dataset={name}",
        f"--config_files={yaml_file}",
        f"--data_path={data_path}",
        "--nproc=2",
        *extra,
        "--checkpoint_dir=runs",
    ]


def test_an_error_in_the_processes_is_one_error_line(tiny_dataset, in_tmp, capsys):
    """Bad input found inside the processes (after the data is built) ends as from one process: one
    'error:' line, exit 2, the run folder marked failed."""
    from recbole_sae.cli import main

    code = main(
        _two_process_argv(
            tiny_dataset,
            "--epochs=1",
            "--hidden_size=16",
            "--inner_size=16",
            "--n_layers=1",
            "--n_heads=1",
            "--MAX_ITEM_LIST_LENGTH=10",
            "--full_sequence_stride=50",
        )
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("error: full_sequence_stride must be in 1..MAX_ITEM_LIST_LENGTH (10)")
    (folder,) = os.listdir(in_tmp / "runs")
    assert os.path.isfile(in_tmp / "runs" / folder / "FAILED")


@pytest.mark.parametrize("model", ["SAERec", "SASRecSAE", "SteerableSASRec"])
def test_models_with_one_process_stages_refuse_several(model, tiny_dataset, in_tmp, capsys):
    from recbole_sae.cli import main

    code = main(_two_process_argv(tiny_dataset, model=model))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith(f"error: --nproc=2: {model} trains in one process")
    assert not (in_tmp / "runs").exists()  # refused before a run folder exists


def test_training_across_machines_is_refused(tiny_dataset, in_tmp, capsys):
    from recbole_sae.cli import main

    code = main(_two_process_argv(tiny_dataset, "--world_size=4"))
    assert code == 2
    assert "training across machines is not supported" in capsys.readouterr().err


def test_a_recbole_model_trains_on_two_processes(tiny_dataset, in_tmp):
    """RecBole's own trainer in its multi-process mode, made to run on the CPU (gloo, DDP without
    device ids): RecBole's sharded batches, the plugin's gathered evaluation."""
    from recbole_sae.quick_start import run_recbole_sae

    data_path, name, yaml_file = tiny_dataset
    config = {**SMALL, "data_path": data_path, "checkpoint_dir": str(in_tmp / "runs"), "nproc": 2}
    result = run_recbole_sae("SASRec", name, [yaml_file], config)
    assert result["processes"] == 2 and result["epochs_run"] == 1
    assert 0 < result["test"]["hit@20"] <= 1 and result["test"].keys() == result["seen_kept"]["test"].keys()


def test_a_run_of_two_processes_reloads_in_one(tiny_dataset, in_tmp):
    """The saved config of a 2-process run says ``single_spec: False`` and ``local_rank: 0``: reloaded,
    it is a one-process config (no process group, no DistributedSampler) and the model is the run's."""
    from recbole_sae.quick_start import load_data_and_model

    result = _run(tiny_dataset, in_tmp, nproc=2, epochs=1)
    config, model, _, _, _, test_data = load_data_and_model(result["run_dir"])
    assert config["single_spec"] is True and config["nproc"] == 1
    assert test_data.sampler is None or "Distributed" not in type(test_data.sampler).__name__
    for key, value in _weights(result["run_dir"]).items():
        assert torch.equal(model.state_dict()[key], value)


def _rank_0_aborts_leaving_the_group(rank, run_args, keys, queue):
    """A process of the run whose rank 0 is killed by SIGABRT inside ``destroy_process_group``, as gloo
    can kill it there when its peer has already closed the connection."""
    from recbole_sae import distributed

    if rank == 0:
        distributed.dist.destroy_process_group = os.abort
    distributed._process(rank, run_args, keys, queue)


def _rank_1_aborts_in_the_run(rank, run_args, keys, queue):
    from recbole_sae import distributed

    if rank == 1:
        os.abort()
    distributed._process(rank, run_args, keys, queue)


def test_a_process_killed_leaving_the_group_after_the_run_leaves_it_complete(tiny_dataset, in_tmp, monkeypatch, caplog):
    """Both processes ended the run (rank 0 wrote the folder), then one dies by a signal as it leaves
    the process group: the run's result, not a failed run (as such a run failed before the processes
    reported their end)."""
    from recbole_sae import distributed

    monkeypatch.setattr(distributed, "_process", _rank_0_aborts_leaving_the_group)
    with caplog.at_level("INFO"):
        result = _run(tiny_dataset, in_tmp, nproc=2, epochs=1)
    assert result["processes"] == 2 and result["epochs_run"] == 1
    with open(os.path.join(result["run_dir"], "result.json"), encoding="utf-8") as f:
        assert json.load(f) == result
    assert not os.path.exists(os.path.join(result["run_dir"], "FAILED"))
    assert "process 0 ended with SIGABRT while leaving the process group" in caplog.text


def test_a_process_killed_in_the_run_fails_it(tiny_dataset, in_tmp, monkeypatch):
    from torch.multiprocessing import ProcessExitedException

    from recbole_sae import distributed

    monkeypatch.setattr(distributed, "_process", _rank_1_aborts_in_the_run)
    with pytest.raises(ProcessExitedException, match="process 1 terminated with signal SIGABRT"):
        _run(tiny_dataset, in_tmp, nproc=2, epochs=1)
    (folder,) = os.listdir(in_tmp / "runs")
    assert os.path.isfile(in_tmp / "runs" / folder / "FAILED")
