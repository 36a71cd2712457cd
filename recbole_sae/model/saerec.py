r"""SAERec: interpretable intent priors from a sparse autoencoder on language-model item embeddings.

Xia, Wu, Yang, Wang, Liu, "SAERec: Constructing Fine-grained Interpretable Intents Priors via
Sparse Autoencoders for Recommendation", arXiv 2606.18897 (2026).

1. Each item's text (``item_text_template`` over its ``.item`` fields) is embedded by a language
   model (``text_encoder``); an SAE on those embeddings gives latents; the live, coherent ones are
   the intents, each with a label (``recbole_sae.intents``).
2. A FAISS index over the intent directions retrieves, for every position of a sequence, the
   ``n_personal_intents`` intents nearest to the recency-weighted mean embedding of the items up to
   that position (never a later item, never the target). The ``n_public_intents`` public intents
   are those shared by most users' personal intents over the training split (lowest IDF).
3. Three branches: a SASRec self-attention stack over the sequence (a), cross-attention from (a)
   to the personal intents (b) and to the public intents (c); intent embeddings are a learned
   projection of the frozen intent directions. An adaptive fusion joins them:
   ``attention``: out = a + w_b b + w_c c with (w_b, w_c) = softmax(<a,b>/sqrt(d), <a,c>/sqrt(d));
   ``gate``: out = a + g_b b + g_c c with (g_b, g_c) = sigmoid(W [a; b; c]).
4. Scores = out · item embeddings; cross-entropy over all items, at every position
   (``train_mode: full_sequence``) or at the last one (``prefix``).

``explain(interaction)`` names, per user, the personal and public intents behind the
recommendation, their attention weights and the fusion weights.
"""

from __future__ import annotations

import math

import torch
from recbole.model.layers import FeedForward
from torch import nn

from recbole_sae.errors import ConfigError
from recbole_sae.model.layers import trim
from recbole_sae.model.sasrec_plus import SASRecPlus

FUSIONS = ("attention", "gate")
PERSONAL_FIELD = "personal_intent_ids"  # [B, L, K] precomputed personal intents of every position


