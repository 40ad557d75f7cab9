"""Load a MIDI-LLM-style checkpoint (any local HF causal LM with an AMT block) and write its prompts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from midilm.models.vocab import MusicLayout, layout_for


@dataclass
class TextToMidiModel:
    model: object  # a transformers PreTrainedModel
    tokenizer: object
    layout: MusicLayout
    path: str

    def prompt_ids(self, caption: str | None) -> list[int]:
        """MIDI-LLM's prompt as ids: BOS, instruction, caption, one space, then the start-of-music id."""
        text = self.layout.prompt_text(caption)
        ids = list(self.tokenizer(text, add_special_tokens=True)["input_ids"])
        bos = getattr(self.tokenizer, "bos_token_id", None)
        if bos is not None and (not ids or ids[0] != bos):
            ids = [bos] + ids
        return ids + [self.layout.start_of_music]


def load_text_to_midi(path: str | Path, device: str | None = None, dtype: str | None = None) -> TextToMidiModel:
    """Load weights (safetensors only) and tokenizer from a local directory; never touches the network."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # loading takes well under a second: a bar is noise on stderr
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"model directory not found: {path}")
    if not any(path.glob("*.safetensors")):
        raise ValueError(f"{path} has no .safetensors weights (other formats are refused: they can run code)")
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
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    layout = layout_for(path, vocab_size=model.config.vocab_size, tokenizer_len=len(tokenizer))
    return TextToMidiModel(model, tokenizer, layout, str(path))
