"""A MIDI-LLM-style checkpoint (any local HF causal LM with an AMT block): loading it with transformers, and
writing its prompts. Other backends (llama.cpp, vLLM) are loaded by `midilm.generate.load.load_model`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from midilm.models.vocab import MusicLayout, layout_for

DEFAULT_T2M = Path(__file__).resolve().parents[1] / "data" / "models" / "midilm-t2m-tiny"


def default_t2m_path() -> Path:
    """The text-to-MIDI model shipped inside the package."""
    return DEFAULT_T2M


@dataclass
class TextToMidiModel:
    model: object  # transformers: the PreTrainedModel; llamacpp: a LlamaCppDecoder; vllm: a vllm.LLM
    tokenizer: object
    layout: MusicLayout
    path: str
    backend: str = "transformers"
    max_positions: int | None = None  # the model's trained context length (config.json), when known

    def prompt_ids(self, caption: str | None) -> list[int]:
        """MIDI-LLM's prompt as ids: BOS, instruction, caption, one space, then the start-of-music id."""
        text = self.layout.prompt_text(caption)
        ids = list(self.tokenizer(text, add_special_tokens=True)["input_ids"])
        bos = getattr(self.tokenizer, "bos_token_id", None)
        if bos is not None and (not ids or ids[0] != bos):
            ids = [bos] + ids
        return ids + [self.layout.start_of_music]

    @property
    def stop_id(self) -> int | None:
        """The end-of-text id (vLLM stops a sequence on it; the grammar never draws it)."""
        eos = getattr(self.tokenizer, "eos_token_id", None)
        return None if eos is None else int(eos)


def check_model_dir(path: str | Path) -> Path:
    """A local model directory with safetensors weights, or a clear error."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"model directory not found: {path}")
    if not any(path.glob("*.safetensors")):
        raise ValueError(f"{path} has no .safetensors weights (other formats are refused: they can run code)")
    return path


def model_config(path: str | Path) -> dict:
    return json.loads((Path(path) / "config.json").read_text())


def load_tokenizer(path: str | Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, local_files_only=True)


def load_causal_lm(path: str | Path, device: str | None = None, dtype: str | None = None):
    """The transformers model of a local directory (safetensors only); never touches the network."""
    import torch
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
    return model


def locate_layout(path: str | Path, vocab_size: int | None, tokenizer) -> MusicLayout:
    """The music layout, checked against the tokenizer (LayoutError when it cannot be told for certain)."""
    return layout_for(path, vocab_size=vocab_size, tokenizer_len=len(tokenizer))


def load_text_to_midi(path: str | Path, device: str | None = None, dtype: str | None = None) -> TextToMidiModel:
    """Load weights (safetensors only) and tokenizer from a local directory with transformers; never touches
    the network. The music layout is located (or the model refused) before the weights are read."""
    path = check_model_dir(path)
    config = model_config(path)
    tokenizer = load_tokenizer(path)
    layout = locate_layout(path, int(config.get("vocab_size", 0)) or None, tokenizer)
    model = load_causal_lm(path, device, dtype)
    return TextToMidiModel(model, tokenizer, layout, str(path), "transformers",
                           config.get("max_position_embeddings"))
