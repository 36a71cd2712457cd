r"""SAERec: interpretable intent priors from a sparse autoencoder on language-model item embeddings.

Xia, Wu, Yang, Wang, Liu, "SAERec: Constructing Fine-grained Interpretable Intents Priors via
Sparse Autoencoders for Recommendation", arXiv 2606.18897 (2026).

1. The intents are data made before the model (:class:`recbole_sae.intents.stage.IntentStage`):
   item text -> language-model embeddings -> SAE -> live, coherent latents with labels -> their
   directions -> a FAISS index; written to the run folder's ``intents/`` and read back from there.
2. Retrieval, causal in every mode (position ``t`` reads nothing after ``t``), ``intent_retrieval``:

   * ``text``: the ``n_personal_intents`` intents nearest (FAISS, exact inner product; on the GPU
     when faiss sees one) to the recency-weighted mean text embedding of the items up to ``t``;
     public intents: the lowest-IDF intents over the training users' personal intents (fixed).
   * ``paper``: the query is the sequence state at ``t``; TF_j = ReLU(cos(query, e_j)) with e_j the
     learned projection of intent direction j; IDF_j = log((1 + N) / (1 + df_j)), df_j an
     exponential moving average (``idf_momentum``) over training batches of how many sequence
     prefixes (real positions) have TF_j > 0, N the same average of the number of prefixes; both
     are buffers, updated only in training mode after the batch's retrieval, frozen in evaluation
     and saved with the model. Personal: top ``n_personal_intents`` by TF * IDF; public: the
     ``n_public_intents`` lowest-IDF intents. The query changes at every step, so this is a torch
     matmul over all intents, not a FAISS search.

3. Three branches: a SASRec self-attention stack over the sequence (a), cross-attention from (a) to
   the personal memory (b) and to the public intents (c); an adaptive fusion joins them:
   ``attention``: out = a + w_b b + w_c c with (w_b, w_c) = softmax(<a,b>/sqrt(d), <a,c>/sqrt(d));
   ``gate``: out = a + g_b b + g_c c with (g_b, g_c) = sigmoid(W [a; b; c]).
4. Scores = out · item representations; cross-entropy over all items.

Ablations, one key each: ``intent_personal`` / ``intent_public`` (drop a branch),
``intent_directions: random`` (seeded random directions of the same norms, in the stage),
``intent_memory: history_text`` (the personal memory holds the projected text embeddings of the
last ``n_personal_intents`` items instead of intents). Beyond the paper: ``item_intent_codes``
adds to every item's ID embedding (input and output) the mean of its intents' embeddings weighted
by its SAE codes, so that rare items share what their text says; ``item_text`` adds a learned
projection of the item's text embedding itself (the dense text, not its intents).

Cost: the intent branches and the fusion act on each position alone, so the full-sequence loss runs
them only at the positions that carry a target; the personal memory is an :class:`IndexedMemory`
(the intent table and ids), whose keys and values a layer projects once over the N intents and
gathers by id; the intent layers use the fused ``F.gelu`` and :class:`MaskDropout`. The outputs are
those of the per-position computation (``tests/model/test_saerec_exact.py`` keeps it as a reference);
in training, dropout draws its masks differently (same distribution), so a seeded run is not
bit-for-bit one of the earlier code.

:meth:`SAERec.attribute` explains a recommendation by removal: an intent's attribution to an item
is the item's score drop when that intent is masked out of its branch's cross-attention (through
every intent layer and the fusion). :mod:`recbole_sae.intents.explain` turns it into records,
a faithfulness figure and HTML pages.
"""

from __future__ import annotations

import contextlib
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from recbole.model.layers import FeedForward
from torch import nn

from recbole_sae.contracts import TARGETS_FIELD, StagedModel
from recbole_sae.errors import ConfigError
from recbole_sae.model.layers import trim
from recbole_sae.model.saerec_settings import check_config
from recbole_sae.model.sasrec_plus import SASRecPlus

PERSONAL_FIELD = "personal_intent_ids"  # [B, L, K] precomputed personal intents of every position


class IndexedMemory(NamedTuple):
    """A memory per position given by row ids into a table: ``table`` [N, H], ``ids`` [B, L, K].

    Equal to the dense memory ``table[ids]`` [B, L, K, H]; a layer projects the N rows of the table
    to keys and values once and gathers them (``Linear(table)[ids] == Linear(table[ids])``) instead
    of projecting B * L * K gathered copies.
    """

    table: torch.Tensor
    ids: torch.Tensor

    def dense(self) -> torch.Tensor:
        return self.table[self.ids]


