"""Copy a trained model folder into the package as a shipped default: bf16 safetensors (half the size),
config, tokenizer, layout, loss curve. Usage: python scripts/export_model.py TRAINED_DIR DEST_DIR"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


def main(src: str, dst: str) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src_p, dst_p = Path(src), Path(dst)
    dst_p.mkdir(parents=True, exist_ok=True)
    model = AutoModelForCausalLM.from_pretrained(src_p, local_files_only=True, use_safetensors=True,
                                                 dtype=torch.bfloat16)
    model.save_pretrained(dst_p, safe_serialization=True)
    AutoTokenizer.from_pretrained(src_p, local_files_only=True).save_pretrained(dst_p)
    for name in ("midilm.json", "loss.png", "loss_history.json", "train_config.json"):
        if (src_p / name).exists():
            shutil.copy(src_p / name, dst_p / name)
    size = sum(p.stat().st_size for p in dst_p.iterdir()) / 2**20
    print(f"exported to {dst_p}: {size:.1f} MB")


if __name__ == "__main__":
    main(*sys.argv[1:3])
