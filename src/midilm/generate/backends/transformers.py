"""The transformers backend: next-token scores for the engine from the KV cache (loading: models/midi_llm.py)."""

from __future__ import annotations

import inspect

import numpy as np
import torch


class TransformersDecoder:
    """A transformers causal LM with its KV cache, split into its decoder and output layer so a step
    computes only the logit rows it needs (a time, duration or note block is 1-16k of the vocabulary's
    rows; the output layer dominates tiny models' cost). Models whose logits are more than a linear map
    of the last hidden state use the full forward pass.

    Rows may have prompts of different lengths: they are left-padded, with an attention mask and position
    ids, so every row's next token sits in the last column. The mask and position ids are always given,
    so that a row sees the same inputs alone or in a batch."""

    def __init__(self, model):
        self.model = model
        self.device = next(model.parameters()).device
        self.out = model.get_output_embeddings()
        cfg = model.config
        self.split = (
            hasattr(model, "get_decoder") and self.out is not None
            and not getattr(cfg, "final_logit_softcapping", None) and getattr(cfg, "logit_scale", None) in (None, 1.0)
        )
        self.net = model.get_decoder() if self.split else model
        # transformers 5.x renamed the cache argument; the old name prints a FutureWarning on every call
        self.cache_arg = "cache" if "cache" in inspect.signature(self.net.forward).parameters else "past_key_values"
        self.hidden = self.past = self.mask = self.positions = None

    def _step(self, input_ids: torch.Tensor) -> None:
        res = self.net(input_ids=input_ids, attention_mask=self.mask, position_ids=self.positions, use_cache=True,
                       **{self.cache_arg: self.past})
        self.past = res[self.cache_arg]
        self.hidden = (res.last_hidden_state if self.split else res.logits)[:, -1, :]

    @torch.no_grad()
    def start(self, prompts: list[list[int]], max_new_tokens: int = 0) -> None:
        width = max(len(p) for p in prompts)
        ids = torch.zeros(len(prompts), width, dtype=torch.long)
        mask = torch.zeros(len(prompts), width, dtype=torch.long)
        for i, p in enumerate(prompts):  # left padding: every row's last prompt id sits in the last column
            ids[i, width - len(p) :] = torch.tensor(p, dtype=torch.long)
            mask[i, width - len(p) :] = 1
        self.past = None
        self.mask = mask.to(self.device)
        self.positions = (mask.cumsum(-1) - 1).clamp(min=0).to(self.device)
        self._step(ids.to(self.device))
        self.positions = self.positions[:, -1:]

    @torch.no_grad()
    def feed(self, ids: list[int | None]) -> None:
        # a batched KV cache cannot drop a row: finished rows get a dummy id, and are never read
        batch = torch.tensor([0 if t is None else t for t in ids], dtype=torch.long, device=self.device)
        self.mask = torch.cat([self.mask, self.mask.new_ones(len(ids), 1)], dim=1)
        self.positions = self.positions + 1
        self._step(batch.view(-1, 1))

    @torch.no_grad()
    def logits(self, i: int, lo: int, hi: int) -> np.ndarray:
        return self.logits_many([(i, lo, hi)])[0]

    @torch.no_grad()
    def logits_many(self, asks: list[tuple[int, int, int]]) -> list[np.ndarray]:
        """Logits for (row, lo, hi) requests; rows asking for the same block share one matrix product."""
        if not self.split:
            return [self.hidden[i, lo:hi].float().cpu().numpy() for i, lo, hi in asks]
        groups: dict[tuple[int, int], list[int]] = {}
        for k, (_, lo, hi) in enumerate(asks):
            groups.setdefault((lo, hi), []).append(k)
        out: list[np.ndarray] = [None] * len(asks)  # type: ignore[list-item]
        bias = getattr(self.out, "bias", None)
        for (lo, hi), ks in groups.items():
            rows = self.hidden[[asks[k][0] for k in ks]]
            block = rows @ self.out.weight[lo:hi].T
            if bias is not None:
                block = block + bias[lo:hi]
            block = block.float().cpu().numpy()
            for j, k in enumerate(ks):
                out[k] = block[j]
        return out
