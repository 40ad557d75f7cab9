"""The training view of a causal LM: its forward returns the loss, per slot block or over the whole vocabulary.

The loss is computed inside `TrainingLM.forward`, from the decoder's hidden states and the output layer's
weight read there, so every parameter use happens inside the module the distributed wrapper wraps: DDP
synchronises the output layer's gradient like any other, FSDP gathers the (root-owned) output weight for
the forward and DeepSpeed sees one forward. The loss is a sum over the targets divided by
`num_items_in_batch`, the Trainer's count of targets over the whole accumulated (and, across processes,
global) batch, so gradient accumulation and data parallelism weigh every target equally: the gradient of
batch 4 x 1 step equals that of 2 x 2 accumulated micro-batches, and of 2 processes x 2.

Per-block softmax (`loss_blocks`): the next id of a music position is a time, a duration or a note, and the
constrained sampler only ever chooses inside that block, so the softmax over the block alone trains the
same decisions at a fraction of the output layer's cost. One block spanning the vocabulary is the plain
full-softmax cross-entropy.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Trainer
from transformers.modeling_outputs import CausalLMOutputWithPast

from midilm.codecs.amt import vocab as V
from midilm.models.vocab import MUSIC_ROWS, MusicLayout

IGNORE = -100


def loss_blocks(layout: MusicLayout) -> list[tuple[int, int]]:
    """[lo, hi) id ranges whose softmax is taken separately: text, then each AMT block."""
    o = layout.music_offset
    return [(0, o), (o + V.TIME_OFFSET, o + V.DUR_OFFSET), (o + V.DUR_OFFSET, o + V.NOTE_OFFSET),
            (o + V.NOTE_OFFSET, o + V.REST + 1), (o + V.ATIME_OFFSET, o + V.ADUR_OFFSET),
            (o + V.ADUR_OFFSET, o + V.ANOTE_OFFSET), (o + V.ANOTE_OFFSET, o + V.SPECIAL_OFFSET),
            (o + V.SPECIAL_OFFSET, o + MUSIC_ROWS)]


def block_loss_sum(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
                   blocks: list[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed cross-entropy, number of targets) where each target competes only with the ids of its block."""
    h = hidden[:, :-1].reshape(-1, hidden.shape[-1])
    y = labels[:, 1:].reshape(-1)
    keep = y != IGNORE
    h, y = h[keep], y[keep]
    total = h.new_zeros((), dtype=torch.float32)
    for lo, hi in blocks:
        m = (y >= lo) & (y < hi)
        # every block enters the graph, even when no target falls in it: DDP then finds the same parameter
        # uses on every process and step (an empty selection contributes zero)
        logits = h[m] @ weight[lo:hi].T
        total = total + F.cross_entropy(logits.float(), y[m] - lo, reduction="sum")
    return total, keep.sum()


def block_loss(hidden, weight, labels, blocks) -> torch.Tensor:
    """Mean cross-entropy per target with each target's softmax over its own block."""
    total, count = block_loss_sum(hidden, weight, labels, blocks)
    return total / count.clamp_min(1)


class TrainingLM(nn.Module):
    """A causal LM (`lm`) whose forward(input_ids, labels, position_ids) returns the training loss."""

    accepts_loss_kwargs = True  # the Trainer passes num_items_in_batch and does not rescale the loss
    loss_type = "ForCausalLM"  # ... and counts the targets over labels[..., 1:], as this loss shifts them
    _keys_to_ignore_on_save = None

    def __init__(self, lm, blocks: list[tuple[int, int]] | None = None):
        super().__init__()
        if getattr(lm.get_output_embeddings(), "bias", None) is not None:
            raise ValueError("the block loss reads the output layer's weight: a biased output layer is not supported")
        self.lm = lm
        self.config = lm.config
        self.blocks = blocks or [(0, lm.config.vocab_size)]

    def get_decoder(self):
        return self.lm.get_decoder()

    def get_output_embeddings(self):
        return self.lm.get_output_embeddings()

    def forward(self, input_ids, labels=None, position_ids=None, num_items_in_batch=None, **kwargs):
        # no attention mask and no cache: transformers then reads position resets as packed-example boundaries
        out = self.lm.get_decoder()(input_ids=input_ids, position_ids=position_ids, use_cache=False)
        if labels is None:
            raise ValueError("TrainingLM computes a training loss: labels are required")
        total, count = block_loss_sum(out.last_hidden_state, self.lm.get_output_embeddings().weight, labels,
                                      self.blocks)
        denom = num_items_in_batch if num_items_in_batch is not None else count.clamp_min(1)
        if torch.is_tensor(denom):
            denom = denom.to(total.device)
        return CausalLMOutputWithPast(loss=total / denom)


class T2MTrainer(Trainer):
    """The HF Trainer on a TrainingLM (a bare LM is wrapped with the full-vocabulary loss); checkpoints and the
    saved model are the bare LM's (`save_pretrained` layout), so resuming and loading see a plain LM."""

    def __init__(self, model=None, *args, blocks: list[tuple[int, int]] | None = None, **kwargs):
        if model is not None and not isinstance(model, TrainingLM):
            model = TrainingLM(model, blocks)
        super().__init__(model, *args, **kwargs)

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        model = self.accelerator.unwrap_model(self.model)
        if not isinstance(model, TrainingLM):
            return super()._save(output_dir, state_dict)
        output_dir = output_dir or self.args.output_dir
        if not self.args.should_save:
            return None
        os.makedirs(output_dir, exist_ok=True)
        state = state_dict if state_dict is not None else model.state_dict()
        state = {k.removeprefix("lm."): v for k, v in state.items()}
        model.lm.save_pretrained(output_dir, state_dict=state, safe_serialization=True)
        return None

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        model = model if model is not None else self.model
        if isinstance(model, TrainingLM) and not self.is_fsdp_enabled:
            model = model.lm  # checkpoints hold the bare LM's names
        super()._load_from_checkpoint(resume_from_checkpoint, model)
