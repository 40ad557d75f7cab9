"""Vocabulary expansion: append the AMT vocabulary to any Hugging Face causal LM, architecture unchanged.

Music id = text vocabulary size + AMT id, as in MIDI-LLM (128256 + AMT id for Llama 3). The new rows
of the input embedding (and of the output layer when it is not tied) are concatenated after the text
rows, so the result is a plain `LlamaForCausalLM` (or whatever the base was) that transformers and
vLLM load with no custom code. Where the music block starts is recorded in `midilm.json` beside the
weights, and inferred for checkpoints without it (MIDI-LLM's release: vocabulary 183286, offset 128256).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from midilm.codecs.amt.vocab import AUTOREGRESS, LLAMA3_TEXT_VOCAB, MIDI_LLM_VOCAB, VOCAB_SIZE
from midilm.errors import MidilmError
from midilm.models.manifest import MANIFEST, has_manifest, read_manifest, write_manifest

MUSIC_ROWS = 55030  # MIDI-LLM's block: the 55,028 AMT ids plus two unused rows
SIDECAR = MANIFEST
T2M_KIND = "text-to-midi"
MIDI_LLM_PROMPT = (
    "You are a world-class composer. Please compose some music according to the following description: "
)
INIT_SCHEMES = ("mean", "random", "block-mean", "structured")  # structured: models/init_rows.py


@dataclass(frozen=True)
class MusicLayout:
    """Where the music ids sit in a merged vocabulary, and how a prompt is written."""

    music_offset: int
    music_rows: int = MUSIC_ROWS
    prompt_prefix: str = MIDI_LLM_PROMPT
    bos_text: str = ""  # added when the tokenizer does not add its own BOS

    @property
    def vocab_size(self) -> int:
        return self.music_offset + self.music_rows

    def music_id(self, amt_id: int) -> int:
        return self.music_offset + amt_id

    @property
    def start_of_music(self) -> int:
        """The id that ends every prompt: AUTOREGRESS in the music block."""
        return self.music_offset + AUTOREGRESS

    def prompt_text(self, caption: str | None) -> str:
        """MIDI-LLM's prompt: the instruction, the caption and one space (caption dropout: no caption)."""
        return self.prompt_prefix + (caption.strip() if caption else "") + " "

    def save(self, directory: str | Path) -> None:
        """Record the layout in the directory's manifest (`midilm.json`, kind "text-to-midi")."""
        write_manifest(directory, T2M_KIND, **asdict(self))


class LayoutError(MidilmError, ValueError):
    """Where a checkpoint's music ids start cannot be told for certain."""


def layout_for(directory: str | Path, vocab_size: int | None = None, tokenizer_len: int | None = None) -> MusicLayout:
    """The layout of a saved model: from its `midilm.json`, else MIDI-LLM's exact released layout (183,286
    vocabulary rows with Llama 3's 128,256-id tokenizer). Nothing is guessed from the row count: any other
    checkpoint (a plain text LM, a padded vocabulary) is refused with LayoutError; write its layout with
    `MusicLayout(offset).save(directory)` once it is known."""
    if has_manifest(directory):
        data = read_manifest(directory, expected_kind=T2M_KIND)
        layout = MusicLayout(**{k: v for k, v in data.items() if k in MusicLayout.__dataclass_fields__})
        if vocab_size is not None and vocab_size < layout.music_offset + VOCAB_SIZE:
            raise LayoutError(f"{directory}: {SIDECAR} puts the music ids at {layout.music_offset}, but the model has "
                              f"only {vocab_size} vocabulary rows")
        return layout
    if vocab_size == MIDI_LLM_VOCAB and tokenizer_len == LLAMA3_TEXT_VOCAB:
        return MusicLayout(LLAMA3_TEXT_VOCAB)
    raise LayoutError(f"cannot tell where the music ids start in {directory}: it has no {SIDECAR} and is not "
                      f"MIDI-LLM's released layout ({MIDI_LLM_VOCAB} vocabulary rows, a {LLAMA3_TEXT_VOCAB}-id "
                      f"tokenizer); this one has {vocab_size} rows and a {tokenizer_len}-id tokenizer")


