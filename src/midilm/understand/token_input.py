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

from midilm.models.token_input import (  # noqa: F401  (public names of this module too)
    DEFAULT_MIDI_TOKENS,
    KINDS,
    abc_ids,
    amt_ids,
    load_llm,
    midi_ids,
    text_rows,
)
from midilm.understand.model import GenerationOptions, UnderstandingModel, register_kind


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
