"""Load a MIDI-LLM-style checkpoint (any local HF causal LM with an AMT block) on a backend, and write its prompts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from midilm.models.vocab import MusicLayout, layout_for


@dataclass
class TextToMidiModel:
    model: object  # transformers: the PreTrainedModel; llamacpp: a LlamaCppDecoder; vllm: a vllm.LLM
    tokenizer: object
    layout: MusicLayout
    path: str
    backend: str = "transformers"

    def prompt_ids(self, caption: str | None) -> list[int]:
        """MIDI-LLM's prompt as ids: BOS, instruction, caption, one space, then the start-of-music id."""
        text = self.layout.prompt_text(caption)
        ids = list(self.tokenizer(text, add_special_tokens=True)["input_ids"])
        bos = getattr(self.tokenizer, "bos_token_id", None)
        if bos is not None and (not ids or ids[0] != bos):
            ids = [bos] + ids
        return ids + [self.layout.start_of_music]

    def sample(self, prompt_ids: Sequence[int], sampling, grammar=None, context: Sequence[int] = (),
               controls: Sequence[int] = ()):
        """`sample_music` on this model's backend: a SampleResult of AMT ids."""
        if self.backend == "vllm":
            from midilm.generate.backends.vllm import sample_music_vllm

            return sample_music_vllm(self.model, prompt_ids, self.layout.music_offset, sampling, grammar, context,
                                     controls, stop_id=_stop_id(self.tokenizer))
        from midilm.generate.sampler import sample_music

        return sample_music(self.model, prompt_ids, self.layout.music_offset, sampling, grammar, context, controls)


def _stop_id(tokenizer) -> int:
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is None:
        raise ValueError("the tokenizer has no end-of-text id, which the vLLM backend needs to stop a sequence")
    return int(eos)


def load_text_to_midi(path: str | Path, device: str | None = None, dtype: str | None = None,
                      backend: str = "transformers", **backend_options) -> TextToMidiModel:
    """Load weights (safetensors only) and tokenizer from a local directory; never touches the network.

    backend: "transformers" (default), "llamacpp" (the model converted to GGUF once, then cached; options
    `gguf_type`, `threads`, `cache_dir`) or "vllm" (GPU; options are passed to `vllm.LLM`).
    """
    from midilm.generate.backends import BACKENDS

    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"model directory not found: {path}")
    if not any(path.glob("*.safetensors")):
        raise ValueError(f"{path} has no .safetensors weights (other formats are refused: they can run code)")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "transformers":
        if backend_options:
            raise ValueError(f"unknown options for the transformers backend: {sorted(backend_options)}")
        from midilm.generate.backends.transformers import load_transformers

        model, tokenizer = load_transformers(path, device, dtype)
        vocab_size = model.config.vocab_size
    else:
        import json

        from midilm.generate.backends.transformers import load_tokenizer

        tokenizer = load_tokenizer(path)
        vocab_size = int(json.loads((path / "config.json").read_text()).get("vocab_size", 0)) or None
        if backend == "llamacpp":
            from midilm.generate.backends.llamacpp import load_llamacpp

            model = load_llamacpp(path, **backend_options)
            if vocab_size and model.full_vocab != vocab_size:
                model.close()
                raise ValueError(f"the GGUF has {model.full_vocab} vocabulary rows but {path} has {vocab_size}: "
                                 "it was converted from another model")
        else:
            from midilm.generate.backends.vllm import load_vllm

            model = load_vllm(path, dtype=dtype, device=device, **backend_options)
    layout = layout_for(path, vocab_size=vocab_size, tokenizer_len=len(tokenizer))
    return TextToMidiModel(model, tokenizer, layout, str(path), backend)
