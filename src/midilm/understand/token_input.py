"""Understanding models that read the music as tokens in the prompt: the ABC baseline and the native-token variant.

Both put the music's ids in the MIDI slot of the conversation template (`midilm.models.conversation`) and
answer with a causal LM tuned with LoRA, so they differ from MIDI-LLaMA only in how the music enters:

- "abc": the piece as ABC notation (`midi2abc`, `midilm.codecs.abc`), tokenised by the LLM's own text
  tokenizer: the MIDI-LLaMA paper's baseline.
- "amt-native": the piece as AMT event ids in the expanded vocabulary of a text-to-MIDI model
  (`midilm.models.vocab.MusicLayout`), i.e. our MIDI-LLM read backwards (MIDI -> text). Answers are
  text, so only the text rows of the output layer are ever scored.

The music is cut to `max_midi_tokens` ids: the first bars of a long piece (ABC cut at a bar line, AMT
at an event boundary); 20 s clips, what the models are trained on, mostly fit whole.

Directory layout (safetensors only): `midilm.json` (kind and representation settings), `llm/` (the base
causal LM and its tokenizer, HF layout), `adapter/` (the LoRA adapter, peft layout).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from midilm.understand.model import GenerationOptions, UnderstandingModel, register_kind

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


class TokenInputUnderstanding(UnderstandingModel):
    """An LLM with a LoRA adapter that reads the music as ids in its prompt (kind "abc" or "amt-native")."""

    def __init__(self, path: str | Path, device: str = "cpu", dtype: str | None = None, batch_size: int = 8):
        from midilm.models.manifest import read_manifest

        super().__init__(path, batch_size)
        root = Path(path)
        settings = read_manifest(root)
        if settings["kind"] not in KINDS:
            raise ValueError(f"{root} holds a {settings['kind']!r} model, not one of {', '.join(KINDS)}")
        self.kind = settings["kind"]
        self.max_midi_tokens = int(settings.get("max_midi_tokens", DEFAULT_MIDI_TOKENS))
        self.llm, self.tokenizer, self.layout = load_llm(root / "llm", dtype=dtype, device=device)
        if (root / "adapter").is_dir():
            from peft import PeftModel

            # merged once at load: generation then runs at the base model's speed
            self.llm = PeftModel.from_pretrained(self.llm, root / "adapter").merge_and_unload()
        self.llm.eval()
        if device:
            self.llm.to(device)
        self.n_text = text_rows(self.llm, self.tokenizer, self.layout)

    def midi_ids(self, piece) -> list[int]:
        return midi_ids(self.kind, self.tokenizer, self.layout, piece, self.max_midi_tokens)

    def _generate(self, pieces: Sequence, conversations, options: GenerationOptions) -> list[str]:
        import torch
        from transformers import LogitsProcessor, LogitsProcessorList

        from midilm.models.conversation import encode_conversation

        cache: dict[int, list[int]] = {}
        seqs = []
        for piece, turns in zip(pieces, conversations):
            if id(piece) not in cache:
                cache[id(piece)] = self.midi_ids(piece)
            enc = encode_conversation(self.tokenizer, turns)
            seqs.append(enc.before + cache[id(piece)] + enc.after)
        pad = self.tokenizer.pad_token_id
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), pad, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):  # left padding: every answer starts at the same position
            ids[i, width - len(s) :] = torch.tensor(s)
            mask[i, width - len(s) :] = 1
        n_text = self.n_text

        class TextOnly(LogitsProcessor):
            def __call__(self, input_ids, scores):
                scores[:, n_text:] = float("-inf")
                return scores

        sampling = options.temperature > 0
        if sampling:
            torch.manual_seed(options.seed)
        dev = self.llm.device
        with torch.no_grad():
            out = self.llm.generate(
                input_ids=ids.to(dev), attention_mask=mask.to(dev), max_new_tokens=options.max_new_tokens,
                do_sample=sampling, temperature=options.temperature if sampling else None,
                top_p=options.top_p if sampling else None, top_k=None,
                eos_token_id=self.tokenizer.eos_token_id, pad_token_id=pad,
                logits_processor=LogitsProcessorList([TextOnly()]) if n_text < self.llm.config.vocab_size else None,
            )
        return [self.tokenizer.decode(row[width:], skip_special_tokens=True).strip() for row in out]


for _kind in KINDS:
    register_kind(_kind, TokenInputUnderstanding)
