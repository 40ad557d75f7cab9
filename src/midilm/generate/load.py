"""Load a text-to-MIDI model on a backend: transformers (models/midi_llm.py), llama.cpp (a cached GGUF) or vLLM."""

from __future__ import annotations

from pathlib import Path

from midilm.generate.backends import BACKENDS
from midilm.models.midi_llm import (
    TextToMidiModel,
    check_model_dir,
    default_t2m_path,
    load_text_to_midi,
    load_tokenizer,
    locate_layout,
    model_config,
)


def default_model_path() -> Path:
    """The text-to-MIDI model shipped inside the package."""
    return default_t2m_path()


def load_model(path: str | Path | None = None, backend: str = "transformers", device: str | None = None,
               dtype: str | None = None, **backend_options) -> TextToMidiModel:
    """A model directory (None: the shipped one) on a backend; local files only, safetensors only.

    backend: "transformers" (default), "llamacpp" (the model converted to GGUF once, then cached; options
    `gguf`, `gguf_type`, `threads`, `cache_dir`) or "vllm" (GPU; options are passed to `vllm.LLM`). The music
    layout is located before any weights are read: a model whose music ids cannot be located is refused.
    """
    if path is None:
        path = default_model_path()
        if not path.is_dir():
            raise FileNotFoundError(f"model directory not found: {path} (no default model is shipped in this "
                                    "install: pass --model DIR)")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "transformers":
        if backend_options:
            raise ValueError(f"unknown options for the transformers backend: {sorted(backend_options)}")
        return load_text_to_midi(path, device, dtype)
    path = check_model_dir(path)
    config = model_config(path)
    vocab_size = int(config.get("vocab_size", 0)) or None
    tokenizer = load_tokenizer(path)
    layout = locate_layout(path, vocab_size, tokenizer)
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
    return TextToMidiModel(model, tokenizer, layout, str(path), backend, config.get("max_position_embeddings"))