class IntentCrossAttention(nn.Module):
    """One layer: each position attends over its own intent memory, then a feed-forward block.

    ``memory`` is [B, L, K, H] (a memory per position) or [K, H] (shared by all positions).
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
        self.attn_dropout = nn.Dropout(attn_dropout)
        self.out_dropout = nn.Dropout(dropout)
        self.LayerNorm = nn.LayerNorm(hidden_size, eps=eps)
        self.feed_forward = FeedForward(hidden_size, inner_size, dropout, hidden_act, eps)

    def forward(self, x, memory):
        b, length, hidden = x.shape
        q = self.query(x).view(b, length, self.heads, self.size)
        if memory.dim() == 2:  # shared memory [K, H]
            k = self.key(memory).view(-1, self.heads, self.size)
            v = self.value(memory).view(-1, self.heads, self.size)
            scores = torch.einsum("blhd,khd->blhk", q, k)
        else:  # [B, L, K, H]
            k = self.key(memory).view(b, length, -1, self.heads, self.size)
            v = self.value(memory).view(b, length, -1, self.heads, self.size)
            scores = torch.einsum("blhd,blkhd->blhk", q, k)
        weights = torch.softmax(scores / math.sqrt(self.size), dim=-1)
        dropped = self.attn_dropout(weights)
        if memory.dim() == 2:
            context = torch.einsum("blhk,khd->blhd", dropped, v)
        else:
            context = torch.einsum("blhk,blkhd->blhd", dropped, v)
        context = self.out_dropout(self.dense(context.reshape(b, length, hidden)))
        return self.feed_forward(self.LayerNorm(context + x)), weights


class SAERec(SASRecPlus):
    """SASRec + personal/public SAE intents through cross-attention + adaptive fusion."""

    parent_model = "SASRec"

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        from recbole_sae.intents.pipeline import build_intents

        self.fusion = config["fusion"]
        if self.fusion not in FUSIONS:
            raise ConfigError(f"fusion must be one of {FUSIONS}, got '{self.fusion}'")
        self.n_personal = int(config["n_personal_intents"])
        self.n_public = int(config["n_public_intents"])
        self.recency_decay = float(config["recency_decay"])

        intents = build_intents(config, dataset)
        self.vocabulary, self.index = intents.vocabulary, intents.index
        self.intent_labels = list(intents.vocabulary.labels)
        # frozen: the intent directions (in the state dict), the items' text embeddings (not)
        self.register_buffer("intent_directions", intents.vocabulary.directions.clone())
        self.register_buffer("item_text_embeddings", intents.item_embeddings.float(), persistent=False)

        layer_args = (self.n_heads, self.hidden_size, self.inner_size, self.hidden_dropout_prob,
                      self.attn_dropout_prob, self.hidden_act, self.layer_norm_eps)
        n_intent_layers = int(config["intent_layers"])
        self.intent_proj = nn.Linear(self.intent_directions.size(1), self.hidden_size)
        self.personal_layers = nn.ModuleList(IntentCrossAttention(*layer_args) for _ in range(n_intent_layers))
        self.public_layers = nn.ModuleList(IntentCrossAttention(*layer_args) for _ in range(n_intent_layers))
        self.gate = nn.Linear(3 * self.hidden_size, 2)
        for module in (self.intent_proj, self.personal_layers, self.public_layers, self.gate):
            module.apply(self._init_weights)
        self.register_buffer("public_ids", self._public_intents(dataset))
        self.last_explanation = None

    # -- retrieval -----------------------------------------------------------------------------------
    def personal_intents(self, item_seq, item_seq_len, all_positions: bool):
        """Intent ids [B, L, K] (per position, causal) or [B, 1, K] (the whole sequence)."""
        emb = self.item_text_embeddings
        if all_positions:
            found = self.index.personal_intents_per_position(
                item_seq, emb, self.n_personal, self.recency_decay, item_seq_len, space="embedding"
            )
            return found.ids, found.scores
        found = self.index.personal_intents(item_seq, item_seq_len, emb, self.n_personal, self.recency_decay,
                                            space="embedding")
        return found.ids.unsqueeze(1), found.scores.unsqueeze(1)

    @torch.no_grad()
    def _public_intents(self, dataset) -> torch.Tensor:
        """Lowest-IDF intents over the personal intents of each training user's last training row."""
        feat = dataset.inter_feat
        users = feat[self.USER_ID]
        last = torch.ones(len(users), dtype=torch.bool)
        last[:-1] = users[1:] != users[:-1]
        seq, lengths = feat[self.ITEM_SEQ][last], feat[self.ITEM_SEQ_LEN][last]
        found = self.index.personal_intents(seq, lengths, self.item_text_embeddings, self.n_personal,
                                            self.recency_decay, space="embedding")
        return self.index.set_public_intents(found.ids, self.n_public).clone()

    @torch.no_grad()
    def precompute_rows(self, item_seq, item_seq_len) -> dict:
        """Personal intents of every position of the training rows: they depend on the items only."""
        return {PERSONAL_FIELD: self.personal_intents(item_seq, item_seq_len, all_positions=True)[0]}

    def sequence_states(self, interaction):
        personal = interaction[PERSONAL_FIELD] if PERSONAL_FIELD in interaction.interaction else None
        return self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN], all_positions=True,
                            personal_ids=personal)

    # -- the network --------------------------------------------------------------------------------
    def forward(self, item_seq, item_seq_len, all_positions: bool = False, explain: bool = False,
                personal_ids=None):
        item_seq = trim(item_seq, item_seq_len)
        a = self.encode(item_seq)
        if not all_positions:
            a = self.gather_indexes(a, item_seq_len - 1).unsqueeze(1)
        if personal_ids is not None:
            ids, scores = personal_ids[:, : a.size(1)], None
        else:
            ids, scores = self.personal_intents(item_seq, item_seq_len, all_positions)
        intents = self.intent_proj(self.intent_directions)
        b, c = a, a
        personal_attention = public_attention = None
        for layer in self.personal_layers:
            b, personal_attention = layer(b, intents[ids])
        for layer in self.public_layers:
            c, public_attention = layer(c, intents[self.public_ids])
        out, weights = self.fuse(a, b, c)
        if explain:
            self.last_explanation = {"personal_ids": ids, "personal_scores": scores,
                                     "personal_attention": personal_attention.mean(2),
                                     "public_attention": public_attention.mean(2), "fusion": weights}
        return out if all_positions else out.squeeze(1)

    def fuse(self, a, b, c):
        if self.fusion == "attention":
            logits = torch.stack([(a * b).sum(-1), (a * c).sum(-1)], dim=-1) / math.sqrt(self.hidden_size)
            weights = torch.softmax(logits, dim=-1)
        else:
            weights = torch.sigmoid(self.gate(torch.cat([a, b, c], dim=-1)))
        return a + weights[..., :1] * b + weights[..., 1:] * c, weights

    # -- explanations --------------------------------------------------------------------------------
    @torch.no_grad()
    def explain(self, interaction, k: int = 10) -> list[dict]:
        """Per user: the top-k items, the personal and public intents with labels and weights."""
        self.eval()
        seq, lengths = interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN]
        out = self.forward(seq, lengths, explain=True)
        scores = out @ self.item_embedding.weight.t()
        scores[:, 0] = -torch.inf
        top = torch.topk(scores, k, dim=-1)
        info = self.last_explanation
        users = interaction[self.USER_ID].tolist() if self.USER_ID in interaction.interaction else [None] * len(seq)
        result = []
        for row, user in enumerate(users):
            personal = [
                {"intent": int(i), "latent": int(self.vocabulary.kept[i]), "label": self.intent_labels[i],
                 "retrieval_score": round(float(s), 4), "attention": round(float(w), 4)}
                for i, s, w in zip(info["personal_ids"][row, 0], info["personal_scores"][row, 0],
                                   info["personal_attention"][row, 0])
            ]
            public = [
                {"intent": int(i), "latent": int(self.vocabulary.kept[i]), "label": self.intent_labels[i],
                 "attention": round(float(w), 4)}
                for i, w in zip(self.public_ids, info["public_attention"][row, 0])
            ]
            w = info["fusion"][row, 0]
            result.append({
                "user": user,
                "top_items": top.indices[row].tolist(),
                "personal_intents": personal,
                "public_intents": public,
                "fusion": {"personal": round(float(w[0]), 4), "public": round(float(w[1]), 4)},
            })
        return result
