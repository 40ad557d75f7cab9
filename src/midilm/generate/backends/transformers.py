"""The transformers backend: load a local checkpoint (safetensors only) and score next tokens with its KV cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def load_transformers(path: str | Path, device: str | None = None, dtype: str | None = None):
    """(model, tokenizer) from a local directory; never touches the network."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # loading takes well under a second: a bar is noise on stderr
    if dtype not in (None, "bf16", "bfloat16", "fp16", "fp32"):
        raise ValueError(f"dtype must be bf16, fp16 or fp32, got {dtype!r}")
    torch_dtype = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16,
                   "fp32": torch.float32}.get(dtype)
    if torch_dtype is None and (device is None or str(device) == "cpu"):
        torch_dtype = torch.float32  # weights ship in bf16 to stay small; tiny matmuls run faster in fp32 on CPUs
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, use_safetensors=True,
                                                 dtype=torch_dtype or "auto")
    model.eval()
    if device:
        model.to(device)
    return model, load_tokenizer(path)


def load_tokenizer(path: str | Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, local_files_only=True)


class TransformersDecoder:
    """A transformers causal LM with its KV cache, split into its decoder and output layer so a step
    computes only the logit rows it needs (a time, duration or note block is 1-16k of the vocabulary's
    rows; the output layer dominates tiny models' cost). Models whose logits are more than a linear map
    of the last hidden state use the full forward pass."""

    def __init__(self, model):
        self.model = model
        self.device = next(model.parameters()).device
        self.out = model.get_output_embeddings()
        cfg = model.config
        self.split = (
            hasattr(model, "get_decoder") and self.out is not None
            and not getattr(cfg, "final_logit_softcapping", None) and getattr(cfg, "logit_scale", None) in (None, 1.0)
        )
        self.hidden = self.past = None

    def _step(self, input_ids: torch.Tensor) -> None:
        if self.split:
            res = self.model.get_decoder()(input_ids=input_ids, past_key_values=self.past, use_cache=True)
            self.hidden, self.past = res.last_hidden_state[:, -1, :], res.past_key_values
        else:
            res = self.model(input_ids=input_ids, past_key_values=self.past, use_cache=True)
            self.hidden, self.past = res.logits[:, -1, :], res.past_key_values

    @torch.no_grad()
    def start(self, prompt: list[int], n: int, max_new_tokens: int = 0) -> None:
        self.past = None
        self._step(torch.tensor([prompt] * n, dtype=torch.long, device=self.device))

    @torch.no_grad()
    def feed(self, ids: list[int | None]) -> None:
        # a batched KV cache cannot drop a row: finished sequences get a dummy id, and are never read
        batch = torch.tensor([0 if t is None else t for t in ids], dtype=torch.long, device=self.device)
        self._step(batch.view(-1, 1))

    @torch.no_grad()
    def logits(self, i: int, lo: int, hi: int) -> np.ndarray:
        if not self.split:
            return self.hidden[i, lo:hi].float().cpu().numpy()
        row = self.out.weight[lo:hi] @ self.hidden[i]
        if getattr(self.out, "bias", None) is not None:
            row = row + self.out.bias[lo:hi]
        return row.float().cpu().numpy()
