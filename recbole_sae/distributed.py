"""Training one run on several processes: RecBole's multi-process mode (torch.distributed) for the plugin.

``--nproc=N`` starts N processes on this machine (``torch.multiprocessing.spawn``, as RecBole's own
``run``), one per GPU with the ``nccl`` backend (``--gpu_id=0,1,...`` lists them), or on the CPU with
``gloo``. What each part does:

* **the run folder**: the starting process claims and locks it once, and marks it failed if a process
  fails; the processes write into it from rank 0 only (``run.log``, ``config.yaml``, ``model.pth``,
  ``resume.pth``, ``result.json``), and rank 0's result is the run's result (the ``RESULT`` line).
  The processes leave the group together once all have ended (a last barrier): a process killed by a
  signal while leaving it, after every process reported its end, leaves the run complete (a console
  line says so) rather than failed.
* **process group**: each process builds the run's Config with its ``local_rank``; :func:`init_device`
  (the plugin Config's ``_init_device``) joins the group, RecBole's trainer wraps the model in
  ``DistributedDataParallel`` (its weights broadcast from rank 0) and all-reduces the gradients.
* **SASRecPlus' own batches** (``train_mode: full_sequence``, length bucketing): every process builds
  the same epoch of batches (same data, same shuffling seed) and takes a disjoint share of the rows
  of each batch (:func:`share`); its loss is weighted by its share of the batch's targets, so that
  the all-reduced gradient is the gradient of the one-process batch (the same optimisation as one
  process with the same ``train_batch_size``, the work split N ways; see :func:`train_epoch`).
  RecBole's models and ``train_mode: prefix`` without bucketing train as RecBole does in this mode
  (``DistributedSampler``, ``train_batch_size / N`` rows per process and step).
* **evaluation**: RecBole hands each process a share of the users; each ranks its share, and the
  per-user rankings are gathered (in the order of one process) before the metrics are computed
  (:func:`attach`), so that the metrics are those of one process evaluating the same model, under
  both protocols of :mod:`recbole_sae.protocol`. RecBole's own average of per-process metrics
  (weighted by batches, rounded) is not used.

SASRecSAE, SteerableSASRec and SAERec (SAE and intent stages on one process) refuse ``nproc > 1``;
so does training across machines (``world_size`` other than ``nproc``, ``offset`` other than 0).
"""

from __future__ import annotations

import gc
import os
import socket

import torch
import torch.distributed as dist

from recbole_sae import console, errors, resume
from recbole_sae.errors import ConfigError, RecboleSAEError

SINGLE_PROCESS_PLUGIN_MODELS = ("SASRecSAE", "SteerableSASRec", "SAERec")
# Per-user rows of RecBole's evaluation collector (one row per evaluated user, in loader order).
ROW_KEYS = ("rec.items", "rec.topk", "rec.meanrank", "rec.score", "data.label")


# -- where this process stands ----------------------------------------------------------------------
def world_size(config) -> int:
    nproc = int(config["nproc"] or 1)
    world = config["world_size"]
    return nproc if world is None or int(world) <= 0 else int(world)


def active(config) -> bool:
    """A process of a multi-process run."""
    return config["single_spec"] is False


def wanted(config) -> bool:
    """The starting process of a multi-process run (``nproc`` or ``world_size`` above 1)."""
    return not active(config) and world_size(config) > 1


def is_main(config) -> bool:
    """The process that writes the run's files: rank 0, or the only one."""
    return not active(config) or dist.get_rank() == 0


def barrier(config) -> None:
    if active(config):
        dist.barrier()


# -- starting the processes -------------------------------------------------------------------------
def check(config) -> None:
    """Refuse what cannot run on several processes, before a run folder exists."""
    nproc, model = config["nproc"], config["model"]
    if not isinstance(nproc, int) or nproc < 1:
        raise ConfigError(f"--nproc must be a whole number >= 1 (processes on this machine), got {nproc!r}")
    if world_size(config) != nproc or int(config["offset"] or 0) != 0:
        raise ConfigError(
            f"world_size={config['world_size']}, offset={config['offset']} with nproc={nproc}: training across "
            "machines is not supported; train on one machine with --nproc=N alone"
        )
    if model in SINGLE_PROCESS_PLUGIN_MODELS:
        raise ConfigError(
            f"--nproc={nproc}: {model} trains in one process (its SAE and intent stages are not distributed); "
            "drop --nproc, or train its SASRecPlus on several processes and pass it as --sasrec_checkpoint"
            if model != "SAERec"
            else f"--nproc={nproc}: SAERec trains in one process (its intent stage is not distributed); drop --nproc"
        )
    gpus = [g for g in str(config["gpu_id"]).split(",") if g.strip()]
    if _use_cuda(config) and len(gpus) < nproc:
        raise ConfigError(
            f"--nproc={nproc} on GPUs needs one GPU per process: list {nproc} in --gpu_id (e.g. "
            f"--gpu_id={','.join(map(str, range(nproc)))}), or set --use_gpu=False to train on the CPU"
        )


