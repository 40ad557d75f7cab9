"""Run the key probe (`midilm.evaluate.key_probe`) on a text-to-MIDI model folder.

    python scripts/key_probe.py MODEL_DIR PROMPTS.jsonl      # prompts: JSONL lines with "prompt" (or plain text lines)

Prints the mean in-scale mass of the first note over every prompt that names a key, rewritten to all 12
transpositions of it (0.583 = blind to the key name), and how often the named tonic is the likeliest first
pitch class. About 30 CPU seconds for 22 prompts with the 17.6 M-parameter model on one thread.
"""

from __future__ import annotations

import json
import sys


def main(model_dir: str, prompts_path: str) -> None:
    import torch

    from midilm.evaluate.key_probe import key_probe
    from midilm.generate.load import load_model

    torch.set_num_threads(1)
    prompts = []
    for line in open(prompts_path, encoding="utf-8"):
        line = line.strip()
        if line:
            prompts.append(json.loads(line)["prompt"] if line.startswith("{") else line)
    r = key_probe(load_model(model_dir), prompts, progress=True)
    print(f"{model_dir}: probe {r['in_scale']:.3f}  tonic-top {r['tonic_top']:.3f}  ({r['pairs']} pairs, "
          f"{r['prompts']} prompts)")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
