"""Where the intent index goes: the CPU, one GPU, or sharded over all GPUs (a fake faiss stands in
for the GPU calls), and the GPU search against the CPU search where faiss really sees a GPU."""

import types

import faiss
import pytest
import torch

from recbole_sae.intents import index as index_mod
from recbole_sae.intents.index import IntentIndex


class _FakeGpuFaiss(types.SimpleNamespace):
    """The real faiss's CPU index, with GPU calls that record what they were asked and return the
    CPU index (so searches still work)."""

    def __init__(self, n_gpus):
        super().__init__(IndexFlatIP=faiss.IndexFlatIP, calls=[])
        self.n_gpus = n_gpus

    def get_num_gpus(self):
        return self.n_gpus

    def StandardGpuResources(self):  # noqa: N802 - faiss's name
        self.calls.append(("resources",))
        return "resources"

    def GpuMultipleClonerOptions(self):  # noqa: N802 - faiss's name
        return types.SimpleNamespace(shard=False)

    def index_cpu_to_gpu(self, resources, device, cpu_index):
        self.calls.append(("one", resources, device, cpu_index.ntotal))
        return cpu_index

    def index_cpu_to_all_gpus(self, cpu_index, co=None, ngpu=-1):
        self.calls.append(("all", co.shard, ngpu, cpu_index.ntotal))
        return cpu_index


def _directions():
    g = torch.Generator().manual_seed(3)
    return torch.nn.functional.normalize(torch.randn(30, 8, generator=g), dim=1)


@pytest.mark.parametrize("n_gpus", [0, 1, 2, 4])
def test_the_index_goes_to_the_cpu_one_gpu_or_all_gpus_sharded(n_gpus, monkeypatch):
    fake = _FakeGpuFaiss(n_gpus)
    monkeypatch.setattr(index_mod, "_faiss", lambda: fake)
    index = IntentIndex(_directions(), use_gpu="auto", gpu_device=1)
    if n_gpus == 0:
        assert fake.calls == [] and not index.on_gpu and index.gpu_count == 0
        assert index.index is index.cpu_index
    elif n_gpus == 1:
        assert fake.calls == [("resources",), ("one", "resources", 1, 30)]
        assert index.on_gpu and index.gpu_count == 1 and index._gpu_resources == "resources"
    else:
        assert fake.calls == [("all", True, -1, 30)]  # sharded, over every GPU faiss sees
        assert index.on_gpu and index.gpu_count == n_gpus
    # the CPU copy stays whatever the placement: directions, save and load read it
    assert torch.equal(index.directions, _directions())
    scores, ids = index.search(_directions()[:4], 1)
    assert ids[:, 0].tolist() == [0, 1, 2, 3] and scores[:, 0].numpy() == pytest.approx([1, 1, 1, 1], abs=1e-6)


def test_use_gpu_false_never_touches_the_gpu_calls(monkeypatch):
    fake = _FakeGpuFaiss(2)
    monkeypatch.setattr(index_mod, "_faiss", lambda: fake)
    index = IntentIndex(_directions(), use_gpu=False)
    assert fake.calls == [] and not index.on_gpu and index.gpu_count == 0


# ---------------------------------------------------------------------- a real GPU, when faiss sees one
needs_gpu = pytest.mark.skipif(
    not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() < 1,
    reason="faiss sees no GPU (faiss-cpu, or no CUDA device)",
)


@needs_gpu
@pytest.mark.parametrize("n_intents, k", [(1650, 5), (26400, 10)])
def test_gpu_search_equals_cpu_search(n_intents, k):
    g = torch.Generator().manual_seed(0)
    directions = torch.nn.functional.normalize(torch.randn(n_intents, 384, generator=g), dim=1)
    queries = torch.nn.functional.normalize(torch.randn(2000, 384, generator=g), dim=1)
    cpu = IntentIndex(directions, use_gpu=False)
    gpu = IntentIndex(directions, use_gpu=True)
    assert gpu.on_gpu and gpu.gpu_count == faiss.get_num_gpus()
    cpu_scores, cpu_ids = cpu.search(queries, k)
    gpu_scores, gpu_ids = gpu.search(queries, k, batch_size=512)
    assert (gpu_scores - cpu_scores).abs().max().item() <= 1e-5
    # where an id differs, two intents tie within float rounding: the GPU's intent scores (exactly)
    # what the CPU's intent at that rank scores
    exact = (queries.double() @ directions.double().T).gather(1, gpu_ids)
    assert (exact - cpu_scores.double()).abs().max().item() <= 1e-5
    assert (cpu_ids != gpu_ids).float().mean().item() <= 1e-3


@needs_gpu
def test_gpu_personal_intents_equal_the_cpu_ones():
    g = torch.Generator().manual_seed(1)
    item_vectors = torch.randn(60, 32, generator=g)
    directions = torch.nn.functional.normalize(torch.randn(200, 32, generator=g), dim=1)
    item_seq = torch.randint(1, 60, (16, 10), generator=g)
    lengths = torch.randint(1, 11, (16,), generator=g)
    cpu = IntentIndex(directions, use_gpu=False).personal_intents(item_seq, lengths, item_vectors, k=3)
    gpu = IntentIndex(directions, use_gpu=True).personal_intents(item_seq, lengths, item_vectors, k=3)
    assert torch.equal(cpu.ids, gpu.ids)
    assert (cpu.scores - gpu.scores).abs().max().item() <= 1e-5
