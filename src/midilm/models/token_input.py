"""How the token-input understanding models read music and load their LLM: the piece as ABC text ("abc") or as
AMT ids of a text-to-MIDI model's vocabulary ("amt-native"), shared by their training (train/) and their
use (understand/token_input.py)."""

from __future__ import annotations

from pathlib import Path

KINDS = ("abc", "amt-native")
DEFAULT_MIDI_TOKENS = 384


def abc_ids(tokenizer, piece, max_tokens: int) -> list[int]:
    """ABC text of the piece as the tokenizer's ids, cut at the last bar line that fits."""
    from midilm.codecs.abc import piece_to_abc

    text = piece_to_abc(piece, max_chars=max_tokens * 4)  # a token holds at most a few ABC characters
    ids = list(tokenizer(text + "\n", add_special_tokens=False)["input_ids"])
    while len(ids) > max_tokens:
        cut = text.rfind("|", 0, max(len(text) * max_tokens // len(ids) - 1, 1))
        text = text[: cut + 1] if cut > 0 else text[: len(text) * max_tokens // len(ids)]
        ids = list(tokenizer(text + "\n", add_special_tokens=False)["input_ids"])
    return ids


def amt_ids(layout, piece, max_tokens: int) -> list[int]:
    """AMT events of the piece (whole triplets within the first 100 s) as ids of the merged vocabulary."""
    from midilm.codecs.amt.encode import encode_midi
    from midilm.codecs.amt.vocab import MAX_TIME
    from midilm.music.midi_io import midi_bytes

    events = encode_midi(midi_bytes(piece), allow_empty=True)
    keep = []
    for i in range(0, len(events) - 2, 3):
        if events[i] >= MAX_TIME or len(keep) + 3 > max_tokens:
            break
        keep += events[i : i + 3]
    return [layout.music_id(t) for t in keep]


def midi_ids(kind: str, tokenizer, layout, piece, max_tokens: int) -> list[int]:
    if len(piece) == 0:
        raise ValueError(f"{getattr(piece, 'path', None) or 'the piece'} has no notes to understand")
    if kind == "abc":
        return abc_ids(tokenizer, piece, max_tokens)
    if kind == "amt-native":
        return amt_ids(layout, piece, max_tokens)
    raise ValueError(f"unknown token-input kind {kind!r} (one of {', '.join(KINDS)})")


def text_rows(llm, tokenizer, layout) -> int:
    """How many output rows are text: all of them, or those below the music block of an expanded model."""
    return layout.music_offset if layout is not None else llm.config.vocab_size


def load_llm(directory: str | Path, trainable: bool = False, dtype: str | None = "fp32", device: str = "cpu"):
    """A causal LM, its tokenizer and its music layout (None for a text-only LM), from local files."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from midilm.models.midi_llama import resolve_dtype

    directory = Path(directory)
    llm = AutoModelForCausalLM.from_pretrained(directory, local_files_only=True, use_safetensors=True,
                                               dtype=resolve_dtype(dtype, device))
    tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    layout = None
    if (directory / "midilm.json").is_file():
        from midilm.models.vocab import layout_for

        layout = layout_for(directory, vocab_size=llm.config.vocab_size, tokenizer_len=len(tokenizer))
    if not trainable:
        llm.eval()
    return llm, tokenizer, layout