def tokenizer_length(directory: str | Path) -> int | None:
    """len() of the tokenizer saved in `directory` (its `tokenizer.json`: vocabulary plus added tokens),
    read without loading it; None without the file."""
    path = Path(directory, "tokenizer.json")
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    ids = list((data.get("model") or {}).get("vocab", {}).values()) + [t["id"] for t in data.get("added_tokens", [])]
    return max(ids) + 1 if ids else 0


def expand_vocabulary(model, text_vocab_size: int | None = None, init: str = "mean", seed: int = 0,
                      noise: float = 0.02):
    """Append MUSIC_ROWS rows to the model's input (and untied output) embeddings, in place.

    init:
      "mean"        every new row = mean of the text rows + Gaussian noise (noise * their std)
      "random"      N(0, initializer_range), as a freshly initialised model
      "block-mean"  like "mean", plus a shared random offset per AMT block (time, duration, note,
                    control, special) so the blocks start apart from each other
      "structured"  block-mean plus rows that share structure (models/init_rows.py)
    Returns the layout. `text_vocab_size` defaults to the model's current vocabulary size.
    """
    import torch

    if init not in INIT_SCHEMES:
        raise ValueError(f"init must be one of {INIT_SCHEMES}, got {init!r}")
    old = model.get_input_embeddings().weight
    text = int(text_vocab_size or old.shape[0])
    if text > old.shape[0]:
        raise ValueError(f"text vocabulary {text} is larger than the embedding ({old.shape[0]} rows)")
    new_size = text + MUSIC_ROWS
    gen = torch.Generator().manual_seed(seed)
    std_init = float(getattr(model.config, "initializer_range", 0.02))

    def new_rows(weight: torch.Tensor) -> torch.Tensor:
        base = weight[:text].detach().float()
        dim = base.shape[1]
        if init == "structured":
            from midilm.models.init_rows import new_rows as structured_rows

            return structured_rows(init, base, MUSIC_ROWS, gen, noise).to(weight.dtype)
        if init == "random":
            rows = torch.randn(MUSIC_ROWS, dim, generator=gen) * std_init
        else:
            mean, std = base.mean(0), base.std(0)
            rows = mean + noise * std * torch.randn(MUSIC_ROWS, dim, generator=gen)
            if init == "block-mean":
                for lo, hi in _amt_blocks():
                    rows[lo:hi] += std * torch.randn(dim, generator=gen)
        return rows.to(weight.dtype)

    emb_rows = new_rows(old)
    out = model.get_output_embeddings()
    tied = out is not None and out.weight.data_ptr() == old.data_ptr()
    out_rows = None if (out is None or tied) else new_rows(out.weight)
    model.resize_token_embeddings(new_size, mean_resizing=False)
    with torch.no_grad():
        model.get_input_embeddings().weight[text:new_size] = emb_rows
        if out_rows is not None:
            model.get_output_embeddings().weight[text:new_size] = out_rows
            bias = getattr(model.get_output_embeddings(), "bias", None)
            if bias is not None:
                bias[text:new_size] = 0
    model.config.vocab_size = new_size
    return MusicLayout(text)


def _amt_blocks() -> list[tuple[int, int]]:
    from midilm.codecs.amt import vocab as v

    return [(0, v.DUR_OFFSET), (v.DUR_OFFSET, v.NOTE_OFFSET), (v.NOTE_OFFSET, v.REST + 1),
            (v.CONTROL_OFFSET, v.SPECIAL_OFFSET), (v.SPECIAL_OFFSET, MUSIC_ROWS)]


assert VOCAB_SIZE <= MUSIC_ROWS