def _use_cuda(config) -> bool:
    return torch.cuda.is_available() and bool(str(config["gpu_id"]).strip()) and config["use_gpu"] is not False


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(config, run_dir: str, run_args: tuple) -> dict:
    """Run ``run_recbole_sae(*run_args)`` in ``nproc`` processes in the run folder ``run_dir`` (opened and
    locked by the caller); rank 0's result. A process's :class:`RecboleSAEError` is raised here again."""
    import torch.multiprocessing as mp

    nproc = config["nproc"]
    keys = {
        "nproc": nproc,
        "world_size": nproc,
        "offset": 0,
        "run_dir": run_dir,
        "ip": config["ip"] or "localhost",
        "port": int(config["port"] or free_port()),
    }
    queue = mp.get_context("spawn").SimpleQueue()
    try:
        mp.spawn(_process, args=(run_args, keys, queue), nprocs=nproc, join=True)
    except mp.ProcessRaisedException:
        error = _reported_error(queue)
        if error is None:
            raise
        raise error from None
    except mp.ProcessExitedException as err:
        messages = _drain(queue)
        if not _ended(messages, nproc):
            raise
        # killed by a signal in the C++ teardown of the process group (gloo can abort when its peer has
        # closed the connection), after every process had ended its work and rank 0 its run folder
        console.say(
            f"process {err.error_index} ended with {err.signal_name or f'exit code {err.exit_code}'} while "
            "leaving the process group, after every process had ended the run: the results are complete"
        )
    else:
        messages = _drain(queue)
    if not messages or messages[0][0] != "result":
        raise RuntimeError(f"the {nproc} processes of {run_dir} ended without a result")
    return messages[0][1]


def _ended(messages: list, nproc: int) -> bool:
    """Rank 0 reported the run's result and every process reported the end of its work."""
    ended = {message[1] for message in messages if message[0] == "ended"}
    return bool(messages) and messages[0][0] == "result" and ended == set(range(nproc))


def _process(rank: int, run_args: tuple, keys: dict, queue) -> None:
    """One process of a multi-process run (started by ``torch.multiprocessing.spawn``)."""
    from recbole_sae.quick_start import run_recbole_sae

    model, dataset, config_files, config_dict, saved, cmd_args, command = run_args
    config_dict = {**(config_dict or {}), **keys, "local_rank": rank}
    if "OMP_NUM_THREADS" not in os.environ:  # the processes share the machine's cores
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // keys["nproc"]))
    ended = False
    try:
        result = run_recbole_sae(model, dataset, config_files, config_dict, saved, cmd_args, command)
        if rank == 0:
            queue.put(("result", result))
        dist.barrier()  # no process leaves the group while another still works in it (rank 0 writes the folder)
        queue.put(("ended", rank))
        ended = True
    except RecboleSAEError as err:
        queue.put(("error", type(err).__name__, str(err)))
        raise
    finally:
        if dist.is_initialized():
            if ended:
                gc.collect()  # the DDP wrapper (it holds the group) goes before the group, not at exit
            dist.destroy_process_group()


def _drain(queue) -> list:
    messages = []
    while not queue.empty():
        messages.append(queue.get())
    return messages


def _reported_error(queue) -> RecboleSAEError | None:
    """The first :class:`RecboleSAEError` a process reported, as the same class where it can be rebuilt."""
    for message in _drain(queue):
        if message[0] == "error":
            _, name, text = message
            cls = getattr(errors, name, RecboleSAEError)
            try:
                return (
                    cls(text) if isinstance(cls, type) and issubclass(cls, RecboleSAEError) else RecboleSAEError(text)
                )
            except TypeError:  # a class that takes more than the message
                return RecboleSAEError(text)
    return None


def resume_state(run_dir: str) -> dict | None:
    """In a process of a multi-process run: the state the starting process chose to resume from (it
    checked the settings), or None for a fresh start."""
    return resume.load(run_dir) if resume.state_file(run_dir).is_file() else None