def _masked_softmax(scores: torch.Tensor, keep, dim: int = -1) -> torch.Tensor:
    """Softmax over ``dim``; entries with ``keep`` False get weight 0 (a row with none kept: all 0)."""
    if keep is None:
        return torch.softmax(scores, dim=dim)
    scores = scores.masked_fill(~keep, torch.finfo(scores.dtype).min)
    return torch.softmax(scores, dim=dim) * keep


def select_positions(memory, positions):
    """The per-position memory (dense [B, L, K, H], ids [B, L, K] or an IndexedMemory) at the positions
    where ``positions`` [B, L] is True, as [M, 1, ...]; shared memories ([K, H]) and None pass."""
    if memory is None or (isinstance(memory, torch.Tensor) and memory.dim() < 3):
        return memory
    if isinstance(memory, IndexedMemory):
        return IndexedMemory(memory.table, memory.ids[positions].unsqueeze(1))
    return memory[positions].unsqueeze(1)


class MaskDropout(nn.Dropout):
    """``nn.Dropout`` (keep each entry with probability 1 - p, scale by 1 / (1 - p)) whose mask, on the
    CPU, comes from ``rand_like(x) >= p``: the same Bernoulli(1 - p) mask as ``bernoulli_``, which
    torch's CPU kernel draws several times slower than uniforms. Other devices, p = 0 or p = 1: nn.Dropout.
    A seeded run draws other masks than nn.Dropout would (the same distribution)."""

    def forward(self, x):
        if not self.training or not 0.0 < self.p < 1.0 or x.device.type != "cpu":
            return super().forward(x)
        return x * (torch.rand_like(x) >= self.p).to(x.dtype).mul_(1.0 / (1.0 - self.p))


class IntentCrossAttention(nn.Module):
    """One layer: each position attends over its own intent memory, then a feed-forward block.

    ``memory`` is [B, L, K, H] or an :class:`IndexedMemory` (a memory per position) or [K, H]
    (shared by all positions); ``keep`` ([B, L, K] bool, optional) masks memory slots out.
    """

    def __init__(self, n_heads, hidden_size, inner_size, dropout, attn_dropout, hidden_act, eps):
        super().__init__()
        if hidden_size % n_heads:
            raise ConfigError(f"hidden_size {hidden_size} is not a multiple of n_heads {n_heads}")
        self.heads, self.size = n_heads, hidden_size // n_heads
        self.query = nn.Linear(hidden_size, hidden_size)
        self.key = nn.Linear(hidden_size, hidden_size)
        self.value = nn.Linear(hidden_size, hidden_size)
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.attn_dropout = MaskDropout(attn_dropout)
        self.out_dropout = MaskDropout(dropout)
        self.LayerNorm = nn.LayerNorm(hidden_size, eps=eps)
        self.feed_forward = FeedForward(hidden_size, inner_size, dropout, hidden_act, eps)
        self.feed_forward.dropout = MaskDropout(dropout)
        if hidden_act == "gelu":  # RecBole's x * 0.5 * (1 + erf(x / sqrt(2))) is exactly F.gelu, unfused
            self.feed_forward.intermediate_act_fn = F.gelu

    def keys_values(self, memory, b: int, length: int):
        """Keys and values of a per-position memory, [B, L, K, heads, head size] each."""
        if isinstance(memory, IndexedMemory):  # project the table's rows once, then gather
            k, v = F.embedding(memory.ids, self.key(memory.table)), F.embedding(memory.ids, self.value(memory.table))
        else:
            k, v = self.key(memory), self.value(memory)
        return k.view(b, length, -1, self.heads, self.size), v.view(b, length, -1, self.heads, self.size)

    def attend(self, q, memory, keep):
        """Attention of ``q`` [B, L, heads, head size] over the memory: (context [B, L, heads, head
        size], weights [B, L, heads, K])."""
        b, length = q.shape[:2]
        scale = math.sqrt(self.size)
        if isinstance(memory, torch.Tensor) and memory.dim() == 2:  # shared [K, H]: one matmul
            k = self.key(memory).view(-1, self.heads, self.size)
            v = self.value(memory).view(-1, self.heads, self.size)
            weights = _masked_softmax(
                torch.einsum("blhd,khd->blhk", q, k) / scale, None if keep is None else keep.unsqueeze(2)
            )
            return torch.einsum("blhk,khd->blhd", self.attn_dropout(weights), v), weights
        # a memory per position: K is small, so products and sums beat K-wide batched matmuls
        k, v = self.keys_values(memory, b, length)
        scores = (q.unsqueeze(2) * k).sum(-1) / scale  # [B, L, K, heads]
        weights = _masked_softmax(scores, None if keep is None else keep.unsqueeze(-1), dim=2)
        context = (self.attn_dropout(weights).unsqueeze(-1) * v).sum(2)
        return context, weights.transpose(2, 3)

    def forward(self, x, memory, keep=None):
        b, length, hidden = x.shape
        q = self.query(x).view(b, length, self.heads, self.size)
        context, weights = self.attend(q, memory, keep)
        context = self.out_dropout(self.dense(context.reshape(b, length, hidden)))
        return self.feed_forward(self.LayerNorm(context + x)), weights


