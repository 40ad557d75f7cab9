#!/usr/bin/env bash
# MIDI-LLM's real shape on a GPU, in one command: training steps in bf16 and generation through vLLM with
# midilm's grammar. Not run by the developers (no GPU was at hand); see README "Training".
#
#   scripts/gpu_check_real_shape.sh            # needs: a CUDA GPU with >= 40 GB, .venv with midilm[train],
#                                              # and `pip install vllm` in that venv
#   OUT=/tmp/check STEPS=10 LEN=2048 MIDI_LLM_DIR=/models/MIDI-LLM_Llama-3.2-1B scripts/gpu_check_real_shape.sh
#
# 1. `midilm train t2m --dry-run`: a random-weight Llama-3.2-1B-shaped model with MIDI-LLM's 183,286 rows
#    takes STEPS AdamW steps on LEN-id sequences in bf16 mixed precision through the same trainer as real
#    training, is saved to $OUT/real-shape and reloaded; it prints its memory estimate, step time and peak RSS.
# 2. That checkpoint on vLLM (midilm.generate.backends.vllm.load_vllm: our grammar's logits processor) samples
#    2,046 constrained tokens; the ids are checked against the grammar by replaying them, timed, and written
#    as $OUT/vllm-random.mid. Greedy vLLM and transformers (bf16, same GPU) are compared token by token.
# 3. With MIDI_LLM_DIR (the released checkpoint, downloaded beforehand): `midilm generate --backend vllm` on it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-gpu-check}
STEPS=${STEPS:-5}
LEN=${LEN:-2048}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || { echo "no GPU (nvidia-smi failed)" >&2; exit 1; }
"$PY" -c "import vllm, torch; assert torch.cuda.is_available(); print('vllm', vllm.__version__, 'torch', torch.__version__)"

echo "== 1. real-shape training steps (bf16, AdamW)" >&2
"$PY" -m midilm.cli train t2m --dry-run --bf16 --optim adamw_torch --dry-run-len "$LEN" \
    --dry-run-steps "$STEPS" -o "$OUT/real-shape" 2>&1 | tee "$OUT/train.log"

echo "== 2. vLLM with midilm's grammar on that checkpoint" >&2
"$PY" - "$OUT" <<'EOF' 2>&1 | tee "$OUT/vllm.log"
import json
import sys
import time
from pathlib import Path

import torch

from midilm.codecs.amt.vocab import AUTOREGRESS
from midilm.generate.backends.vllm import load_vllm
from midilm.generate.engine import sample_music
from midilm.generate.grammar import GrammarConfig
from midilm.generate.sampler import MusicSequence, SamplingConfig, music_seconds
from midilm.models.vocab import layout_for

out = Path(sys.argv[1])
model_dir = out / "real-shape"
layout = layout_for(model_dir)
prompt = [128000] + list(range(1000, 1040)) + [layout.music_offset + AUTOREGRESS]
grammar = GrammarConfig(max_notes_per_onset=10_000)
llm = load_vllm(model_dir, dtype="bf16", skip_tokenizer_init=True, gpu_memory_utilization=0.5)
for label, cfg in (("sampled", SamplingConfig(max_new_tokens=2046, seed=0)),
                   ("greedy", SamplingConfig(max_new_tokens=256, top_k=1, seed=0))):
    t = time.perf_counter()
    res = sample_music(llm, prompt, layout.music_offset, cfg, grammar)
    wall = time.perf_counter() - t
    tokens = res.tokens[0]
    seq = MusicSequence(grammar, True, (), (), len(tokens))  # replay: every id must be one the grammar allows
    for tok in tokens:
        c = seq.choice()
        ok = c is not None and c.lo <= tok < c.hi and (c.mask is None or bool(c.mask[tok - c.lo]))
        assert ok, f"id {tok} breaks the grammar"
        seq.accept(tok)
    print(f"vLLM {label}: {len(tokens)} tokens in {wall:.2f} s ({len(tokens) / wall:.0f} tokens/s), "
          f"{music_seconds(tokens):.1f} s of music, grammar replay ok")
    (out / f"vllm-{label}.json").write_text(json.dumps(tokens))
    if label == "greedy":
        from transformers import AutoModelForCausalLM

        hf = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16).cuda().eval()
        ref = sample_music(hf, prompt, layout.music_offset, cfg, grammar).tokens[0]
        k = next((i for i, (a, b) in enumerate(zip(ref, tokens)) if a != b), None)
        print("greedy vLLM vs transformers (bf16):", "identical" if k is None else f"first difference at {k}")
EOF
"$PY" -m midilm.cli detokenize "$OUT/vllm-sampled.json" -o "$OUT/vllm-random.mid"

if [[ -n "${MIDI_LLM_DIR:-}" ]]; then
  echo "== 3. the released MIDI-LLM checkpoint on vLLM" >&2
  "$PY" -m midilm.cli generate "A cheerful pop song with piano, bass and drums in C major at 120 bpm." \
      --model "$MIDI_LLM_DIR" --backend vllm --seed 1 -o "$OUT/midi-llm.mid" 2>&1 | tee "$OUT/midi-llm.log"
fi
echo "done: logs and files in $OUT" >&2