def init_device(values: dict) -> None:
    """The plugin Config's ``_init_device`` in a process of a multi-process run (``local_rank`` set):
    RecBole's, with ``gloo`` on the CPU where RecBole always asks for ``nccl`` and a GPU."""
    gpu_id = values["gpu_id"]
    values["gpu_id"] = ",".join(map(str, gpu_id)) if isinstance(gpu_id, (tuple, list)) else str(gpu_id)
    os.environ["CUDA_VISIBLE_DEVICES"] = values["gpu_id"]
    rank = values["local_rank"]
    cuda = _use_cuda(values)
    dist.init_process_group(
        backend="nccl" if cuda else "gloo",
        rank=rank + int(values["offset"] or 0),
        world_size=world_size(values),
        init_method=f"tcp://{values['ip']}:{values['port']}",
    )
    if cuda:
        torch.cuda.set_device(rank)
    values["device"] = torch.device("cuda", rank) if cuda else torch.device("cpu")
    values["single_spec"] = False
    _cpu_ddp()
    if rank != 0:  # as RecBole: only rank 0 logs
        values.update(state="error", show_progress=False, verbose=False)


def _cpu_ddp() -> None:
    """RecBole's trainer wraps the model in ``DistributedDataParallel(model, device_ids=[local_rank])``;
    a model on the CPU needs ``device_ids=None``."""
    import recbole.trainer.trainer as trainer_module
    from torch.nn.parallel import DistributedDataParallel

    def wrap(module, device_ids=None, **kwargs):
        if next(module.parameters()).device.type == "cpu":
            device_ids = None
        return DistributedDataParallel(module, device_ids=device_ids, **kwargs)

    trainer_module.DistributedDataParallel = wrap


# -- training -----------------------------------------------------------------------------------------
def share(index: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    """This process's rows of a batch: the batch cut into ``world`` consecutive parts (sizes differ by
    at most one row; a batch of fewer rows than processes leaves some processes without rows)."""
    return torch.tensor_split(index, world)[rank]


def train_epoch(trainer, batches, epoch_idx: int, loss_func) -> float:
    """One epoch of a :class:`~recbole_sae.trainer.sequence_trainer.LengthBatches` on this process;
    the epoch's loss summed over batches (the same number one process reports).

    Each process computes the mean loss over its rows times ``n_own * world / n_batch`` (targets);
    DDP averages the gradients over the ``world`` processes, which gives the gradient of the mean over
    the whole batch. RecBole's ``set_reduce_hook`` and ``sync_grad_loss`` make every parameter take
    part in the all-reduce, also on a process without rows in a batch.
    """
    rank, world = dist.get_rank(), dist.get_world_size()
    total = torch.zeros(1, dtype=torch.float64)
    for index in batches.index_batches(epoch_idx):
        own = share(index, rank, world)
        trainer.optimizer.zero_grad()
        trainer.set_reduce_hook()
        loss = trainer.sync_grad_loss()
        if batches.count(own):
            weight = batches.count(own) * world / batches.count(index)
            loss = loss + loss_func(batches.interaction(own).to(trainer.device)) * weight
        loss.backward()
        if trainer.clip_grad_norm:
            torch.nn.utils.clip_grad_norm_(trainer.model.parameters(), **trainer.clip_grad_norm)
        trainer.optimizer.step()
        total += float(loss.detach())
    total = total.to(trainer.device)
    dist.all_reduce(total)
    return float(total) / world


# -- evaluation ---------------------------------------------------------------------------------------
def interleave(parts: list[torch.Tensor], n: int) -> torch.Tensor:
    """Rows gathered from the processes in the order of one process: ``DistributedSampler`` (no
    shuffling) gives process ``r`` the rows ``r, r + world, ...`` of the list padded to a multiple of
    ``world``; the padding is dropped (``n`` rows in all)."""
    return torch.stack(parts, 1).reshape(-1, *parts[0].shape[1:])[:n]


def gather_rows(struct, n: int, device) -> None:
    """Replace this process's per-user rows in RecBole's evaluation ``struct`` by everyone's."""
    for key in ROW_KEYS:
        if key not in struct:
            continue
        local = struct.get(key).to(device).contiguous()
        parts = [torch.empty_like(local) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, local)
        struct.set(key, interleave([p.cpu() for p in parts], n))


def attach(trainer) -> None:
    """In a process of a multi-process run: ``trainer.evaluate`` computes the metrics over all users
    (gathered before RecBole's evaluator sees them, for both protocols), identical in every process."""
    if not active(trainer.config):
        return
    evaluate, evaluator_evaluate = trainer.evaluate, trainer.evaluator.evaluate
    current = {"rows": 0}

    def evaluate_gathered(struct):
        gather_rows(struct, current["rows"], trainer.device)
        return evaluator_evaluate(struct)

    def evaluate_all(eval_data, *args, **kwargs):
        current["rows"] = getattr(eval_data, "sample_size", 0)
        return evaluate(eval_data, *args, **kwargs)

    trainer.evaluator.evaluate = evaluate_gathered
    trainer.evaluate = evaluate_all
    trainer._map_reduce = lambda result, num_sample: result  # the metrics are already everyone's