class SAERec(SASRecPlus, StagedModel):
    """SASRec + personal/public SAE intents through cross-attention + adaptive fusion."""

    parent_model = "SASRec"
    check_config = staticmethod(check_config)  # its keys, checked when the config is built

    @classmethod
    def prepare_stage(cls, config, dataset):
        """The intent stage of this run, made (or read from the run folder) before the model."""
        from recbole_sae.intents.stage import IntentStage

        return IntentStage.for_run(config, dataset)

    def __init__(self, config, dataset, stage=None):
        super().__init__(config, dataset)
        self.check_config(config)
        self.fusion = config["fusion"]
        self.retrieval = config["intent_retrieval"] or "text"
        self.memory = config["intent_memory"] or "intents"
        self.use_personal = config["intent_personal"] is not False
        self.use_public = config["intent_public"] is not False
        self.item_codes = bool(config["item_intent_codes"])
        self.item_text = bool(config["item_text"])
        self.items_enriched = self.item_codes or self.item_text
        self.item_feature_dropout = float(config["item_feature_dropout"] or 0.0)
        self.n_personal = int(config["n_personal_intents"])
        self.n_public = int(config["n_public_intents"])
        self.recency_decay = float(config["recency_decay"])
        self.idf_momentum = float(config["idf_momentum"] if config["idf_momentum"] is not None else 0.9)

        if stage is None:  # built directly (tests, notebooks): the stage in memory or the run folder's
            stage = self.prepare_stage(config, dataset)
        self.stage, self.vocabulary, self.index = stage, stage.vocabulary, stage.index
        self.intent_labels = list(stage.vocabulary.labels)
        n_intents = stage.n_intents
        if n_intents < max(self.n_personal, self.n_public):
            raise ConfigError(
                f"{n_intents} intents for n_personal_intents={self.n_personal} and "
                f"n_public_intents={self.n_public}: lower them or keep more intents"
            )
        # frozen: the intent directions and public intents (state dict), the items' text embeddings (stage)
        self.register_buffer("intent_directions", stage.directions.float().clone())
        self.register_buffer("item_text_embeddings", stage.item_embeddings.float(), persistent=False)
        self.register_buffer("public_ids", stage.public_ids.clone().long())
        if self.retrieval == "paper":
            self.register_buffer("intent_df", torch.zeros(n_intents, dtype=torch.float64))
            self.register_buffer("intent_docs", torch.zeros((), dtype=torch.float64))
            self.register_buffer("df_updates", torch.zeros((), dtype=torch.long))
        if self.item_codes:
            codes = stage.vocabulary.item_codes()
            codes = codes / codes.sum(1, keepdim=True).clamp_min(1e-12)  # convex weights over the item's intents
            rows, cols = codes.nonzero(as_tuple=True)
            self.register_buffer("code_rows", rows, persistent=False)
            self.register_buffer("code_cols", cols, persistent=False)
            self.register_buffer("code_vals", codes[rows, cols].float(), persistent=False)

        layer_args = (
            self.n_heads,
            self.hidden_size,
            self.inner_size,
            self.hidden_dropout_prob,
            self.attn_dropout_prob,
            self.hidden_act,
            self.layer_norm_eps,
        )
        n_intent_layers = int(config["intent_layers"])
        self.intent_proj = nn.Linear(self.intent_directions.size(1), self.hidden_size)
        self.personal_layers = nn.ModuleList(IntentCrossAttention(*layer_args) for _ in range(n_intent_layers))
        self.public_layers = nn.ModuleList(IntentCrossAttention(*layer_args) for _ in range(n_intent_layers))
        self.gate = nn.Linear(3 * self.hidden_size, 2)
        for module in (self.intent_proj, self.personal_layers, self.public_layers, self.gate):
            module.apply(self._init_weights)
        if self.item_text:
            self.item_text_proj = nn.Linear(self.item_text_embeddings.size(1), self.hidden_size, bias=False)
            self.item_text_proj.apply(self._init_weights)
            real = torch.ones(self.item_text_embeddings.size(0), 1)
            real[0] = 0.0  # the padding row keeps its (zero) ID embedding alone
            self.register_buffer("item_text_rows", real, persistent=False)

    # -- retrieval -----------------------------------------------------------------------------------
    def intent_embeddings(self) -> torch.Tensor:
        """The intents in the model's space: the learned projection of the frozen directions [N, H]."""
        return self.intent_proj(self.intent_directions)

    def personal_intents(self, item_seq, item_seq_len, all_positions: bool):
        """Text retrieval: intent ids [B, L, K] (per position, causal) or [B, 1, K] (the last position)."""
        emb = self.item_text_embeddings
        if all_positions:
            found = self.index.personal_intents_per_position(
                item_seq, emb, self.n_personal, self.recency_decay, item_seq_len
            )
            return found.ids, found.scores
        found = self.index.personal_intents(item_seq, item_seq_len, emb, self.n_personal, self.recency_decay)
        return found.ids.unsqueeze(1), found.scores.unsqueeze(1)

    def idf(self) -> torch.Tensor:
        """Paper retrieval: IDF_j = log((1 + N) / (1 + df_j)) of the moving-average document frequency."""
        return torch.log((1.0 + self.intent_docs) / (1.0 + self.intent_df)).float()

    @torch.no_grad()
    def update_df(self, active: torch.Tensor, valid: torch.Tensor) -> None:
        """One training batch into the moving averages: ``active`` [B, L, N] (TF > 0), ``valid`` [B, L]."""
        count = active[valid].sum(0).to(torch.float64)
        docs = valid.sum().to(torch.float64)
        if int(self.df_updates) == 0:  # the first batch sets the averages
            self.intent_df.copy_(count)
            self.intent_docs.copy_(docs)
        else:
            m = self.idf_momentum
            self.intent_df.mul_(m).add_(count, alpha=1.0 - m)
            self.intent_docs.mul_(m).add_(docs, alpha=1.0 - m)
        self.df_updates += 1

    def paper_personal_intents(self, a, valid, intents):
        """Top-K by TF * IDF of every query state ``a`` [B, L, H]; updates df in training mode."""
        with torch.no_grad():  # only the ids leave: no graph through the [B, L, N] similarities
            tf = torch.relu(F.normalize(a, dim=-1) @ F.normalize(intents, dim=-1).t())  # [B, L, N]
            scores, ids = torch.topk(tf * self.idf(), self.n_personal, dim=-1)
        if self.training:
            self.update_df(tf > 0, valid)  # after this batch's retrieval: stays causal
        return ids, scores

    def current_public_ids(self) -> torch.Tensor:
        if self.retrieval == "paper":
            return torch.sort(self.idf(), stable=True).indices[: self.n_public]
        return self.public_ids

    def history_memory(self, item_seq, item_seq_len, all_positions):
        """The last K items up to each position (causal): item ids [B, L, K] and which are real."""
        length, k = item_seq.size(1), self.n_personal
        back = torch.arange(length, device=item_seq.device)[:, None] - torch.arange(k, device=item_seq.device)
        items = item_seq[:, back.clamp_min(0)]  # [B, L, K]: position t - j
        keep = (back >= 0) & (items != 0)
        if not all_positions:
            last = (item_seq_len - 1).view(-1, 1, 1, 1).expand(-1, 1, k, 1)
            items = items.unsqueeze(-1).gather(1, last).squeeze(-1)
            keep = keep.unsqueeze(-1).gather(1, last).squeeze(-1)
        return items, keep

    def memories(self, a, item_seq, item_seq_len, all_positions, personal_ids=None, positions=None) -> dict:
        """The personal memory with its ids [B, L, K], scores and mask; the public intents [P, H], ids.

        The personal memory is an :class:`IndexedMemory` of the intents (``intent_memory: intents``)
        or the dense [B, L, K, H] projected history text. ``positions`` ([B, L] bool, all positions):
        the per-position entries only where it is True, as [M, 1, ...]; retrieval (and the paper
        mode's df update) still sees every position.
        """
        intents = self.intent_embeddings()
        out = {
            "personal": None,
            "personal_ids": None,
            "personal_scores": None,
            "personal_keep": None,
            "public": None,
            "public_ids": None,
        }
        if self.use_public:  # first: from the df before this batch's update (causal in training too)
            public_ids = self.current_public_ids()
            out.update(public=intents[public_ids], public_ids=public_ids)
        if not self.use_personal:
            return out
        keep = scores = None
        if self.memory == "history_text":
            ids, keep = self.history_memory(item_seq, item_seq_len, all_positions)
        elif self.retrieval == "paper":
            steps = torch.arange(a.size(1), device=a.device)
            valid = (
                steps[None, :] < item_seq_len[:, None]
                if all_positions
                else torch.ones(a.shape[:2], dtype=torch.bool, device=a.device)
            )
            ids, scores = self.paper_personal_intents(a, valid, intents)
        elif personal_ids is not None:
            ids = personal_ids[:, : a.size(1)]
        else:
            ids, scores = self.personal_intents(item_seq, item_seq_len, all_positions)
        if positions is not None:
            ids, keep, scores = (select_positions(x, positions) for x in (ids, keep, scores))
        memory = (
            self.intent_proj(self.item_text_embeddings[ids])
            if self.memory == "history_text"
            else IndexedMemory(intents, ids)
        )
        out.update(personal=memory, personal_ids=ids, personal_scores=scores, personal_keep=keep)
        return out

    @torch.no_grad()
    def precompute_rows(self, item_seq, item_seq_len) -> dict:
        """Text retrieval: the personal intents of every position of the training rows (items only)."""
        if self.retrieval != "text" or self.memory != "intents" or not self.use_personal:
            return {}
        return {PERSONAL_FIELD: self.personal_intents(item_seq, item_seq_len, all_positions=True)[0]}

    def sequence_states(self, interaction):
        personal = interaction[PERSONAL_FIELD] if PERSONAL_FIELD in interaction.interaction else None
        return self.forward(
            interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN], all_positions=True, personal_ids=personal
        )

    # -- the network --------------------------------------------------------------------------------
    def branches(self, a, mem, personal_keep=None, public_keep=None):
        """Cross-attention branches and fusion: ``(out, fusion weights, personal attn, public attn)``.

        ``personal_keep`` / ``public_keep`` ([B, L, K] / [B, L, P] bool) mask memory slots out.
        """
        b = c = None
        personal_attention = public_attention = None
        if mem["personal"] is not None:
            keep = mem["personal_keep"]
            if personal_keep is not None:
                keep = personal_keep if keep is None else keep & personal_keep
            b = a
            for layer in self.personal_layers:
                b, personal_attention = layer(b, mem["personal"], keep)
        if mem["public"] is not None:
            memory = mem["public"]
            if public_keep is not None:
                memory = memory.expand(*a.shape[:2], *memory.shape)
            c = a
            for layer in self.public_layers:
                c, public_attention = layer(c, memory, public_keep)
        out, weights = self.fuse(a, b, c)
        return out, weights, personal_attention, public_attention

    def forward(self, item_seq, item_seq_len, all_positions: bool = False, personal_ids=None):
        item_seq = trim(item_seq, item_seq_len)
        a = self.encode(item_seq)
        if not all_positions:
            a = self.gather_indexes(a, item_seq_len - 1).unsqueeze(1)
        mem = self.memories(a, item_seq, item_seq_len, all_positions, personal_ids)
        out = self.branches(a, mem)[0]
        return out if all_positions else out.squeeze(1)

    def fuse(self, a, b, c):
        """a + w_b b + w_c c; an ablated branch (None) has weight 0 and leaves the softmax."""
        present = [x is not None for x in (b, c)]
        zero = a.new_zeros(a.shape[:-1])
        if not any(present):
            return a, torch.stack([zero, zero], dim=-1)
        if self.fusion == "attention":
            logits = torch.stack([(a * x).sum(-1) for x in (b, c) if x is not None], dim=-1)
            parts = iter(torch.softmax(logits / math.sqrt(self.hidden_size), dim=-1).unbind(-1))
            weights = torch.stack([next(parts) if p else zero for p in present], dim=-1)
        else:
            zeros = torch.zeros_like(a)
            gate = torch.sigmoid(self.gate(torch.cat([a, zeros if b is None else b, zeros if c is None else c], -1)))
            weights = torch.stack([g if p else zero for g, p in zip(gate.unbind(-1), present)], dim=-1)
        out = a
        for i, x in enumerate((b, c)):
            if x is not None:
                out = out + weights[..., i : i + 1] * x
        return out, weights

    # -- item representations (item_intent_codes, item_text) -----------------------------------------
    def _code_mix(self):
        """The items' code-weighted mixes of the intent directions, C @ D [n_items, d], and their code
        weight sums [n_items] (1 for an item with codes, 0 without). Both factors are fixed, so it is
        computed once (again only when the directions change: a reload, a test's planted values)."""
        directions = self.intent_directions
        key = (directions.device, directions.data_ptr(), directions._version)
        if getattr(self, "_code_mix_cache", (None,))[0] != key:
            with torch.no_grad():
                codes = torch.sparse_coo_tensor(
                    torch.stack([self.code_rows, self.code_cols]),
                    self.code_vals,
                    (self.n_items, directions.size(0)),
                    check_invariants=True,
                )
                sums = torch.zeros(self.n_items, device=directions.device).index_add(0, self.code_rows, self.code_vals)
                self._code_mix_cache = (key, torch.sparse.mm(codes, directions), sums)
        return self._code_mix_cache[1:]

    def item_matrix(self) -> torch.Tensor:
        """Every item's representation [n_items, H]: its ID embedding (+ its SAE-code intent mix,
        + the projection of its text embedding). The code mix sum_j c_ij (W d_j + b) is computed as
        W (C D)_i + b sum_j c_ij: one projection of a fixed matrix, no gradient through the codes.
        ``item_feature_dropout`` (training): a mask on both fixed inputs; 0 draws none."""
        weight = self.item_embedding.weight
        p = self.item_feature_dropout if self.training else 0.0
        if self.item_codes:
            mix, sums = self._code_mix()
            mix = F.dropout(mix, p) if p > 0 else mix
            weight = weight + F.linear(mix, self.intent_proj.weight) + sums[:, None] * self.intent_proj.bias
        if self.item_text:
            text = F.dropout(self.item_text_embeddings, p) if p > 0 else self.item_text_embeddings
            weight = weight + self.item_text_proj(text) * self.item_text_rows
        return weight

    @contextlib.contextmanager
    def _one_item_matrix(self):
        """Within the block the input side (``item_vectors``) and the output side share one item
        matrix: it is computed from every item, once per forward pass rather than twice."""
        self._items = self.item_matrix()
        try:
            yield self._items
        finally:
            self._items = None

    def item_vectors(self, item_seq):
        if not self.items_enriched:
            return super().item_vectors(item_seq)
        items = getattr(self, "_items", None)
        return (items if items is not None else self.item_matrix())[item_seq]

    def full_sequence_loss(self, interaction):
        """Cross-entropy at the positions with a target; the intent branches and the fusion (which
        act on each position alone) run only there: the loss of ``sequence_states`` at a lower cost."""
        if self.items_enriched:
            with self._one_item_matrix() as items:
                return self._full_sequence_loss(interaction, items)
        return self._full_sequence_loss(interaction, self.item_embedding.weight)

    def _full_sequence_loss(self, interaction, items):
        item_seq_len = interaction[self.ITEM_SEQ_LEN]
        item_seq = trim(interaction[self.ITEM_SEQ], item_seq_len)
        a = self.encode(item_seq)
        targets = interaction[TARGETS_FIELD][:, : a.size(1)]
        real = targets > 0
        personal = interaction[PERSONAL_FIELD] if PERSONAL_FIELD in interaction.interaction else None
        mem = self.memories(a, item_seq, item_seq_len, True, personal, positions=real)
        out = self.branches(a[real].unsqueeze(1), mem)[0].squeeze(1)
        return F.cross_entropy(out @ items.t(), targets[real])

    def calculate_loss(self, interaction):
        if not self.items_enriched or TARGETS_FIELD in interaction.interaction:
            return super().calculate_loss(interaction)
        with self._one_item_matrix() as items:
            out = self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])
            return F.cross_entropy(out @ items.t(), interaction[self.POS_ITEM_ID])

    def predict(self, interaction):
        if not self.items_enriched:
            return super().predict(interaction)
        with self._one_item_matrix() as items:
            out = self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])
            return (out * items[interaction[self.ITEM_ID]]).sum(-1)

    def full_sort_predict(self, interaction):
        if not self.items_enriched:
            return super().full_sort_predict(interaction)
        with self._one_item_matrix() as items:
            out = self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])
            return out @ items.t()

    # -- explanations --------------------------------------------------------------------------------
    @torch.no_grad()
    def attribute(self, item_seq, item_seq_len, k: int = 10, exclude=None) -> dict:
        """Removal attributions at the last position of each sequence.

        For the top-``k`` items of each row and each memory slot s (the K personal then the P
        public intents), ``drops[b, i, s]`` = the item's score minus its score with slot s masked
        out of its branch's cross-attention (all intent layers and the fusion recomputed).
        ``exclude`` ([B, n_items] bool) removes items from the ranking (e.g. the history).
        """
        self.eval()
        seq = trim(item_seq, item_seq_len)
        a = self.gather_indexes(self.encode(seq), item_seq_len - 1).unsqueeze(1)  # [B, 1, H]
        mem = self.memories(a, seq, item_seq_len, all_positions=False)
        out, fusion, personal_attention, public_attention = self.branches(a, mem)
        items = self.item_matrix()
        scores = out.squeeze(1) @ items.t()
        scores[:, 0] = -torch.inf
        if exclude is not None:
            scores = scores.masked_fill(exclude, -torch.inf)
        top = torch.topk(scores, k, dim=-1)
        n_k = 0 if mem["personal_ids"] is None else mem["personal_ids"].size(2)
        n_p = 0 if mem["public"] is None else mem["public"].size(0)
        n_slots, batch = n_k + n_p, a.size(0)
        drops = scores.new_zeros(batch, k, n_slots)
        if n_slots:
            removed = ~torch.eye(n_slots, dtype=torch.bool, device=a.device)  # [S, S]: variant s drops slot s
            rep = lambda x: x.repeat_interleave(n_slots, 0)  # noqa: E731  [B * S, ...]
            mem_rep = dict(mem)
            if n_k:
                personal = mem["personal"]
                mem_rep["personal"] = (
                    IndexedMemory(personal.table, rep(personal.ids))
                    if isinstance(personal, IndexedMemory)
                    else rep(personal)
                )
                mem_rep["personal_keep"] = None if mem["personal_keep"] is None else rep(mem["personal_keep"])
            personal_keep = removed[:, :n_k].repeat(batch, 1).unsqueeze(1) if n_k else None
            public_keep = removed[:, n_k:].repeat(batch, 1).unsqueeze(1) if n_p else None
            out_s, *_ = self.branches(rep(a), mem_rep, personal_keep, public_keep)
            out_s = out_s.view(batch, n_slots, -1)  # [B, S, H]
            top_items = items[top.indices]  # [B, k, H]
            without = torch.einsum("bsh,bkh->bks", out_s, top_items)
            drops = top.values.unsqueeze(-1) - without
        slot_ids = []
        if n_k:
            slot_ids.append(mem["personal_ids"][:, 0])
        if n_p:
            slot_ids.append(mem["public_ids"].expand(batch, -1))
        attention = [x[:, 0].mean(1) for x in (personal_attention, public_attention) if x is not None]
        return {
            "state": out.squeeze(1),
            "top_items": top.indices,
            "top_scores": top.values,
            "drops": drops,
            "slot_ids": torch.cat(slot_ids, 1) if slot_ids else torch.zeros(batch, 0, dtype=torch.long),
            "n_personal": n_k,
            "n_public": n_p,
            "attention": torch.cat(attention, 1) if attention else scores.new_zeros(batch, 0),
            "personal_scores": None if mem["personal_scores"] is None else mem["personal_scores"][:, 0],
            "fusion": fusion[:, 0],
        }

    @torch.no_grad()
    def explain(self, interaction, k: int = 10, n_intents: int = 3) -> list[dict]:
        """Per user: the top-k items, each with the ``n_intents`` intents that raised its score most
        (removal attributions), and the retrieved personal and public intents with their attention."""
        from recbole_sae.intents.explain import explanation_records

        return explanation_records(self, interaction, k=k, n_intents=n_intents)
